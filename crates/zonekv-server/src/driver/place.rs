//! One placement step, as the driver asks it of a range's leader (`RaftTransport/Place`) and
//! as the leader carries it out.

use std::time::Duration;

use zonekv_placement::{Action, Role};
use zonekv_proto::raft::v1 as pb;
use zonekv_raft::{NodeId, Op, RangeDescriptor, RangeEpoch, codec};

use super::What;
use crate::{Error, NodeHandle, Result};

/// The request for step `what` on range `desc` (planned at its epoch), or `None` for actions
/// that are not steps (`Nothing`, `Unsatisfiable`).
pub(crate) fn request(desc: &RangeDescriptor, what: &What) -> Option<pb::PlaceRequest> {
    use pb::place_request::{Action as A, Move};
    let action = match what {
        What::Act(a) => a,
        What::Split(key) => {
            return Some(pb::PlaceRequest {
                range_id: desc.range_id,
                expected_epoch: Some(codec::epoch_to_pb(&desc.epoch)),
                action: Some(A::SplitAt(key.clone())),
            });
        }
    };
    let action = match *action {
        Action::Add { role: Role::Voter, to } => A::AddVoter(to),
        Action::Add { role: Role::NonVoter, to } => A::AddLearner(to),
        Action::Replace { from, to, .. } => A::Replace(Move { from_node: from, to_node: to }),
        Action::Remove { from } => A::Remove(from),
        Action::TransferLease { to } => A::TransferLeader(to),
        Action::Nothing | Action::Unsatisfiable(_) => return None,
    };
    Some(pb::PlaceRequest {
        range_id: desc.range_id,
        expected_epoch: Some(codec::epoch_to_pb(&desc.epoch)),
        action: Some(action),
    })
}

/// Sends `request` to the range's leader at `addr` (this node's own handle if it is the
/// leader), waiting at most `timeout`.
pub(crate) async fn send(
    node: &NodeHandle,
    leader: NodeId,
    addr: &str,
    request: pb::PlaceRequest,
    timeout: Duration,
) -> Result<()> {
    let call = async {
        if leader == node.id() {
            return node.place(request).await.map(drop);
        }
        let mut client = node.inner.starter.channels.client(addr).map_err(Error::Unavailable)?;
        client
            .place(request)
            .await
            .map(drop)
            .map_err(|s| Error::Unavailable(format!("node {leader} ({addr}): {}", s.message())))
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| Error::Unavailable(format!("node {leader} did not finish within {timeout:?}")))?
}

impl NodeHandle {
    /// Carries out one placement step on this node's replica of the range, which must lead
    /// it. Refused, changing nothing, if the range's epoch is no longer the one the step was
    /// planned at; the directory then gets the range's current descriptor, so the next plan
    /// is made on it.
    pub(crate) async fn place(&self, req: pb::PlaceRequest) -> Result<RangeDescriptor> {
        use pb::place_request::Action as A;
        let range = self.inner.range(req.range_id)?;
        range.replica.ensure_leader()?;
        let desc = range.descriptor();
        let expected: RangeEpoch = codec::epoch_from_pb(req.expected_epoch);
        if desc.epoch != expected {
            if let Err(e) = self.propose_meta(Op::UpdateDirectory(vec![desc.clone()])).await {
                tracing::warn!(range = desc.range_id, error = %e, "refreshing the directory failed");
            }
            return Err(Error::FailedPrecondition(format!(
                "range {} is at epoch {}, the step was planned at {expected}",
                desc.range_id, desc.epoch
            )));
        }
        let id = req.range_id;
        match req.action.ok_or_else(|| Error::InvalidArgument("a placement step without an action".into()))? {
            A::AddVoter(to) => self.add_replica(id, to, true).await,
            A::AddLearner(to) => self.add_replica(id, to, false).await,
            A::Replace(m) => self.move_replica(id, m.from_node, m.to_node).await,
            A::Remove(from) => self.remove_replica(id, from).await,
            A::TransferLeader(to) => {
                self.transfer_leader(id, to).await?;
                Ok(range.descriptor())
            }
            A::SplitAt(key) => Ok(self.split(key).await?.0),
        }
    }
}
