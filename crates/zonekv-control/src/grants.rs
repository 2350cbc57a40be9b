//! Key grants (docs/security.md, "Authorization"): which keys a client user other than
//! `root` may read, or read and write — like etcd's key-range permissions, by key prefix. One
//! placement record per user in the meta range, replaced whole by `zonekv grant` and `revoke`
//! (through the registrar); every node reads them from its copy of the meta range.
//!
//! ```text
//! record key  "grant/" ++ user
//! value       repeated (mode: u8 (0 read, 1 read-write) ++ len: u32be ++ prefix)
//! ```

use std::collections::BTreeMap;

use bytes::Bytes;
use zonekv_engine::Engine;
use zonekv_raft::keys::FIRST_RANGE;
use zonekv_raft::meta::placement;

use crate::{Error, Result};

pub(crate) const GRANT: &[u8] = b"grant/";

/// One grant: the keys starting with `prefix` (every key, if empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The key prefix.
    pub prefix: Bytes,
    /// Writes too, not only reads.
    pub write: bool,
}

/// Every user's grants, by user name.
pub type Grants = BTreeMap<String, Vec<Grant>>;

/// The record key of `user`'s grants.
pub(crate) fn grant_key(user: &str) -> Bytes {
    [GRANT, user.as_bytes()].concat().into()
}

pub(crate) fn encode(grants: &[Grant]) -> Bytes {
    let mut out = Vec::new();
    for g in grants {
        out.push(u8::from(g.write));
        out.extend_from_slice(&(g.prefix.len() as u32).to_be_bytes());
        out.extend_from_slice(&g.prefix);
    }
    out.into()
}

pub(crate) fn decode(mut value: &[u8]) -> std::result::Result<Vec<Grant>, String> {
    let mut grants = Vec::new();
    while let Some((&mode, rest)) = value.split_first() {
        if mode > 1 || rest.len() < 4 {
            return Err(format!("grant {} is cut short or has mode {mode}", grants.len()));
        }
        let len = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        let rest = &rest[4..];
        if rest.len() < len {
            return Err(format!(
                "grant {} names a {len}-byte prefix, {} bytes left",
                grants.len(),
                rest.len()
            ));
        }
        grants.push(Grant { prefix: Bytes::copy_from_slice(&rest[..len]), write: mode == 1 });
        value = &rest[len..];
    }
    Ok(grants)
}

/// Every user's grants as this node's copy of the meta range has them. A damaged record
/// grants nothing (and is reported): access fails closed.
pub fn read<E: Engine>(engine: &E) -> Result<Grants> {
    let mut all = Grants::new();
    for (key, value) in placement::records(engine, FIRST_RANGE).map_err(zonekv_store::Error::from)? {
        let Some(user) = key.strip_prefix(GRANT) else { continue };
        let user = String::from_utf8_lossy(user).into_owned();
        match decode(&value) {
            Ok(g) => {
                all.insert(user, g);
            }
            Err(e) => {
                tracing::error!(%user, error = %e, "a grant record is unreadable; the user is granted nothing")
            }
        }
    }
    Ok(all)
}

/// Checks a grant record's value (`check_record`).
pub(crate) fn check(value: &[u8]) -> Result<()> {
    decode(value).map(drop).map_err(|e| Error::InvalidArgument(format!("grant record: {e}")))
}
