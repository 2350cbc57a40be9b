//! Range descriptors: the span a range owns, its replicas and its epoch (docs/multiraft.md).

use std::fmt;
use std::ops::Bound;

use bytes::Bytes;
use zonekv_engine::KeyRange;

use crate::keys::{self, data_key};
use crate::{LeaderId, LogId, Membership, NodeId, RangeId, ReplicaId};

/// Changes with every split (`version`) and membership change (`conf_ver`) of a range.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RangeEpoch {
    /// Bumped by every split of the range.
    pub version: u64,
    /// Bumped by every membership change of the range.
    pub conf_ver: u64,
}

impl fmt::Display for RangeEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}/c{}", self.version, self.conf_ver)
    }
}

/// One replica of a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplicaDesc {
    /// openraft's node id for this replica; allocated once, never reused.
    pub replica_id: ReplicaId,
    /// The node hosting it.
    pub node_id: NodeId,
    /// A learner (non-voter).
    pub learner: bool,
}

/// A range: the user keys `[start, end)` it owns (`end = None`: to the end of the keyspace),
/// its replicas and its epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeDescriptor {
    /// The range id; never reused.
    pub range_id: RangeId,
    /// First user key owned (inclusive).
    pub start: Bytes,
    /// First user key not owned; `None` is the end of the keyspace.
    pub end: Option<Bytes>,
    /// The range's epoch.
    pub epoch: RangeEpoch,
    /// Its replicas, in a stable order.
    pub replicas: Vec<ReplicaDesc>,
}

/// The log id at which a range created by a split starts: its log is empty and purged up to
/// here, and its state machine has applied up to here. Non-zero, so a replica without the
/// range's data can only catch up by snapshot (docs/multiraft.md, "Split").
pub fn split_initial_log_id() -> LogId {
    LogId::new(LeaderId { term: 0, node_id: ReplicaId::new(0) }, 5)
}

impl RangeDescriptor {
    /// The range covering the whole keyspace, as the first range starts out (no replicas
    /// recorded yet; the first membership entry fills them in).
    pub fn whole_keyspace(range_id: RangeId) -> Self {
        Self { range_id, start: Bytes::new(), end: None, epoch: RangeEpoch::default(), replicas: Vec::new() }
    }

    /// Whether the range owns user key `key`.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= &self.start[..] && self.end.as_ref().is_none_or(|end| key < &end[..])
    }

    /// Whether the range holds the keys just below `key` (non-empty): the range a reverse scan
    /// ending before `key` starts in.
    pub fn holds_keys_below(&self, key: &[u8]) -> bool {
        &self.start[..] < key && self.end.as_ref().is_none_or(|end| key <= &end[..])
    }

    /// The node hosting replica `replica_id`. A replica the descriptor does not name is taken
    /// to be hosted by the node of the same id: true of the first range, whose replica ids are
    /// node ids.
    pub fn node_of(&self, replica_id: ReplicaId) -> NodeId {
        self.replicas
            .iter()
            .find(|r| r.replica_id == replica_id)
            .map_or(NodeId::of_first_range(replica_id), |r| r.node_id)
    }

    /// This range's replica on node `node_id`, by the same rule as [`RangeDescriptor::node_of`]
    /// (a node the descriptor does not name is taken to host the replica of its own id).
    pub fn replica_on(&self, node_id: NodeId) -> ReplicaId {
        self.replicas
            .iter()
            .find(|r| r.node_id == node_id)
            .map_or(ReplicaId::of_first_range(node_id), |r| r.replica_id)
    }

    /// Whether this range and `other` share a user key.
    pub fn overlaps(&self, other: &RangeDescriptor) -> bool {
        let below = |start: &[u8], end: &Option<Bytes>| end.as_ref().is_none_or(|e| start < &e[..]);
        below(&self.start, &other.end) && below(&other.start, &self.end)
    }

    /// Whether `key` may split the range: strictly inside it, so both halves are non-empty.
    pub fn can_split_at(&self, key: &[u8]) -> bool {
        key > &self.start[..] && self.contains(key)
    }

    /// The spans of the data column family this range owns: its user keys, and for the
    /// leftmost range (start = "") also the system prefix (the meta range's directory).
    pub fn data_spans(&self) -> Vec<KeyRange> {
        let end = match &self.end {
            Some(end) => Bound::Excluded(data_key(end)),
            None => keys::all_user_data().end,
        };
        let user = KeyRange { start: Bound::Included(data_key(&self.start)), end };
        if self.start.is_empty() { vec![keys::system_data(), user] } else { vec![user] }
    }

    /// The replicas after a membership change to `membership`: a replica whose membership
    /// entry names its node is on that node; otherwise replicas already known keep their node,
    /// and a new replica id is taken to be hosted by the node of the same id
    /// ([`RangeDescriptor::node_of`]: the first range's rule).
    pub fn replicas_of(&self, membership: &Membership) -> Vec<ReplicaDesc> {
        let voters: std::collections::BTreeSet<ReplicaId> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, info)| ReplicaDesc {
                replica_id: *id,
                // The membership names the node if the replica was added by a move; else the
                // descriptor knows it (from the split), else the id is the node's.
                node_id: info.node_id.unwrap_or_else(|| self.node_of(*id)),
                learner: !voters.contains(id),
            })
            .collect()
    }
}

impl fmt::Display for RangeDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |k: &[u8]| format!("{:?}", String::from_utf8_lossy(k));
        let end = self.end.as_deref().map_or("∞".to_string(), show);
        write!(f, "range {} [{}, {}) {}", self.range_id, show(&self.start), end, self.epoch)
    }
}

