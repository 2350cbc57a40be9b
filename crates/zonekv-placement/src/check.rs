//! Whether the live nodes can satisfy a policy, and if not, the shortfall in words: a policy
//! is checked when it is set, and refused rather than left unmet (docs/placement.md).

use std::collections::{BTreeMap, BTreeSet};

use crate::cluster::{Cluster, Node, NodeState};
use crate::policy::{Constraint, Policy, Survival};
use crate::{Error, Result};

impl Policy {
    /// Checks the policy against the live nodes of `cluster`: enough nodes, zones and regions
    /// for its survival goal, enough matching nodes for every required label, and only label
    /// keys some node has.
    pub fn check(&self, cluster: &Cluster) -> Result<()> {
        self.validate()?;
        let live: Vec<&Node> = cluster.nodes().filter(|n| n.state == NodeState::Live).collect();
        let short = |s: String| Err(Error::Unsatisfiable(s));
        let known: BTreeSet<&str> =
            cluster.nodes().flat_map(|n| n.locality.tiers().iter().map(|t| t.key.as_str())).collect();
        let all = self
            .constraints
            .iter()
            .chain(&self.voter_constraints)
            .chain(self.lease_preferences.iter().flatten());
        for c in all {
            if !known.contains(c.key.as_str()) {
                return Err(Error::BadPolicy(format!(
                    "no node has the label key {:?} (keys in use: {})",
                    c.key,
                    known.iter().copied().collect::<Vec<_>>().join(", ")
                )));
            }
        }
        let allowed = |n: &&Node, list: &[Constraint]| !list.iter().any(|c| c.excludes(&n.locality));
        let usable: Vec<&Node> = live.iter().copied().filter(|n| allowed(n, &self.constraints)).collect();
        let total = self.voters + self.non_voters;
        if usable.len() < total {
            return short(format!(
                "{total} replicas need {total} live nodes the constraints allow; there are {}",
                usable.len()
            ));
        }
        for (list, pool) in [(&self.constraints, &live), (&self.voter_constraints, &usable)] {
            for c in list.iter().filter(|c| c.required) {
                let want = c.count.unwrap_or(if std::ptr::eq(list, &self.constraints) {
                    total
                } else {
                    self.voters
                });
                let have = pool.iter().filter(|n| c.matches(&n.locality)).count();
                if have < want {
                    return short(format!(
                        "+{}={} needs {want} live nodes with that label; there are {have}",
                        c.key, c.value
                    ));
                }
            }
        }
        let voter_pool: Vec<&Node> =
            usable.iter().copied().filter(|n| allowed(n, &self.voter_constraints)).collect();
        let mut zones: BTreeMap<String, usize> = BTreeMap::new();
        let mut regions: BTreeMap<String, usize> = BTreeMap::new();
        for n in &voter_pool {
            *zones.entry(n.zone()).or_default() += 1;
            *regions.entry(n.region()).or_default() += 1;
        }
        match self.survival {
            Survival::Zone if zones.len() < self.voters => short(format!(
                "survival zone puts each of {} voters in its own zone; the live nodes span {} zone(s): {}",
                self.voters,
                zones.len(),
                zones.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
            Survival::Region => {
                let per = self.max_voters_per_region();
                let room: usize = regions.values().map(|&n| n.min(per)).sum();
                if room < self.voters {
                    short(format!(
                        "survival region puts at most {per} of {} voters in one region; the live nodes' {} region(s) ({}) hold {room}",
                        self.voters,
                        regions.len(),
                        regions.keys().cloned().collect::<Vec<_>>().join(", ")
                    ))
                } else {
                    Ok(())
                }
            }
            Survival::Zone => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Locality, Node};

    fn cluster(localities: &[&str]) -> Cluster {
        let mut c = Cluster::default();
        for (i, l) in localities.iter().enumerate() {
            c.add_node(Node::new(i as u64 + 1, l.parse::<Locality>().unwrap())).unwrap();
        }
        c
    }

    #[test]
    fn a_policy_the_nodes_cannot_meet_is_refused_naming_the_shortfall() {
        let c = |s: &str| s.parse::<Constraint>().unwrap();
        let two_zones = cluster(&["region=eu,zone=a", "region=eu,zone=b", "region=eu,zone=b"]);
        let err = Policy::default().check(&two_zones).unwrap_err().to_string();
        assert!(err.contains("3 voters") && err.contains("2 zone(s): a, b"), "{err}");

        // Regions eu, us, ap of three zones each; `six` is the first two.
        let spread: Vec<String> =
            (0..9).map(|i| format!("region={},zone=z{i}", ["eu", "us", "ap"][i / 3])).collect();
        let spread: Vec<&str> = spread.iter().map(String::as_str).collect();
        let (nine, six) = (cluster(&spread), cluster(&spread[..6]));
        assert_eq!(Policy::default().check(&nine), Ok(()));
        assert_eq!(Policy::region_survival().check(&nine), Ok(()));
        let err = Policy::region_survival().check(&six).unwrap_err().to_string();
        assert!(err.contains("at most 2 of 5") && err.contains("hold 4"), "{err}");

        let cases = [
            (
                Policy {
                    constraints: vec![c("+region=eu:2"), c("+region=us:2")],
                    voters: 5,
                    ..Policy::default()
                },
                Ok(()),
            ),
            (
                Policy { constraints: vec![c("+region=eu:4")], voters: 5, ..Policy::default() },
                Err("needs 4 live nodes"),
            ),
            (Policy { constraints: vec![c("-region=eu"), c("-region=us")], ..Policy::default() }, Ok(())),
            (
                Policy {
                    constraints: vec![c("-region=eu"), c("-region=us"), c("-region=ap")],
                    ..Policy::default()
                },
                Err("constraints allow; there are 0"),
            ),
            (Policy { constraints: vec![c("+rack=r1")], ..Policy::default() }, Err("label key \"rack\"")),
            (
                Policy { lease_preferences: vec![vec![c("+dc=x")]], ..Policy::default() },
                Err("label key \"dc\""),
            ),
        ];
        for (p, want) in cases {
            match (p.check(&nine), want) {
                (Ok(()), Ok(())) => {}
                (Err(e), Err(why)) => assert!(e.to_string().contains(why), "{p:?}: {e}"),
                (got, want) => panic!("{p:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn dead_nodes_do_not_count() {
        let mut c = cluster(&["zone=a", "zone=b", "zone=c"]);
        assert_eq!(Policy::default().check(&c), Ok(()));
        c.node_mut(3).unwrap().state = NodeState::Down { since: 0 };
        assert!(Policy::default().check(&c).is_err());
    }
}
