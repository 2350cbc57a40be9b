//! Placement policies: how many replicas a span has, which nodes may hold them, where its
//! leader should be, and what failure it must survive (docs/placement.md, "Model").

use std::str::FromStr;

use crate::{Error, Result};

/// What failure a span's voters must survive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Survival {
    /// Losing any one zone: voters in distinct zones.
    #[default]
    Zone,
    /// Losing any one region: fewer than half the voters per region (2 of 5), so at least 3
    /// regions.
    Region,
}

/// A label rule: `+key=value[:count]` (required: `count` replicas must match, every replica
/// without a count) or `-key=value` (prohibited: no replica may match).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    /// Required (`+`) or prohibited (`-`).
    pub required: bool,
    /// Label key.
    pub key: String,
    /// Label value.
    pub value: String,
    /// Required only: how many replicas must match; `None`: all of them.
    pub count: Option<usize>,
}

impl FromStr for Constraint {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::BadPolicy(format!("constraint {s:?}: {why}"));
        let (required, rest) = match s.as_bytes().first() {
            Some(b'+') => (true, &s[1..]),
            Some(b'-') => (false, &s[1..]),
            _ => return Err(bad("starts with '+' (required) or '-' (prohibited)")),
        };
        let (label, count) = match rest.rsplit_once(':') {
            Some((label, n)) => {
                let n: usize = n.parse().map_err(|_| bad("the count after ':' is not a number"))?;
                if !required || n == 0 {
                    return Err(bad("only a required constraint has a count, and it is at least 1"));
                }
                (label, Some(n))
            }
            None => (rest, None),
        };
        let locality: crate::Locality = label.parse().map_err(|e: Error| bad(&e.to_string()))?;
        match locality.tiers() {
            [t] => Ok(Self { required, key: t.key.clone(), value: t.value.clone(), count }),
            _ => Err(bad("names exactly one key=value label")),
        }
    }
}

impl Constraint {
    /// Whether a node at `locality` matches the label.
    pub fn matches(&self, locality: &crate::Locality) -> bool {
        locality.matches(&self.key, &self.value)
    }

    /// Whether the rule keeps every replica off a node at `locality`: a prohibited label it
    /// has, or a label all replicas need that it lacks. (A counted requirement excludes no
    /// single node.)
    pub fn excludes(&self, locality: &crate::Locality) -> bool {
        let m = self.matches(locality);
        if self.required { self.count.is_none() && !m } else { m }
    }
}

/// The placement policy of a key span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Voting replicas. Default 3 (5 with region survival).
    pub voters: usize,
    /// Non-voting replicas (Raft learners; follower reads). Default 0.
    pub non_voters: usize,
    /// Rules for every replica.
    pub constraints: Vec<Constraint>,
    /// Rules for voters only.
    pub voter_constraints: Vec<Constraint>,
    /// Where the leader should be: lists of required labels, in order; the first list that
    /// some live voter matches decides.
    pub lease_preferences: Vec<Vec<Constraint>>,
    /// What failure the voters must survive. Default `Zone`.
    pub survival: Survival,
}

impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.required { '+' } else { '-' };
        write!(f, "{sign}{}={}", self.key, self.value)?;
        match self.count {
            Some(n) => write!(f, ":{n}"),
            None => Ok(()),
        }
    }
}

impl std::fmt::Display for Policy {
    /// `3 voters, survival zone[, 1 non-voter][, constraints …][, voter constraints …][, lease preferences …]`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |l: &[Constraint]| l.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ");
        let survival = match self.survival {
            Survival::Zone => "zone",
            Survival::Region => "region",
        };
        write!(f, "{} voters, survival {survival}", self.voters)?;
        if self.non_voters > 0 {
            write!(f, ", {} non-voters", self.non_voters)?;
        }
        if !self.constraints.is_empty() {
            write!(f, ", constraints {}", list(&self.constraints))?;
        }
        if !self.voter_constraints.is_empty() {
            write!(f, ", voter constraints {}", list(&self.voter_constraints))?;
        }
        if !self.lease_preferences.is_empty() {
            let prefs: Vec<String> =
                self.lease_preferences.iter().map(|p| format!("[{}]", list(p))).collect();
            write!(f, ", lease preferences {}", prefs.join(" then "))?;
        }
        Ok(())
    }
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            voters: 3,
            non_voters: 0,
            constraints: vec![],
            voter_constraints: vec![],
            lease_preferences: vec![],
            survival: Survival::Zone,
        }
    }
}

