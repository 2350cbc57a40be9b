//! Key ranges for scans.

use std::ops::Bound;

/// A range of keys with inclusive, exclusive or open bounds on either side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    /// Lower bound.
    pub start: Bound<Vec<u8>>,
    /// Upper bound.
    pub end: Bound<Vec<u8>>,
}

impl KeyRange {
    /// Every key.
    pub fn all() -> Self {
        Self { start: Bound::Unbounded, end: Bound::Unbounded }
    }

    /// The half-open range `[start, end)`.
    pub fn half_open(start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Self {
        Self { start: Bound::Included(start.into()), end: Bound::Excluded(end.into()) }
    }

    /// Every key that starts with `prefix`.
    pub fn prefix(prefix: &[u8]) -> Self {
        let end = match prefix_successor(prefix) {
            Some(e) => Bound::Excluded(e),
            None => Bound::Unbounded,
        };
        Self { start: Bound::Included(prefix.to_vec()), end }
    }

    /// True if `key` lies inside the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        let above = match &self.start {
            Bound::Included(s) => key >= s.as_slice(),
            Bound::Excluded(s) => key > s.as_slice(),
            Bound::Unbounded => true,
        };
        let below = match &self.end {
            Bound::Included(e) => key <= e.as_slice(),
            Bound::Excluded(e) => key < e.as_slice(),
            Bound::Unbounded => true,
        };
        above && below
    }

    /// The same range as `[lower, upper)`: an inclusive lower bound and an exclusive upper
    /// bound, `None` meaning unbounded. This is the form LSM iterators take.
    pub fn to_half_open(&self) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        let lower = match &self.start {
            Bound::Included(s) => Some(s.clone()),
            Bound::Excluded(s) => Some(key_successor(s)),
            Bound::Unbounded => None,
        };
        let upper = match &self.end {
            Bound::Included(e) => Some(key_successor(e)),
            Bound::Excluded(e) => Some(e.clone()),
            Bound::Unbounded => None,
        };
        (lower, upper)
    }

    /// True if no key can lie in the range.
    pub fn is_empty(&self) -> bool {
        match self.to_half_open() {
            (Some(l), Some(u)) => l >= u,
            _ => false,
        }
    }
}

/// The smallest key greater than `key`: `key ++ 0x00`.
pub fn key_successor(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.extend_from_slice(key);
    k.push(0);
    k
}

/// The smallest key greater than every key with this prefix, or `None` if the prefix is all
/// `0xff` (then no such key exists).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut p = prefix.to_vec();
    while let Some(last) = p.pop() {
        if last != 0xff {
            p.push(last + 1);
            return Some(p);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_open_conversion_handles_every_bound_kind() {
        let r = KeyRange { start: Bound::Excluded(b"a".to_vec()), end: Bound::Included(b"c".to_vec()) };
        assert_eq!(r.to_half_open(), (Some(b"a\0".to_vec()), Some(b"c\0".to_vec())));
        assert!(!r.contains(b"a"));
        assert!(r.contains(b"a\0"));
        assert!(r.contains(b"c"));
        assert!(!r.contains(b"c\0"));
    }

    #[test]
    fn prefix_range_stops_before_the_next_prefix() {
        let r = KeyRange::prefix(&[1, 0xff]);
        assert_eq!(r.end, Bound::Excluded(vec![2]));
        assert!(r.contains(&[1, 0xff, 7]));
        assert!(!r.contains(&[2]));
        assert_eq!(KeyRange::prefix(&[0xff]).end, Bound::Unbounded);
    }
}
