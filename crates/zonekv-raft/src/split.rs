//! Applying a [`Split`]: the parent shrinks and the right-hand range is created, in the same
//! engine write as the parent's applied state (docs/multiraft.md, "Split").

use std::collections::{BTreeMap, BTreeSet};

use zonekv_engine::{Cf, Engine, WriteBatch};

use crate::codec::{AppliedState, encode_applied, encode_descriptor, encode_log_id};
use crate::keys::{MetaKey, meta_key};
use crate::range::{RangeDescriptor, RangeEpoch, ReplicaDesc, split_initial_log_id};
use crate::{Membership, OpResult, ReplicaId, Result, Split, StoredMembership};

/// Checks `split` against the range as it is (`desc`, `membership`) and, if it holds, adds the
/// writes of the split to `batch` and updates `desc` to the shrunk range. Returns the op's
/// result; a refused split changes nothing.
pub(crate) fn apply_split<E: Engine>(
    engine: &E,
    split: &Split,
    desc: &mut RangeDescriptor,
    membership: &StoredMembership,
    batch: &mut WriteBatch,
) -> Result<OpResult> {
    let right = match plan(engine, split, desc, membership.membership())? {
        Ok(right) => right,
        Err(reason) => {
            return Ok(OpResult::SplitRejected { reason, current: Box::new(desc.clone()) });
        }
    };
    let (new_desc, new_membership) = right;
    let l0 = split_initial_log_id();
    let g = new_desc.range_id;
    batch.put(Cf::RaftMeta, meta_key(g, MetaKey::Descriptor), encode_descriptor(&new_desc));
    batch.put(Cf::RaftMeta, meta_key(g, MetaKey::Purged), encode_log_id(&l0));
    batch.put(Cf::RaftMeta, meta_key(g, MetaKey::Committed), encode_log_id(&l0));
    let applied =
        AppliedState { last_applied: Some(l0), membership: StoredMembership::new(Some(l0), new_membership) };
    batch.put(Cf::RaftMeta, meta_key(g, MetaKey::Applied), encode_applied(&applied));

    desc.end = Some(split.split_key.clone());
    desc.epoch.version += 1;
    Ok(OpResult::Split { left: Box::new(desc.clone()), right: Box::new(new_desc) })
}

/// The right-hand range and its membership, or why the split cannot happen.
type Plan = std::result::Result<(RangeDescriptor, Membership), String>;

fn plan<E: Engine>(
    engine: &E,
    split: &Split,
    desc: &RangeDescriptor,
    membership: &Membership,
) -> Result<Plan> {
    let r = desc.range_id;
    if split.expected_epoch != desc.epoch {
        return Ok(Err(format!(
            "range {r} changed since the split was planned (epoch {}, planned against {})",
            desc.epoch, split.expected_epoch
        )));
    }
    if !desc.can_split_at(&split.split_key) {
        return Ok(Err(format!("split key {:?} is not strictly inside {desc}", split.split_key)));
    }
    if membership.get_joint_config().len() != 1 {
        return Ok(Err(format!("range {r} is changing its membership; split it afterwards")));
    }
    let ids = &split.new_replica_ids;
    let distinct: BTreeSet<ReplicaId> = ids.iter().copied().collect();
    if ids.len() != desc.replicas.len()
        || distinct.len() != ids.len()
        || distinct.contains(&ReplicaId::new(0))
    {
        return Ok(Err(format!(
            "malformed split of range {r}: {} new replica ids for {} replicas (they must be distinct and non-zero)",
            ids.len(),
            desc.replicas.len()
        )));
    }
    if split.new_range_id == 0 || split.new_range_id == r {
        return Ok(Err(format!("malformed split of range {r}: new range id {}", split.new_range_id)));
    }
    // Ids are never reused; an existing range under the new id means the allocator failed.
    // Refuse rather than overwrite it.
    if engine.get(Cf::RaftMeta, &meta_key(split.new_range_id, MetaKey::Descriptor))?.is_some() {
        return Ok(Err(format!("range id {} already exists on this node", split.new_range_id)));
    }

    let voters: BTreeSet<ReplicaId> = membership.voter_ids().collect();
    let mut new_voters = BTreeSet::new();
    let mut nodes = BTreeMap::new();
    let mut replicas = Vec::with_capacity(ids.len());
    for (old, &new) in desc.replicas.iter().zip(ids) {
        let Some(info) = membership.get_node(&old.replica_id) else {
            return Ok(Err(format!("range {r}: replica {} is not in its membership", old.replica_id)));
        };
        nodes.insert(new, info.clone());
        if voters.contains(&old.replica_id) {
            new_voters.insert(new);
        }
        replicas.push(ReplicaDesc { replica_id: new, node_id: old.node_id, learner: old.learner });
    }
    let new_membership = match Membership::new(vec![new_voters], nodes) {
        Ok(m) => m,
        Err(e) => return Ok(Err(format!("range {r}: cannot form the new range's membership: {e}"))),
    };
    let new_desc = RangeDescriptor {
        range_id: split.new_range_id,
        start: split.split_key.clone(),
        end: desc.end.clone(),
        epoch: RangeEpoch { version: desc.epoch.version + 1, conf_ver: desc.epoch.conf_ver },
        replicas,
    };
    Ok(Ok((new_desc, new_membership)))
}
