//! The replicas a store runs, by range id and by start key. A range's start never changes (a
//! split keeps the left half's start; there are no merges), so the start-key index only
//! grows with the ranges started here.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::RwLock;

use zonekv_engine::Engine;
use zonekv_raft::{RangeDescriptor, RangeId};

use crate::Replica;

pub(crate) struct Replicas<E: Engine> {
    map: RwLock<Maps<E>>,
}

struct Maps<E: Engine> {
    by_id: BTreeMap<RangeId, Replica<E>>,
    by_start: BTreeMap<bytes::Bytes, RangeId>,
}

impl<E: Engine> Default for Replicas<E> {
    fn default() -> Self {
        Self { map: RwLock::new(Maps { by_id: BTreeMap::new(), by_start: BTreeMap::new() }) }
    }
}

impl<E: Engine> Replicas<E> {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Maps<E>> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Maps<E>> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn insert(&self, r: Replica<E>) {
        let start = r.with_descriptor(|d| d.start.clone());
        let mut maps = self.write();
        maps.by_start.insert(start, r.range_id());
        maps.by_id.insert(r.range_id(), r);
    }

    /// Forgets the replica of `range`; returns it.
    pub(crate) fn remove(&self, range: RangeId) -> Option<Replica<E>> {
        let mut maps = self.write();
        let r = maps.by_id.remove(&range)?;
        let start = r.with_descriptor(|d| d.start.clone());
        if maps.by_start.get(&start) == Some(&range) {
            maps.by_start.remove(&start);
        }
        Some(r)
    }

    pub(crate) fn get(&self, range: RangeId) -> Option<Replica<E>> {
        self.read().by_id.get(&range).cloned()
    }

    pub(crate) fn all(&self) -> Vec<Replica<E>> {
        self.read().by_id.values().cloned().collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.read().by_id.len()
    }

    /// The replica of the range that holds user key `key`: the range with the greatest start
    /// at or below `key`, if its span (as of its last apply) reaches `key`.
    pub(crate) fn for_key(&self, key: &[u8]) -> Option<Replica<E>> {
        let maps = self.read();
        let found = maps.by_start.range::<[u8], _>((Bound::Unbounded, Bound::Included(key))).next_back();
        found
            .and_then(|(_, id)| maps.by_id.get(id))
            .filter(|r| r.with_descriptor(|d| d.contains(key)))
            .cloned()
    }

    /// The replica whose descriptor satisfies `pred` (a pass over every range).
    pub(crate) fn find(&self, pred: impl Fn(&RangeDescriptor) -> bool) -> Option<Replica<E>> {
        self.read().by_id.values().find(|r| r.with_descriptor(&pred)).cloned()
    }
}
