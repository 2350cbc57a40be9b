//! Removed replicas (docs/placement.md, "Moving a replica", step 7): a replica moved off this
//! node stops, and its log, Raft state and data are deleted, once the range directory shows a
//! membership of the range without this node (newer, or as new) and the range's leader
//! confirms the replica is no member. The directory and not the replica's own
//! membership decides: a removed replica may never learn the final configuration (its leader
//! stops sending to it), and a replica still catching up may install a snapshot taken before
//! it was added, whose membership does not name it yet.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zonekv_engine::Engine;
use zonekv_raft::keys::FIRST_RANGE;
use zonekv_raft::{RangeDescriptor, RangeId, ReplicaId, meta};
use zonekv_store::{Replica, Store};

use crate::{Membership, Peers};

/// How often a node looks for replicas of its that were removed.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How long a replica created for a move may wait to be added to its range before its node
/// asks whether the move was given up. Adding it is one membership change, committed within
/// moments of the creation when the move goes on.
const ORPHAN_GRACE: Duration = Duration::from_secs(10);

/// The removed-replica loop: the replicas it judges, and who it asks.
pub(crate) struct Cleanup<E: Engine> {
    pub(crate) store: Store<E>,
    pub(crate) members: Membership<E>,
    pub(crate) peers: Arc<dyn Peers>,
}

impl<E: Engine> Cleanup<E> {
    /// Removes this node's replicas that the directory says were moved away, until the store
    /// stops. A pass runs only when the meta range (which holds the directory) has applied
    /// something new or this node's set of replicas changed, and while a replica created for a
    /// move waits to be added.
    pub(crate) async fn run(self) {
        let mut seen = None;
        // Replicas created for a move and never added (yet): when each was first seen so.
        let mut orphans: HashMap<(RangeId, ReplicaId), Instant> = HashMap::new();
        while self.store.tick(CHECK_INTERVAL).await {
            // What a pass depends on: the directory (the meta range's applied state) and which
            // replicas this node holds.
            let applied = (self.store.meta_applied(), self.store.replica_count());
            if Some(applied) == seen && orphans.is_empty() {
                continue;
            }
            let mut done = true;
            let mut still = HashMap::new();
            for r in self.store.replicas() {
                match self.pass(&r, &orphans, &mut still).await {
                    Ok(true) => {}
                    Ok(false) => done = false,
                    Err(e) => {
                        tracing::error!(range = %r.range_id(), error = %e, "deleting a removed replica failed");
                        done = false;
                    }
                }
            }
            orphans = still;
            // A failed pass is retried at the next tick.
            if done {
                seen = Some(applied);
            }
        }
    }

    /// Judges one replica and deletes it if it was removed. `Ok(false)`: it could not be
    /// decided now (asked again at the next tick).
    async fn pass(
        &self,
        r: &Replica<E>,
        orphans: &HashMap<(RangeId, ReplicaId), Instant>,
        still: &mut HashMap<(RangeId, ReplicaId), Instant>,
    ) -> zonekv_store::Result<bool> {
        let local = r.descriptor();
        let me = r.replica_id();
        let known = match lookup(&self.store, &local) {
            Ok(known) => known,
            Err(e) => {
                tracing::warn!(range = %local.range_id, error = %e, "reading the directory failed");
                return Ok(false);
            }
        };
        let in_membership = r.with_metrics(|m| m.membership_config.membership().get_node(&me).is_some());
        let removed = match judge(&local, known.as_ref(), me, in_membership) {
            Verdict::Keep => false,
            // The directory alone never deletes a replica: an entry can be wrong (a forged or
            // buggy report). The range's leader confirms, asked through the voters the replica
            // itself knows (never those of the entry, which a forger chooses).
            Verdict::Removed => match self.leader_says_member(r, &local, me).await {
                Some(member) => !member,
                None => {
                    tracing::warn!(range = %local.range_id, replica = %me, "the directory shows the replica removed, but no leader confirmed it");
                    return Ok(false);
                }
            },
            Verdict::AskLeader { orphan } => {
                let since = *orphans.get(&(local.range_id, me)).unwrap_or(&Instant::now());
                if orphan {
                    still.insert((local.range_id, me), since);
                }
                if orphan && since.elapsed() < ORPHAN_GRACE {
                    false
                } else {
                    match self.leader_says_member(r, &local, me).await {
                        Some(member) => !member,
                        // Asked again at the next tick (an orphan is looked at every tick anyway).
                        None if orphan => false,
                        None => {
                            tracing::warn!(range = %local.range_id, replica = %me, "no leader answered whether the replica is a member");
                            return Ok(false);
                        }
                    }
                }
            }
        };
        if removed {
            self.store.destroy_replica(r.range_id()).await?;
        }
        Ok(true)
    }

    /// Asks the nodes of the range's other voters (as `desc`, the replica's own descriptor,
    /// has them) whether `replica` is a member; the one that leads answers. The node this
    /// replica takes for the leader is asked first: the others are asked only if it cannot
    /// answer. `None` if none did.
    async fn leader_says_member(
        &self,
        r: &Replica<E>,
        desc: &RangeDescriptor,
        replica: ReplicaId,
    ) -> Option<bool> {
        let me = self.store.node_id();
        let leader = r.leader_hint().map(|h| h.node_id);
        let mut voters: Vec<_> = desc.replicas.iter().filter(|x| !x.learner && x.node_id != me).collect();
        voters.sort_by_key(|x| Some(x.node_id) != leader);
        let addrs: Vec<String> = voters.iter().filter_map(|x| self.members.address_of(x.node_id)).collect();
        for addr in addrs {
            let ask = self.peers.is_member(&addr, desc.range_id, replica);
            if let Ok(Ok(member)) = tokio::time::timeout(Duration::from_secs(2), ask).await {
                return Some(member);
            }
        }
        None
    }
}

/// The directory's entry for the range `local` describes, if it has one for that range (a
/// range keeps its start key for life: a split keeps the left half's start). The first
/// range, which is on every node, is never removed: `None`.
fn lookup<E: Engine>(
    store: &Store<E>,
    local: &RangeDescriptor,
) -> zonekv_store::Result<Option<RangeDescriptor>> {
    if local.range_id == FIRST_RANGE {
        return Ok(None);
    }
    let known = meta::directory::lookup(store.engine(), FIRST_RANGE, &local.start)?;
    Ok(known.filter(|k| k.range_id == local.range_id))
}

/// What to do with replica `me` of a range, whose applied descriptor is `local`.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Keep,
    /// The directory knows a newer membership of the range without it: removed, once the
    /// range's leader confirms.
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
fn judge(
    local: &RangeDescriptor,
    known: Option<&RangeDescriptor>,
    me: ReplicaId,
    in_membership: bool,
) -> Verdict {
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

#[cfg(test)]
mod tests {
    use super::{Verdict, judge};
    use zonekv_raft::{NodeId, RangeDescriptor, RangeEpoch, RangeId, ReplicaDesc, ReplicaId};

    fn desc(conf_ver: u64, replicas: &[u64]) -> RangeDescriptor {
        RangeDescriptor {
            range_id: RangeId::new(7),
            start: "m".into(),
            end: None,
            epoch: RangeEpoch { version: 1, conf_ver },
            replicas: replicas
                .iter()
                .map(|&r| ReplicaDesc {
                    replica_id: ReplicaId::new(r),
                    node_id: NodeId::new(r),
                    learner: false,
                })
                .collect(),
        }
    }

    #[test]
    fn the_directory_and_the_replicas_own_state_decide_its_fate() {
        let me = ReplicaId::new(3);
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
}
