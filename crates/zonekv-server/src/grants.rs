//! Which keys a client user may touch (docs/security.md, "Authorization"): `root` (and every
//! caller of an insecure node) all of them; another user only what its grants (replicated in
//! the meta range, `zonekv grant`) allow, by key prefix, read-only or read-write. Nodes use
//! no key-value calls. Checked by the key-value service for every key and scan span of a
//! request before it reaches the store, so a refused request changes nothing.

use std::ops::Bound;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use zonekv_control::grants::{Grant, Grants};
use zonekv_store::Store;

use crate::auth::Caller;
use crate::handle::Engine;
use crate::{Error, Result};

/// The grants as this node's copy of the meta range has them, read again only when the meta
/// range has applied something new.
#[derive(Clone)]
pub(crate) struct KeyAccess {
    store: Store<Engine>,
    cache: Arc<Mutex<Option<Cached>>>,
}

/// The grants, and the meta range's applied log id they were read at.
type Cached = (Option<zonekv_raft::LogId>, Arc<Grants>);

impl KeyAccess {
    pub(crate) fn new(store: Store<Engine>) -> Self {
        Self { store, cache: Arc::default() }
    }

    fn grants(&self) -> Result<Arc<Grants>> {
        let applied = self.store.meta_applied();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, grants)) = cache.as_ref()
            && *at == applied
        {
            return Ok(grants.clone());
        }
        let grants = Arc::new(zonekv_control::grants::read(self.store.engine())?);
        *cache = Some((applied, grants.clone()));
        Ok(grants)
    }

    /// The grants of a user other than root; `None` for callers that may touch every key.
    fn of(&self, caller: &Caller) -> Result<Option<(String, Vec<Grant>)>> {
        match caller {
            c if c.is_root() => Ok(None),
            Caller::User(u) => Ok(Some((u.clone(), self.grants()?.get(u).cloned().unwrap_or_default()))),
            Caller::Node(n) => {
                Err(Error::PermissionDenied(format!("node {n} may not use the key-value API")))
            }
            Caller::Insecure => Ok(None),
        }
    }

    /// Fails unless `caller` may read (or with `write`, write) `key`.
    pub(crate) fn check_key(&self, caller: &Caller, key: &[u8], write: bool) -> Result<()> {
        let Some((user, grants)) = self.of(caller)? else { return Ok(()) };
        if grants.iter().any(|g| key.starts_with(&g.prefix) && (g.write || !write)) {
            return Ok(());
        }
        Err(denied(&user, &grants, &format!("{} key {:?}", if write { "write" } else { "read" }, show(key))))
    }

    /// Fails unless `caller` may read every key of the scan span `[start, end)`: it must lie
    /// inside one granted prefix.
    pub(crate) fn check_span(&self, caller: &Caller, start: &Bound<Bytes>, end: &Bound<Bytes>) -> Result<()> {
        let Some((user, grants)) = self.of(caller)? else { return Ok(()) };
        let inside = |g: &Grant| {
            let from_ok = match start {
                Bound::Included(s) | Bound::Excluded(s) => s.starts_with(&g.prefix),
                Bound::Unbounded => g.prefix.is_empty(),
            };
            let to_ok = match (end, prefix_end(&g.prefix)) {
                (_, None) => true,
                (Bound::Unbounded, Some(_)) => false,
                (Bound::Excluded(e), Some(pe)) => *e <= pe,
                (Bound::Included(e), Some(pe)) => *e < pe,
            };
            from_ok && to_ok
        };
        if grants.iter().any(inside) {
            return Ok(());
        }
        let b = |x: &Bound<Bytes>| match x {
            Bound::Included(k) | Bound::Excluded(k) => format!("{:?}", show(k)),
            Bound::Unbounded => "∞".into(),
        };
        Err(denied(&user, &grants, &format!("scan from {} to {}", b(start), b(end))))
    }
}

/// The first key after every key starting with `prefix`; `None` if there is none (the empty
/// prefix, or all 0xff).
fn prefix_end(prefix: &[u8]) -> Option<Bytes> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end.into());
        }
    }
    None
}

fn show(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

fn denied(user: &str, grants: &[Grant], what: &str) -> Error {
    let has = if grants.is_empty() {
        "no grants".to_string()
    } else {
        grants
            .iter()
            .map(|g| format!("{:?} ({})", show(&g.prefix), if g.write { "read-write" } else { "read-only" }))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Error::PermissionDenied(format!("user {user} may not {what}; its grants: {has} (see `zonekv grant`)"))
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn a_prefix_ends_after_its_last_key() {
        assert_eq!(prefix_end(b"users/").as_deref(), Some(&b"users0"[..]));
        assert_eq!(prefix_end(b"a\xff").as_deref(), Some(&b"b"[..]));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
