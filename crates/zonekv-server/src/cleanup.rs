//! Removed replicas (docs/placement.md, "Moving a replica", step 7): a replica moved off this
//! node stops, and its log, Raft state and data are deleted, once the range directory shows a
//! newer membership of the range without this node (or one as new, and the range's leader
//! confirms the replica is no member). The directory and not the replica's own
//! membership decides: a removed replica may never learn the final configuration (its leader
//! stops sending to it), and a replica still catching up may install a snapshot taken before
//! it was added, whose membership does not name it yet.

use std::collections::HashMap;
use std::sync::Weak;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use zonekv_engine::{Cf, Engine, WriteBatch};
use zonekv_proto::raft::v1 as pb;
use zonekv_raft::keys::{FIRST_RANGE, MetaKey, log_key, meta_key};
use zonekv_raft::{RangeDescriptor, directory, read_descriptor};

use crate::node::NodeInner;
use crate::ranges::stored_ranges;
use crate::{Error, Result};

/// How often a node looks for replicas of its that were removed.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How long a replica created for a move may wait to be added to its range before its node
/// asks whether the move was given up. Adding it is one membership change, committed within
/// moments of the creation when the move goes on.
const ORPHAN_GRACE: Duration = Duration::from_secs(10);

/// Removes this node's replicas that the directory says were moved away, until the node stops.
/// A pass runs only when the meta range (which holds the directory) has applied something new
/// or this node's set of replicas changed, and while a replica created for a move waits to be
/// added.
pub(crate) async fn run(node: Weak<NodeInner>) {
    let mut seen = None;
    // Replicas created for a move and never added (yet): when each was first seen so.
    let mut orphans: HashMap<(u64, u64), Instant> = HashMap::new();
    while let Some(n) = crate::node::next_tick(&node, CHECK_INTERVAL).await {
        // What a pass depends on: the directory (the meta range's applied state) and which
        // replicas this node holds.
        let applied =
            (n.ranges.first().replica.raft.metrics().borrow_watched().last_applied, n.ranges.all().len());
        if Some(applied) == seen && orphans.is_empty() {
            continue;
        }
        let mut done = true;
        let mut still = HashMap::new();
        for r in n.ranges.all() {
            let local = r.descriptor();
            let me = r.replica.node_id;
            let known = match lookup(&n, &local) {
                Ok(known) => known,
                Err(e) => {
                    tracing::warn!(range = local.range_id, error = %e, "reading the directory failed");
                    done = false;
                    continue;
                }
            };
            let in_membership = r
                .replica
                .raft
                .metrics()
                .borrow_watched()
                .membership_config
                .membership()
                .get_node(&me)
                .is_some();
            let removed = match judge(&local, known.as_ref(), me, in_membership) {
                Verdict::Keep => false,
                Verdict::Removed => true,
                Verdict::AskLeader { orphan } => {
                    let since = *orphans.get(&(local.range_id, me)).unwrap_or(&Instant::now());
                    if orphan {
                        still.insert((local.range_id, me), since);
                    }
                    if orphan && since.elapsed() < ORPHAN_GRACE {
                        false
                    } else {
                        match leader_says_member(&n, known.as_ref().unwrap_or(&local), me).await {
                            Some(member) => !member,
                            None => {
                                // Asked again at the next tick (an orphan is looked at every
                                // tick anyway).
                                if !orphan {
                                    tracing::warn!(
                                        range = local.range_id,
                                        replica = me,
                                        "no leader answered whether the replica is a member"
                                    );
                                    done = false;
                                }
                                false
                            }
                        }
                    }
                }
            };
            if removed && let Err(e) = destroy(&n, r.replica.range).await {
                tracing::error!(range = r.replica.range, error = %e, "deleting a removed replica failed");
                done = false;
            }
        }
        orphans = still;
        // A failed pass is retried at the next tick.
        if done {
            seen = Some(applied);
        }
    }
}

/// The directory's entry for the range `local` describes, if it has one for that range (a
/// range keeps its start key for life: a split keeps the left half's start). The first
/// range, which is on every node, is never removed: `None`.
fn lookup(n: &NodeInner, local: &RangeDescriptor) -> Result<Option<RangeDescriptor>> {
    if local.range_id == FIRST_RANGE {
        return Ok(None);
    }
    let known = directory::lookup(&n.starter.engine, FIRST_RANGE, &local.start)?;
    Ok(known.filter(|k| k.range_id == local.range_id))
}

/// What to do with replica `me` of a range, whose applied descriptor is `local`.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Keep,
    /// The directory knows a newer membership of the range without it.
    Removed,
    /// The directory's membership is as new as the replica's own and does not name it: ask
    /// the range's leader. Either the replica applied its own removal, or it is a learner
    /// that installed a snapshot taken before it was added (both name themselves nowhere);
    /// or, if `orphan`, it was created for a move and never added (its descriptor, written
    /// at its creation, names it, but no membership it applied does) — asked only after a
    /// grace period.
    AskLeader {
        orphan: bool,
    },
}

