//! Key grants (docs/security.md, "Authorization"): which keys a client user other than
//! `root` may read, or read and write — like etcd's key-range permissions, by key prefix. One
//! placement record per user and prefix in the meta range, set and cleared by `zonekv grant`
//! (through the registrar, on the meta range's leader only: a node never forwards a grant);
//! every node reads them from its copy of the meta range.
//!
//! ```text
//! record key  "grant/" ++ user ++ 0x00 ++ prefix
//! value       mode: u8 (0 read, 1 read-write)
//! ```
//!
//! A record per prefix (not a list per user) makes every change one blind write: two changes
//! of one user's grants cannot undo each other.

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

/// Every user's grants, by user name, each user's by prefix.
pub type Grants = BTreeMap<String, Vec<Grant>>;

/// The record key of `user`'s grant of `prefix`.
pub(crate) fn grant_key(user: &str, prefix: &[u8]) -> Bytes {
    [GRANT, user.as_bytes(), &[0], prefix].concat().into()
}

/// The record value of a grant.
pub(crate) fn grant_value(write: bool) -> Bytes {
    Bytes::from(vec![u8::from(write)])
}

/// A grant record's user and grant, or why it is not one.
fn decode(key: &[u8], value: &[u8]) -> std::result::Result<(String, Grant), String> {
    let rest = key.strip_prefix(GRANT).ok_or("not a grant record")?;
    let at = rest.iter().position(|&b| b == 0).ok_or("no NUL between user and prefix")?;
    let user = std::str::from_utf8(&rest[..at]).map_err(|_| "the user name is not UTF-8")?;
    let write = match value {
        [0] => false,
        [1] => true,
        other => return Err(format!("mode {other:?} (0 read, 1 read-write)")),
    };
    Ok((user.to_string(), Grant { prefix: Bytes::copy_from_slice(&rest[at + 1..]), write }))
}

/// Every user's grants as this node's copy of the meta range has them. A damaged record
/// grants nothing (and is reported): access fails closed.
pub fn read<E: Engine>(engine: &E) -> Result<Grants> {
    let mut all = Grants::new();
    for (key, value) in placement::records(engine, FIRST_RANGE).map_err(zonekv_store::Error::from)? {
        if !key.starts_with(GRANT) {
            continue;
        }
        match decode(&key, &value) {
            Ok((user, grant)) => all.entry(user).or_default().push(grant),
            Err(e) => tracing::error!(?key, error = %e, "a grant record is unreadable; it grants nothing"),
        }
    }
    Ok(all)
}

/// Checks a grant record (`check_record`).
pub(crate) fn check(key: &[u8], value: Option<&[u8]>) -> Result<()> {
    let Some(value) = value else { return Ok(()) };
    decode(key, value).map(drop).map_err(|e| Error::InvalidArgument(format!("grant record {key:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_record_round_trips_and_a_damaged_one_is_refused() {
        let key = grant_key("alice", b"users/\x00x");
        assert_eq!(
            decode(&key, &grant_value(true)),
            Ok(("alice".to_string(), Grant { prefix: Bytes::from_static(b"users/\x00x"), write: true }))
        );
        assert!(decode(&key, b"\x07").is_err());
        assert!(decode(b"grant/nonul", b"\x01").is_err());
        assert!(check(&key, Some(b"")).is_err());
        assert!(check(&key, None).is_ok());
    }
}
