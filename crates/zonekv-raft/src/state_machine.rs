//! [`StateMachine`]: openraft's `RaftStateMachine` over a group's key span.

use std::collections::HashMap;
use std::io;

use bytes::Bytes;
use futures::TryStreamExt;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, StoredMembership as OrStoredMembership};
use zonekv_engine::{Cf, Engine, KeyRange, Reader, WriteBatch};

use crate::codec::{AppliedState, decode_applied, encode_applied};
use crate::keys::{MetaKey, data_key, meta_key};
use crate::snapshot::{self, SnapshotBuilder};
use crate::{
    Command, CommandResponse, Error, Mutation, Op, OpResult, Result, SnapshotData, SnapshotMeta,
    StoredMembership, TypeConfig, value,
};

/// The replicated key-value state of one group: its span of the data column family and its
/// applied state, both in the shared engine.
///
/// Each `apply` call writes all its entries' effects and the new applied state in one atomic
/// engine write, so after a crash the state machine is exactly as of some applied log id and
/// openraft re-applies the log from there. The write is not synced: the log it was applied from
/// is durable, and the engine keeps writes in order, so a later sync covers it.
pub struct StateMachine<E: Engine> {
    engine: E,
    group: u64,
    span: KeyRange,
    applied: AppliedState,
}

/// Writes of one `apply` call not yet in the engine, readable by later ops of the same call.
struct Pending {
    batch: WriteBatch,
    overlay: HashMap<Bytes, Option<Bytes>>,
}

impl Pending {
    fn get<E: Engine>(&self, engine: &E, group: u64, key: &Bytes) -> Result<Option<Bytes>> {
        match self.overlay.get(key) {
            Some(v) => Ok(v.clone()),
            None => read_user_value(engine, group, key),
        }
    }

    fn set(&mut self, key: &Bytes, v: Option<&Bytes>) {
        match v {
            Some(v) => self.batch.put(Cf::Data, data_key(key), value::encode(v)),
            None => self.batch.delete(Cf::Data, data_key(key)),
        }
        self.overlay.insert(key.clone(), v.cloned());
    }
}

/// Reads a user key from the data column family, verifying the stored value's checksum.
pub fn read_user_value<R: Reader + ?Sized>(reader: &R, group: u64, key: &[u8]) -> Result<Option<Bytes>> {
    match reader.get(Cf::Data, &data_key(key))? {
        Some(stored) => value::decode(&stored)
            .map(Some)
            .map_err(|why| Error::Corruption { group, what: format!("value of key {key:?}: {why}") }),
        None => Ok(None),
    }
}

pub(crate) fn read_applied<R: Reader + ?Sized>(reader: &R, group: u64) -> Result<AppliedState> {
    match reader.get(Cf::RaftMeta, &meta_key(group, MetaKey::Applied))? {
        Some(v) => decode_applied(group, &v),
        None => Ok(AppliedState::default()),
    }
}

impl<E: Engine> StateMachine<E> {
    /// Opens the state machine of `group`, owning the data-column-family keys in `span`.
    pub fn open(engine: E, group: u64, span: KeyRange) -> Result<Self> {
        let applied = read_applied(&engine, group)?;
        Ok(Self { engine, group, span, applied })
    }

    fn apply_command(&self, cmd: &Command, pending: &mut Pending) -> Result<CommandResponse> {
        let (engine, group) = (&self.engine, self.group);
        let mut results = Vec::with_capacity(cmd.ops.len());
        for op in &cmd.ops {
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
            });
        }
        Ok(results_response(results))
    }

    fn fail(&self, e: Error) -> io::Error {
        tracing::error!(group = self.group, error = %e, "state machine failed; the replica stops");
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
        let mut pending = Pending { batch: WriteBatch::new(), overlay: HashMap::new() };
        let mut applied = self.applied.clone();
        let mut replies = Vec::new();
        while let Some((entry, responder)) = entries.try_next().await? {
            let response = match &entry.payload {
                EntryPayload::Blank => CommandResponse::default(),
                EntryPayload::Normal(cmd) => {
                    self.apply_command(cmd, &mut pending).map_err(|e| self.fail(e))?
                }
                EntryPayload::Membership(m) => {
                    applied.membership = OrStoredMembership::new(Some(entry.log_id), m.clone());
                    CommandResponse::default()
                }
            };
            applied.last_applied = Some(entry.log_id);
            if let Some(r) = responder {
                replies.push((r, response));
            }
        }
        if applied == self.applied {
            return Ok(());
        }
        pending.batch.put(Cf::RaftMeta, meta_key(self.group, MetaKey::Applied), encode_applied(&applied));
        self.engine.write(&pending.batch, false).map_err(|e| self.fail(e.into()))?;
        self.applied = applied;
        for (r, response) in replies {
            r.send(response);
        }
        Ok(())
    }

    async fn try_create_snapshot_builder(&mut self, force: bool) -> Option<SnapshotBuilder<E>> {
        Some(if force {
            SnapshotBuilder::new(self.engine.clone(), self.group, self.span.clone())
        } else {
            SnapshotBuilder::meta_only(self.engine.clone(), self.group, self.span.clone())
        })
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder<E> {
        SnapshotBuilder::new(self.engine.clone(), self.group, self.span.clone())
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, data: SnapshotData) -> io::Result<()> {
        let applied =
            AppliedState { last_applied: meta.last_log_id, membership: meta.last_membership.clone() };
        snapshot::install(&self.engine, self.group, &self.span, &applied, &data).map_err(|e| self.fail(e))?;
        tracing::info!(group = self.group, last_log_id = ?meta.last_log_id, bytes = data.len(), "installed snapshot");
        self.applied = applied;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> io::Result<Option<openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>>> {
        if self.applied.last_applied.is_none() {
            return Ok(None);
        }
        let builder = SnapshotBuilder::new(self.engine.clone(), self.group, self.span.clone());
        match builder.build_off_runtime().await {
            Ok(s) => Ok(Some(s)),
            // Damaged data: offer no snapshot (openraft asks for one at startup; the replica
            // still serves its intact keys). If a peer needs one, the build fails and the
            // replica stops: the damage is never sent.
            Err(e @ Error::Corruption { .. }) => {
                tracing::error!(group = self.group, error = %e, "damaged data: no snapshot can be offered");
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}
