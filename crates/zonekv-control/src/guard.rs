//! What other nodes may ask of this one, checked before anything is proposed or created:
//! the receiving side of [`crate::Peers`] calls that change state. A node's certificate
//! proves which node calls (the server checks that); these checks make sure that even a
//! buggy or hostile member cannot turn a call into lost data or a stopped replica: only
//! well-formed meta ops, only about ranges the caller hosts, only replicas of known ranges.

use zonekv_engine::Engine;
use zonekv_raft::keys::FIRST_RANGE;
use zonekv_raft::{NodeId, Op, RangeDescriptor, ReplicaId, meta};
use zonekv_store::Store;

use crate::{Error, Result};

/// Whether a peer may ask this node to propose `op` to the meta range: only the ops the meta
/// range takes from other nodes, each well-formed — an id count within
/// [`meta::allocator::MAX_IDS_PER_OP`], directory entries that pass
/// [`meta::directory::check`], placement records the registry can read, no grants. `caller`,
/// the node that asks (known from its certificate; `None` in insecure mode), must host a
/// replica of the range the directory has now where each reported descriptor starts (the
/// range itself, or a split's parent), as the range's leader reporting a split or membership
/// change does.
pub(crate) fn check_meta_op<E: Engine>(store: &Store<E>, op: &Op, caller: Option<NodeId>) -> Result<()> {
    match op {
        Op::AllocateIds { count } if (1..=meta::allocator::MAX_IDS_PER_OP).contains(count) => Ok(()),
        Op::AllocateIds { count } => Err(Error::InvalidArgument(format!(
            "AllocateIds takes 1 to {} ids, not {count}",
            meta::allocator::MAX_IDS_PER_OP
        ))),
        Op::UpdateDirectory(descs) => {
            meta::directory::check(descs).map_err(Error::InvalidArgument)?;
            let Some(node) = caller else { return Ok(()) };
            let hosts = |d: &RangeDescriptor| d.replicas.iter().any(|r| r.node_id == node);
            for d in descs {
                // The entry that covers the descriptor's start now: the range itself, or, for
                // the right-hand side of a split, its parent. A caller that does not host it
                // cannot have performed the change it reports (listing itself in the new
                // descriptor proves nothing: the caller wrote it).
                let known = meta::directory::lookup(store.engine(), FIRST_RANGE, &d.start)
                    .map_err(zonekv_store::Error::from)?;
                if !known.as_ref().is_some_and(hosts) {
                    return Err(Error::PermissionDenied(format!(
                        "node {node} reports range {} but hosts no replica of it",
                        d.range_id
                    )));
                }
            }
            Ok(())
        }
        Op::SetPlacement { key, .. } if key.starts_with(crate::grants::GRANT) => Err(Error::PermissionDenied(
            "grants are written only at the meta range's leader, by root's own call; a node may not forward one".into(),
        )),
        Op::SetPlacement { key, value } => crate::registry::check_record(key, value.as_deref()),
        other => Err(Error::InvalidArgument(format!(
            "ProposeMeta takes AllocateIds, UpdateDirectory or SetPlacement, not {other:?}"
        ))),
    }
}

/// Whether `caller` may ask this node to create replica `replica` of the range `desc`
/// describes (a move's first step, asked by the range's leader): the range must be the one
/// this node's copy of the directory has at `desc.start`, `desc` must name `replica` on this
/// node as a learner, and the caller must host one of the replicas the directory lists.
pub fn check_create_replica<E: Engine>(
    store: &Store<E>,
    desc: &RangeDescriptor,
    replica: ReplicaId,
    caller: Option<NodeId>,
) -> Result<()> {
    meta::directory::check(std::slice::from_ref(desc)).map_err(Error::InvalidArgument)?;
    let me = store.node_id();
    if !desc.replicas.iter().any(|r| r.replica_id == replica && r.node_id == me && r.learner) {
        return Err(Error::InvalidArgument(format!(
            "the descriptor of range {} does not name replica {replica} on node {me} as a learner",
            desc.range_id
        )));
    }
    let known = meta::directory::lookup(store.engine(), FIRST_RANGE, &desc.start)
        .map_err(zonekv_store::Error::from)?
        .filter(|k| k.range_id == desc.range_id && k.start == desc.start);
    let Some(known) = known else {
        // This node's copy of the directory may trail the meta range's leader for a moment:
        // the caller retries the step.
        return Err(Error::Unavailable(format!(
            "range {} starting at {:?} is not in this node's copy of the range directory",
            desc.range_id, desc.start
        )));
    };
    if let Some(node) = caller
        && node != me
        && !known.replicas.iter().any(|r| r.node_id == node)
    {
        return Err(Error::PermissionDenied(format!(
            "node {node} hosts no replica of range {} and may not add one",
            desc.range_id
        )));
    }
    Ok(())
}
