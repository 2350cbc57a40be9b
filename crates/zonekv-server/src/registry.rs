//! What the placement driver keeps in the meta range (docs/placement.md, "Driver"): which
//! nodes are being decommissioned, and the placement policies of key spans. Placement records
//! (`Op::SetPlacement`), so they are replicated, survive restarts and are the same for
//! whichever node leads the meta range.
//!
//! ```text
//! placement record  "node/" ++ node_id:u64be   ->  "decommissioning"
//!                   "policy/" ++ start_key     ->  end ++ policy
//!     end:    0x00 (to the end of the keyspace) | 0x01 ++ len:u32be ++ end_key
//!     policy: the policy as TOML (`voters`, `non-voters`, `constraints`, …; PolicySpec)
//! ```

use std::collections::BTreeSet;

use bytes::Bytes;
use zonekv_engine::Engine;
use zonekv_placement::scenario::PolicySpec;
use zonekv_raft::keys::FIRST_RANGE;
use zonekv_raft::{NodeId, Op, directory};

use crate::{Error, NodeHandle, Result};

const NODE: &[u8] = b"node/";
const POLICY: &[u8] = b"policy/";
const DECOMMISSIONING: &[u8] = b"decommissioning";

/// The placement policy of the user keys `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanPolicy {
    /// First key of the span.
    pub start: Bytes,
    /// First key after it; `None`: the end of the keyspace.
    pub end: Option<Bytes>,
    /// The policy.
    pub policy: PolicySpec,
}

impl SpanPolicy {
    /// Whether the span holds `key`.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= &self.start[..] && self.end.as_ref().is_none_or(|e| key < &e[..])
    }

    fn overlaps(&self, start: &[u8], end: Option<&[u8]>) -> bool {
        end.is_none_or(|e| &self.start[..] < e) && self.end.as_ref().is_none_or(|e| start < &e[..])
    }

    fn encode(&self) -> Result<Bytes> {
        let mut out = Vec::new();
        match &self.end {
            None => out.push(0),
            Some(e) => {
                out.push(1);
                out.extend_from_slice(&(e.len() as u32).to_be_bytes());
                out.extend_from_slice(e);
            }
        }
        let text =
            toml::to_string(&self.policy).map_err(|e| Error::InvalidArgument(format!("policy: {e}")))?;
        out.extend_from_slice(text.as_bytes());
        Ok(out.into())
    }

    fn decode(start: &[u8], value: &[u8]) -> Result<SpanPolicy> {
        let corrupt = |why: String| {
            Error::Raft(zonekv_raft::Error::Corruption {
                group: FIRST_RANGE,
                what: format!("policy record of {start:?}: {why}"),
            })
        };
        let (end, rest) = match value.split_first() {
            Some((0, rest)) => (None, rest),
            Some((1, rest)) if rest.len() >= 4 => {
                let len = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
                let rest = &rest[4..];
                if rest.len() < len {
                    return Err(corrupt(format!("end key of {len} bytes, {} left", rest.len())));
                }
                (Some(Bytes::copy_from_slice(&rest[..len])), &rest[len..])
            }
            _ => return Err(corrupt("no end marker".into())),
        };
        let text = std::str::from_utf8(rest).map_err(|e| corrupt(e.to_string()))?;
        let policy = toml::from_str(text).map_err(|e| corrupt(e.to_string()))?;
        Ok(SpanPolicy { start: Bytes::copy_from_slice(start), end, policy })
    }
}

/// What the meta range records about nodes and spans.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Registry {
    /// Nodes being emptied: their replicas move away, none are placed there.
    pub(crate) decommissioning: BTreeSet<NodeId>,
    /// Span policies, by start key; spans do not overlap.
    pub(crate) policies: Vec<SpanPolicy>,
}

fn node_key(node: NodeId) -> Bytes {
    [NODE, &node.to_be_bytes()[..]].concat().into()
}

fn policy_key(start: &[u8]) -> Bytes {
    [POLICY, start].concat().into()
}

