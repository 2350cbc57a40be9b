//! Mapping of [`Error`] to gRPC statuses: the only place the node's errors meet tonic.

use tonic::{Code, Status};

use crate::Error;

use zonekv_proto::metadata::{
    LEADER_ADDR as LEADER_ADDR_HEADER, LEADER_ID as LEADER_ID_HEADER, NOT_APPLIED as NOT_APPLIED_HEADER,
};

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::InvalidArgument(_) | Error::Config(_) => Code::InvalidArgument,
            Error::NotLeader { .. } | Error::Unavailable(_) => Code::Unavailable,
            Error::NotInitialized(_) | Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::NotFound(_) => Code::NotFound,
            Error::OutcomeUnknown(_) => Code::Unknown,
            Error::Storage(s) if s.is_corruption() => Code::DataLoss,
            Error::Raft(r) if r.is_corruption() => Code::DataLoss,
            Error::ReplicaStopped { .. } | Error::Storage(_) | Error::Raft(_) => Code::Internal,
            Error::Listen { .. } | Error::Join { .. } => Code::Internal,
        };
        let mut status = Status::new(code, e.to_string());
        let md = status.metadata_mut();
        if let Error::NotLeader {
            leader: Some(hint), ..
        } = &e
        {
            md.insert(
                LEADER_ID_HEADER,
                hint.node_id
                    .to_string()
                    .parse()
                    .expect("digits are valid metadata"),
            );
            if let Some(addr) = hint.addr.as_ref().and_then(|a| a.parse().ok()) {
                md.insert(LEADER_ADDR_HEADER, addr);
            }
        }
        if matches!(
            e,
            Error::NotLeader { .. }
                | Error::NotInitialized(_)
                | Error::InvalidArgument(_)
                | Error::Unavailable(_)
                | Error::NotFound(_)
                | Error::FailedPrecondition(_)
        ) {
            md.insert(NOT_APPLIED_HEADER, "true".parse().expect("valid metadata"));
        }
        status
    }
}
