//! Range descriptors and split commands ↔ protobuf, and the stored descriptor record.

use prost::Message;
use zonekv_proto::raft::v1 as pb;

use super::decode_msg;
use crate::range::{RangeDescriptor, RangeEpoch, ReplicaDesc};
use crate::{NodeId, RangeId, ReplicaId, Result, Split};

/// Range epoch → protobuf.
pub fn epoch_to_pb(e: &RangeEpoch) -> pb::RangeEpoch {
    pb::RangeEpoch { version: e.version, conf_ver: e.conf_ver }
}

/// Protobuf → range epoch (absent: the zero epoch).
pub fn epoch_from_pb(e: Option<pb::RangeEpoch>) -> RangeEpoch {
    let e = e.unwrap_or_default();
    RangeEpoch { version: e.version, conf_ver: e.conf_ver }
}

/// RangeDescriptor → protobuf.
pub fn descriptor_to_pb(d: &RangeDescriptor) -> pb::RangeDescriptor {
    pb::RangeDescriptor {
        range_id: d.range_id.get(),
        start: d.start.clone(),
        end: d.end.clone(),
        epoch: Some(epoch_to_pb(&d.epoch)),
        replicas: d
            .replicas
            .iter()
            .map(|r| pb::ReplicaDescriptor {
                replica_id: r.replica_id.get(),
                node_id: r.node_id.get(),
                learner: r.learner,
            })
            .collect(),
    }
}

/// Protobuf → RangeDescriptor.
pub fn descriptor_from_pb(d: pb::RangeDescriptor) -> RangeDescriptor {
    RangeDescriptor {
        range_id: RangeId::new(d.range_id),
        start: d.start,
        end: d.end,
        epoch: epoch_from_pb(d.epoch),
        replicas: d
            .replicas
            .into_iter()
            .map(|r| ReplicaDesc {
                replica_id: ReplicaId::new(r.replica_id),
                node_id: NodeId::new(r.node_id),
                learner: r.learner,
            })
            .collect(),
    }
}

/// Split → protobuf.
pub fn split_to_pb(s: &Split) -> pb::op::Split {
    pb::op::Split {
        split_key: s.split_key.clone(),
        expected_epoch: Some(epoch_to_pb(&s.expected_epoch)),
        new_range_id: s.new_range_id.get(),
        new_replica_ids: s.new_replica_ids.iter().map(|r| r.get()).collect(),
    }
}

/// Protobuf → Split.
pub fn split_from_pb(s: pb::op::Split) -> Split {
    Split {
        split_key: s.split_key,
        expected_epoch: epoch_from_pb(s.expected_epoch),
        new_range_id: RangeId::new(s.new_range_id),
        new_replica_ids: s.new_replica_ids.into_iter().map(ReplicaId::new).collect(),
    }
}

/// Encodes a range descriptor for the `raft-meta` column family.
pub fn encode_descriptor(d: &RangeDescriptor) -> Vec<u8> {
    super::frame(&descriptor_to_pb(d).encode_to_vec())
}

/// Decodes and verifies a stored range descriptor of `group`.
pub fn decode_descriptor(group: RangeId, stored: &[u8]) -> Result<RangeDescriptor> {
    let msg: pb::RangeDescriptor = decode_msg(group, &|| "range descriptor".to_string(), stored)?;
    if msg.range_id != group.get() {
        return Err(crate::Error::Corruption {
            group,
            what: format!("the range descriptor stored for range {group} describes range {}", msg.range_id),
        });
    }
    Ok(descriptor_from_pb(msg))
}