impl Registry {
    /// The registry as this node's replica of the meta range has it.
    pub(crate) fn read<E: Engine>(engine: &E) -> Result<Registry> {
        let mut registry = Registry::default();
        for (key, value) in directory::placement_records(engine, FIRST_RANGE)? {
            if let Some(start) = key.strip_prefix(POLICY) {
                // One unreadable policy must not stop placement: its ranges follow the default,
                // and it is reported.
                match SpanPolicy::decode(start, &value) {
                    Ok(p) => registry.policies.push(p),
                    Err(e) => {
                        tracing::error!(error = %e, "a span policy record is unreadable; its ranges follow the default policy")
                    }
                }
                continue;
            }
            let Some(id) = key.strip_prefix(NODE) else { continue };
            let id: [u8; 8] = id.try_into().map_err(|_| zonekv_raft::Error::Corruption {
                group: FIRST_RANGE,
                what: format!("placement record {key:?}: a node id is 8 bytes, not {}", id.len()),
            })?;
            if value.as_ref() == DECOMMISSIONING {
                registry.decommissioning.insert(NodeId::from_be_bytes(id));
            }
        }
        Ok(registry)
    }

    /// The policy of the span holding `key`, if one was set.
    pub(crate) fn policy_for(&self, key: &[u8]) -> Option<&SpanPolicy> {
        self.policies.iter().find(|p| p.contains(key))
    }
}

impl NodeHandle {
    /// Starts (or with `cancel`, stops) decommissioning node `node_id`: the placement driver
    /// moves its replicas away and places none there. Recorded in the meta range; any node
    /// takes the call. A node that is not a member of the cluster is `NotFound`.
    pub async fn decommission(&self, node_id: NodeId, cancel: bool) -> Result<()> {
        let member = {
            let m = self.inner.ranges.first().replica.metrics();
            m.membership_config.membership().get_node(&node_id).is_some()
        };
        if !member {
            return Err(Error::NotFound(format!("node {node_id} is not a member of the cluster")));
        }
        if !cancel {
            self.check_without(node_id)?;
        }
        let value = (!cancel).then(|| Bytes::from_static(DECOMMISSIONING));
        self.propose_meta(Op::SetPlacement { key: node_key(node_id), value }).await?;
        tracing::info!(node_id, cancel, "decommissioning recorded");
        Ok(())
    }

    /// Drops node `node_id`'s record (it left the cluster).
    pub(crate) async fn forget_node(&self, node_id: NodeId) -> Result<()> {
        self.propose_meta(Op::SetPlacement { key: node_key(node_id), value: None }).await.map(drop)
    }

    /// Fails, naming the shortfall, if the live nodes other than `node_id` cannot hold the
    /// default policy or some span's policy: decommissioning it could then never finish.
    fn check_without(&self, node_id: NodeId) -> Result<()> {
        let mut cluster = crate::driver::view(&self.inner)?;
        if let Some(n) = cluster.node_mut(node_id) {
            n.state = zonekv_placement::NodeState::Decommissioning;
        }
        let registry = Registry::read(&self.inner.starter.engine)?;
        let specs = std::iter::once(&self.inner.config.placement.policy)
            .chain(registry.policies.iter().map(|p| &p.policy));
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
        Ok(Registry::read(&self.inner.starter.engine)?.decommissioning)
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
            crate::validate::key(bound)?;
        }
        if end.as_ref().is_some_and(|e| e <= &start) {
            return Err(Error::InvalidArgument(format!(
                "the span's end {end:?} is not after its start {start:?}"
            )));
        }
        let registry = Registry::read(&self.inner.starter.engine)?;
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
                let view = crate::driver::view(&self.inner)?;
                p.check(&view)
                    .map_err(|e| Error::InvalidArgument(format!("the live nodes cannot hold it: {e}")))?;
                Some(SpanPolicy { start: start.clone(), end: end.clone(), policy: spec.clone() }.encode()?)
            }
        };
        self.propose_meta(Op::SetPlacement { key: policy_key(&start), value }).await?;
        tracing::info!(?start, ?end, ?policy, "span policy recorded");
        Ok(())
    }

    /// The span policies set, by start key.
    pub fn policies(&self) -> Result<Vec<SpanPolicy>> {
        Ok(Registry::read(&self.inner.starter.engine)?.policies)
    }
}
