//! Changing the registry (`registry.rs`): decommissioning nodes and setting span policies,
//! each checked against the cluster as this node sees it first. The only code that proposes
//! `Op::SetPlacement`.

use std::collections::BTreeSet;

use bytes::Bytes;
use zonekv_engine::Engine;
use zonekv_placement::scenario::PolicySpec;
use zonekv_raft::{NodeId, Op};
use zonekv_store::Store;

use crate::driver::ViewSource;
use crate::registry::{DECOMMISSIONING, Registry, SpanPolicy, node_key, policy_key};
use crate::{Error, Membership, MetaClient, Result};

/// Reads and changes the registry: decommissioning nodes, span policies.
pub struct Registrar<E: Engine> {
    store: Store<E>,
    meta: MetaClient<E>,
    views: ViewSource<E>,
    default_policy: PolicySpec,
}

impl<E: Engine> Clone for Registrar<E> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            meta: self.meta.clone(),
            views: self.views.clone(),
            default_policy: self.default_policy.clone(),
        }
    }
}

impl<E: Engine> Registrar<E> {
    /// A registrar reading `store`'s copy of the meta range, writing through `meta`, and
    /// checking policies against the cluster `views` sees; ranges without a span policy follow
    /// `default_policy`.
    pub(crate) fn new(
        store: Store<E>,
        meta: MetaClient<E>,
        views: ViewSource<E>,
        default_policy: PolicySpec,
    ) -> Self {
        Self { store, meta, views, default_policy }
    }

    /// The registry as this node's replica of the meta range has it.
    pub fn read(&self) -> Result<Registry> {
        Registry::read(self.store.engine())
    }

    /// Starts (or with `cancel`, stops) decommissioning node `node_id`: the placement driver
    /// moves its replicas away and places none there. Recorded in the meta range; any node
    /// takes the call. A node that is not a member of the cluster is `NotFound`.
    pub async fn decommission(&self, node_id: NodeId, cancel: bool) -> Result<()> {
        if Membership::new(self.store.clone()).address_of(node_id).is_none() {
            return Err(Error::NotFound(format!("node {node_id} is not a member of the cluster")));
        }
        if !cancel {
            self.check_without(node_id)?;
        }
        let value = (!cancel).then(|| Bytes::from_static(DECOMMISSIONING));
        self.meta.propose(Op::SetPlacement { key: node_key(node_id), value }).await?;
        tracing::info!(%node_id, cancel, "decommissioning recorded");
        Ok(())
    }

    /// Grants `user` reads (and with `write`, writes) of the keys under `prefix`, replacing
    /// a grant of the same prefix; with `revoke`, removes that grant instead (`NotFound` if
    /// there is none). Written through this node's replica of the meta range, which must lead
    /// (`NotLeader` names the leader, where the caller retries): a grant is never forwarded
    /// between nodes, so only root's own call can make one.
    pub async fn grant(&self, user: &str, prefix: Bytes, write: bool, revoke: bool) -> Result<()> {
        // The server checks the name's shape (the TLS layer's rule for certificates).
        if user.is_empty() || user == "root" {
            return Err(Error::InvalidArgument(format!("{user:?} takes no grants (root may do everything)")));
        }
        let has = self.grants()?.get(user).is_some_and(|g| g.iter().any(|g| g.prefix == prefix));
        if revoke && !has {
            return Err(Error::NotFound(format!("user {user} has no grant of prefix {prefix:?}")));
        }
        let value = (!revoke).then(|| crate::grants::grant_value(write));
        let op = Op::SetPlacement { key: crate::grants::grant_key(user, &prefix), value };
        self.store.first().propose(op).await?;
        tracing::info!(%user, ?prefix, write, revoke, "grant recorded");
        Ok(())
    }

    /// Every user's grants, as this node's copy of the meta range has them.
    pub fn grants(&self) -> Result<crate::grants::Grants> {
        crate::grants::read(self.store.engine())
    }

