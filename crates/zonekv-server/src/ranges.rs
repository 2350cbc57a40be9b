//! The ranges this node holds a replica of, and starting a range's Raft group: at startup for
//! every descriptor stored on the node, at run time for every range a local split creates
//! (docs/multiraft.md, build step 2).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use zonekv_engine::{Cf, KeyRange, Reader};
use zonekv_engine_rocks::RocksEngine;
use zonekv_raft::keys::{FIRST_RANGE, MetaKey};
use zonekv_raft::{LogStore, LogSyncer, NodeId, RangeDescriptor, StateMachine};

use crate::faults::NetFaults;
use crate::network::{Channels, GroupFaults, NetworkFactory};
use crate::proposer::{BatchLimits, Proposer};
use crate::replica::Replica;
use crate::{Error, Result};

/// One range's replica on this node, with its proposal queue and its descriptor as applied.
pub(crate) struct RangeReplica {
    pub(crate) replica: Replica,
    pub(crate) proposer: Proposer,
    pub(crate) desc: watch::Receiver<RangeDescriptor>,
    /// Set by the first [`RangeReplica::stop`].
    stopped: std::sync::atomic::AtomicBool,
}

impl RangeReplica {
    /// The range's descriptor as of the last apply.
    pub(crate) fn descriptor(&self) -> RangeDescriptor {
        self.desc.borrow().clone()
    }

    /// Stops the group, then its proposer. Later calls do nothing.
    pub(crate) async fn stop(&self) {
        if self.stopped.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        if let Err(e) = self.replica.raft.shutdown().await {
            tracing::warn!(range = self.replica.range, error = %e, "raft shutdown");
        }
        self.proposer.close().await;
    }
}

/// Everything needed to start a group on this node.
pub(crate) struct GroupStarter {
    pub(crate) node_id: NodeId,
    pub(crate) engine: RocksEngine,
    pub(crate) syncer: LogSyncer,
    pub(crate) raft_config: Arc<openraft::Config>,
    pub(crate) channels: Channels,
    pub(crate) faults: Option<NetFaults>,
    pub(crate) limits: BatchLimits,
    pub(crate) apply_wait: Duration,
    pub(crate) unsafe_local_reads: bool,
    pub(crate) split_tx: mpsc::UnboundedSender<RangeDescriptor>,
}

impl GroupStarter {
    /// Starts the group of `range` from its stored state. `None` if the range has no replica
    /// on this node (it was moved away).
    pub(crate) async fn start(&self, range: u64) -> Result<Option<RangeReplica>> {
        let sm = StateMachine::open(self.engine.clone(), range)?.with_split_listener(self.split_tx.clone());
        let desc = sm.descriptor().clone();
        // The first range names no replicas until its cluster is initialised; its replica ids
        // are node ids.
        let replica_id = match desc.replicas.iter().find(|r| r.node_id == self.node_id) {
            Some(r) => r.replica_id,
            None if range == FIRST_RANGE => self.node_id,
            None => return Ok(None),
        };
        let desc_rx = sm.watch_descriptor();
        let log = LogStore::new(self.engine.clone(), range, self.syncer.clone());
        let faults =
            self.faults.clone().map(|table| GroupFaults { table, node: self.node_id, desc: desc_rx.clone() });
        let network = NetworkFactory::new(replica_id, range, self.channels.clone(), faults);
        let raft = zonekv_raft::Raft::new(replica_id, self.raft_config.clone(), network, log, sm)
            .await
            .map_err(|e| Error::ReplicaStopped { range, reason: e.to_string() })?;
        let replica = Replica {
            range,
            node_id: replica_id,
            raft,
            engine: self.engine.clone(),
            apply_wait: self.apply_wait,
            unsafe_local_reads: self.unsafe_local_reads,
            desc: desc_rx.clone(),
            quiet: Default::default(),
        };
        let proposer = Proposer::start(replica.clone(), self.limits);
        tracing::info!(range, replica_id, %desc, "range replica started");
        Ok(Some(RangeReplica { replica, proposer, desc: desc_rx, stopped: Default::default() }))
    }
}

