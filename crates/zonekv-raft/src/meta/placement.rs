//! Placement records: the control plane's node registry and span policies (docs/placement.md),
//! kept in the meta range so they are replicated, survive restarts and are the same for
//! whichever node leads it. This module owns their key space and the apply of
//! `Op::SetPlacement`; what a record's key and value mean is the registry's
//! (`zonekv-control`, `registry.rs`).
//!
//! ```text
//! data  'm' ++ 0x03 ++ record key  -> value(record)
//! ```

use bytes::Bytes;
use zonekv_engine::{Cf, KeyRange, Reader};

use super::{PLACEMENT, system_key};
use crate::stored::Pending;
use crate::{Error, RangeId, Result, value};

/// The data-column-family key of placement record `key`.
pub fn placement_key(key: &[u8]) -> Vec<u8> {
    let mut suffix = Vec::with_capacity(key.len() + 1);
    suffix.push(PLACEMENT);
    suffix.extend_from_slice(key);
    system_key(&suffix)
}

/// Every placement record (key below the placement prefix, value), in key order, read from the
/// meta range's data on this node (`group` names it in errors). A record whose checksum fails
/// is an error, never skipped.
pub fn records<R: Reader + ?Sized>(reader: &R, group: RangeId) -> Result<Vec<(Bytes, Bytes)>> {
    let prefix = placement_key(b"");
    reader
        .scan(Cf::Data, &KeyRange::prefix(&prefix), false)?
        .map(|pair| {
            let (k, v) = pair?;
            let value = value::decode(&v)
                .map_err(|why| Error::Corruption { group, what: format!("placement record {k:?}: {why}") })?;
            Ok((Bytes::copy_from_slice(&k[prefix.len()..]), value))
        })
        .collect()
}

/// Sets (or with `None` clears) placement record `key` in this apply.
pub(crate) fn set(pending: &mut Pending, key: &[u8], value: Option<&Bytes>) {
    pending.set_raw(placement_key(key), value);
}
