//! The engine error type, shared by every engine implementation.

/// Result alias for engine operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors raised by a storage engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The data on disk is damaged: a checksum did not match, a record is truncated or
    /// malformed. Corrupt data is never returned to a caller.
    #[error("corruption: {0}")]
    Corruption(String),
    /// The engine could not be opened: missing or locked directory, incompatible files, bad
    /// options.
    #[error("cannot open storage at {path}: {reason}")]
    Open {
        /// The data directory.
        path: String,
        /// What went wrong, as reported by the engine.
        reason: String,
    },
    /// An I/O error from the operating system or the engine's file layer.
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The disk is full: the write was refused and changed nothing. Not damage; writes work
    /// again once space is freed.
    #[error("storage is full: {0}")]
    NoSpace(String),
    /// Any other failure reported by the underlying engine.
    #[error("storage engine error: {0}")]
    Backend(String),
}

impl Error {
    /// True if the error means stored data is damaged (as opposed to a transient failure).
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corruption(_))
    }
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Io(io) => io,
            Error::Corruption(m) => std::io::Error::new(std::io::ErrorKind::InvalidData, m),
            other => std::io::Error::other(other.to_string()),
        }
    }
}
