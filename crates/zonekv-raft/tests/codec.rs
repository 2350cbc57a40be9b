//! Record and message encodings: round trips, and arbitrary bytes never panic or pass as valid.

use bytes::Bytes;
use openraft::EntryPayload;
use proptest::prelude::*;
use prost::Message;
use zonekv_proto::raft::v1 as pb;
use zonekv_raft::{
    Command, Entry, LeaderId, LogId, Membership, Mutation, NodeId, NodeInfo, Op, RangeEpoch, RangeId,
    ReplicaId, Split, codec, value,
};

fn bytes() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..16).prop_map(Bytes::from)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (bytes(), bytes()).prop_map(|(key, value)| Op::Put { key, value }),
        bytes().prop_map(|key| Op::Delete { key }),
        (bytes(), prop::option::of(bytes()), prop::option::of(bytes()))
            .prop_map(|(key, expected, new_value)| Op::CompareAndSwap { key, expected, new_value }),
        prop::collection::vec(
            prop_oneof![
                (bytes(), bytes()).prop_map(|(key, value)| Mutation::Put { key, value }),
                bytes().prop_map(|key| Mutation::Delete { key }),
            ],
            0..4
        )
        .prop_map(Op::Batch),
        (bytes(), any::<(u64, u64, u64)>(), prop::collection::vec(any::<u64>(), 0..5)).prop_map(
            |(split_key, (version, conf_ver, new_range_id), new_replica_ids)| Op::Split(Split {
                split_key,
                expected_epoch: RangeEpoch { version, conf_ver },
                new_range_id: RangeId::new(new_range_id),
                new_replica_ids: new_replica_ids.into_iter().map(ReplicaId::new).collect(),
            })
        ),
        any::<u64>().prop_map(|count| Op::AllocateIds { count }),
        prop::collection::vec((any::<u64>(), bytes(), prop::option::of(bytes()), any::<(u64, u64)>()), 0..3)
            .prop_map(|descs| Op::UpdateDirectory(
                descs
                    .into_iter()
                    .map(|(range_id, start, end, (version, conf_ver))| zonekv_raft::RangeDescriptor {
                        range_id: RangeId::new(range_id),
                        start,
                        end,
                        epoch: RangeEpoch { version, conf_ver },
                        replicas: vec![zonekv_raft::ReplicaDesc {
                            replica_id: ReplicaId::new(range_id),
                            node_id: NodeId::new(1),
                            learner: false
                        }],
                    })
                    .collect()
            )),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    let payload = prop_oneof![
        Just(EntryPayload::Blank),
        prop::collection::vec(op(), 0..5).prop_map(|ops| EntryPayload::Normal(Command { ops })),
        (1u64..6, 0u64..3).prop_map(|(voters, learners)| {
            // Even replicas name their node (moved replicas), odd ones do not (node id = id).
            let node_of = |id: u64| id.is_multiple_of(2).then(|| NodeId::new(id + 40));
            let nodes = (1..=voters + learners).map(|id| {
                (
                    ReplicaId::new(id),
                    NodeInfo { addr: format!("127.0.0.1:{}", 7000 + id), node_id: node_of(id) },
                )
            });
            let config = vec![(1..=voters).map(ReplicaId::new).collect()];
            EntryPayload::Membership(
                Membership::new(config, nodes.collect::<std::collections::BTreeMap<_, _>>()).unwrap(),
            )
        }),
    ];
    (any::<u64>(), any::<u64>(), 0u64..1_000_000, payload).prop_map(|(term, node_id, index, payload)| Entry {
        log_id: LogId::new(LeaderId { term, node_id: ReplicaId::new(node_id) }, index),
        payload,
    })
}

