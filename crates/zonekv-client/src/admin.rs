//! [`AdminClient`]: bootstrap, membership and status.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use tonic::transport::Channel;
use zonekv_proto::admin::v1 as pb;
use zonekv_proto::admin::v1::admin_client::AdminClient as PbAdminClient;

pub use zonekv_proto::admin::v1::{
    ListPoliciesResponse, Policy, RangeStatus, Replica, ReplicaRole, SpanPolicy, StatusResponse,
};

use crate::retry::{Kind, Router};
use crate::{ClientConfig, ClientError, Result};

/// Administration of a cluster. Obtain one with [`AdminClient::new`] or
/// [`crate::Client::admin`].
#[derive(Clone)]
pub struct AdminClient {
    router: Arc<Router>,
}

impl AdminClient {
    /// An admin client for the cluster reachable at any of `endpoints`.
    pub fn new<I, S>(endpoints: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::with_config(ClientConfig::new(endpoints))
    }

    /// A client with explicit settings (timeouts, TLS).
    pub fn with_config(config: ClientConfig) -> Result<Self> {
        Ok(Self { router: Arc::new(Router::new(config)?) })
    }

    pub(crate) fn from_router(router: Arc<Router>) -> Self {
        Self { router }
    }

    async fn direct<T, F, Fut>(&self, addr: &str, f: F) -> Result<T>
    where
        F: FnOnce(PbAdminClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let client = PbAdminClient::new(self.router.channel(addr)?);
        match tokio::time::timeout(self.router.config().request_timeout, f(client)).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(ClientError::from_status(&s)),
            Err(_) => Err(ClientError::Unavailable { message: format!("{addr}: no answer"), attempts: 1 }),
        }
    }

    /// Bootstraps a cluster of `members` (node id, address) by asking the node at `addr`,
    /// which must be one of them.
    pub async fn initialize(&self, addr: &str, members: &[(u64, String)]) -> Result<()> {
        let req = pb::InitializeRequest {
            members: members.iter().map(|(id, a)| pb::Member { node_id: *id, addr: a.clone() }).collect(),
        };
        self.direct(addr, |mut c| async move { c.initialize(req).await }).await?;
        Ok(())
    }

    /// The status of the node at `addr`.
    pub async fn status(&self, addr: &str) -> Result<StatusResponse> {
        self.direct(addr, |mut c| async move { c.status(pb::StatusRequest {}).await }).await
    }

    /// Adds a node (at the leader; redirects are followed). Idempotent, so always retried.
    pub async fn add_node(&self, node_id: u64, addr: &str, learner_only: bool) -> Result<()> {
        let req =
            pb::AddNodeRequest { member: Some(pb::Member { node_id, addr: addr.to_string() }), learner_only };
        self.router
            .call(Kind::Read, None, |n| {
                let req = req.clone();
                async move { PbAdminClient::new(n.channel).add_node(req).await.map(tonic::Response::into_inner) }
            })
            .await?;
        Ok(())
    }

    /// Removes a node (at the leader).
    pub async fn remove_node(&self, node_id: u64) -> Result<()> {
        let req = pb::RemoveNodeRequest { node_id };
        self.router
            .call(Kind::Write, None, |n| async move {
                PbAdminClient::new(n.channel).remove_node(req).await.map(tonic::Response::into_inner)
            })
            .await?;
        Ok(())
    }

    /// Splits the range holding `key` at `key` (at that range's leader); returns the ids of
    /// the left (split) and right (new) ranges.
    pub async fn split(&self, key: impl Into<Bytes>) -> Result<(u64, u64)> {
        let key = key.into();
        let route = crate::ranges::RouteKey::At(key.clone());
        let req = pb::SplitRequest { key };
        let resp = self
            .router
            .call(Kind::Write, Some(&route), |n| {
                let req = req.clone();
                async move { PbAdminClient::new(n.channel).split(req).await.map(tonic::Response::into_inner) }
            })
            .await?;
        Ok((resp.left_range_id, resp.right_range_id))
    }

    /// Moves the voter of `range_id` on node `from` to node `to` (at the range's leader);
    /// returns the nodes of the range's voters afterwards. Not retried on an unknown outcome.
    pub async fn move_replica(&self, range_id: u64, from: u64, to: u64) -> Result<Vec<u64>> {
        let req = pb::MoveReplicaRequest { range_id, from_node_id: from, to_node_id: to };
        let resp = self
            .router
            .call(Kind::Write, None, |n| async move {
                PbAdminClient::new(n.channel).move_replica(req).await.map(tonic::Response::into_inner)
            })
            .await?;
        Ok(resp.voter_node_ids)
    }

    /// Moves leadership of `range_id` to `to_node_id` (at the leader).
    pub async fn transfer_leader(&self, range_id: u64, to_node_id: u64) -> Result<()> {
        let req = pb::TransferLeaderRequest { range_id, to_node_id };
        self.router
            .call(Kind::Write, None, |n| async move {
                PbAdminClient::new(n.channel).transfer_leader(req).await.map(tonic::Response::into_inner)
            })
            .await?;
        Ok(())
    }

    /// Starts (or with `cancel`, stops) decommissioning node `node_id`: the placement driver
    /// moves its replicas away and places none there.
    pub async fn decommission(&self, node_id: u64, cancel: bool) -> Result<()> {
        let req = pb::DecommissionRequest { node_id, cancel };
        self.router
            .call(Kind::Write, None, |n| async move {
                PbAdminClient::new(n.channel).decommission(req).await.map(tonic::Response::into_inner)
            })
            .await?;
        Ok(())
    }

    /// Sets the placement policy of the user keys `[start, end)` (`end` `None`: to the end of
    /// the keyspace), or with `policy` `None` clears it.
    pub async fn set_policy(&self, start: Bytes, end: Option<Bytes>, policy: Option<Policy>) -> Result<()> {
        let req =
            pb::SetPolicyRequest { start, end: end.unwrap_or_default(), clear: policy.is_none(), policy };
        self.router
            .call(Kind::Write, None, |n| {
                let req = req.clone();
                async move { PbAdminClient::new(n.channel).set_policy(req).await.map(tonic::Response::into_inner) }
            })
            .await?;
        Ok(())
    }

    /// The span policies set, as the node at `addr` has them, and its default policy.
    pub async fn policies(&self, addr: &str) -> Result<ListPoliciesResponse> {
        self.direct(addr, |mut c| async move { c.list_policies(pb::ListPoliciesRequest {}).await }).await
    }

    /// Grants client user `user` reads (with `read_write`, also writes) of the keys under
    /// `prefix`; with `revoke`, removes that grant.
    pub async fn grant(&self, user: &str, prefix: Bytes, read_write: bool, revoke: bool) -> Result<()> {
        let req = pb::GrantRequest { user: user.to_string(), prefix, read_write, revoke };
        self.router
            .call(Kind::Write, None, |n| {
                let req = req.clone();
                async move { PbAdminClient::new(n.channel).grant(req).await.map(tonic::Response::into_inner) }
            })
            .await?;
        Ok(())
    }

    /// Every user's grants, as the node at `addr` has them: (user, prefix, read-write).
    pub async fn grants(&self, addr: &str) -> Result<Vec<(String, Bytes, bool)>> {
        let resp =
            self.direct(addr, |mut c| async move { c.list_grants(pb::ListGrantsRequest {}).await }).await?;
        Ok(resp.grants.into_iter().map(|g| (g.user, g.prefix, g.read_write)).collect())
    }
}
