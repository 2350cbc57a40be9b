//! The certificates directory (docs/security.md, "Certificates"), laid out as `cockroach cert`
//! does:
//!
//! ```text
//! ca.crt               the cluster's CA certificate: every node and client trusts it
//! ca.key               the CA's private key (0600): only where certificates are created
//! node.crt, node.key   this node's certificate (its node id and host names) and key
//! client.USER.crt/key  the certificate of client user USER (`root` may call admin RPCs)
//! ```

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The user with every right: admin RPCs and every key.
pub const ROOT_USER: &str = "root";

/// A certificates directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertsDir {
    path: PathBuf,
}

impl CertsDir {
    /// The directory at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `ca.crt`.
    pub fn ca_cert(&self) -> PathBuf {
        self.path.join("ca.crt")
    }

    /// `ca.key`.
    pub fn ca_key(&self) -> PathBuf {
        self.path.join("ca.key")
    }

    /// `node.crt`.
    pub fn node_cert(&self) -> PathBuf {
        self.path.join("node.crt")
    }

    /// `node.key`.
    pub fn node_key(&self) -> PathBuf {
        self.path.join("node.key")
    }

    /// `client.USER.crt`.
    pub fn client_cert(&self, user: &str) -> PathBuf {
        self.path.join(format!("client.{user}.crt"))
    }

    /// `client.USER.key`.
    pub fn client_key(&self, user: &str) -> PathBuf {
        self.path.join(format!("client.{user}.key"))
    }
}

/// Checks a user name: 1 to 63 characters `a-z 0-9 _ - .`, starting with a letter, and not
/// `node` (the common name of node certificates).
pub fn check_user(user: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(c);
    if user.is_empty()
        || user.len() > 63
        || !user.starts_with(|c: char| c.is_ascii_lowercase())
        || !user.chars().all(ok_char)
    {
        return Err(Error::InvalidArgument(format!(
            "user name {user:?}: 1 to 63 characters a-z, 0-9, '_', '-', '.', starting with a letter"
        )));
    }
    if user == crate::identity::NODE_COMMON_NAME {
        return Err(Error::InvalidArgument("\"node\" names node certificates, not a user".into()));
    }
    Ok(())
}
