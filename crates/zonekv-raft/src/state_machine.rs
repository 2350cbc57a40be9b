//! [`StateMachine`]: openraft's `RaftStateMachine` over a group's key span.

use std::io;

use bytes::Bytes;
use futures::TryStreamExt;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, StoredMembership as OrStoredMembership};
use zonekv_engine::{Cf, Engine, WriteBatch};

use tokio::sync::watch;

use crate::codec::{AppliedState, encode_applied, encode_descriptor};
use crate::keys::{self, MetaKey, meta_key};
use crate::range::RangeDescriptor;
use crate::snapshot::{self, SnapshotBuilder};
use crate::stored::{Pending, read_applied, read_descriptor};
use crate::{
    Command, CommandResponse, Error, LogSyncer, Mutation, Op, OpResult, RangeId, Result, SnapshotData,
    SnapshotMeta, StoredMembership, TypeConfig, meta, split,
};

/// The replicated key-value state of one group: its range descriptor (the span of the data
/// column family it owns), that span's data and its applied state, all in the shared engine.
///
/// Each `apply` call writes all its entries' effects and the new applied state in one atomic
/// engine write, so after a crash the state machine is exactly as of some applied log id and
/// openraft re-applies the log from there. The write is not synced: the log it was applied from
/// is durable, and the engine keeps writes in order, so a later sync covers it.
/// Every op is checked against the descriptor as of its place in the log: a write for a key
/// the range no longer owns (it was split off after the write was routed) is refused with
/// [`OpResult::RangeKeyMismatch`], never applied.
pub struct StateMachine<E: Engine> {
    engine: E,
    group: RangeId,
    desc: RangeDescriptor,
    applied: AppliedState,
    desc_tx: watch::Sender<RangeDescriptor>,
    /// Told of every range this one splits off, once the split is written.
    on_split: Option<tokio::sync::mpsc::UnboundedSender<RangeDescriptor>>,
    /// Stops the node when an apply cannot be written (`with_fail_stop`).
    syncer: Option<LogSyncer>,
}

/// A user key `op` touches that `desc` does not own, if any.
fn key_outside<'a>(op: &'a Op, desc: &RangeDescriptor) -> Option<&'a [u8]> {
    let outside = |k: &'a Bytes| (!desc.contains(k)).then_some(&k[..]);
    match op {
        Op::Put { key, .. } | Op::Delete { key } | Op::CompareAndSwap { key, .. } => outside(key),
        Op::Batch(muts) => muts.iter().find_map(|m| outside(m.key())),
        Op::Split(_) | Op::AllocateIds { .. } | Op::UpdateDirectory(_) | Op::SetPlacement { .. } => None,
    }
}

impl<E: Engine> StateMachine<E> {
    /// Opens the state machine of range `group`, owning the span its stored descriptor names.
    ///
    /// A group without a descriptor is new, or the first range of a data directory written
    /// before ranges had descriptors; it owns the whole keyspace, and that descriptor is stored
    /// now. A group that has applied entries but has no descriptor is damaged (every range made
    /// by a split gets its descriptor in the split's own write): `Corruption`.
    pub fn open(engine: E, group: RangeId) -> Result<Self> {
        let applied = read_applied(&engine, group)?;
        let desc = match read_descriptor(&engine, group)? {
            Some(d) => d,
            None if applied.last_applied.is_none() || group == keys::FIRST_RANGE => {
                let mut d = RangeDescriptor::whole_keyspace(group);
                d.replicas = d.replicas_of(applied.membership.membership());
                let mut b = WriteBatch::new();
                b.put(Cf::RaftMeta, meta_key(group, MetaKey::Descriptor), encode_descriptor(&d));
                engine.write(&b, true)?;
                d
            }
            None => {
                return Err(Error::Corruption {
                    group,
                    what: "the range has applied entries but no descriptor".into(),
                });
            }
        };
        let (desc_tx, _) = watch::channel(desc.clone());
        Ok(Self { engine, group, desc, applied, desc_tx, on_split: None, syncer: None })
    }

    /// Sends the descriptor of every range this one splits off to `tx`, after the split's
    /// write (the node starts the new range's group from it).
    pub fn with_split_listener(mut self, tx: tokio::sync::mpsc::UnboundedSender<RangeDescriptor>) -> Self {
        self.on_split = Some(tx);
        self
    }