impl Policy {
    /// The `region` survival preset: 5 voters, at most 2 per region.
    pub fn region_survival() -> Self {
        Self { voters: 5, survival: Survival::Region, ..Self::default() }
    }

    /// Most voters one zone may hold.
    pub fn max_voters_per_zone(&self) -> usize {
        match self.survival {
            Survival::Zone => 1,
            Survival::Region => self.voters,
        }
    }

    /// Most voters one region may hold.
    pub fn max_voters_per_region(&self) -> usize {
        match self.survival {
            Survival::Zone => self.voters,
            Survival::Region => (self.voters - 1) / 2,
        }
    }

    /// Checks the policy on its own (not against nodes): counts that add up, no label both
    /// required and prohibited.
    pub fn validate(&self) -> Result<()> {
        let bad = |s: String| Err(Error::BadPolicy(s));
        if self.voters == 0 {
            return bad("voters must be at least 1".into());
        }
        if self.survival == Survival::Region && self.voters < 3 {
            return bad(format!(
                "survival region needs at least 3 voters (5 recommended), got {}",
                self.voters
            ));
        }
        let total = self.voters + self.non_voters;
        for (list, limit, what) in
            [(&self.constraints, total, "replicas"), (&self.voter_constraints, self.voters, "voters")]
        {
            let counted: usize = list.iter().filter(|c| c.required).filter_map(|c| c.count).sum();
            if counted > limit {
                return bad(format!("constraints ask for {counted} {what}, the policy has {limit}"));
            }
            for c in list.iter().filter(|c| c.required) {
                let clash = list
                    .iter()
                    .chain(&self.constraints)
                    .any(|p| !p.required && p.key == c.key && p.value == c.value);
                if clash {
                    return bad(format!("{}={} is both required and prohibited", c.key, c.value));
                }
            }
        }
        if self.lease_preferences.iter().flatten().any(|c| !c.required) {
            return bad("lease preferences list required labels only (+key=value)".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraints_parse_and_refuse_clearly() {
        let c: Constraint = "+region=eu-west:2".parse().unwrap();
        assert_eq!(
            (c.required, c.key.as_str(), c.value.as_str(), c.count),
            (true, "region", "eu-west", Some(2))
        );
        let c: Constraint = "-zone=a".parse().unwrap();
        assert_eq!((c.required, c.count), (false, None));
        for (bad, why) in [
            ("region=eu", "starts with"),
            ("+region=eu:x", "not a number"),
            ("-zone=a:1", "only a required"),
            ("+region=eu:0", "at least 1"),
            ("+region", "key=value"),
            ("+region=eu,zone=a", "exactly one"),
        ] {
            let err = bad.parse::<Constraint>().unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn policies_print_as_written() {
        let c = |s: &str| s.parse::<Constraint>().unwrap();
        let p = Policy {
            constraints: vec![c("+region=eu:2"), c("-zone=b")],
            lease_preferences: vec![vec![c("+zone=a")], vec![c("+zone=c")]],
            ..Policy::default()
        };
        assert_eq!(
            p.to_string(),
            "3 voters, survival zone, constraints +region=eu:2 -zone=b, lease preferences [+zone=a] then [+zone=c]"
        );
    }

    #[test]
    fn policies_with_contradictions_are_refused() {
        assert!(Policy::default().validate().is_ok());
        assert!(Policy::region_survival().validate().is_ok());
        assert_eq!(Policy::region_survival().max_voters_per_region(), 2);
        let c = |s: &str| s.parse::<Constraint>().unwrap();
        let cases = [
            (Policy { voters: 0, ..Policy::default() }, "at least 1"),
            (Policy { constraints: vec![c("+zone=a:2"), c("+zone=b:2")], ..Policy::default() }, "ask for 4"),
            (Policy { constraints: vec![c("+zone=a"), c("-zone=a")], ..Policy::default() }, "both"),
            (Policy { lease_preferences: vec![vec![c("-zone=a")]], ..Policy::default() }, "required labels"),
            (Policy { voters: 2, ..Policy::region_survival() }, "at least 3 voters"),
        ];
        for (p, why) in cases {
            let err = p.validate().unwrap_err().to_string();
            assert!(err.contains(why), "{p:?}: {err}");
        }
    }
}
