//! Snapshots of a group: its range descriptor and key spans exported from a consistent engine
//! snapshot.
//!
//! The state machine is persistent, so a snapshot is never needed to rebuild it locally; it is
//! only what a lagging or new replica receives. A snapshot is therefore built on demand from a
//! consistent engine snapshot (data and applied state read at the same instant) and not stored:
//! there is no second copy of the data on disk and no snapshot file to keep in sync.

use std::io;

use openraft::RaftSnapshotBuilder;
use openraft::type_config::alias::SnapshotOf;
use std::ops::Bound;

use zonekv_engine::{Cf, Engine, KeyRange, Reader, WriteBatch, export};

use crate::codec::{AppliedState, decode_descriptor, encode_applied};
use crate::keys::{MetaKey, meta_key};
use crate::range::{RangeDescriptor, spans_owned_by_no_other};
use crate::stored::{read_applied, read_descriptor, stored_descriptors};
use crate::{Error, RangeId, Result, SnapshotData, SnapshotMeta, TypeConfig};

/// Builds snapshots of one group.
pub struct SnapshotBuilder<E: Engine> {
    engine: E,
    group: RangeId,
    meta_only: bool,
}

/// The `raft-meta` span holding exactly the descriptor record of `group`.
fn descriptor_span(group: RangeId) -> KeyRange {
    let key = meta_key(group, MetaKey::Descriptor).to_vec();
    KeyRange { start: Bound::Included(key.clone()), end: Bound::Included(key) }
}

/// What a snapshot of a range exports: its descriptor record, then every data span it owns.
fn export_spans(group: RangeId, desc: &RangeDescriptor) -> Vec<(Cf, KeyRange)> {
    let mut spans = vec![(Cf::RaftMeta, descriptor_span(group))];
    spans.extend(desc.data_spans().into_iter().map(|s| (Cf::Data, s)));
    spans
}

impl<E: Engine> SnapshotBuilder<E> {
    /// A builder of whole snapshots: meta and data.
    pub(crate) fn new(engine: E, group: RangeId) -> Self {
        Self { engine, group, meta_only: false }
    }

    /// A builder for openraft's policy snapshots (`SnapshotPolicy`, `force = false`). Such a
    /// build only tells openraft how far the log may be purged: openraft keeps the meta and
    /// drops the data (`core/sm/worker.rs`, `BuildSnapshotDone(meta)`, in the pinned version).
    /// The data a follower receives is always built afresh by `get_current_snapshot`, so this
    /// builder reads the applied state and returns an empty stream, which is not a valid export
    /// (no footer): were it ever installed, the install would fail as `Corruption` rather than
    /// wipe the span. Exporting the whole span here cost two full scans and a range-sized buffer
    /// per node every `snapshot-after-entries` entries, for nothing.
    pub(crate) fn meta_only(engine: E, group: RangeId) -> Self {
        Self { engine, group, meta_only: true }
    }

    /// Exports the group's descriptor, spans and applied state from one consistent engine
    /// snapshot.
    pub fn build(&self) -> Result<SnapshotOf<TypeConfig, SnapshotData>> {
        let snap = self.engine.snapshot();
        let applied = read_applied(&snap, self.group)?;
        if self.meta_only {
            let meta =
                SnapshotMeta { last_log_id: applied.last_applied, last_membership: applied.membership };
            return Ok(openraft::Snapshot { meta, snapshot: Vec::new() });
        }
        let desc = read_descriptor(&snap, self.group)?.ok_or_else(|| Error::Corruption {
            group: self.group,
            what: "no range descriptor to build a snapshot from".into(),
        })?;
        let spans = export_spans(self.group, &desc);
        // A damaged value must not travel: the stream's own checksums would cover the damage.
        for (_, span) in spans.iter().filter(|(cf, _)| *cf == Cf::Data) {
            for pair in snap.scan(Cf::Data, span, false)? {
                let (k, v) = pair?;
                check_value(self.group, &k, &v)?;
            }
        }
        let mut data = Vec::new();
        let stats = export::export(&snap, &spans, &mut data)?;
        tracing::debug!(group = %self.group, records = stats.records, bytes = stats.bytes, "built snapshot");
        let meta = SnapshotMeta { last_log_id: applied.last_applied, last_membership: applied.membership };
        Ok(openraft::Snapshot { meta, snapshot: data })
    }