    /// Drops node `node_id`'s record (it left the cluster).
    pub(crate) async fn forget_node(&self, node_id: NodeId) -> Result<()> {
        self.meta.propose(Op::SetPlacement { key: node_key(node_id), value: None }).await.map(drop)
    }

    /// Fails, naming the shortfall, if the live nodes other than `node_id` cannot hold the
    /// default policy or some span's policy: decommissioning it could then never finish.
    fn check_without(&self, node_id: NodeId) -> Result<()> {
        let mut cluster = self.views.cluster()?;
        if let Some(n) = cluster.node_mut(node_id.get()) {
            n.state = zonekv_placement::NodeState::Decommissioning;
        }
        let registry = self.read()?;
        let specs = std::iter::once(&self.default_policy).chain(registry.policies.iter().map(|p| &p.policy));
        for spec in specs {
            let policy = spec.to_policy().map_err(|e| Error::FailedPrecondition(e.to_string()))?;
            policy.check(&cluster).map_err(|e| {
                Error::FailedPrecondition(format!(
                    "node {node_id} cannot be decommissioned: without it, {e} (policy: {policy})"
                ))
            })?;
        }
        Ok(())
    }

    /// The nodes being decommissioned, as this node's replica of the meta range has them.
    pub fn decommissioning(&self) -> Result<BTreeSet<NodeId>> {
        Ok(self.read()?.decommissioning)
    }

    /// Sets the placement policy of the user keys `[start, end)` (`end` `None`: to the end of
    /// the keyspace), or with `policy` `None` clears the one set at exactly that span. The
    /// policy must be valid and satisfiable by the live nodes now (the error names the
    /// shortfall), and the span must not partly overlap another policy's (setting the same
    /// span again replaces it). The driver splits ranges at the span's bounds and places the
    /// ranges inside it by the policy; other ranges follow `placement.policy`. Any node takes
    /// the call; its checks read this node's copy of the meta range, which may trail the
    /// leader's by a moment.
    pub async fn set_policy(
        &self,
        start: Bytes,
        end: Option<Bytes>,
        policy: Option<PolicySpec>,
    ) -> Result<()> {
        // The bounds become split keys: they must be valid keys ("" starts the keyspace).
        for bound in std::iter::once(&start).filter(|s| !s.is_empty()).chain(end.as_ref()) {
            zonekv_store::validate::key(bound)?;
        }
        if end.as_ref().is_some_and(|e| e <= &start) {
            return Err(Error::InvalidArgument(format!(
                "the span's end {end:?} is not after its start {start:?}"
            )));
        }
        let registry = self.read()?;
        let same = registry.policies.iter().find(|p| p.start == start && p.end == end);
        if let Some(other) =
            registry.policies.iter().find(|p| p.overlaps(&start, end.as_deref()) && Some(*p) != same)
        {
            return Err(Error::FailedPrecondition(format!(
                "the span overlaps the policy of [{:?}, {:?}); clear that one first",
                other.start, other.end
            )));
        }
        let value = match &policy {
            None if same.is_none() => {
                return Err(Error::NotFound(format!("no policy is set for [{start:?}, {end:?})")));
            }
            None => None,
            Some(spec) => {
                let p = spec.to_policy().map_err(|e| Error::InvalidArgument(e.to_string()))?;
                let view = self.views.cluster()?;
                p.check(&view)
                    .map_err(|e| Error::InvalidArgument(format!("the live nodes cannot hold it: {e}")))?;
                Some(SpanPolicy { start: start.clone(), end: end.clone(), policy: spec.clone() }.encode()?)
            }
        };
        self.meta.propose(Op::SetPlacement { key: policy_key(&start), value }).await?;
        tracing::info!(?start, ?end, ?policy, "span policy recorded");
        Ok(())
    }

    /// The span policies set, by start key.
    pub fn policies(&self) -> Result<Vec<SpanPolicy>> {
        Ok(self.read()?.policies)
    }
}