/// The parts of `spans` (bounded data spans) that no range in `others` owns, as half-open
/// `[start, end)` pairs in order: what may be deleted when a range stops owning `spans` on a
/// node that also stores `others` (a removed replica's span; the part of a parent a
/// post-split snapshot no longer covers).
pub fn spans_owned_by_no_other(spans: &[KeyRange], others: &[RangeDescriptor]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let owned: Vec<(Vec<u8>, Vec<u8>)> =
        others.iter().flat_map(|d| d.data_spans()).filter_map(|s| half_open(&s)).collect();
    spans.iter().filter_map(half_open).flat_map(|span| subtract(span, &owned)).collect()
}

fn half_open(span: &KeyRange) -> Option<(Vec<u8>, Vec<u8>)> {
    match span.to_half_open() {
        (Some(s), Some(e)) => Some((s, e)),
        _ => None,
    }
}

/// The parts of `[start, end)` that none of `others` covers, in order.
fn subtract((start, end): (Vec<u8>, Vec<u8>), others: &[(Vec<u8>, Vec<u8>)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut cuts: Vec<&(Vec<u8>, Vec<u8>)> = others.iter().filter(|(s, e)| s < &end && e > &start).collect();
    cuts.sort();
    let mut out = Vec::new();
    let mut at = start;
    for (s, e) in cuts {
        if *s > at {
            out.push((at.clone(), s.clone()));
        }
        if *e > at {
            at = e.clone();
        }
    }
    if at < end {
        out.push((at, end));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(start: &'static [u8], end: Option<&'static [u8]>) -> RangeDescriptor {
        RangeDescriptor {
            start: Bytes::from_static(start),
            end: end.map(Bytes::from_static),
            ..RangeDescriptor::whole_keyspace(RangeId::new(7))
        }
    }

    #[test]
    fn a_membership_that_names_nodes_places_replicas_on_them() {
        use std::collections::{BTreeMap, BTreeSet};
        let mut d = desc(b"m", None);
        let (r, n) = (ReplicaId::new, NodeId::new);
        d.replicas = vec![
            ReplicaDesc { replica_id: r(100), node_id: n(1), learner: false },
            ReplicaDesc { replica_id: r(101), node_id: n(2), learner: false },
        ];
        // 100 stays (its node from the descriptor), 102 joins on node 4 as a learner, 7 is
        // named by an older record without a node (the node of the same id).
        let nodes = BTreeMap::from([
            (r(100), crate::NodeInfo::new("a:1")),
            (r(102), crate::NodeInfo::on_node(n(4), "d:1")),
            (r(7), crate::NodeInfo::new("g:1")),
        ]);
        let m = Membership::new(vec![BTreeSet::from([r(100), r(7)])], nodes).unwrap();
        let got: Vec<(u64, u64, bool)> =
            d.replicas_of(&m).iter().map(|x| (x.replica_id.get(), x.node_id.get(), x.learner)).collect();
        assert_eq!(got, vec![(7, 7, false), (100, 1, false), (102, 4, true)]);
    }

    #[test]
    fn contains_is_half_open() {
        let d = desc(b"b", Some(b"d"));
        assert!(!d.contains(b"a") && d.contains(b"b") && d.contains(b"c\xff") && !d.contains(b"d"));
        let all = RangeDescriptor::whole_keyspace(RangeId::new(1));
        assert!(all.contains(b"") && all.contains(&[0xff; 64]));
    }

    #[test]
    fn split_keys_must_be_strictly_inside() {
        let d = desc(b"b", Some(b"d"));
        assert!(!d.can_split_at(b"b"), "at the start boundary");
        assert!(!d.can_split_at(b"d"), "at the end boundary");
        assert!(!d.can_split_at(b"a") && !d.can_split_at(b"e"), "outside");
        assert!(d.can_split_at(b"c"));
        assert!(!RangeDescriptor::whole_keyspace(RangeId::new(1)).can_split_at(b""));
    }

    #[test]
    fn data_spans_partition_the_column_family() {
        let left = desc(b"", Some(b"m"));
        let right = desc(b"m", None);
        let (l, r) = (left.data_spans(), right.data_spans());
        assert_eq!(l.len(), 2, "the leftmost range owns the system prefix too");
        for k in [&b""[..], b"a", b"l\xff"] {
            assert!(l[1].contains(&data_key(k)) && !r[0].contains(&data_key(k)), "{k:?}");
        }
        for k in [&b"m"[..], b"z", &[0xff; 8]] {
            assert!(!l[1].contains(&data_key(k)) && r[0].contains(&data_key(k)), "{k:?}");
        }
        assert!(l[0].contains(&keys::system_key(b"anything")) && !r[0].contains(&keys::system_key(b"x")));
    }

    #[test]
    fn subtraction_keeps_only_what_no_other_span_covers() {
        let span = |s: &str, e: &str| (s.as_bytes().to_vec(), e.as_bytes().to_vec());
        let whole = span("b", "t");
        assert_eq!(subtract(whole.clone(), &[]), vec![whole.clone()]);
        assert_eq!(
            subtract(whole.clone(), &[span("a", "c"), span("f", "h"), span("g", "k"), span("s", "z")]),
            vec![span("c", "f"), span("k", "s")]
        );
        assert_eq!(subtract(whole.clone(), &[span("a", "z")]), vec![]);
        assert_eq!(subtract(whole, &[span("t", "z"), span("a", "b")]), vec![span("b", "t")]);
    }
}
