//! The client's error type.

use tonic::Code;

/// Result alias for client calls.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Errors a ZoneKV client surfaces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The request is malformed or over a server limit; nothing was changed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The named node or range does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The cluster is not in a state to do this (e.g. not initialised, already initialised).
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// No node could serve the request within the retry budget; nothing was changed.
    #[error("unavailable after {attempts} attempts: {message}")]
    Unavailable {
        /// The last error seen.
        message: String,
        /// Attempts made.
        attempts: u32,
    },
    /// A write may or may not have been applied (timeout, connection lost, leadership change
    /// during the write). Read the key before retrying a non-idempotent write.
    #[error("write outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// A replica found damaged data and refused to serve it.
    #[error("data loss reported by the server: {0}")]
    DataLoss(String),
    /// Any other server failure.
    #[error("server error ({code:?}): {message}")]
    Server {
        /// The gRPC status code.
        code: Code,
        /// The server's message.
        message: String,
    },
    /// The client was given no usable endpoint.
    #[error("client configuration: {0}")]
    Config(String),
}

impl ClientError {
    pub(crate) fn from_status(s: &tonic::Status) -> Self {
        let message = s.message().to_string();
        match s.code() {
            Code::InvalidArgument | Code::OutOfRange => ClientError::InvalidArgument(message),
            Code::NotFound => ClientError::NotFound(message),
            Code::FailedPrecondition => ClientError::FailedPrecondition(message),
            Code::Unavailable => ClientError::Unavailable { message, attempts: 1 },
            // The request may have reached the server before the call broke off.
            Code::Unknown | Code::Cancelled | Code::DeadlineExceeded => ClientError::OutcomeUnknown(message),
            Code::DataLoss => ClientError::DataLoss(message),
            code => ClientError::Server { code, message },
        }
    }
}
