//! Proposing to the meta range from any node (docs/multiraft.md, "Split"): id allocation,
//! directory updates and placement records are written on the meta range's leader, which may
//! be another node. The local replica is tried first; a not-leader answer names the leader,
//! which is then asked through [`Peers::propose_meta`].

use std::sync::Arc;
use std::time::Duration;

use zonekv_engine::Engine;
use zonekv_raft::{NodeId, Op, OpResult, RangeDescriptor};
use zonekv_store::Store;

use crate::{Error, PeerError, Peers, Result};

/// Attempts (local or remote) before giving up; each not-leader answer or unreachable leader
/// costs one, and elections settle within a few.
const ATTEMPTS: usize = 8;

/// Proposes meta-range ops wherever the meta range leads.
pub struct MetaClient<E: Engine> {
    store: Store<E>,
    peers: Arc<dyn Peers>,
    /// This node's own address (a leader hint naming it means: try the local replica).
    addr: String,
}

impl<E: Engine> Clone for MetaClient<E> {
    fn clone(&self) -> Self {
        Self { store: self.store.clone(), peers: self.peers.clone(), addr: self.addr.clone() }
    }
}

impl<E: Engine> MetaClient<E> {
    /// A client proposing through `store`'s meta replica, or through `peers`.
    pub fn new(store: Store<E>, peers: Arc<dyn Peers>, addr: String) -> Self {
        Self { store, peers, addr }
    }

    /// Proposes `op` (`AllocateIds`, `UpdateDirectory` or `SetPlacement`) to the meta range,
    /// wherever its leader is.
    pub async fn propose(&self, op: Op) -> Result<OpResult> {
        let mut last = String::new();
        let mut target: Option<String> = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(50 << attempt.min(4))).await;
            }
            let Some(addr) = target.take().filter(|a| *a != self.addr) else {
                match self.store.first().propose(op.clone()).await {
                    Ok((result, _)) => return Ok(result),
                    Err(zonekv_store::Error::NotLeader { leader: Some(h), .. }) if h.addr.is_some() => {
                        target = h.addr;
                        continue;
                    }
                    Err(
                        e @ (zonekv_store::Error::NotLeader { .. } | zonekv_store::Error::Unavailable(_)),
                    ) => {
                        last = e.to_string();
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            match self.peers.propose_meta(&addr, &op).await {
                Ok(result) => return Ok(result),
                Err(PeerError::Retry { leader, message }) => {
                    last = format!("{addr}: {message}");
                    target = leader;
                }
                Err(PeerError::Refused(message)) => {
                    return Err(Error::FailedPrecondition(format!(
                        "the meta range refused: {addr}: {message}"
                    )));
                }
            }
        }
        Err(Error::Unavailable(format!("the meta range's leader could not be reached: {last}")))
    }

    /// Proposes `op`, taken from a peer's `ProposeMeta` call, to this node's replica of the
    /// meta range (which must lead: the peer follows the not-leader answer).
    /// `caller` is the asking node, from its certificate (`None` in insecure mode).
    pub async fn propose_for_peer(&self, op: Op, caller: Option<NodeId>) -> Result<OpResult> {
        crate::guard::check_meta_op(&self.store, &op, caller)?;
        Ok(self.store.first().propose(op).await?.0)
    }

    /// Records `descs` in the range directory (each only if newer than its entry). Best
    /// effort: a lost report only leaves the directory stale until the next one, which
    /// requests correct (range key mismatch) and placement steps refresh (epoch refused).
    pub async fn report_to_directory(&self, descs: Vec<RangeDescriptor>) {
        if let Err(e) = self.propose(Op::UpdateDirectory(descs)).await {
            tracing::warn!(error = %e, "the directory did not take a range's new descriptor; it stays stale until the next report");
        }
    }

    /// `count` fresh ids (ranges, replicas) from the meta range's allocator; returns the first.
    pub async fn allocate_ids(&self, count: u64) -> Result<u64> {
        match self.propose(Op::AllocateIds { count }).await? {
            OpResult::Ids { first } => Ok(first),
            other => {
                Err(Error::FailedPrecondition(format!("the meta range did not allocate ids: {other:?}")))
            }
        }
    }
}
