//! The node's error type: the store's and the control plane's domain errors, and what can go
//! wrong with the node itself (configuration, listening, joining) and with messages from its
//! peers. Mapped to `tonic::Status` only in `status.rs`.

use zonekv_raft::RangeId;

pub use zonekv_control::Error as ControlError;
pub use zonekv_store::Error as StoreError;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of a ZoneKV node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A request to a replica failed (not the leader, key not in the range, outcome unknown,
    /// storage, …): see [`StoreError`].
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A control-plane operation failed (a split, a move, a membership or registry change):
    /// see [`ControlError`]. Never wraps a [`StoreError`]: those are [`Error::Store`].
    #[error(transparent)]
    Control(ControlError),
    /// The network listener could not be set up.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Joining an existing cluster at startup failed.
    #[error("cannot join the cluster at {addr}: {reason}")]
    Join {
        /// The address given with `--join`.
        addr: String,
        /// Why.
        reason: String,
    },
    /// A message from a peer or a client that does not decode or breaks the protocol. Nothing
    /// was done.
    #[error("{0}")]
    Malformed(String),
    /// The caller presented no usable certificate (docs/security.md). Nothing was done.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller's certificate does not allow this call, or it claims to be another node.
    /// Nothing was done.
    #[error("{0}")]
    PermissionDenied(String),
    /// The certificates could not be loaded or created.
    #[error(transparent)]
    Tls(#[from] zonekv_tls::Error),
    /// A request or stream exceeds what the node accepts (a snapshot past
    /// `raft.max-snapshot-bytes`). Nothing was applied; retrying the same will fail the same.
    #[error("{0}")]
    ResourceExhausted(String),
    /// A named thing (a node of a local cluster) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A peer's stream broke mid-call (its status as received).
    #[error("{}", .0.message())]
    Stream(tonic::Status),
    /// What the node (or a local cluster) waited for did not happen in time, or a client of
    /// it failed (the demo).
    #[error("{0}")]
    Unavailable(String),
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// A snapshot arrived damaged (a chunk failed its checksum). Nothing was installed.
    #[error("{0}")]
    SnapshotDamaged(String),
    /// A range's Raft refused a peer's message.
    #[error("range {range}: {message}")]
    RaftRefused {
        /// The range.
        range: RangeId,
        /// openraft's reason.
        message: String,
        /// The replica has stopped (the sender takes the node as unreachable).
        stopped: bool,
    },
}

impl From<ControlError> for Error {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Store(s) => Error::Store(s),
            other => Error::Control(other),
        }
    }
}
