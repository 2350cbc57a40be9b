//! The three identities of a cluster, as distinct types so that one cannot be passed for
//! another: a **node** (a process with its data directory), a **range** (a span of keys, one
//! Raft group) and a **replica** (one range's copy on one node, openraft's "node id").
//!
//! The first range is the exception that made them easy to confuse: its replicas are
//! identified by their nodes' ids (replica id `n` lives on node `n`). Every other replica id
//! comes from the meta range's allocator, from [`crate::meta::allocator::FIRST_ALLOCATED_ID`] up, and
//! is hosted by whichever node the range's descriptor names.
//!
//! All three are `u64` on the wire and on disk; they print as the bare number.

use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(u64);

        impl $name {
            /// The id with this number.
            pub const fn new(id: u64) -> Self {
                Self(id)
            }

            /// Its number, as it goes on the wire and on disk.
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl From<u64> for $name {
            fn from(id: u64) -> Self {
                Self(id)
            }
        }

        impl PartialEq<u64> for $name {
            fn eq(&self, other: &u64) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<$name> for u64 {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

id_type!(
    /// A node of the cluster: unique, never reused, from 1 to 2^32 − 1.
    NodeId
);

id_type!(
    /// A range (one Raft group); never reused. Range 1 is the first (meta) range.
    RangeId
);

id_type!(
    /// One replica of a range: openraft's node id within the range's group. Never reused.
    ReplicaId
);

impl ReplicaId {
    /// The first range's replica on node `node` (the first range's replica ids are node ids).
    pub const fn of_first_range(node: NodeId) -> Self {
        Self(node.0)
    }
}

impl NodeId {
    /// The node hosting replica `replica` of the first range (see [`ReplicaId::of_first_range`]),
    /// also the rule for replicas recorded before memberships named their nodes.
    pub const fn of_first_range(replica: ReplicaId) -> Self {
        Self(replica.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_as_their_numbers_and_compare_with_them() {
        let r = RangeId::new(7);
        assert_eq!(
            (r.to_string(), format!("{r:?}"), format!("{:?}", Some(r))),
            ("7".into(), "7".into(), "Some(7)".into())
        );
        assert_eq!(r, 7);
        assert!(ReplicaId::new(1) < ReplicaId::new(2));
        assert_eq!(NodeId::of_first_range(ReplicaId::of_first_range(NodeId::new(3))), NodeId::new(3));
    }
}
