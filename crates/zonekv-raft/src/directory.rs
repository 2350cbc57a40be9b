//! The meta range's system records: the range directory and the id allocator
//! (docs/multiraft.md, "Range descriptors and the directory").
//!
//! ```text
//! data  'm' ++ 0x01 ++ start_key  -> value(protobuf(RangeDescriptor))   directory, by start key
//!       'm' ++ 0x02               -> value(next id: u64be)              id allocator
//!       'm' ++ 0x03 ++ record key -> value(record)                      placement records
//! ```
//!
//! Placement records (the node registry and span policies, docs/placement.md) are written by
//! `Op::SetPlacement` and read back whole; their keys and values are the server's.
//!
//! Both live in the span of the leftmost range (it always owns the `'m'` prefix), as ordinary
//! replicated data with the same value framing and checksum as user values. The directory is an
//! index: each range's own descriptor (in its replicated state) is the truth, and an entry is
//! only ever replaced by a descriptor with a newer epoch.

use std::ops::Bound;

use bytes::Bytes;
use prost::Message;
use zonekv_engine::{Cf, Engine, KeyRange, Reader};
use zonekv_proto::raft::v1 as pb;

use crate::codec::{descriptor_from_pb, descriptor_to_pb};
use crate::keys::system_key;
use crate::range::RangeDescriptor;
use crate::state_machine::Pending;
use crate::{Error, Result, value};

/// The first id the allocator hands out. Ids below it are node ids, which the first range uses
/// as its initial replica ids; keeping the two apart means an allocated replica id can never
/// collide with a node that later joins the first range under its node id.
pub const FIRST_ALLOCATED_ID: u64 = 1 << 32;

const DIRECTORY: u8 = 0x01;
const NEXT_ID: u8 = 0x02;
const PLACEMENT: u8 = 0x03;

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
pub fn placement_records<R: Reader + ?Sized>(reader: &R, group: u64) -> Result<Vec<(Bytes, Bytes)>> {
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

/// The data-column-family key of the directory entry of the range starting at `start`.
pub fn directory_key(start: &[u8]) -> Vec<u8> {
    let mut suffix = Vec::with_capacity(start.len() + 1);
    suffix.push(DIRECTORY);
    suffix.extend_from_slice(start);
    system_key(&suffix)
}

fn decode_entry(group: u64, key: &[u8], stored: &[u8]) -> Result<RangeDescriptor> {
    let corrupt = |why: String| Error::Corruption { group, what: format!("directory entry {key:?}: {why}") };
    let payload = value::decode(stored).map_err(|why| corrupt(why.to_string()))?;
    let msg = pb::RangeDescriptor::decode(payload).map_err(|e| corrupt(e.to_string()))?;
    Ok(descriptor_from_pb(msg))
}

/// The directory entry of the range that holds user key `key`, read from the meta range's data
/// on this node (`group` names it in errors).
pub fn lookup<R: Reader + ?Sized>(reader: &R, group: u64, key: &[u8]) -> Result<Option<RangeDescriptor>> {
    let span =
        KeyRange { start: Bound::Included(directory_key(b"")), end: Bound::Included(directory_key(key)) };
    let Some(pair) = reader.scan(Cf::Data, &span, true)?.next() else { return Ok(None) };
    let (k, v) = pair?;
    let desc = decode_entry(group, &k, &v)?;
    Ok(desc.contains(key).then_some(desc))
}

/// Every directory entry, in key order.
pub fn entries<R: Reader + ?Sized>(reader: &R, group: u64) -> Result<Vec<RangeDescriptor>> {
    let span = KeyRange::prefix(&directory_key(b""));
    reader
        .scan(Cf::Data, &span, false)?
        .map(|pair| {
            let (k, v) = pair?;
            decode_entry(group, &k, &v)
        })
        .collect()
}

/// Allocates `count` ids; returns the first.
pub(crate) fn allocate<E: Engine>(engine: &E, group: u64, pending: &mut Pending, count: u64) -> Result<u64> {
    let key = system_key(&[NEXT_ID]);
    let next = match pending.get_raw(engine, group, &key)? {
        Some(v) => u64::from_be_bytes(v.as_ref().try_into().map_err(|_| Error::Corruption {
            group,
            what: format!("the id allocator record is {} bytes, not 8", v.len()),
        })?),
        None => FIRST_ALLOCATED_ID,
    };
    let Some(after) = next.checked_add(count) else {
        return Err(Error::Malformed(format!("allocating {count} ids from {next} overflows")));
    };
    pending.set_raw(key, Some(&Bytes::copy_from_slice(&after.to_be_bytes())));
    Ok(next)
}

/// Records each descriptor whose epoch is newer than the entry at its start key; returns how
/// many were written.
pub(crate) fn update<E: Engine>(
    engine: &E,
    group: u64,
    pending: &mut Pending,
    descs: &[RangeDescriptor],
) -> Result<usize> {
    let mut written = 0;
    for d in descs {
        let key = directory_key(&d.start);
        let newer = match pending.get_raw(engine, group, &key)? {
            Some(v) => {
                let current = pb::RangeDescriptor::decode(v.as_ref()).map_err(|e| Error::Corruption {
                    group,
                    what: format!("directory entry {key:?}: {e}"),
                })?;
                // A range keeps its start key, and a new range at a start key comes from a split
                // of the range that covered it, with a higher version: the epoch orders them.
                d.epoch > descriptor_from_pb(current).epoch
            }
            None => true,
        };
        if newer {
            pending.set_raw(key, Some(&Bytes::from(descriptor_to_pb(d).encode_to_vec())));
            written += 1;
        }
    }
    Ok(written)
}
