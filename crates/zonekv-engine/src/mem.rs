//! An in-memory engine: the reference implementation of the engine traits, used by most tests.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, RwLock};

use crate::{Cf, Engine, KeyRange, KvIter, Reader, Result, WriteBatch, WriteOp};

type Maps = [BTreeMap<Vec<u8>, Vec<u8>>; 3];

/// An engine that keeps everything in ordered in-memory maps.
///
/// Nothing survives the process; `sync` is a no-op. Snapshots share the maps copy-on-write, so
/// taking one is O(1) and the first write after it copies the data once.
#[derive(Clone, Default)]
pub struct MemEngine {
    maps: Arc<RwLock<Arc<Maps>>>,
}

/// A point-in-time view of a [`MemEngine`].
pub struct MemSnapshot {
    maps: Arc<Maps>,
}

impl MemEngine {
    /// An empty engine.
    pub fn new() -> Self {
        Self::default()
    }

    fn current(&self) -> Arc<Maps> {
        self.maps.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl std::fmt::Debug for MemEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemEngine").finish_non_exhaustive()
    }
}

fn get(maps: &Maps, cf: Cf, key: &[u8]) -> Option<Vec<u8>> {
    maps[cf.index()].get(key).cloned()
}

fn scan(maps: &Maps, cf: Cf, range: &KeyRange, reverse: bool) -> KvIter<'static> {
    if range.is_empty() {
        return Box::new(std::iter::empty());
    }
    let bounds = (as_slice(&range.start), as_slice(&range.end));
    let iter = maps[cf.index()].range::<[u8], _>(bounds).map(|(k, v)| Ok((k.clone(), v.clone())));
    let items: Vec<_> = if reverse { iter.rev().collect() } else { iter.collect() };
    Box::new(items.into_iter())
}

fn as_slice(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(k.as_slice()),
        Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl Reader for MemEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(get(&self.current(), cf, key))
    }

    fn scan(&self, cf: Cf, range: &KeyRange, reverse: bool) -> Result<KvIter<'_>> {
        Ok(scan(&self.current(), cf, range, reverse))
    }
}

impl Reader for MemSnapshot {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(get(&self.maps, cf, key))
    }

    fn scan(&self, cf: Cf, range: &KeyRange, reverse: bool) -> Result<KvIter<'_>> {
        Ok(scan(&self.maps, cf, range, reverse))
    }
}

impl Engine for MemEngine {
    type Snapshot<'a> = MemSnapshot;

    fn approximate_size(&self, cf: Cf, range: &KeyRange) -> Result<u64> {
        let sizes = self.scan(cf, range, false)?.map(|p| p.map(|(k, v)| (k.len() + v.len()) as u64));
        sizes.sum()
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn write(&self, batch: &WriteBatch, _sync: bool) -> Result<()> {
        let mut guard = self.maps.write().unwrap_or_else(|p| p.into_inner());
        let maps = Arc::make_mut(&mut guard);
        for op in batch.ops() {
            match op {
                WriteOp::Put { cf, key, value } => {
                    maps[cf.index()].insert(key.clone(), value.clone());
                }
                WriteOp::Delete { cf, key } => {
                    maps[cf.index()].remove(key);
                }
                WriteOp::DeleteRange { cf, start, end } => {
                    let map = &mut maps[cf.index()];
                    let doomed: Vec<Vec<u8>> = map
                        .range::<[u8], _>((Bound::Included(&start[..]), Bound::Excluded(&end[..])))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in doomed {
                        map.remove(&k);
                    }
                }
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn snapshot(&self) -> MemSnapshot {
        MemSnapshot { maps: self.current() }
    }
}

#[cfg(test)]
mod conformance {
    use super::MemEngine;

    crate::engine_conformance_tests!(|| (MemEngine::new(), ()));
}