    /// An apply whose engine write fails (a full disk) stops the whole node through `syncer`
    /// ([`LogSyncer::fail_stop`]), as a failed log write does: every group shares the disk,
    /// and a replica whose applied state lags its committed log must not serve.
    pub fn with_fail_stop(mut self, syncer: LogSyncer) -> Self {
        self.syncer = Some(syncer);
        self
    }

    /// The range's descriptor as of the last apply.
    pub fn descriptor(&self) -> &RangeDescriptor {
        &self.desc
    }

    /// Follows the range's descriptor: a new value after every apply that changed it.
    pub fn watch_descriptor(&self) -> watch::Receiver<RangeDescriptor> {
        self.desc_tx.subscribe()
    }

    /// Applies `entries` in one atomic engine write with the new applied state (and the new
    /// descriptor, if they changed it); returns one response per entry. This is what openraft's
    /// `apply` runs; it is public so tests can see every op's result.
    pub fn apply_entries(&mut self, entries: &[crate::Entry]) -> io::Result<Vec<CommandResponse>> {
        let mut pending = Pending::new();
        let mut applied = self.applied.clone();
        let mut desc = self.desc.clone();
        let mut responses = Vec::with_capacity(entries.len());
        for entry in entries {
            responses.push(match &entry.payload {
                EntryPayload::Blank => CommandResponse::default(),
                EntryPayload::Normal(cmd) => self
                    .apply_command(cmd, &mut pending, &mut desc, &applied.membership)
                    .map_err(|e| self.fail(e))?,
                EntryPayload::Membership(m) => {
                    applied.membership = OrStoredMembership::new(Some(entry.log_id), m.clone());
                    desc.replicas = desc.replicas_of(m);
                    desc.epoch.conf_ver += 1;
                    CommandResponse::default()
                }
            });
            applied.last_applied = Some(entry.log_id);
        }
        if applied == self.applied {
            return Ok(responses);
        }
        let desc_changed = desc != self.desc;
        if desc.start.is_empty() {
            // The meta range keeps the directory entries of its own changes in the same write:
            // its descriptor, and the ranges it split off.
            let mut changed: Vec<RangeDescriptor> = desc_changed.then(|| desc.clone()).into_iter().collect();
            changed.extend(responses.iter().flat_map(|r| &r.results).filter_map(|r| match r {
                OpResult::Split { right, .. } => Some((**right).clone()),
                _ => None,
            }));
            meta::directory::update(&self.engine, self.group, &mut pending, &changed)
                .map_err(|e| self.fail(e))?;
        }
        pending.batch.put(Cf::RaftMeta, meta_key(self.group, MetaKey::Applied), encode_applied(&applied));
        if desc_changed {
            pending.batch.put(
                Cf::RaftMeta,
                meta_key(self.group, MetaKey::Descriptor),
                encode_descriptor(&desc),
            );
        }
        self.engine.write(&pending.batch, false).map_err(|e| {
            self.stop_node("writing the applied entries", &e, "applies the log again");
            self.fail(e.into())
        })?;
        self.applied = applied;
        if desc_changed {
            self.desc = desc;
            self.desc_tx.send_replace(self.desc.clone());
        }
        if let Some(tx) = &self.on_split {
            for r in responses.iter().flat_map(|r| &r.results) {
                if let OpResult::Split { right, .. } = r {
                    // The node may be shutting down; the range is on disk and starts with it.
                    let _ = tx.send((**right).clone());
                }
            }
        }
        Ok(responses)
    }