/// The verdict on replica `me` given the directory's entry `known` for its range and whether
/// a membership it applied names it.
fn judge(local: &RangeDescriptor, known: Option<&RangeDescriptor>, me: u64, in_membership: bool) -> Verdict {
    let named = |d: &RangeDescriptor| d.replicas.iter().any(|x| x.replica_id == me);
    let Some(known) = known.filter(|k| !named(k)) else { return Verdict::Keep };
    match known.epoch.conf_ver.cmp(&local.epoch.conf_ver) {
        std::cmp::Ordering::Greater => Verdict::Removed,
        std::cmp::Ordering::Less => Verdict::Keep,
        std::cmp::Ordering::Equal if !named(local) => Verdict::AskLeader { orphan: false },
        std::cmp::Ordering::Equal if !in_membership => Verdict::AskLeader { orphan: true },
        std::cmp::Ordering::Equal => Verdict::Keep,
    }
}

/// Asks the nodes of the range's other voters whether `replica_id` is a member; the one that
/// leads answers. `None` if none did.
async fn leader_says_member(n: &NodeInner, desc: &RangeDescriptor, replica_id: u64) -> Option<bool> {
    let me = n.config.node_id;
    let addrs: Vec<String> = {
        let m = n.ranges.first().replica.metrics();
        let members = m.membership_config.membership();
        let voters = desc.replicas.iter().filter(|x| !x.learner && x.node_id != me);
        voters.filter_map(|x| members.get_node(&x.node_id).map(|i| i.addr.clone())).collect()
    };
    for addr in addrs {
        let Ok(mut client) = n.starter.channels.client(&addr) else { continue };
        let req = pb::IsMemberRequest { range_id: desc.range_id, replica_id };
        if let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(2), client.is_member(req)).await {
            return Some(resp.into_inner().member);
        }
    }
    None
}

/// Stops the replica of `range` and deletes its log, Raft state and the data of its span that
/// no other range stored on this node owns, in one synced write.
async fn destroy(n: &NodeInner, range: u64) -> Result<()> {
    let Some(r) = n.ranges.remove(range) else { return Ok(()) };
    r.stop().await;
    let desc = r.descriptor();
    drop(r);
    // No replica is created meanwhile (one could cover part of this span).
    let _one_at_a_time = n.creating.lock().await;
    let engine = &n.starter.engine;
    let mut others = Vec::new();
    for id in stored_ranges(engine)?.into_iter().filter(|id| *id != range) {
        if let Some(d) = read_descriptor(engine, id)? {
            others.extend(d.data_spans().iter().filter_map(half_open));
        }
    }
    let mut b = WriteBatch::new();
    // The group's log keys are `range ++ index`: all sort before the 8-byte key `range + 1`.
    let log_end = range.checked_add(1).map_or_else(|| vec![0xff; 17], |next| next.to_be_bytes().to_vec());
    b.delete_range(Cf::RaftLog, log_key(range, 0).to_vec(), log_end);
    for kind in [MetaKey::Vote, MetaKey::Committed, MetaKey::Purged, MetaKey::Applied, MetaKey::Descriptor] {
        b.delete(Cf::RaftMeta, meta_key(range, kind).to_vec());
    }
    for span in desc.data_spans().iter().filter_map(half_open) {
        for (start, end) in subtract(span, &others) {
            b.delete_range(Cf::Data, start, end);
        }
    }
    engine.write(&b, true).map_err(Error::from)?;
    tracing::info!(range, %desc, "removed replica deleted: it was moved off this node");
    Ok(())
}

fn half_open(span: &zonekv_engine::KeyRange) -> Option<(Vec<u8>, Vec<u8>)> {
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
    use super::{Verdict, judge, subtract};
    use zonekv_raft::{RangeDescriptor, RangeEpoch, ReplicaDesc};

    fn desc(conf_ver: u64, replicas: &[u64]) -> RangeDescriptor {
        RangeDescriptor {
            range_id: 7,
            start: "m".into(),
            end: None,
            epoch: RangeEpoch { version: 1, conf_ver },
            replicas: replicas
                .iter()
                .map(|&r| ReplicaDesc { replica_id: r, node_id: r, learner: false })
                .collect(),
        }
    }

    #[test]
    fn the_directory_and_the_replicas_own_state_decide_its_fate() {
        let me = 3;
        // Named by the directory, or no entry: kept.
        assert_eq!(judge(&desc(2, &[1, 2, 3]), Some(&desc(2, &[1, 2, 3])), me, true), Verdict::Keep);
        assert_eq!(judge(&desc(2, &[1, 2, 3]), None, me, true), Verdict::Keep);
        // A newer membership without it: removed; an older one: kept.
        assert_eq!(judge(&desc(2, &[1, 2, 3]), Some(&desc(3, &[1, 2, 4])), me, true), Verdict::Removed);
        assert_eq!(judge(&desc(4, &[1, 2, 3]), Some(&desc(3, &[1, 2, 4])), me, true), Verdict::Keep);
        // As new, naming it nowhere: the leader decides.
        assert_eq!(
            judge(&desc(3, &[1, 2, 4]), Some(&desc(3, &[1, 2, 4])), me, false),
            Verdict::AskLeader { orphan: false }
        );
        // Created for a move (its descriptor names it) but in no membership it applied.
        assert_eq!(
            judge(&desc(3, &[1, 2, 4, 3]), Some(&desc(3, &[1, 2, 4])), me, false),
            Verdict::AskLeader { orphan: true }
        );
        assert_eq!(judge(&desc(3, &[1, 2, 4, 3]), Some(&desc(3, &[1, 2, 4])), me, true), Verdict::Keep);
    }

    fn span(s: &str, e: &str) -> (Vec<u8>, Vec<u8>) {
        (s.as_bytes().to_vec(), e.as_bytes().to_vec())
    }

    #[test]
    fn subtraction_keeps_only_what_no_other_span_covers() {
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