    /// [`Self::build`] on a blocking-task thread: an export reads the whole span, and doing that
    /// on a runtime worker would stall every task queued behind it.
    pub async fn build_off_runtime(&self) -> Result<SnapshotOf<TypeConfig, SnapshotData>> {
        let builder = Self { engine: self.engine.clone(), ..*self };
        let group = self.group;
        tokio::task::spawn_blocking(move || builder.build()).await.map_err(|e| {
            Error::Engine(zonekv_engine::Error::Io(io::Error::other(format!(
                "group {group}: the snapshot build task failed: {e}"
            ))))
        })?
    }
}

impl<E: Engine> RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder<E> {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> io::Result<SnapshotOf<TypeConfig, SnapshotData>> {
        let built = if self.meta_only { self.build() } else { self.build_off_runtime().await };
        built.map_err(|e| {
            tracing::error!(group = %self.group, error = %e, "building a snapshot failed");
            e.into()
        })
    }
}

/// Fails with [`Error::Corruption`] if a stored value's checksum does not match.
fn check_value(group: RangeId, key: &[u8], stored: &[u8]) -> Result<()> {
    crate::value::decode(stored).map(drop).map_err(|why| Error::Corruption {
        group,
        what: format!("value of data key {key:?} in a snapshot: {why}"),
    })
}

/// Serializes snapshot installs (see `install`). Process-wide: installs are rare.
static INSTALLS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Replaces the group's spans with the snapshot's contents and sets its descriptor and applied
/// state, in one synced write. The spans are those of the descriptor in the snapshot (the
/// range as of the snapshot, which a split may have made smaller than this replica knew it:
/// the part of `old`, the descriptor this replica had, that the snapshot no longer covers is
/// deleted too, unless another range stored on this node owns it). The whole stream is
/// verified before anything is written. Returns the installed descriptor.
pub(crate) fn install<E: Engine>(
    engine: &E,
    group: RangeId,
    old: &RangeDescriptor,
    applied: &AppliedState,
    data: &[u8],
) -> Result<RangeDescriptor> {
    let corrupt = |what: String| Error::Corruption { group, what };
    let mut records = Vec::new();
    let mut input = data;
    // Any data key and this group's descriptor may appear; data keys are checked against the
    // descriptor's spans once it is known (it comes first).
    let allowed = [(Cf::RaftMeta, descriptor_span(group)), (Cf::Data, KeyRange::all())];
    export::import(&mut input, &allowed, |cf, k, v| {
        if cf == Cf::Data {
            check_value(group, &k, &v).map_err(|e| zonekv_engine::Error::Corruption(e.to_string()))?;
        }
        records.push((cf, k, v));
        Ok(())
    })
    .map_err(|e| match e {
        zonekv_engine::Error::Corruption(what) => corrupt(what),
        other => other.into(),
    })?;
    let desc = match records.first() {
        Some((Cf::RaftMeta, _, v)) => decode_descriptor(group, v)?,
        _ => return Err(corrupt("snapshot without a range descriptor".into())),
    };
    let spans = desc.data_spans();
    let mut batch = WriteBatch::new();
    for span in &spans {
        // Data spans lie under a prefix, so they are bounded on both sides.
        let (Some(start), Some(end)) = span.to_half_open() else {
            return Err(Error::Malformed(format!("{desc} has an unbounded data span {span:?}")));
        };
        batch.delete_range(Cf::Data, start, end);
    }
    // Missed split: this replica never applied the split the snapshot is past, so the right
    // half's data is still here, owned by nothing (the right-hand range's replica on this
    // node, if it runs or is seeded here, keeps its part). Installs run one at a time, from
    // reading which ranges are stored to the write: a replica of the right half created
    // meanwhile gets its data by an install too, so it cannot land in between and be deleted.
    let _one_at_a_time = INSTALLS.lock().unwrap_or_else(|p| p.into_inner());
    if old.data_spans() != spans {
        let mut owners: Vec<RangeDescriptor> =
            stored_descriptors(engine)?.into_iter().filter(|d| d.range_id != group).collect();
        owners.push(desc.clone());
        for (start, end) in spans_owned_by_no_other(&old.data_spans(), &owners) {
            tracing::info!(%group, range = %desc, start = ?start, end = ?end, "deleting data the range no longer owns");
            batch.delete_range(Cf::Data, start, end);
        }
    }
    for (cf, k, v) in records {
        if cf == Cf::Data && !spans.iter().any(|s| s.contains(&k)) {
            return Err(corrupt(format!("snapshot of {desc} holds data key {k:?} outside the range")));
        }
        batch.put(cf, k, v);
    }
    batch.put(Cf::RaftMeta, meta_key(group, MetaKey::Applied), encode_applied(applied));
    engine.write(&batch, true)?;
    Ok(desc)
}
