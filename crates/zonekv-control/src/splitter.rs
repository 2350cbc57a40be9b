//! Automatic splits (docs/multiraft.md, "Split", step 1): every `split.check-interval-ms`, the
//! node looks at each range it leads that applied something since its last look, and splits it
//! in the middle once it holds more than `split.range-max-keys` keys or more than
//! `split.range-max-bytes` bytes (the engine's estimate).

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use openraft::ServerState;
use zonekv_engine::{Cf, Engine, KeyRange, KvPair};
use zonekv_raft::{RangeDescriptor, RangeId, keys};
use zonekv_store::Store;

use crate::{SplitConfig, Splits};

/// Keys a split check by count reads at most: a range far beyond the threshold still splits,
/// in the middle of its first million keys.
const MAX_COUNTED: usize = 1 << 20;

/// The automatic split loop: the ranges it looks at and how it splits them.
pub(crate) struct Splitter<E: Engine> {
    pub(crate) store: Store<E>,
    pub(crate) splits: Splits<E>,
    pub(crate) config: SplitConfig,
}

impl<E: Engine> Splitter<E> {
    /// Runs until the store stops.
    pub(crate) async fn run(self) {
        let interval = Duration::from_millis(self.config.check_interval_ms);
        // Range → the applied index at its last check: ranges that took no writes are skipped.
        let mut checked: HashMap<RangeId, u64> = HashMap::new();
        while self.store.tick(interval).await {
            for range in self.store.replicas() {
                let (state, applied) =
                    range.with_metrics(|m| (m.state, m.last_applied.map_or(0, |id| id.index)));
                let id = range.range_id();
                if state != ServerState::Leader || checked.get(&id) == Some(&applied) {
                    continue;
                }
                checked.insert(id, applied);
                let (engine, desc, cfg) = (range.engine().clone(), range.descriptor(), self.config.clone());
                let found = tokio::task::spawn_blocking(move || split_key(&engine, &desc, &cfg)).await;
                let key = match found {
                    Ok(Ok(Some(key))) => key,
                    Ok(Ok(None)) => continue,
                    Ok(Err(e)) => {
                        tracing::warn!(range = %id, error = %e, "split check failed");
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(range = %id, error = %e, "split check panicked");
                        continue;
                    }
                };
                if self.store.is_stopping() {
                    return;
                }
                if let Err(e) = self.splits.split(key.clone()).await {
                    // Leadership moved, the range changed meanwhile, or the meta range is
                    // unreachable: the next check tries again if the range is still too big.
                    tracing::info!(range = %id, key = ?key, error = %e, "automatic split did not happen");
                    checked.remove(&id);
                }
            }
        }
    }
}

/// Where to split `desc`, if it is over a threshold: the middle key by count, or by bytes.
pub fn split_key<E: Engine>(
    engine: &E,
    desc: &RangeDescriptor,
    cfg: &SplitConfig,
) -> zonekv_store::Result<Option<Bytes>> {
    let span = desc.data_spans().pop().expect("a range owns a span of user keys");
    let middle =
        if cfg.range_max_keys > 0 { middle_by_count(engine, &span, cfg.range_max_keys)? } else { None };
    let middle = match middle {
        Some(k) => Some(k),
        None if cfg.range_max_bytes > 0
            && engine.approximate_size(Cf::Data, &span)? > cfg.range_max_bytes =>
        {
            middle_by_bytes(engine, &span)?
        }
        None => None,
    };
    Ok(middle.and_then(|k| keys::user_key(&k).map(Bytes::copy_from_slice)).filter(|k| desc.can_split_at(k)))
}

/// The middle key of `span` if it holds more than `max` keys. Counts them all (up to a
/// million), so a range far past the threshold (writes outran the checks) splits in half, not
/// at the threshold's middle.
fn middle_by_count<E: Engine>(
    engine: &E,
    span: &KeyRange,
    max: u64,
) -> zonekv_store::Result<Option<Vec<u8>>> {
    let count = fold_pairs(engine, span, MAX_COUNTED, |_| 1)?;
    if count <= max {
        return Ok(None);
    }
    let middle = count / 2;
    let mut seen = 0;
    first_key_where(engine, span, MAX_COUNTED, |_| {
        seen += 1;
        seen > middle
    })
}

/// The first key past half of the bytes in `span` (keys and values as stored), never its
/// first key.
fn middle_by_bytes<E: Engine>(engine: &E, span: &KeyRange) -> zonekv_store::Result<Option<Vec<u8>>> {
    let size = |pair: &KvPair| (pair.0.len() + pair.1.len()) as u64;
    let total = fold_pairs(engine, span, usize::MAX, size)?;
    let (mut seen, mut first) = (0, true);
    first_key_where(engine, span, usize::MAX, |pair| {
        seen += size(pair);
        let past = !first && seen * 2 >= total;
        first = false;
        past
    })
}

/// The sum of `weight` over the first `limit` pairs of `span`.
fn fold_pairs<E: Engine>(
    engine: &E,
    span: &KeyRange,
    limit: usize,
    weight: impl Fn(&KvPair) -> u64,
) -> zonekv_store::Result<u64> {
    let mut total = 0;
    for pair in engine.scan(Cf::Data, span, false)?.take(limit) {
        total += weight(&pair?);
    }
    Ok(total)
}

/// The key of the first pair among the first `limit` of `span` for which `reached` (called on
/// each pair in order) is true.
fn first_key_where<E: Engine>(
    engine: &E,
    span: &KeyRange,
    limit: usize,
    mut reached: impl FnMut(&KvPair) -> bool,
) -> zonekv_store::Result<Option<Vec<u8>>> {
    for pair in engine.scan(Cf::Data, span, false)?.take(limit) {
        let pair = pair?;
        if reached(&pair) {
            return Ok(Some(pair.0));
        }
    }
    Ok(None)
}
