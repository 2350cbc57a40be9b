//! The range directory (docs/multiraft.md, "Range descriptors and the directory"): every
//! range's descriptor by start key, in the meta range's data. An index: each range's own
//! descriptor (in its replicated state) is the truth, and an entry is only ever replaced by a
//! descriptor with a newer epoch (`Op::UpdateDirectory`, applied by [`update`]).
//!
//! ```text
//! data  'm' ++ 0x01 ++ start_key  -> value(protobuf(RangeDescriptor))
//! ```

use std::ops::Bound;

use bytes::Bytes;
use prost::Message;
use zonekv_engine::{Cf, Engine, KeyRange, Reader};
use zonekv_proto::raft::v1 as pb;

use super::{DIRECTORY, system_key};
use crate::codec::{descriptor_from_pb, descriptor_to_pb};
use crate::range::RangeDescriptor;
use crate::stored::Pending;
use crate::{Error, RangeId, Result, value};

/// The data-column-family key of the directory entry of the range starting at `start`.
pub fn directory_key(start: &[u8]) -> Vec<u8> {
    let mut suffix = Vec::with_capacity(start.len() + 1);
    suffix.push(DIRECTORY);
    suffix.extend_from_slice(start);
    system_key(&suffix)
}

fn decode_entry(group: RangeId, key: &[u8], stored: &[u8]) -> Result<RangeDescriptor> {
    let corrupt = |why: String| Error::Corruption { group, what: format!("directory entry {key:?}: {why}") };
    let payload = value::decode(stored).map_err(|why| corrupt(why.to_string()))?;
    let msg = pb::RangeDescriptor::decode(payload).map_err(|e| corrupt(e.to_string()))?;
    Ok(descriptor_from_pb(msg))
}

/// The directory entry of the range that holds user key `key`, read from the meta range's data
/// on this node (`group` names it in errors).
pub fn lookup<R: Reader + ?Sized>(reader: &R, group: RangeId, key: &[u8]) -> Result<Option<RangeDescriptor>> {
    let span =
        KeyRange { start: Bound::Included(directory_key(b"")), end: Bound::Included(directory_key(key)) };
    let Some(pair) = reader.scan(Cf::Data, &span, true)?.next() else { return Ok(None) };
    let (k, v) = pair?;
    let desc = decode_entry(group, &k, &v)?;
    Ok(desc.contains(key).then_some(desc))
}

/// Every directory entry, in key order.
pub fn entries<R: Reader + ?Sized>(reader: &R, group: RangeId) -> Result<Vec<RangeDescriptor>> {
    let span = KeyRange::prefix(&directory_key(b""));
    reader
        .scan(Cf::Data, &span, false)?
        .map(|pair| {
            let (k, v) = pair?;
            decode_entry(group, &k, &v)
        })
        .collect()
}

/// Whether `descs` may be recorded in the directory at all: every descriptor names a range
/// (id 0 is none), a non-empty span, at least one voter, and each replica and node once. A descriptor without voters would make every
/// node's copy of the range look removed. Checked before proposing and again at apply (where
/// a failure is the op's result, `OpResult::Refused`).
pub fn check(descs: &[RangeDescriptor]) -> std::result::Result<(), String> {
    for d in descs {
        let what = || format!("directory entry for range {} starting at {:?}", d.range_id, d.start);
        if d.range_id.get() == 0 {
            return Err(format!("{}: range id 0 names no range", what()));
        }
        if d.end.as_ref().is_some_and(|end| *end <= d.start) {
            return Err(format!("{}: its end {:?} is not after its start", what(), d.end));
        }
        if !d.replicas.iter().any(|r| !r.learner) {
            return Err(format!("{}: it has no voter", what()));
        }
        let mut replicas: Vec<_> = d.replicas.iter().map(|r| r.replica_id).collect();
        let mut nodes: Vec<_> = d.replicas.iter().map(|r| r.node_id).collect();
        replicas.sort_unstable();
        nodes.sort_unstable();
        if replicas.windows(2).any(|w| w[0] == w[1]) || nodes.windows(2).any(|w| w[0] == w[1]) {
            return Err(format!("{}: a replica or node is listed twice", what()));
        }
    }
    Ok(())
}

/// Records each descriptor whose epoch is newer than the entry at its start key; returns how
/// many were written.
pub(crate) fn update<E: Engine>(
    engine: &E,
    group: RangeId,
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
