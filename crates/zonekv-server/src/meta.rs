//! Proposing to the meta range from any node (docs/multiraft.md, "Split"): id allocation and
//! directory updates run on the meta range's leader, which may be another node. The local
//! replica is tried first; a not-leader answer names the leader, which is then asked over the
//! Raft transport (`ProposeMeta`).

use std::time::Duration;

use tonic::Code;
use zonekv_proto::metadata;
use zonekv_proto::raft::v1 as pb;
use zonekv_raft::{Op, OpResult, RangeDescriptor, codec};

use crate::{Error, NodeHandle, Result};

/// Attempts (local or remote) before giving up; each not-leader answer or unreachable leader
/// costs one, and elections settle within a few.
const ATTEMPTS: usize = 8;

/// The op of a `ProposeMeta` request, if it is one the meta range takes from peers.
pub(crate) fn meta_op(op: pb::Op) -> Result<Op> {
    match codec::op_from_pb(op).map_err(|e| Error::InvalidArgument(e.to_string()))? {
        op @ (Op::AllocateIds { .. } | Op::UpdateDirectory(_) | Op::SetPlacement { .. }) => Ok(op),
        other => Err(Error::InvalidArgument(format!(
            "ProposeMeta takes AllocateIds, UpdateDirectory or SetPlacement, not {other:?}"
        ))),
    }
}

/// The wire form of a meta op's result.
pub(crate) fn response(result: &OpResult) -> pb::ProposeMetaResponse {
    match result {
        OpResult::Ids { first } => pb::ProposeMetaResponse { first_id: *first, written: 0 },
        OpResult::DirectoryUpdated { written } => {
            pb::ProposeMetaResponse { first_id: 0, written: *written as u64 }
        }
        _ => pb::ProposeMetaResponse::default(),
    }
}

impl NodeHandle {
    /// Proposes `op` (`AllocateIds`, `UpdateDirectory` or `SetPlacement`) to the meta range,
    /// wherever its leader is.
    pub(crate) async fn propose_meta(&self, op: Op) -> Result<OpResult> {
        let mut last = String::new();
        let mut target: Option<String> = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(50 << attempt.min(4))).await;
            }
            let Some(addr) = target.take().filter(|a| a != self.addr()) else {
                match self.inner.ranges.first().proposer.propose(op.clone()).await {
                    Ok((result, _)) => return Ok(result),
                    Err(Error::NotLeader { leader: Some(h), .. }) if h.addr.is_some() => {
                        target = h.addr;
                        continue;
                    }
                    Err(e @ (Error::NotLeader { .. } | Error::Unavailable(_))) => {
                        last = e.to_string();
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            };
            match self.propose_meta_at(&addr, &op).await {
                Ok(result) => return Ok(result),
                Err((status, leader)) => {
                    last = format!("{addr}: {}", status.message());
                    let retry = matches!(status.code(), Code::Unavailable)
                        || status.metadata().get(metadata::NOT_APPLIED).is_some();
                    if !retry {
                        return Err(Error::FailedPrecondition(format!("the meta range refused: {last}")));
                    }
                    target = leader;
                }
            }
        }
        Err(Error::Unavailable(format!("the meta range's leader could not be reached: {last}")))
    }

    /// Records `descs` in the range directory (each only if newer than its entry). Best
    /// effort: a lost report only leaves the directory stale until the next one, which
    /// requests correct (range key mismatch) and placement steps refresh (epoch refused).
    pub(crate) async fn report_to_directory(&self, descs: Vec<RangeDescriptor>) {
        if let Err(e) = self.propose_meta(Op::UpdateDirectory(descs)).await {
            tracing::warn!(error = %e, "the directory did not take a range's new descriptor; it stays stale until the next report");
        }
    }

    /// `count` fresh ids (ranges, replicas) from the meta range's allocator; returns the first.
    pub(crate) async fn allocate_ids(&self, count: u64) -> Result<u64> {
        match self.propose_meta(Op::AllocateIds { count }).await? {
            OpResult::Ids { first } => Ok(first),
            other => {
                Err(Error::FailedPrecondition(format!("the meta range did not allocate ids: {other:?}")))
            }
        }
    }

    /// Sends `op` to the node at `addr`; on failure returns the status and the leader it names.
    async fn propose_meta_at(
        &self,
        addr: &str,
        op: &Op,
    ) -> std::result::Result<OpResult, (tonic::Status, Option<String>)> {
        let mut client =
            self.inner.starter.channels.client(addr).map_err(|e| (tonic::Status::unavailable(e), None))?;
        match client.propose_meta(codec::op_to_pb(op)).await {
            Ok(resp) => {
                let resp = resp.into_inner();
                Ok(match op {
                    Op::AllocateIds { .. } => OpResult::Ids { first: resp.first_id },
                    Op::UpdateDirectory(_) => OpResult::DirectoryUpdated { written: resp.written as usize },
                    _ => OpResult::Done,
                })
            }
            Err(status) => {
                let leader = status
                    .metadata()
                    .get(metadata::LEADER_ADDR)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                Err((status, leader))
            }
        }
    }
}
