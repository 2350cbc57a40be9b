//! One placement step, as the driver asks it of a range's leader (`RaftTransport/Place`) and
//! as the leader carries it out.

use std::time::Duration;

use zonekv_placement::{Action, Role};
use zonekv_proto::raft::v1 as pb;
use zonekv_raft::{NodeId, RangeDescriptor, RangeEpoch, codec};

use super::What;
use crate::{Error, NodeHandle, Result};

/// The request for step `what` on range `desc` (planned at its epoch), or `None` for actions
/// that are not steps (`Nothing`, `Unsatisfiable`).
pub(crate) fn request(desc: &RangeDescriptor, what: &What) -> Option<pb::PlaceRequest> {
    use pb::place_request::{Action as A, Move};
    let action = match what {
        What::Split(key) => A::SplitAt(key.clone()),
        What::Act(Action::Add { role: Role::Voter, to }) => A::AddVoter(*to),
        What::Act(Action::Add { role: Role::NonVoter, to }) => A::AddLearner(*to),
        What::Act(Action::Replace { from, to, .. }) => A::Replace(Move { from_node: *from, to_node: *to }),
        What::Act(Action::Remove { from }) => A::Remove(*from),
        What::Act(Action::TransferLease { to }) => A::TransferLeader(*to),
        What::Act(Action::Nothing | Action::Unsatisfiable(_)) => return None,
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
    /// it. One step per range at a time; refused, changing nothing, if the range's epoch is no
    /// longer the one the step was planned at. The step runs to its end even if the caller
    /// goes away (a half-done membership change is worse than a slow one). Whenever it does
    /// not succeed, the directory gets the range's current descriptor, so the next plan is
    /// made on it (a learner a failed step left behind, say).
    pub(crate) async fn place(&self, req: pb::PlaceRequest) -> Result<RangeDescriptor> {
        let node = self.clone();
        tokio::spawn(async move {
            let range_id = req.range_id;
            let result = node.place_now(req).await;
            if result.is_err()
                && let Ok(range) = node.inner.range(range_id)
                && range.replica.ensure_leader().is_ok()
            {
                node.report_to_directory(vec![range.descriptor()]).await;
            }
            result
        })
        .await
        .map_err(|e| Error::Unavailable(format!("the placement step ended abnormally: {e}")))?
    }

    async fn place_now(&self, req: pb::PlaceRequest) -> Result<RangeDescriptor> {
        use pb::place_request::Action as A;
        let id = req.range_id;
        let _one_step = PlacingGuard::take(&self.inner, id)?;
        let range = self.inner.range(id)?;
        range.replica.ensure_leader()?;
        let desc = range.descriptor();
        let expected: RangeEpoch = codec::epoch_from_pb(req.expected_epoch);
        if desc.epoch != expected {
            return Err(Error::FailedPrecondition(format!(
                "range {id} is at epoch {}, the step was planned at {expected}",
                desc.epoch
            )));
        }
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

/// Marks a range as having a placement step running on this node, until dropped.
struct PlacingGuard {
    inner: std::sync::Arc<crate::node::NodeInner>,
    range: u64,
}

impl PlacingGuard {
    fn take(inner: &std::sync::Arc<crate::node::NodeInner>, range: u64) -> Result<PlacingGuard> {
        let mut placing = inner.placing.lock().unwrap_or_else(|p| p.into_inner());
        if !placing.insert(range) {
            return Err(Error::FailedPrecondition(format!(
                "a placement step is already running on range {range}"
            )));
        }
        Ok(PlacingGuard { inner: inner.clone(), range })
    }
}

impl Drop for PlacingGuard {
    fn drop(&mut self) {
        self.inner.placing.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.range);
    }
}
