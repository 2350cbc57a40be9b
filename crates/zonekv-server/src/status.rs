//! Mapping of [`Error`] to gRPC statuses (unary calls) and to in-band stream errors: the only
//! place the node's errors meet the wire.

use tonic::{Code, Status};
use zonekv_proto::kv::v1 as pb;

use crate::Error;

/// The gRPC code of an error.
fn code(e: &Error) -> Code {
    match e {
        Error::InvalidArgument(_) | Error::Config(_) => Code::InvalidArgument,
        Error::NotLeader { .. } | Error::Unavailable(_) => Code::Unavailable,
        Error::NotInitialized(_) | Error::FailedPrecondition(_) | Error::RangeKeyMismatch(_) => {
            Code::FailedPrecondition
        }
        Error::NotFound(_) => Code::NotFound,
        Error::OutcomeUnknown(_) => Code::Unknown,
        Error::Storage(s) if s.is_corruption() => Code::DataLoss,
        Error::Raft(r) if r.is_corruption() => Code::DataLoss,
        Error::ReplicaStopped { .. } | Error::Storage(_) | Error::Raft(_) => Code::Internal,
        Error::Listen { .. } | Error::Join { .. } => Code::Internal,
    }
}

/// True if the request surely had no effect (nothing was proposed).
fn not_applied(e: &Error) -> bool {
    matches!(
        e,
        Error::NotLeader { .. }
            | Error::NotInitialized(_)
            | Error::InvalidArgument(_)
            | Error::Unavailable(_)
            | Error::NotFound(_)
            | Error::FailedPrecondition(_)
            | Error::RangeKeyMismatch(_)
    )
}

fn leader(e: &Error) -> Option<(u64, Option<&str>)> {
    match e {
        Error::NotLeader { leader: Some(h), .. } => Some((h.node_id, h.addr.as_deref())),
        _ => None,
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        pb::Error::from(e).into()
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
            range_mismatch: matches!(e, Error::RangeKeyMismatch(_)),
        }
    }
}
