//! Node localities: ordered `key=value` tiers, most global first (`region=eu-west,zone=a`),
//! and how far apart two of them are.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// The tier that survival `zone` counts.
pub const ZONE: &str = "zone";
/// The tier that survival `region` counts.
pub const REGION: &str = "region";

/// One tier of a locality.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tier {
    /// Label key, e.g. `zone`.
    pub key: String,
    /// Label value, e.g. `eu-west-1a`.
    pub value: String,
}

/// Where a node runs: tiers from most global to most local. May be empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Locality {
    tiers: Vec<Tier>,
}

fn valid_label(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl FromStr for Locality {
    type Err = Error;

    /// Parses `key=value[,key=value...]`; the empty string is the empty locality.
    fn from_str(input: &str) -> Result<Self> {
        let bad = |reason: String| Error::BadLocality { input: input.to_string(), reason };
        let mut tiers: Vec<Tier> = Vec::new();
        for part in input.split(',').filter(|p| !input.is_empty() || !p.is_empty()) {
            let (key, value) =
                part.split_once('=').ok_or_else(|| bad(format!("tier {part:?} is not key=value")))?;
            let (key, value) = (key.trim(), value.trim());
            if !valid_label(key) || !valid_label(value) {
                return Err(bad(format!(
                    "tier {part:?}: keys and values are non-empty and use only letters, digits, '.', '_' and '-'"
                )));
            }
            if tiers.iter().any(|t| t.key == key) {
                return Err(bad(format!("key {key:?} appears twice")));
            }
            tiers.push(Tier { key: key.to_string(), value: value.to_string() });
        }
        Ok(Self { tiers })
    }
}

impl fmt::Display for Locality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.tiers.iter().map(|t| format!("{}={}", t.key, t.value)).collect();
        f.write_str(&parts.join(","))
    }
}

impl Locality {
    /// The tiers, most global first.
    pub fn tiers(&self) -> &[Tier] {
        &self.tiers
    }

    /// The value of tier `key`, if the locality has it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.tiers.iter().find(|t| t.key == key).map(|t| t.value.as_str())
    }

    /// Whether the locality has tier `key` with `value`.
    pub fn matches(&self, key: &str, value: &str) -> bool {
        self.get(key) == Some(value)
    }

    /// How far apart two localities are, from 0 (same place) to 1 (different at the first
    /// tier): at the first tier `i` that differs, `(n - i) / n`, `n` the longer tier count.
    pub fn diversity(&self, other: &Locality) -> f64 {
        let n = self.tiers.len().max(other.tiers.len());
        let i = (0..n).find(|&i| self.tiers.get(i) != other.tiers.get(i));
        i.map_or(0.0, |i| (n - i) as f64 / n as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(s: &str) -> Locality {
        s.parse().unwrap()
    }

    #[test]
    fn localities_parse_print_and_refuse_clearly() {
        let l = loc("region=eu-west,zone=eu-west-1a");
        assert_eq!((l.get(REGION), l.get(ZONE)), (Some("eu-west"), Some("eu-west-1a")));
        assert_eq!(l.to_string(), "region=eu-west,zone=eu-west-1a");
        assert_eq!(loc("").tiers().len(), 0);
        for (bad, why) in [
            ("region", "not key=value"),
            ("region=", "non-empty"),
            ("=x", "non-empty"),
            ("zone=a b", "letters"),
            ("zone=a,zone=b", "twice"),
            ("region=eu,", "not key=value"),
        ] {
            let err = bad.parse::<Locality>().unwrap_err().to_string();
            assert!(err.contains(why) && err.contains(bad), "{bad:?}: {err}");
        }
    }

    #[test]
    fn diversity_is_decided_by_the_first_differing_tier() {
        let a = loc("region=eu,zone=a");
        assert_eq!(a.diversity(&a), 0.0);
        assert_eq!(a.diversity(&loc("region=eu,zone=b")), 0.5);
        assert_eq!(a.diversity(&loc("region=us,zone=a")), 1.0);
        assert_eq!(a.diversity(&loc("region=eu")), 0.5);
        assert_eq!(loc("").diversity(&loc("")), 0.0);
    }
}
