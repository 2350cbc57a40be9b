//! The cluster's nodes, which are the first range's members: bootstrapping a cluster, adding
//! and removing nodes, and handing a range's leadership to another node.

use std::collections::{BTreeMap, BTreeSet};

use openraft::ChangeMembers;
use zonekv_engine::Engine;
use zonekv_raft::keys::FIRST_RANGE;
use zonekv_raft::{NodeId, NodeInfo, RangeId, ReplicaId};
use zonekv_store::Store;

use crate::{Error, Result};

/// Changes to who is in the cluster and who leads a range.
pub struct Membership<E: Engine> {
    store: Store<E>,
}

impl<E: Engine> Clone for Membership<E> {
    fn clone(&self) -> Self {
        Self { store: self.store.clone() }
    }
}

impl<E: Engine> Membership<E> {
    /// Membership changes through `store`'s replicas.
    pub fn new(store: Store<E>) -> Self {
        Self { store }
    }

    /// Bootstraps a new cluster of `members` (node id, address). Must be called on one of them.
    pub async fn initialize(&self, members: &[(NodeId, String)]) -> Result<()> {
        if members.is_empty() {
            return Err(Error::InvalidArgument("member list is empty".into()));
        }
        let mut nodes = BTreeMap::new();
        for (id, addr) in members {
            if *id == 0 {
                return Err(Error::InvalidArgument("node id 0 is reserved".into()));
            }
            if addr.parse::<std::net::SocketAddr>().is_err() && !addr.contains(':') {
                return Err(Error::InvalidArgument(format!(
                    "node {id}: {addr:?} is not a host:port address"
                )));
            }
            if nodes.insert(ReplicaId::of_first_range(*id), NodeInfo::new(addr.clone())).is_some() {
                return Err(Error::InvalidArgument(format!("node id {id} is listed twice")));
            }
        }
        let me = self.store.node_id();
        if !nodes.contains_key(&ReplicaId::of_first_range(me)) {
            return Err(Error::InvalidArgument(format!(
                "this node (id {me}) is not in the member list; send the request to a listed node"
            )));
        }
        Ok(self.store.first().initialize(nodes).await?)
    }

    /// Adds a node to the cluster: as a learner of the first range that catches up, then as a
    /// voter unless `learner_only`. Must run on the first range's leader. Adding a current
    /// member again is a no-op. Which members vote later is the placement driver's choice
    /// (`driver/meta.rs`).
    pub async fn add_node(&self, node_id: NodeId, addr: &str, learner_only: bool) -> Result<()> {
        if node_id == 0 {
            return Err(Error::InvalidArgument("node id 0 is reserved".into()));
        }
        let first = self.store.first();
        let replica = ReplicaId::of_first_range(node_id);
        let (existing, voter) = first.with_metrics(|m| {
            let membership = m.membership_config.membership();
            (
                membership.get_node(&replica).map(|n| n.addr.clone()),
                membership.voter_ids().any(|v| v == replica),
            )
        });
        if let Some(existing) = existing {
            if existing != addr {
                return Err(Error::FailedPrecondition(format!(
                    "node {node_id} is already a member at {existing}; node ids are never reused"
                )));
            }
            if learner_only || voter {
                return Ok(());
            }
        } else {
            first.add_learner(replica, NodeInfo::new(addr)).await?;
        }
        if !learner_only {
            first.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([replica]))).await?;
        }
        tracing::info!(%node_id, addr, learner_only, "node added");
        Ok(())
    }

    /// Removes a node from the cluster (the first range). Must run on its leader.
    pub async fn remove_node(&self, node_id: NodeId) -> Result<()> {
        let first = self.store.first();
        let replica = ReplicaId::of_first_range(node_id);
        let (member, voter) = first.with_metrics(|m| {
            let membership = m.membership_config.membership();
            (membership.get_node(&replica).is_some(), membership.voter_ids().any(|v| v == replica))
        });
        if !member {
            return Err(Error::NotFound(format!("node {node_id} is not a member of range {FIRST_RANGE}")));
        }
        let change = if voter {
            ChangeMembers::RemoveVoters(BTreeSet::from([replica]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([replica]))
        };
        first.change_membership(change).await?;
        tracing::info!(%node_id, "node removed");
        Ok(())
    }

    /// Makes exactly `voters` the first range's voters; voters left out stay members, as
    /// learners (the placement driver keeps the meta range's quorum on live nodes with it).
    /// Must run on the first range's leader.
    pub async fn set_voters(&self, voters: BTreeSet<NodeId>) -> Result<()> {
        let ids = voters.into_iter().map(ReplicaId::of_first_range).collect();
        self.store.first().change_voters_keeping_learners(ids).await?;
        Ok(())
    }

    /// Asks the leader of `range` (this node's replica) to hand leadership to its replica on
    /// node `to`, a voter.
    pub async fn transfer_leader(&self, range: RangeId, to: NodeId) -> Result<()> {
        let r = self.store.replica(range)?;
        let replica = r.with_descriptor(|d| d.replica_on(to));
        if !r.with_metrics(|m| m.membership_config.membership().voter_ids().any(|v| v == replica)) {
            return Err(Error::InvalidArgument(format!("node {to} is not a voter of range {range}")));
        }
        Ok(r.transfer_leader(replica).await?)
    }

    /// Whether `node` is a member of the cluster (the first range), as this node knows it, and
    /// its address.
    pub fn address_of(&self, node: NodeId) -> Option<String> {
        let replica = ReplicaId::of_first_range(node);
        self.store
            .first()
            .with_metrics(|m| m.membership_config.membership().get_node(&replica).map(|n| n.addr.clone()))
    }

    /// Every node of the cluster (the first range's members) but this one, with its address.
    pub fn others(&self) -> Vec<(NodeId, String)> {
        let me = self.store.node_id();
        let first = self.store.first();
        first.with_metrics(|m| {
            m.membership_config
                .membership()
                .nodes()
                .map(|(id, info)| (NodeId::of_first_range(*id), info.addr.clone()))
                .filter(|(id, _)| *id != me)
                .collect()
        })
    }
}
