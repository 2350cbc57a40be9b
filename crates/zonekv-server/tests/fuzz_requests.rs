//! The request handlers fuzzed on stable: random bytes, and valid requests with random bytes
//! overwritten, sent as the body of every unary method of a running node and as a message on
//! the Raft batch stream. Every call must answer within seconds with a success or a clear
//! error (for a batch: each frame's answer); a refused request must change nothing; the node
//! must still serve afterwards. (The decoders alone are also libFuzzer
//! targets in `fuzz/`.)

mod common;

use std::time::Duration;

use common::raw;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use prost::Message;
use tonic::Code;
use tonic::transport::Channel;
use zonekv_proto::kv::v1 as kv;
use zonekv_proto::raft::v1 as raft;
use zonekv_proto::raft::v1::raft_frame::Body;
use zonekv_server::{Node, NodeConfig, ReadConsistency, Scan};

const METHODS: [&str; 21] = [
    "/zonekv.kv.v1.Kv/Get",
    "/zonekv.kv.v1.Kv/Put",
    "/zonekv.kv.v1.Kv/Delete",
    "/zonekv.kv.v1.Kv/Scan",
    "/zonekv.kv.v1.Kv/CompareAndSwap",
    "/zonekv.kv.v1.Kv/Batch",
    "/zonekv.admin.v1.Admin/Initialize",
    "/zonekv.admin.v1.Admin/AddNode",
    "/zonekv.admin.v1.Admin/RemoveNode",
    "/zonekv.admin.v1.Admin/TransferLeader",
    "/zonekv.admin.v1.Admin/Status",
    "/zonekv.raft.v1.RaftTransport/Ping",
    RAFT_BATCH,
    "/zonekv.raft.v1.RaftTransport/ProposeMeta",
    "/zonekv.raft.v1.RaftTransport/CreateReplica",
    "/zonekv.raft.v1.RaftTransport/Place",
    "/zonekv.raft.v1.RaftTransport/IsMember",
    "/zonekv.admin.v1.Admin/Split",
    "/zonekv.admin.v1.Admin/ListPolicies",
    "/zonekv.admin.v1.Admin/ListGrants",
    "/zonekv.kv.v1.Kv/LookupRange",
];

/// The Raft batch stream: a body is one message on it.
const RAFT_BATCH: &str = "/zonekv.raft.v1.RaftTransport/Batch";

/// Valid requests to mutate (index = position in `METHODS`); the Raft frames are addressed to
/// `node`'s replica of range 1, from a replica that is not a member.
fn valid_requests(node: u64) -> Vec<(usize, Vec<u8>)> {
    let key = b"fuzz-key".to_vec().into();
    let header = Some(raft::RaftHeader { group_id: 1, from_node: 77, to_node: node, from_node_id: 77 });
    let vote = Some(raft::Vote { term: 1, node_id: 77, committed: false });
    let frame = |body| raft::RaftBatch { frames: vec![raft::RaftFrame { id: 1, body: Some(body) }] };
    let vote_request = raft::VoteRequest { header, vote, ..Default::default() };
    vec![
        (0, kv::GetRequest { key: b"seed-1".to_vec().into(), ..Default::default() }.encode_to_vec()),
        (1, kv::PutRequest { key, value: b"v".to_vec().into() }.encode_to_vec()),
        (2, kv::DeleteRequest { key: b"seed-2".to_vec().into() }.encode_to_vec()),
        (3, kv::ScanRequest { limit: 5, ..Default::default() }.encode_to_vec()),
        (
            4,
            kv::CompareAndSwapRequest {
                key: b"seed-3".to_vec().into(),
                expected: Some(b"x".to_vec().into()),
                new_value: Some(b"y".to_vec().into()),
            }
            .encode_to_vec(),
        ),
        (12, frame(Body::PreVote(vote_request)).encode_to_vec()),
        (
            13,
            raft::Op { op: Some(raft::op::Op::AllocateIds(raft::op::AllocateIds { count: 1 })) }
                .encode_to_vec(),
        ),
        (16, raft::IsMemberRequest { range_id: 1, replica_id: node }.encode_to_vec()),
        (20, kv::LookupRangeRequest { key: b"seed-1".to_vec().into(), before: false }.encode_to_vec()),
        (12, frame(Body::Vote(vote_request)).encode_to_vec()),
        (
            12,
            frame(Body::Open(raft::AppendEntriesRequest { header, vote, ..Default::default() }))
                .encode_to_vec(),
        ),
    ]
}

