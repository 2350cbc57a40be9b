//! The registry: what the placement driver keeps in the meta range (docs/placement.md,
//! "Driver"): which nodes are being decommissioned, and the placement policies of key spans.
//! They are placement records (`zonekv_raft::meta::placement`), so they are replicated,
//! survive restarts and are the same for whichever node leads the meta range. This module owns
//! their keys and values; `registrar.rs`, which changes them, is the only code that proposes
//! `Op::SetPlacement`.
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
use zonekv_raft::NodeId;
use zonekv_raft::keys::FIRST_RANGE;
use zonekv_raft::meta::placement;

use crate::{Error, Result};

const NODE: &[u8] = b"node/";
const POLICY: &[u8] = b"policy/";
pub(crate) const DECOMMISSIONING: &[u8] = b"decommissioning";

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

    pub(crate) fn overlaps(&self, start: &[u8], end: Option<&[u8]>) -> bool {
        end.is_none_or(|e| &self.start[..] < e) && self.end.as_ref().is_none_or(|e| start < &e[..])
    }

    pub(crate) fn encode(&self) -> Result<Bytes> {
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
            Error::Store(zonekv_store::Error::Raft(zonekv_raft::Error::Corruption {
                group: FIRST_RANGE,
                what: format!("policy record of {start:?}: {why}"),
            }))
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
pub struct Registry {
    /// Nodes being emptied: their replicas move away, none are placed there.
    pub decommissioning: BTreeSet<NodeId>,
    /// Span policies, by start key; spans do not overlap.
    pub policies: Vec<SpanPolicy>,
}

pub(crate) fn node_key(node: NodeId) -> Bytes {
    [NODE, &node.get().to_be_bytes()[..]].concat().into()
}

pub(crate) fn policy_key(start: &[u8]) -> Bytes {
    [POLICY, start].concat().into()
}

/// Whether `key` and `value` form a placement record this module writes: a node's record
/// (8-byte node id; `decommissioning` or cleared) or a span policy (an end after the start and
/// a valid policy, or cleared). The meta range's leader checks records another node asks it
/// to write, so that no caller can store one the registry cannot read.
pub(crate) fn check_record(key: &[u8], value: Option<&[u8]>) -> Result<()> {
    let bad = |why: String| Err(Error::InvalidArgument(format!("placement record {key:?}: {why}")));
    if let Some(id) = key.strip_prefix(NODE) {
        if id.len() != 8 {
            return bad(format!("a node id is 8 bytes, not {}", id.len()));
        }
        return match value {
            None => Ok(()),
            Some(v) if v == DECOMMISSIONING => Ok(()),
            Some(v) => bad(format!("a node's record is {DECOMMISSIONING:?} or nothing, not {v:?}")),
        };
    }
    if let Some(start) = key.strip_prefix(POLICY) {
        let Some(value) = value else { return Ok(()) };
        let p = SpanPolicy::decode(start, value).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        if p.end.as_ref().is_some_and(|e| e[..] <= p.start[..]) {
            return bad("the span's end is not after its start".into());
        }
        return p.policy.to_policy().map(drop).map_err(|e| Error::InvalidArgument(e.to_string()));
    }
    if key.starts_with(crate::grants::GRANT) {
        return crate::grants::check(key, value);
    }
    bad("not a node, policy or grant record".into())
}

impl Registry {
    /// The registry as this node's replica of the meta range has it.
    pub fn read<E: Engine>(engine: &E) -> Result<Registry> {
        let mut registry = Registry::default();
        for (key, value) in placement::records(engine, FIRST_RANGE).map_err(zonekv_store::Error::from)? {
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
            let id: [u8; 8] = id.try_into().map_err(|_| {
                zonekv_store::Error::Raft(zonekv_raft::Error::Corruption {
                    group: FIRST_RANGE,
                    what: format!("placement record {key:?}: a node id is 8 bytes, not {}", id.len()),
                })
            })?;
            if value.as_ref() == DECOMMISSIONING {
                registry.decommissioning.insert(NodeId::new(u64::from_be_bytes(id)));
            }
        }
        Ok(registry)
    }

    /// The policy of the span holding `key`, if one was set.
    pub fn policy_for(&self, key: &[u8]) -> Option<&SpanPolicy> {
        self.policies.iter().find(|p| p.contains(key))
    }
}
