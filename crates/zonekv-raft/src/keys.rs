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

use zonekv_engine::KeyRange;

/// Group id 0 is never a Raft group: its metadata prefix holds node-level records.
pub const NODE_GROUP: u64 = 0;

/// The first range: it covers the whole keyspace until splits carve others out of it, and
/// stays the leftmost range, which holds the system records (the meta range).
pub const FIRST_RANGE: u64 = 1;

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
pub fn log_key(group: u64, index: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&group.to_be_bytes());
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

/// The index encoded in a log key, checking it belongs to `group`.
pub fn log_index(group: u64, key: &[u8]) -> Option<u64> {
    if key.len() != 16 || key[..8] != group.to_be_bytes() {
        return None;
    }
    Some(u64::from_be_bytes(key[8..].try_into().ok()?))
}

/// Every log key of `group` from `from` (inclusive) to the end of the group's log.
pub fn log_span_from(group: u64, from: u64) -> KeyRange {
    let end = match group.checked_add(1) {
        Some(next) => std::ops::Bound::Excluded(next.to_be_bytes().to_vec()),
        None => std::ops::Bound::Unbounded,
    };
    KeyRange { start: std::ops::Bound::Included(log_key(group, from).to_vec()), end }
}

/// The key of a metadata record of `group`.
pub fn meta_key(group: u64, kind: MetaKey) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[..8].copy_from_slice(&group.to_be_bytes());
    k[8] = kind as u8;
    k
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
        let mut keys = vec![log_key(2, 1), log_key(1, 256), log_key(1, 2), log_key(1, u64::MAX)];
        keys.sort();
        assert_eq!(keys, vec![log_key(1, 2), log_key(1, 256), log_key(1, u64::MAX), log_key(2, 1)]);
        assert_eq!(log_index(1, &log_key(1, 77)), Some(77));
        assert_eq!(log_index(2, &log_key(1, 77)), None);
    }

    #[test]
    fn log_span_covers_exactly_one_group() {
        let span = log_span_from(7, 10);
        assert!(!span.contains(&log_key(7, 9)));
        assert!(span.contains(&log_key(7, 10)));
        assert!(span.contains(&log_key(7, u64::MAX)));
        assert!(!span.contains(&log_key(8, 0)));
        assert!(log_span_from(u64::MAX, 0).contains(&log_key(u64::MAX, 5)));
    }

    #[test]
    fn data_keys_round_trip() {
        assert_eq!(user_key(&data_key(b"abc")), Some(&b"abc"[..]));
        assert!(all_user_data().contains(&data_key(b"")));
        assert!(all_user_data().contains(&data_key(&[0xff; 10])));
        assert_eq!(user_key(b"xabc"), None);
    }
}
