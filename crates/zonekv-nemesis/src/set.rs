//! The append-only set workload's check: every acknowledged add is present exactly once at
//! the end, nothing appears twice, and nothing that definitely failed appears at all.
//!
//! A set lives in one key as a list of big-endian `u64` elements; an add reads the list and
//! compare-and-swaps it for the list plus the new element, retrying on a lost race.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// How an add ended, as the client knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AddStatus {
    /// Acknowledged: the element must be in the set.
    Ok,
    /// Definitely not applied: the element must not be in the set.
    Fail,
    /// Unknown: the element may be in the set, at most once.
    Unknown,
}

/// What the final read of the sets showed against the adds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetReport {
    /// Acknowledged adds.
    pub acknowledged: usize,
    /// Acknowledged adds missing from the final sets: lost acknowledged writes.
    pub lost: Vec<u64>,
    /// Elements present more than once.
    pub duplicated: Vec<u64>,
    /// Elements present although their add definitely failed, or never attempted.
    pub unexpected: Vec<u64>,
    /// Adds with unknown outcome that did land.
    pub unknown_present: usize,
}

impl SetReport {
    /// True when nothing is wrong.
    pub fn valid(&self) -> bool {
        self.lost.is_empty() && self.duplicated.is_empty() && self.unexpected.is_empty()
    }
}

/// Encodes a set's elements as stored.
pub fn encode(elements: &[u64]) -> bytes::Bytes {
    elements.iter().flat_map(|e| e.to_be_bytes()).collect::<Vec<u8>>().into()
}

/// Decodes a stored set.
pub fn decode(b: &[u8]) -> Result<Vec<u64>, String> {
    if !b.len().is_multiple_of(8) {
        return Err(format!("a set holds {} bytes, not a multiple of 8", b.len()));
    }
    Ok(b.chunks_exact(8).map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes"))).collect())
}

/// Compares the adds (element → outcome) with the elements of every set read at the end.
pub fn check(adds: &BTreeMap<u64, AddStatus>, final_sets: &[Vec<u64>]) -> SetReport {
    let mut count: BTreeMap<u64, usize> = BTreeMap::new();
    for e in final_sets.iter().flatten() {
        *count.entry(*e).or_default() += 1;
    }
    let present: BTreeSet<u64> = count.keys().copied().collect();
    let mut r = SetReport::default();
    for (&e, &status) in adds {
        match status {
            AddStatus::Ok => {
                r.acknowledged += 1;
                if !present.contains(&e) {
                    r.lost.push(e);
                }
            }
            AddStatus::Fail if present.contains(&e) => r.unexpected.push(e),
            AddStatus::Unknown if present.contains(&e) => r.unknown_present += 1,
            _ => {}
        }
    }
    r.duplicated = count.iter().filter(|(_, n)| **n > 1).map(|(e, _)| *e).collect();
    r.unexpected.extend(present.iter().filter(|e| !adds.contains_key(e)));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_duplicated_and_unexpected_elements_are_reported() {
        let adds = BTreeMap::from([
            (1, AddStatus::Ok),
            (2, AddStatus::Ok),
            (3, AddStatus::Fail),
            (4, AddStatus::Unknown),
            (5, AddStatus::Unknown),
        ]);
        let good = check(&adds, &[vec![1, 4], vec![2]]);
        assert!(good.valid(), "{good:?}");
        assert_eq!((good.acknowledged, good.unknown_present), (2, 1));

        let bad = check(&adds, &[vec![1, 3, 4], vec![4, 9]]);
        assert!(!bad.valid());
        assert_eq!(bad.lost, vec![2]);
        assert_eq!(bad.duplicated, vec![4]);
        assert_eq!(bad.unexpected, vec![3, 9]);
    }

    #[test]
    fn sets_round_trip_and_malformed_values_are_refused() {
        let s = vec![1, u64::MAX, 42];
        assert_eq!(decode(&encode(&s)).unwrap(), s);
        assert!(decode(&[1, 2, 3]).unwrap_err().contains("multiple of 8"));
    }
}