    fn apply_command(
        &self,
        cmd: &Command,
        pending: &mut Pending,
        desc: &mut RangeDescriptor,
        membership: &StoredMembership,
    ) -> Result<CommandResponse> {
        let (engine, group) = (&self.engine, self.group);
        let mut results = Vec::with_capacity(cmd.ops.len());
        for op in &cmd.ops {
            if key_outside(op, desc).is_some() {
                results.push(OpResult::RangeKeyMismatch(Box::new(desc.clone())));
                continue;
            }
            results.push(match op {
                Op::Put { key, value } => {
                    pending.set(key, Some(value));
                    OpResult::Done
                }
                Op::Delete { key } => {
                    let existed = pending.get(engine, group, key)?.is_some();
                    pending.set(key, None);
                    OpResult::Deleted { existed }
                }
                Op::CompareAndSwap { key, expected, new_value } => {
                    let current = pending.get(engine, group, key)?;
                    let succeeded = current == *expected;
                    if succeeded {
                        pending.set(key, new_value.as_ref());
                    }
                    OpResult::CompareAndSwap { succeeded, current }
                }
                Op::Batch(mutations) => {
                    for m in mutations {
                        match m {
                            Mutation::Put { key, value } => pending.set(key, Some(value)),
                            Mutation::Delete { key } => pending.set(key, None),
                        }
                    }
                    OpResult::Done
                }
                Op::Split(s) => split::apply_split(engine, s, desc, membership, &mut pending.batch)?,
                Op::AllocateIds { .. } | Op::UpdateDirectory(_) | Op::SetPlacement { .. }
                    if !desc.start.is_empty() =>
                {
                    OpResult::NotMetaRange
                }
                Op::AllocateIds { count } => {
                    match meta::allocator::allocate(engine, group, pending, *count) {
                        Ok(first) => OpResult::Ids { first },
                        // Deterministic: every replica refuses the same op the same way.
                        Err(Error::Malformed(reason)) => OpResult::Refused { reason },
                        Err(e) => return Err(e),
                    }
                }
                Op::UpdateDirectory(descs) => match meta::directory::check(descs) {
                    Err(reason) => OpResult::Refused { reason },
                    Ok(()) => OpResult::DirectoryUpdated {
                        written: meta::directory::update(engine, group, pending, descs)?,
                    },
                },
                Op::SetPlacement { key, value } => {
                    meta::placement::set(pending, key, value.as_ref());
                    OpResult::Done
                }
            });
        }
        Ok(results_response(results))
    }

    /// Stops the whole node (`with_fail_stop`) because `what` failed on the shared disk.
    fn stop_node(&self, what: &str, e: &zonekv_engine::Error, restart: &str) {
        if let Some(syncer) = &self.syncer {
            syncer.fail_stop(format!(
                "{what} of range {} failed ({e}); the node stops: {}, then restart the node (the \
                 restart {restart})",
                self.group,
                crate::syncer::disk_remedy(e)
            ));
        }
    }

    fn fail(&self, e: Error) -> io::Error {
        tracing::error!(group = %self.group, error = %e, "state machine failed; the replica stops");
        e.into()
    }
}

fn results_response(results: Vec<OpResult>) -> CommandResponse {
    CommandResponse { results }
}

impl<E: Engine> RaftStateMachine<TypeConfig> for StateMachine<E> {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder<E>;

    async fn applied_state(&mut self) -> io::Result<(Option<crate::LogId>, StoredMembership)> {
        Ok((self.applied.last_applied, self.applied.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: futures::Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + Send,
    {
        let mut batch = Vec::new();
        let mut responders = Vec::new();
        while let Some((entry, responder)) = entries.try_next().await? {
            batch.push(entry);
            responders.push(responder);
        }
        let responses = self.apply_entries(&batch)?;
        for (r, response) in responders.into_iter().zip(responses) {
            if let Some(r) = r {
                r.send(response);
            }
        }
        Ok(())
    }

    async fn try_create_snapshot_builder(&mut self, force: bool) -> Option<SnapshotBuilder<E>> {
        Some(if force {
            SnapshotBuilder::new(self.engine.clone(), self.group)
        } else {
            SnapshotBuilder::meta_only(self.engine.clone(), self.group)
        })
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder<E> {
        SnapshotBuilder::new(self.engine.clone(), self.group)
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, data: SnapshotData) -> io::Result<()> {
        let applied =
            AppliedState { last_applied: meta.last_log_id, membership: meta.last_membership.clone() };
        let desc = snapshot::install(&self.engine, self.group, &self.desc, &applied, &data).map_err(|e| {
            if let Error::Engine(disk @ zonekv_engine::Error::NoSpace(_)) = &e {
                self.stop_node("installing a snapshot", disk, "catches up from the others");
            }
            self.fail(e)
        })?;
        tracing::info!(group = %self.group, last_log_id = ?meta.last_log_id, bytes = data.len(), range = %desc, "installed snapshot");
        self.applied = applied;
        if desc != self.desc {
            self.desc = desc;
            self.desc_tx.send_replace(self.desc.clone());
        }
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> io::Result<Option<openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>>> {
        if self.applied.last_applied.is_none() {
            return Ok(None);
        }
        let builder = SnapshotBuilder::new(self.engine.clone(), self.group);
        match builder.build_off_runtime().await {
            Ok(s) => Ok(Some(s)),
            // Damaged data: offer no snapshot (openraft asks for one at startup; the replica
            // still serves its intact keys). If a peer needs one, the build fails and the
            // replica stops: the damage is never sent.
            Err(e @ Error::Corruption { .. }) => {
                tracing::error!(group = %self.group, error = %e, "damaged data: no snapshot can be offered");
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}
