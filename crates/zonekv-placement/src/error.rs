//! Errors of the placement crate: bad input (localities, policies) and policies the cluster
//! cannot satisfy.

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A locality string does not parse.
    #[error("bad locality {input:?}: {reason}")]
    BadLocality {
        /// What was given.
        input: String,
        /// Why it is refused.
        reason: String,
    },
    /// A policy is malformed (a constraint that does not parse, contradicting counts, ...).
    #[error("bad placement policy: {0}")]
    BadPolicy(String),
    /// The policy is well formed but the live nodes cannot satisfy it.
    #[error("placement policy cannot be satisfied: {0}")]
    Unsatisfiable(String),
    /// The cluster description is inconsistent (duplicate node ids, a replica on an unknown
    /// node, ...).
    #[error("bad cluster description: {0}")]
    BadCluster(String),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