/// The ids of every range with a descriptor stored on this node, the first range always
/// included.
pub(crate) fn stored_ranges(engine: &RocksEngine) -> Result<Vec<u64>> {
    let mut ids = vec![FIRST_RANGE];
    for pair in engine.scan(Cf::RaftMeta, &KeyRange::all(), false)? {
        let (k, _) = pair?;
        if k.len() == 9 && k[8] == MetaKey::Descriptor as u8 {
            let id = u64::from_be_bytes(k[..8].try_into().expect("8 bytes"));
            if id != FIRST_RANGE {
                ids.push(id);
            }
        }
    }
    Ok(ids)
}

/// The replicas this node runs, by range id and by start key. A range's start never changes
/// (a split keeps the left half's start; there are no merges), so the start-key index only
/// grows with the ranges started here.
#[derive(Default)]
pub(crate) struct Ranges {
    map: RwLock<Maps>,
}

#[derive(Default)]
struct Maps {
    by_id: BTreeMap<u64, Arc<RangeReplica>>,
    by_start: BTreeMap<bytes::Bytes, u64>,
}

impl Ranges {
    pub(crate) fn insert(&self, r: RangeReplica) {
        let start = r.desc.borrow().start.clone();
        let mut maps = self.map.write().expect("ranges lock");
        maps.by_start.insert(start, r.replica.range);
        maps.by_id.insert(r.replica.range, Arc::new(r));
    }

    /// Forgets the replica of `range` (moved off this node); returns it.
    pub(crate) fn remove(&self, range: u64) -> Option<Arc<RangeReplica>> {
        let mut maps = self.map.write().expect("ranges lock");
        let r = maps.by_id.remove(&range)?;
        let start = r.desc.borrow().start.clone();
        if maps.by_start.get(&start) == Some(&range) {
            maps.by_start.remove(&start);
        }
        Some(r)
    }

    pub(crate) fn get(&self, range: u64) -> Option<Arc<RangeReplica>> {
        self.map.read().expect("ranges lock").by_id.get(&range).cloned()
    }

    /// The first range (the meta range); every node runs it.
    pub(crate) fn first(&self) -> Arc<RangeReplica> {
        self.get(FIRST_RANGE).expect("the first range is started with the node")
    }

    pub(crate) fn all(&self) -> Vec<Arc<RangeReplica>> {
        self.map.read().expect("ranges lock").by_id.values().cloned().collect()
    }

    /// The local replica of the range that holds user key `key`: the range with the greatest
    /// start at or below `key`, if its span (as of its last apply) reaches `key`.
    pub(crate) fn for_key(&self, node_id: NodeId, key: &[u8]) -> Result<Arc<RangeReplica>> {
        let maps = self.map.read().expect("ranges lock");
        let found = maps.by_start.range::<[u8], _>((Bound::Unbounded, Bound::Included(key))).next_back();
        found
            .and_then(|(_, id)| maps.by_id.get(id))
            .filter(|r| r.desc.borrow().contains(key))
            .cloned()
            .ok_or_else(|| {
                Error::Unavailable(format!(
                    "node {node_id} holds no replica of the range of key {key:?} (now); ask another node"
                ))
            })
    }

    /// The local replica whose descriptor satisfies `pred` (a pass over every range).
    pub(crate) fn find(
        &self,
        node_id: NodeId,
        pred: impl Fn(&RangeDescriptor) -> bool,
    ) -> Result<Arc<RangeReplica>> {
        let maps = self.map.read().expect("ranges lock");
        maps.by_id.values().find(|r| pred(&r.desc.borrow())).cloned().ok_or_else(|| {
            Error::Unavailable(format!(
                "node {node_id} holds no replica of the range asked for; ask another node"
            ))
        })
    }
}
