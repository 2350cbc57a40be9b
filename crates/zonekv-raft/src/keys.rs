//! The on-disk key layout shared by every Raft group of a node.
//!
//! ```text
//! raft-log  : group_id:u64be ++ index:u64be                 -> record(Entry)
//! raft-meta : group_id:u64be ++ 0x01                        -> record(Vote)
//!             group_id:u64be ++ 0x02                        -> record(LogId)  committed
//!             group_id:u64be ++ 0x03                        -> record(LogId)  last purged
//!             group_id:u64be ++ 0x10                        -> record(AppliedState)
//!             group_id:u64be ++ 0x11                        -> record(RangeDescriptor)
//!             0u64be         ++ 0x20                        -> record(node id)  (node identity)
//! data      : 'm' ++ …                                      -> system records of the meta range
//!             'z' ++ user_key                               -> value (see `value`)
//! ```
//!
//! Big-endian integers make keys sort numerically, so a group's log is one contiguous, ordered
//! key span and a group's metadata sits next to it. User data is not prefixed by group: a range
//! owns a span of user keys, so splitting a range never rewrites data. The `'z'` prefix leaves
//! room for other replicated per-range data (locks, transaction records) in the same column
//! family, sorted before user data.

use zonekv_engine::{Cf, KeyRange, WriteBatch};

use crate::RangeId;

/// Group id 0 is never a Raft group: its metadata prefix holds node-level records.
pub const NODE_GROUP: RangeId = RangeId::new(0);

/// The first range: it covers the whole keyspace until splits carve others out of it, and
/// stays the leftmost range, which holds the system records (the meta range).
pub const FIRST_RANGE: RangeId = RangeId::new(1);

/// Prefix of user keys in the data column family.
pub const DATA_PREFIX: u8 = b'z';

/// Prefix of system records (the range directory) in the data column family. It sorts before
/// [`DATA_PREFIX`], and splits happen only at user keys, so the leftmost range — the meta
/// range — always owns all of it.
pub const SYSTEM_PREFIX: u8 = b'm';

/// Metadata record kinds under a group's prefix in `raft-meta`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MetaKey {
    /// The last vote.
    Vote = 0x01,
    /// The last committed log id known to this replica.
    Committed = 0x02,
    /// The last purged log id.
    Purged = 0x03,
    /// The state machine's applied log id and membership.
    Applied = 0x10,
    /// The range's descriptor, written with the apply that changed it.
    Descriptor = 0x11,
    /// The id of the node owning the data directory (under [`NODE_GROUP`] only).
    NodeIdent = 0x20,
}

/// The key of entry `index` of `group`'s log.
pub fn log_key(group: RangeId, index: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&group.get().to_be_bytes());
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

/// The index encoded in a log key, checking it belongs to `group`.
pub fn log_index(group: RangeId, key: &[u8]) -> Option<u64> {
    if key.len() != 16 || key[..8] != group.get().to_be_bytes() {
        return None;
    }
    Some(u64::from_be_bytes(key[8..].try_into().ok()?))
}

/// Every log key of `group` from `from` (inclusive) to the end of the group's log.
pub fn log_span_from(group: RangeId, from: u64) -> KeyRange {
    KeyRange { start: std::ops::Bound::Included(log_key(group, from).to_vec()), end: group_end(group) }
}

/// The bound after every key of `group` in `raft-log` and `raft-meta` (both start with the
/// group id): the 8-byte key of the next group.
fn group_end(group: RangeId) -> std::ops::Bound<Vec<u8>> {
    match group.get().checked_add(1) {
        Some(next) => std::ops::Bound::Excluded(next.to_be_bytes().to_vec()),
        None => std::ops::Bound::Unbounded,
    }
}

/// The key of a metadata record of `group`.
pub fn meta_key(group: RangeId, kind: MetaKey) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[..8].copy_from_slice(&group.get().to_be_bytes());
    k[8] = kind as u8;
    k
}

/// Every `raft-meta` record of `group`, whatever its kind: the records of [`MetaKey`] and any
/// kind added later.
pub fn group_meta(group: RangeId) -> KeyRange {
    KeyRange { start: std::ops::Bound::Included(group.get().to_be_bytes().to_vec()), end: group_end(group) }
}

