//! The cluster as the placement driver sees it from the meta range's leader: nodes from the
//! first range's membership, with localities and silence from liveness pings and
//! decommissioning from the registry, disk use from pings; ranges from the directory, with
//! leaders from pings.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use zonekv_engine::Engine;
use zonekv_placement::{Cluster, Locality, Millis, Node, NodeState, Policy, Range, Replica, Role};
use zonekv_raft::keys::FIRST_RANGE;
use zonekv_raft::{RangeDescriptor, meta};
use zonekv_store::Store;

use crate::liveness::Disk;
use crate::registry::Registry;
use crate::{Liveness, Result};

/// What one pass of the driver plans on.
pub struct View {
    /// The placement model.
    pub cluster: Cluster,
    /// Every range, by id, as the directory has it. The first range (which has a replica on
    /// every node) is here but not in `cluster`: it is never placed, only split.
    pub ranges: BTreeMap<u64, RangeDescriptor>,
    /// Address of each node.
    pub addrs: HashMap<u64, String>,
    /// The policy of each range inside a span with a policy of its own (by range id); the
    /// others follow `placement.policy`.
    pub policies: HashMap<u64, Policy>,
    /// Nodes being decommissioned that are still members of the cluster.
    pub decommissioning: Vec<u64>,
    /// Span policy bounds strictly inside a range (the first range too): (range id, its
    /// leader, key) where it must split so that every range is under one policy.
    pub splits: Vec<(u64, Option<u64>, Bytes)>,
}

/// A directory or membership the placement model refuses (a node or range listed twice).
fn model(e: zonekv_placement::Error) -> crate::Error {
    crate::Error::FailedPrecondition(format!("the placement view is inconsistent: {e}"))
}

/// What a view is built from: this node's store (its copy of the directory and the
/// registry, the first range's membership, its own leaderships) and what the pings said.
pub struct ViewSource<E: Engine> {
    pub(crate) store: Store<E>,
    pub(crate) liveness: Arc<Liveness>,
    pub(crate) locality: String,
    pub(crate) data_dir: PathBuf,
}

impl<E: Engine> Clone for ViewSource<E> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            liveness: self.liveness.clone(),
            locality: self.locality.clone(),
            data_dir: self.data_dir.clone(),
        }
    }
}

impl<E: Engine> ViewSource<E> {
    /// The cluster as this node sees it now (for checking a policy against the live nodes).
    pub fn cluster(&self) -> Result<Cluster> {
        Ok(self.build(0)?.cluster)
    }

    /// Builds the view at `now` (milliseconds since the driver started; a node never heard
    /// from is taken as silent since then).
    pub fn build(&self, now: Millis) -> Result<View> {
        let me = self.store.node_id().get();
        let registry = Registry::read(self.store.engine())?;
        let peers: HashMap<u64, _> =
            self.liveness.states().into_iter().map(|p| (p.node_id.get(), p)).collect();
        let first = self.store.first();
        let first_desc = first.descriptor();
        let members: Vec<(u64, String)> = first.with_metrics(|m| {
            m.membership_config
                .membership()
                .nodes()
                .map(|(id, info)| (first_desc.node_of(*id).get(), info.addr.clone()))
                .collect()
        });

        let mut cluster = Cluster::default();
        let mut leaders: HashMap<u64, u64> = HashMap::new();
        for (id, _) in &members {
            let (locality, state, disk) = if *id == me {
                (self.locality.clone(), NodeState::Live, Disk::of(&self.data_dir))
            } else {
                match peers.get(id) {
                    Some(p) if p.live => {
                        leaders.extend(p.leading.iter().map(|r| (r.get(), *id)));
                        (p.locality.clone(), NodeState::Live, p.disk)
                    }
                    Some(p) => (
                        p.locality.clone(),
                        NodeState::Down { since: now.saturating_sub(p.silent_for.as_millis() as Millis) },
                        p.disk,
                    ),
                    None => (String::new(), NodeState::Down { since: 0 }, Disk::default()),
                }
            };
            let state = if registry.decommissioning.contains(&zonekv_raft::NodeId::new(*id))
                && state == NodeState::Live
            {
                NodeState::Decommissioning
            } else {
                state
            };
            // Localities were checked when each node started; a bad one counts as none.
            let locality = locality.parse::<Locality>().unwrap_or_default();
            cluster
                .add_node(Node {
                    state,
                    capacity: disk.capacity,
                    used: disk.used,
                    ..Node::new(*id, locality)
                })
                .map_err(model)?;
        }

        // This node's own leadership last: it is current, the pings may be a moment old.
        leaders.extend(self.store.leading().into_iter().map(|r| (r.get(), me)));
        let mut ranges = BTreeMap::new();
        let mut policies = HashMap::new();
        let mut splits = Vec::new();
        for desc in
            meta::directory::entries(self.store.engine(), FIRST_RANGE).map_err(zonekv_store::Error::from)?
        {
            let range_id = desc.range_id.get();
            let leader = leaders.get(&range_id).copied();
            for span in &registry.policies {
                for key in std::iter::once(&span.start).chain(span.end.as_ref()) {
                    if desc.can_split_at(key) {
                        splits.push((range_id, leader, key.clone()));
                    }
                }
            }
            if desc.range_id == FIRST_RANGE {
                ranges.insert(range_id, desc);
                continue;
            }
            for r in &desc.replicas {
                // A replica on a node no longer in the cluster: that node is gone for good.
                if cluster.node(r.node_id.get()).is_none() {
                    cluster
                        .add_node(Node {
                            state: NodeState::Down { since: 0 },
                            ..Node::new(r.node_id.get(), Locality::default())
                        })
                        .map_err(model)?;
                }
            }
            let replicas = desc
                .replicas
                .iter()
                .map(|r| Replica {
                    node: r.node_id.get(),
                    role: if r.learner { Role::NonVoter } else { Role::Voter },
                })
                .collect();
            cluster.add_range(Range { id: range_id, replicas, leader, bytes: 0 }).map_err(model)?;
            if let Some(span) = registry.policy_for(&desc.start) {
                match span.policy.to_policy() {
                    Ok(p) => {
                        policies.insert(range_id, p);
                    }
                    // Checked when it was set; a policy this build cannot read is reported.
                    Err(e) => {
                        tracing::warn!(range = range_id, error = %e, "the span policy is unusable; the default applies")
                    }
                }
            }
            ranges.insert(range_id, desc);
        }
        let addrs: HashMap<u64, String> = members.into_iter().collect();
        let decommissioning =
            registry.decommissioning.iter().map(|id| id.get()).filter(|id| addrs.contains_key(id)).collect();
        Ok(View { cluster, ranges, addrs, policies, decommissioning, splits })
    }
}