/// A batch's answers as one outcome: refused (the first error) if every frame was refused.
fn batch_outcome(answers: Vec<Vec<u8>>) -> Result<(), tonic::Status> {
    let mut frames = Vec::new();
    for a in answers {
        let batch = raft::RaftBatch::decode(&a[..])
            .map_err(|e| tonic::Status::internal(format!("the node's answer does not decode: {e}")))?;
        frames.extend(batch.frames);
    }
    let errors: Vec<_> = frames
        .iter()
        .filter_map(|f| match &f.body {
            Some(Body::Error(e)) => Some(tonic::Status::new(Code::from_i32(e.code), e.message.clone())),
            _ => None,
        })
        .collect();
    match errors.into_iter().next() {
        Some(first) if frames.iter().all(|f| matches!(f.body, Some(Body::Error(_)))) => Err(first),
        _ => Ok(()),
    }
}

/// Everything the node holds, read locally.
async fn contents(node: &Node) -> Vec<(bytes::Bytes, bytes::Bytes)> {
    let scan = Scan { consistency: ReadConsistency::Stale, limit: 10_000, ..Scan::default() };
    node.scan(&scan).await.expect("scan").pairs
}

fn strategy(node: u64) -> impl Strategy<Value = (usize, Vec<u8>)> {
    let valid = valid_requests(node);
    let random = (0..METHODS.len(), proptest::collection::vec(any::<u8>(), 0..48));
    let mutated =
        (0..valid.len(), proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4))
            .prop_map(move |(i, edits)| {
                let (m, mut body) = valid[i].clone();
                for (at, byte) in edits {
                    let n = body.len();
                    body[at.index(n)] = byte;
                }
                (m, body)
            });
    prop_oneof![random, mutated]
}

#[test]
fn random_request_bodies_get_clear_answers_and_refused_ones_change_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().into(),
        ..NodeConfig::default()
    };
    let (node, channel) = rt.block_on(async {
        let node = Node::start(config).await.expect("start");
        node.initialize(&[(node.id(), node.addr().to_string())]).await.unwrap();
        node.wait_for_leader(Duration::from_secs(10)).await.unwrap();
        for i in 0..5 {
            node.put(format!("seed-{i}"), "x").await.unwrap();
        }
        let channel =
            Channel::from_shared(format!("http://{}", node.addr())).unwrap().connect().await.unwrap();
        (node, channel)
    });

    let tally = std::sync::Mutex::new(std::collections::BTreeMap::<(&str, String), u32>::new());
    let mut runner = TestRunner::new(Config { cases: 400, failure_persistence: None, ..Config::default() });
    let outcome = runner.run(&strategy(node.id().get()), |(m, body)| {
        rt.block_on(async {
            let before = contents(&node).await;
            let call = async {
                if METHODS[m] == RAFT_BATCH {
                    batch_outcome(raw::stream_once(&channel, RAFT_BATCH, body.clone()).await?)
                } else {
                    raw::call(&channel, METHODS[m], body.clone()).await.map(drop)
                }
            };
            let answer = tokio::time::timeout(Duration::from_secs(10), call)
                .await
                .map_err(|_| TestCaseError::fail(format!("{} did not answer {body:?}", METHODS[m])))?;
            let outcome = answer.as_ref().map_or_else(|s| format!("{:?}", s.code()), |_| "Ok".to_string());
            *tally.lock().unwrap().entry((METHODS[m], outcome)).or_default() += 1;
            if let Err(status) = answer {
                let clear = matches!(
                    status.code(),
                    Code::InvalidArgument
                        | Code::Internal
                        | Code::FailedPrecondition
                        | Code::NotFound
                        | Code::Unavailable
                ) && !status.message().is_empty()
                    // INTERNAL only for what gRPC itself could not decode.
                    && (status.code() != Code::Internal || status.message().contains("decode"));
                prop_assert!(clear, "{} {body:?}: {:?} {:?}", METHODS[m], status.code(), status.message());
                prop_assert_eq!(
                    before,
                    contents(&node).await,
                    "{} {:?} was refused but changed data",
                    METHODS[m],
                    body
                );
            }
            Ok(())
        })
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
    let tally = tally.into_inner().unwrap();
    println!("outcomes per method: {tally:?}");
    // Both paths were exercised: some requests were accepted, some refused.
    assert!(tally.keys().any(|(_, o)| o == "Ok") && tally.keys().any(|(_, o)| o != "Ok"), "{tally:?}");

    rt.block_on(async {
        // Fuzzed votes may have bumped the term; the node re-elects itself and serves.
        node.wait_for_leader(Duration::from_secs(30)).await.expect("the node leads again");
        node.put("after-fuzz", "ok").await.expect("the node still takes writes");
        let (v, _) = node.get(b"seed-0", ReadConsistency::Linearizable).await.unwrap();
        assert_eq!(v.as_deref(), Some(&b"x"[..]));
        node.shutdown().await;
    });
}
