//! The control plane's messages on the wire (`zonekv.raft.v1`): placement steps, liveness
//! pings and meta-range results, converted both ways. Both sides of the node's internal
//! service use these: `transport/peers.rs` sends, `service/raft.rs` receives.

use zonekv_control::{Disk, Ping, PlaceStep, StepAction};
use zonekv_proto::raft::v1 as pb;
use zonekv_raft::{NodeId, Op, OpResult, RangeId, codec};

use crate::{Error, Result};

/// A placement step → its request.
pub(crate) fn place_to_pb(step: &PlaceStep) -> pb::PlaceRequest {
    use pb::place_request::{Action as A, Move};
    let action = match &step.action {
        StepAction::SplitAt(key) => A::SplitAt(key.clone()),
        StepAction::AddVoter(to) => A::AddVoter(to.get()),
        StepAction::AddLearner(to) => A::AddLearner(to.get()),
        StepAction::Replace { from, to } => A::Replace(Move { from_node: from.get(), to_node: to.get() }),
        StepAction::Remove(from) => A::Remove(from.get()),
        StepAction::TransferLeader(to) => A::TransferLeader(to.get()),
    };
    pb::PlaceRequest {
        range_id: step.range.get(),
        expected_epoch: Some(codec::epoch_to_pb(&step.expected_epoch)),
        action: Some(action),
    }
}

/// A place request → the step.
pub(crate) fn place_from_pb(req: pb::PlaceRequest) -> Result<PlaceStep> {
    use pb::place_request::Action as A;
    let n = NodeId::new;
    let action =
        match req.action.ok_or_else(|| Error::Malformed("a placement step without an action".into()))? {
            A::AddVoter(to) => StepAction::AddVoter(n(to)),
            A::AddLearner(to) => StepAction::AddLearner(n(to)),
            A::Replace(m) => StepAction::Replace { from: n(m.from_node), to: n(m.to_node) },
            A::Remove(from) => StepAction::Remove(n(from)),
            A::TransferLeader(to) => StepAction::TransferLeader(n(to)),
            A::SplitAt(key) => StepAction::SplitAt(key),
        };
    Ok(PlaceStep {
        range: RangeId::new(req.range_id),
        expected_epoch: codec::epoch_from_pb(req.expected_epoch),
        action,
    })
}

/// A ping → its request.
pub(crate) fn ping_to_pb(p: &Ping) -> pb::PingRequest {
    pb::PingRequest {
        from_node: p.from.get(),
        stopped_ranges: p.stopped.iter().map(|r| r.get()).collect(),
        locality: p.locality.clone(),
        leading_ranges: p.leading.iter().map(|r| r.get()).collect(),
        capacity_bytes: p.disk.capacity,
        used_bytes: p.disk.used,
    }
}

/// A ping request → the ping.
pub(crate) fn ping_from_pb(p: pb::PingRequest) -> Ping {
    Ping {
        from: NodeId::new(p.from_node),
        stopped: p.stopped_ranges.into_iter().map(RangeId::new).collect(),
        leading: p.leading_ranges.into_iter().map(RangeId::new).collect(),
        locality: p.locality,
        disk: Disk { capacity: p.capacity_bytes, used: p.used_bytes },
    }
}

/// A meta op's result → its response.
pub(crate) fn meta_result_to_pb(result: &OpResult) -> pb::ProposeMetaResponse {
    match result {
        OpResult::Ids { first } => pb::ProposeMetaResponse { first_id: *first, written: 0 },
        OpResult::DirectoryUpdated { written } => {
            pb::ProposeMetaResponse { first_id: 0, written: *written as u64 }
        }
        _ => pb::ProposeMetaResponse::default(),
    }
}

/// The response to meta op `op` → its result.
pub(crate) fn meta_result_from_pb(op: &Op, resp: &pb::ProposeMetaResponse) -> OpResult {
    match op {
        Op::AllocateIds { .. } => OpResult::Ids { first: resp.first_id },
        Op::UpdateDirectory(_) => OpResult::DirectoryUpdated { written: resp.written as usize },
        _ => OpResult::Done,
    }
}
