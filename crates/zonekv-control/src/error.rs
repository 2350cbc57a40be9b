//! The control plane's error type. Domain errors; the server maps them to gRPC statuses.

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of a control-plane operation (a split, a move, a membership or registry change, a
/// placement step).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A replica refused or failed the operation (not the leader, stopped, …).
    #[error(transparent)]
    Store(#[from] zonekv_store::Error),
    /// The request names something impossible (a bad policy or span, a node that already
    /// holds the replica). Nothing was changed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The cluster's state forbids it now (the range changed since the step was planned, a
    /// step is already running, the policy could no longer be met). Nothing was changed.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The calling node may not ask for this (it reports a range it hosts no replica of).
    /// Nothing was changed.
    #[error("{0}")]
    PermissionDenied(String),
    /// A named node, range or policy does not exist.
    #[error("{0}")]
    NotFound(String),
    /// It could not be done now: the meta range's leader or a peer did not answer, or a
    /// step did not finish in time.
    #[error("{0}")]
    Unavailable(String),
}

/// How a call to another node failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// Nothing was done, and the call may be retried: the peer was unreachable, is not the
    /// leader (naming the leader's address if it knows it), or could not act now.
    #[error("{message}")]
    Retry {
        /// The leader the peer named, if any.
        leader: Option<String>,
        /// Why.
        message: String,
    },
    /// The peer refused the request; asking again, or elsewhere, will not help.
    #[error("{0}")]
    Refused(String),
}