proptest! {
    #[test]
    fn entries_round_trip_through_storage_encoding(e in entry()) {
        let stored = codec::encode_entry(&e);
        prop_assert_eq!(codec::decode_entry(RangeId::new(9), e.log_id.index, &stored).unwrap(), e);
    }

    #[test]
    fn any_single_byte_change_to_a_stored_entry_is_detected(e in entry(), pos in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let mut stored = codec::encode_entry(&e);
        let i = pos.index(stored.len());
        stored[i] ^= flip;
        prop_assert!(codec::decode_entry(RangeId::new(9), e.log_id.index, &stored).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_rarely_decode(data in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(e) = codec::decode_entry(RangeId::new(1), 7, &data) {
            // Only possible if the first four bytes happen to be the CRC of the rest.
            prop_assert_eq!(e.log_id.index, 7);
        }
        let _ = codec::decode_vote(RangeId::new(1), &data);
        let _ = codec::decode_applied(RangeId::new(1), &data);
        let _ = value::decode(&data);
        if let Ok(m) = pb::AppendEntriesRequest::decode(data.as_slice()) {
            let _ = codec::append_request_from_pb(m);
        }
    }

    #[test]
    fn append_requests_survive_the_wire(entries in prop::collection::vec(entry(), 0..4), commit in prop::option::of(0u64..100)) {
        // As a leader sends them: consecutive after prev_log_id, terms from 2 up to the vote's.
        let entries: Vec<Entry> = entries
            .into_iter()
            .enumerate()
            .map(|(i, e)| Entry { log_id: LogId::new(LeaderId { term: 2 + (i as u64 / 2).min(1), node_id: ReplicaId::new(1) }, 11 + i as u64), ..e })
            .collect();
        let req = openraft::raft::AppendEntriesRequest::<zonekv_raft::TypeConfig> {
            vote: openraft::Vote::new_committed(3, ReplicaId::new(1)),
            prev_log_id: Some(LogId::new(LeaderId { term: 2, node_id: ReplicaId::new(1) }, 10)),
            entries,
            leader_commit: commit.map(|i| LogId::new(LeaderId { term: 2, node_id: ReplicaId::new(1) }, i)),
        };
        let wire = codec::append_request_to_pb(&req).encode_to_vec();
        let back = codec::append_request_from_pb(pb::AppendEntriesRequest::decode(wire.as_slice()).unwrap()).unwrap();
        prop_assert_eq!(back.vote, req.vote);
        prop_assert_eq!(back.prev_log_id, req.prev_log_id);
        prop_assert_eq!(back.entries, req.entries);
        prop_assert_eq!(back.leader_commit, req.leader_commit);
    }
}

/// What no leader sends is refused by the decoder, before openraft (which assumes it never
/// arrives) sees it.
#[test]
fn append_requests_no_leader_would_send_are_refused() {
    let log_id = |term, index| LogId::new(LeaderId { term, node_id: ReplicaId::new(1) }, index);
    let blank = |term, index| Entry { log_id: log_id(term, index), payload: EntryPayload::Blank };
    let valid = openraft::raft::AppendEntriesRequest::<zonekv_raft::TypeConfig> {
        vote: openraft::Vote::new_committed(3, ReplicaId::new(1)),
        prev_log_id: Some(log_id(2, 10)),
        entries: vec![blank(2, 11), blank(3, 12)],
        leader_commit: Some(log_id(2, 10)),
    };
    let decode = |r: &openraft::raft::AppendEntriesRequest<zonekv_raft::TypeConfig>| {
        codec::append_request_from_pb(codec::append_request_to_pb(r)).map(drop).map_err(|e| e.to_string())
    };
    assert_eq!(decode(&valid), Ok(()));
    let cases = [
        (
            "not committed",
            openraft::raft::AppendEntriesRequest {
                vote: openraft::Vote::new(3, ReplicaId::new(1)),
                ..valid.clone()
            },
        ),
        (
            "must follow",
            openraft::raft::AppendEntriesRequest { entries: vec![blank(2, 12)], ..valid.clone() },
        ),
        ("must follow", openraft::raft::AppendEntriesRequest { prev_log_id: None, ..valid.clone() }),
        (
            "back in term",
            openraft::raft::AppendEntriesRequest {
                entries: vec![blank(3, 11), blank(2, 12)],
                ..valid.clone()
            },
        ),
        (
            "after the vote",
            openraft::raft::AppendEntriesRequest { entries: vec![blank(4, 11)], ..valid.clone() },
        ),
        (
            "after the vote",
            openraft::raft::AppendEntriesRequest { leader_commit: Some(log_id(5, 1)), ..valid.clone() },
        ),
    ];
    for (why, req) in cases {
        let err = decode(&req).expect_err(why);
        assert!(err.contains(why), "{why}: {err}");
    }
}

#[test]
fn a_membership_naming_an_unknown_voter_is_rejected() {
    let m = pb::Membership {
        configs: vec![pb::NodeIdSet { ids: vec![1, 2] }],
        nodes: [(1, pb::Node { addr: "a:1".into(), node_id: 0 })].into(),
    };
    let err = codec::membership_from_pb(m).unwrap_err();
    assert!(err.to_string().contains("membership"), "{err}");
}

#[test]
fn range_descriptors_round_trip_and_a_misfiled_or_damaged_one_is_corruption() {
    let desc = zonekv_raft::RangeDescriptor {
        range_id: RangeId::new(9),
        start: Bytes::from_static(b"m"),
        end: Some(Bytes::from_static(b"t")),
        epoch: RangeEpoch { version: 3, conf_ver: 4 },
        replicas: vec![
            zonekv_raft::ReplicaDesc {
                replica_id: ReplicaId::new(21),
                node_id: NodeId::new(1),
                learner: false,
            },
            zonekv_raft::ReplicaDesc {
                replica_id: ReplicaId::new(22),
                node_id: NodeId::new(5),
                learner: true,
            },
        ],
    };
    let stored = codec::encode_descriptor(&desc);
    assert_eq!(codec::decode_descriptor(RangeId::new(9), &stored).unwrap(), desc);
    let unbounded = zonekv_raft::RangeDescriptor { end: None, ..desc.clone() };
    assert_eq!(
        codec::decode_descriptor(RangeId::new(9), &codec::encode_descriptor(&unbounded)).unwrap().end,
        None
    );

    let err = codec::decode_descriptor(RangeId::new(8), &stored).unwrap_err();
    assert!(err.is_corruption() && err.to_string().contains("describes range 9"), "{err}");
    let mut damaged = stored.clone();
    *damaged.last_mut().unwrap() ^= 0x20;
    assert!(codec::decode_descriptor(RangeId::new(9), &damaged).unwrap_err().is_corruption());
}
