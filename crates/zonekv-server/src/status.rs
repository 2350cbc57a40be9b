//! Where errors meet the wire, both ways, and the only module that builds a `tonic::Status`:
//! the node's errors as gRPC statuses (unary calls) and in-band errors (client streams, Raft
//! batch frames); statuses from peers as the control plane's [`PeerError`]; and the statuses
//! of the Raft transport's own link failures.

use tonic::{Code, Status};
use zonekv_control::PeerError;
use zonekv_proto::kv::v1 as pb;
use zonekv_proto::metadata;
use zonekv_proto::raft::v1 as raft_pb;

use crate::{ControlError, Error, StoreError};

/// The gRPC code of a store error.
fn store_code(e: &StoreError) -> Code {
    match e {
        StoreError::InvalidArgument(_) => Code::InvalidArgument,
        StoreError::NotLeader { .. } | StoreError::Unavailable(_) => Code::Unavailable,
        StoreError::NotInitialized(_)
        | StoreError::FailedPrecondition(_)
        | StoreError::RangeKeyMismatch(_) => Code::FailedPrecondition,
        StoreError::NotFound(_) => Code::NotFound,
        StoreError::Overloaded(_) | StoreError::DiskFull(_) => Code::ResourceExhausted,
        StoreError::OutcomeUnknown(_) => Code::Unknown,
        e if e.is_corruption() => Code::DataLoss,
        StoreError::ReplicaStopped { .. }
        | StoreError::Storage(_)
        | StoreError::Raft(_)
        | StoreError::OtherNode { .. } => Code::Internal,
    }
}

/// The gRPC code of an error.
fn code(e: &Error) -> Code {
    match e {
        Error::Config(_) | Error::Malformed(_) => Code::InvalidArgument,
        Error::Store(s) => store_code(s),
        Error::Control(c) => match c {
            ControlError::InvalidArgument(_) => Code::InvalidArgument,
            ControlError::FailedPrecondition(_) => Code::FailedPrecondition,
            ControlError::NotFound(_) => Code::NotFound,
            ControlError::PermissionDenied(_) => Code::PermissionDenied,
            ControlError::Unavailable(_) => Code::Unavailable,
            ControlError::Store(s) => store_code(s),
        },
        Error::ShuttingDown | Error::Unavailable(_) => Code::Unavailable,
        Error::NotFound(_) => Code::NotFound,
        Error::Unauthenticated(_) => Code::Unauthenticated,
        Error::ResourceExhausted(_) => Code::ResourceExhausted,
        Error::PermissionDenied(_) => Code::PermissionDenied,
        Error::Tls(_) => Code::Internal,
        Error::Stream(s) => s.code(),
        Error::SnapshotDamaged(_) => Code::DataLoss,
        Error::RaftRefused { stopped: true, .. } => Code::Unavailable,
        Error::RaftRefused { stopped: false, .. } => Code::FailedPrecondition,
        Error::Listen { .. } | Error::Join { .. } => Code::Internal,
    }
}

/// True if the request surely had no effect (nothing was proposed).
fn not_applied(e: &Error) -> bool {
    match e {
        Error::Store(s) | Error::Control(ControlError::Store(s)) => s.not_applied(),
        Error::Control(_)
        | Error::Malformed(_)
        | Error::ShuttingDown
        | Error::Unavailable(_)
        | Error::Unauthenticated(_)
        | Error::ResourceExhausted(_)
        | Error::PermissionDenied(_)
        | Error::NotFound(_) => true,
        Error::Stream(_) => false,
        Error::Config(_)
        | Error::Tls(_)
        | Error::SnapshotDamaged(_)
        | Error::RaftRefused { .. }
        | Error::Listen { .. }
        | Error::Join { .. } => false,
    }
}

fn leader(e: &Error) -> Option<(u64, Option<&str>)> {
    match e {
        Error::Store(StoreError::NotLeader { leader: Some(h), .. }) => {
            Some((h.node_id.get(), h.addr.as_deref()))
        }
        _ => None,
    }
}

impl From<Error> for pb::Error {
    fn from(e: Error) -> Self {
        let (leader_id, leader_addr) =
            leader(&e).map_or((0, String::new()), |(id, a)| (id, a.unwrap_or("").into()));
        pb::Error {
            code: code(&e) as i32,
            message: e.to_string(),
            leader_id,
            leader_addr,
            not_applied: not_applied(&e),
            range_mismatch: matches!(e, Error::Store(StoreError::RangeKeyMismatch(_))),
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            // A peer's stream error goes back as it came.
            Error::Stream(status) => status,
            e => pb::Error::from(e).into(),
        }
    }
}

/// An error as the answer frame of a Raft batch stream.
pub(crate) fn frame_error(e: Error) -> raft_pb::FrameError {
    raft_pb::FrameError { code: code(&e) as i32, message: e.to_string() }
}

/// The status an answer frame carries.
pub(crate) fn from_frame(e: raft_pb::FrameError) -> Status {
    Status::new(Code::from_i32(e.code), e.message)
}

/// The status of an exchange whose link to the peer failed (the batch stream broke, the node
/// stops, the peer ended it): the peer is unreachable, nothing more is known.
pub(crate) fn link_failed(why: impl std::fmt::Display) -> Status {
    Status::unavailable(why.to_string())
}

/// Whether a status from a peer means the peer could not be reached (or could not act now),
/// as opposed to refusing the request.
pub(crate) fn is_unreachable(status: &Status) -> bool {
    status.code() == Code::Unavailable
}

/// A peer's answer to a control-plane call, as the control plane's error: retry (naming the
/// leader the peer knows) when the peer says nothing was done or it cannot act now, else
/// refused.
pub(crate) fn peer_error(status: &Status) -> PeerError {
    let leader =
        status.metadata().get(metadata::LEADER_ADDR).and_then(|v| v.to_str().ok()).map(str::to_string);
    let message = status.message().to_string();
    if status.code() == Code::Unavailable || status.metadata().get(metadata::NOT_APPLIED).is_some() {
        PeerError::Retry { leader, message }
    } else {
        PeerError::Refused(message)
    }
}