/// Adds to `batch` the deletion of everything `group` keeps under its id: its whole log and
/// every one of its `raft-meta` records (vote, committed, purged, applied state, descriptor,
/// and any kind added later). What a destroyed replica leaves behind is only the data of its
/// span, which other ranges on the node may share (the caller decides which part goes). The
/// node's own records (group 0) are never a group's.
pub fn clear_group(batch: &mut WriteBatch, group: RangeId) {
    assert_ne!(group, NODE_GROUP, "group 0 holds the node's own records, not a range's");
    // Every key of a group, in both column families, starts with its 8-byte id.
    let start = group.get().to_be_bytes().to_vec();
    let end = group.get().checked_add(1).map_or_else(|| vec![0xff; 17], |next| next.to_be_bytes().to_vec());
    batch.delete_range(Cf::RaftLog, start.clone(), end.clone());
    batch.delete_range(Cf::RaftMeta, start, end);
}

/// The data-column-family key of a user key.
pub fn data_key(user_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(user_key.len() + 1);
    k.push(DATA_PREFIX);
    k.extend_from_slice(user_key);
    k
}

/// The user key of a data-column-family key, if it is one.
pub fn user_key(data_key: &[u8]) -> Option<&[u8]> {
    match data_key.split_first() {
        Some((&DATA_PREFIX, rest)) => Some(rest),
        _ => None,
    }
}

/// The data-column-family span holding every user key.
pub fn all_user_data() -> KeyRange {
    KeyRange::prefix(&[DATA_PREFIX])
}

/// The data-column-family key of a system record.
pub fn system_key(suffix: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(suffix.len() + 1);
    k.push(SYSTEM_PREFIX);
    k.extend_from_slice(suffix);
    k
}

/// The data-column-family span holding every system record.
pub fn system_data() -> KeyRange {
    KeyRange::prefix(&[SYSTEM_PREFIX])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_sort_by_group_then_index() {
        let g = RangeId::new;
        let mut keys = vec![log_key(g(2), 1), log_key(g(1), 256), log_key(g(1), 2), log_key(g(1), u64::MAX)];
        keys.sort();
        assert_eq!(
            keys,
            vec![log_key(g(1), 2), log_key(g(1), 256), log_key(g(1), u64::MAX), log_key(g(2), 1)]
        );
        assert_eq!(log_index(g(1), &log_key(g(1), 77)), Some(77));
        assert_eq!(log_index(g(2), &log_key(g(1), 77)), None);
    }

    #[test]
    fn log_span_covers_exactly_one_group() {
        let g = RangeId::new;
        let span = log_span_from(g(7), 10);
        assert!(!span.contains(&log_key(g(7), 9)));
        assert!(span.contains(&log_key(g(7), 10)));
        assert!(span.contains(&log_key(g(7), u64::MAX)));
        assert!(!span.contains(&log_key(g(8), 0)));
        assert!(log_span_from(g(u64::MAX), 0).contains(&log_key(g(u64::MAX), 5)));
    }

    #[test]
    fn a_groups_meta_span_holds_every_record_kind_of_it_and_nothing_else() {
        let g = RangeId::new;
        let span = group_meta(g(7));
        for kind in
            [MetaKey::Vote, MetaKey::Committed, MetaKey::Purged, MetaKey::Applied, MetaKey::Descriptor]
        {
            assert!(span.contains(&meta_key(g(7), kind)), "{kind:?}");
            assert!(!span.contains(&meta_key(g(6), kind)) && !span.contains(&meta_key(g(8), kind)));
        }
        // A record kind added later is covered too.
        assert!(span.contains(&[&7u64.to_be_bytes()[..], &[0x7f]].concat()));
        assert!(!span.contains(&meta_key(NODE_GROUP, MetaKey::NodeIdent)));
    }

    #[test]
    fn data_keys_round_trip() {
        assert_eq!(user_key(&data_key(b"abc")), Some(&b"abc"[..]));
        assert!(all_user_data().contains(&data_key(b"")));
        assert!(all_user_data().contains(&data_key(&[0xff; 10])));
        assert_eq!(user_key(b"xabc"), None);
    }
}
