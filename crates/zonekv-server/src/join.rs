//! Joining an existing cluster at startup (`--join ADDR`).

use std::time::Duration;

use zonekv_client::{ClientConfig, ClientError};

use crate::{Error, NodeHandle, Result};

/// Asks the cluster at `addr` to add this node, then waits until this node has received the
/// membership. Fails with a clear error if nothing answers at `addr`.
pub(crate) async fn join(node: &NodeHandle, addr: &str) -> Result<()> {
    let fail = |reason: String| Error::Join { addr: addr.to_string(), reason };
    let mut config = ClientConfig::new([addr]);
    // Long enough to ride out an election in the cluster being joined.
    config.retry_budget = Duration::from_secs(30);
    config.request_timeout = Duration::from_secs(30);
    // The node's own certificate: the cluster lets a node add only itself.
    config.tls = node.tls().cloned();
    let admin = zonekv_client::Client::with_config(config).map_err(|e| fail(e.to_string()))?.admin();
    tracing::info!(node_id = %node.id(), join = addr, "joining cluster");
    match admin.add_node(node.id().get(), node.addr(), false).await {
        Ok(()) => {}
        Err(ClientError::Unavailable { message, .. }) => {
            return Err(fail(format!("no ZoneKV node answered ({message})")));
        }
        Err(e) => return Err(fail(e.to_string())),
    }
    // Added: the leader's first messages carry the membership (its log, or a snapshot of the
    // first range when the log was purged). openraft takes a learner as caught up while it is
    // within `replication_lag_threshold` entries, so the add can return before anything
    // arrived here: wait for the membership itself, then for a known leader.
    node.store()
        .wait_for_members(Duration::from_secs(10))
        .await
        .map_err(|e| fail(format!("added, but {e}")))?;
    node.wait_for_leader(Duration::from_secs(10)).await.map_err(|e| fail(e.to_string()))?;
    tracing::info!(node_id = %node.id(), "joined cluster");
    Ok(())
}
