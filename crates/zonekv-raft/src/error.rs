//! Errors of the Raft storage layer.

use crate::RangeId;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors raised by ZoneKV's Raft storage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The storage engine failed.
    #[error(transparent)]
    Engine(#[from] zonekv_engine::Error),
    /// A stored record failed its checksum or could not be decoded.
    #[error("corruption in group {group}: {what}")]
    Corruption {
        /// The Raft group whose data is damaged.
        group: RangeId,
        /// Which record and how.
        what: String,
    },
    /// A message from the network could not be turned into a Raft type.
    #[error("malformed message: {0}")]
    Malformed(String),
}

impl Error {
    /// True if the error means stored data is damaged.
    pub fn is_corruption(&self) -> bool {
        match self {
            Error::Corruption { .. } => true,
            Error::Engine(e) => e.is_corruption(),
            Error::Malformed(_) => false,
        }
    }
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Engine(e) => e.into(),
            corrupt @ Error::Corruption { .. } => {
                std::io::Error::new(std::io::ErrorKind::InvalidData, corrupt.to_string())
            }
            Error::Malformed(m) => std::io::Error::new(std::io::ErrorKind::InvalidInput, m),
        }
    }
}
