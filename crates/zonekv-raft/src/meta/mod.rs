//! The meta range's system records (docs/multiraft.md, "Range descriptors and the directory").
//! Each kind has one module here that owns its key, its format and the apply of the op that
//! writes it:
//!
//! ```text
//! data  'm' ++ 0x01 ++ start_key  -> value(protobuf(RangeDescriptor))  directory      Op::UpdateDirectory
//!       'm' ++ 0x02               -> value(next id: u64be)             allocator      Op::AllocateIds
//!       'm' ++ 0x03 ++ record key -> value(record)                     placement      Op::SetPlacement
//! ```
//!
//! All live under the system prefix `'m'`, in the span of the leftmost range (it always owns
//! the prefix: splits happen only at user keys), as ordinary replicated data with the same
//! value framing and checksum as user values. Placement records are opaque here: their keys
//! and values belong to the control plane's registry (`zonekv-control`, `registry.rs`), the
//! only code that proposes `Op::SetPlacement`.

pub mod allocator;
pub mod directory;
pub mod placement;

pub use crate::keys::system_key;

/// Tag of directory entries below the system prefix.
const DIRECTORY: u8 = 0x01;
/// Tag of the id allocator's record.
const NEXT_ID: u8 = 0x02;
/// Tag of placement records.
const PLACEMENT: u8 = 0x03;
