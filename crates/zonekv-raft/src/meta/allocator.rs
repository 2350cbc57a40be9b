//! The id allocator: fresh ids for ranges and replicas, handed out by the meta range
//! (`Op::AllocateIds`), never reused.
//!
//! ```text
//! data  'm' ++ 0x02  -> value(next id: u64be)
//! ```

use bytes::Bytes;
use zonekv_engine::Engine;

use super::{NEXT_ID, system_key};
use crate::stored::Pending;
use crate::{Error, RangeId, Result};

/// The first id the allocator hands out. Ids below it are node ids, which the first range uses
/// as its initial replica ids; keeping the two apart means an allocated replica id can never
/// collide with a node that later joins the first range under its node id.
pub const FIRST_ALLOCATED_ID: u64 = 1 << 32;

/// Most ids one `Op::AllocateIds` may take (a split takes one per replica plus one).
pub const MAX_IDS_PER_OP: u64 = 1024;

/// Allocates `count` ids (1 to [`MAX_IDS_PER_OP`]); returns the first. A count out of bounds
/// or an allocation past `u64::MAX` is `Error::Malformed` and writes nothing.
pub(crate) fn allocate<E: Engine>(
    engine: &E,
    group: RangeId,
    pending: &mut Pending,
    count: u64,
) -> Result<u64> {
    if count == 0 || count > MAX_IDS_PER_OP {
        return Err(Error::Malformed(format!("allocating {count} ids: 1 to {MAX_IDS_PER_OP} at a time")));
    }
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
