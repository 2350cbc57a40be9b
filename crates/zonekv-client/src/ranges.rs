//! The client's view of the ranges: which range holds a key, its replicas' addresses and its
//! leader. Filled by `LookupRange` and corrected by the server's answers: "not leader" names the
//! leader, "range key mismatch" drops the entry so the next attempt looks the range up again.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;

/// Where a request's keys start: what the client looks ranges up by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RouteKey {
    /// The range holding this key.
    At(Bytes),
    /// The range holding the keys just below this (non-empty) key: a reverse scan's first.
    Before(Bytes),
    /// The last range.
    Last,
}

impl RouteKey {
    /// The `LookupRange` request for this key.
    pub(crate) fn lookup(&self) -> (Bytes, bool) {
        match self {
            RouteKey::At(k) => (k.clone(), false),
            RouteKey::Before(k) => (k.clone(), true),
            RouteKey::Last => (Bytes::new(), true),
        }
    }
}

/// One range as the client knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CachedRange {
    pub(crate) start: Bytes,
    /// `None`: the end of the keyspace.
    pub(crate) end: Option<Bytes>,
    pub(crate) leader: Option<String>,
    pub(crate) replicas: Vec<String>,
}

impl CachedRange {
    fn serves(&self, key: &RouteKey) -> bool {
        match key {
            RouteKey::At(k) => k[..] >= self.start[..] && self.end.as_ref().is_none_or(|e| k[..] < e[..]),
            RouteKey::Before(k) => k[..] > self.start[..] && self.end.as_ref().is_none_or(|e| k[..] <= e[..]),
            RouteKey::Last => self.end.is_none(),
        }
    }
}

/// Ranges by start key; entries never overlap.
#[derive(Debug, Default)]
pub(crate) struct RangeCache {
    by_start: BTreeMap<Bytes, CachedRange>,
}

impl RangeCache {
    /// The cached range serving `key`, if any.
    pub(crate) fn get(&self, key: &RouteKey) -> Option<&CachedRange> {
        let candidate = match key {
            RouteKey::At(k) => self.by_start.range(..=k.clone()).next_back(),
            RouteKey::Before(k) => self.by_start.range(..k.clone()).next_back(),
            RouteKey::Last => self.by_start.iter().next_back(),
        };
        candidate.map(|(_, r)| r).filter(|r| r.serves(key))
    }

    fn get_mut(&mut self, start: &Bytes) -> Option<&mut CachedRange> {
        self.by_start.get_mut(start)
    }

    /// Records a range, dropping the entries it overlaps (they are older or newer shapes of
    /// the same keys; the next mismatch corrects either way).
    pub(crate) fn insert(&mut self, range: CachedRange) {
        let end = range.end.clone();
        let overlapping: Vec<Bytes> = self
            .by_start
            .range((Bound::Unbounded, end.map_or(Bound::Unbounded, Bound::Excluded)))
            .rev()
            .take_while(|(_, r)| r.end.as_ref().is_none_or(|e| e[..] > range.start[..]))
            .map(|(s, _)| s.clone())
            .collect();
        for s in overlapping {
            self.by_start.remove(&s);
        }
        self.by_start.insert(range.start.clone(), range);
    }

    /// Forgets the range starting at `start`.
    pub(crate) fn remove(&mut self, start: &Bytes) {
        self.by_start.remove(start);
    }

    /// Records the leader of the range starting at `start`.
    pub(crate) fn set_leader(&mut self, start: &Bytes, addr: &str) {
        if let Some(r) = self.get_mut(start)
            && r.leader.as_deref() != Some(addr)
        {
            r.leader = Some(addr.to_string());
        }
    }

    /// Forgets the leader of the range starting at `start` if it is `addr`.
    pub(crate) fn clear_leader(&mut self, start: &Bytes, addr: &str) {
        if let Some(r) = self.get_mut(start)
            && r.leader.as_deref() == Some(addr)
        {
            r.leader = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: &str, end: Option<&str>) -> CachedRange {
        CachedRange {
            start: Bytes::copy_from_slice(start.as_bytes()),
            end: end.map(|e| Bytes::copy_from_slice(e.as_bytes())),
            leader: None,
            replicas: vec![],
        }
    }

    fn at(k: &str) -> RouteKey {
        RouteKey::At(Bytes::copy_from_slice(k.as_bytes()))
    }

    #[test]
    fn keys_find_their_range_and_gaps_find_none() {
        let mut c = RangeCache::default();
        c.insert(range("", Some("g")));
        c.insert(range("m", None));
        assert_eq!(c.get(&at("a")).unwrap().start, "");
        assert_eq!(c.get(&at("f")).unwrap().start, "");
        assert!(c.get(&at("g")).is_none(), "[g, m) is not cached");
        assert_eq!(c.get(&at("m")).unwrap().start, "m");
        assert_eq!(c.get(&at("zz")).unwrap().start, "m");
        assert_eq!(c.get(&RouteKey::Before(Bytes::from_static(b"g"))).unwrap().start, "");
        assert!(c.get(&RouteKey::Before(Bytes::from_static(b"m"))).is_none());
        assert_eq!(c.get(&RouteKey::Last).unwrap().start, "m");
    }

    #[test]
    fn a_new_shape_replaces_the_entries_it_overlaps() {
        let mut c = RangeCache::default();
        c.insert(range("", Some("g")));
        c.insert(range("g", Some("m")));
        c.insert(range("m", None));
        // A merge-like view (or a stale lookup answer): [c, p) replaces all three it touches.
        c.insert(range("c", Some("p")));
        assert!(c.get(&at("a")).is_none());
        assert_eq!(c.get(&at("h")).unwrap().start, "c");
        assert!(c.get(&at("q")).is_none());
        // A split's halves replace the parent.
        c.insert(range("c", Some("h")));
        assert_eq!(c.get(&at("d")).unwrap().end.as_deref(), Some(&b"h"[..]));
        assert!(c.get(&at("i")).is_none(), "the old [c, p) entry went with the insert");
    }
}
