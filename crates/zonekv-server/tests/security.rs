//! The mutual-TLS matrix (docs/security.md, "Tests"): on a secure 3-node cluster, each kind
//! of caller against the key-value port and the internal RPCs, with the expected outcome, and
//! nothing changed where refused.

mod common;

use std::time::{Duration, Instant};

use common::raw;
use common::secure::{Secure, channel, plain_channel, raw_channel, raw_config};
use prost::Message;
use tonic::Code;
use tonic::transport::Channel;
use zonekv_proto::admin::v1 as admin;
use zonekv_proto::admin::v1::admin_client::AdminClient as PbAdmin;
use zonekv_proto::kv::v1 as kv;
use zonekv_proto::kv::v1::kv_client::KvClient;
use zonekv_proto::raft::v1 as raft;
use zonekv_proto::raft::v1::raft_frame::Body;
use zonekv_proto::raft::v1::raft_transport_client::RaftTransportClient;
use zonekv_server::{NodeConfig, ReadConsistency};
use zonekv_tls::{CertsDir, Validity};

async fn put(ch: &Channel, key: &str) -> Result<(), tonic::Status> {
    let req = kv::PutRequest { key: key.as_bytes().to_vec().into(), value: b"v".to_vec().into() };
    KvClient::new(ch.clone()).put(req).await.map(drop)
}

async fn get(ch: &Channel, key: &str) -> Result<Option<Vec<u8>>, tonic::Status> {
    let req = kv::GetRequest { key: key.as_bytes().to_vec().into(), ..Default::default() };
    Ok(KvClient::new(ch.clone()).get(req).await?.into_inner().value.map(|v| v.to_vec()))
}

async fn scan(ch: &Channel, start: &str, end: Option<&str>) -> Result<usize, tonic::Status> {
    let bound = |k: &str| Some(kv::Bound { key: k.as_bytes().to_vec().into(), inclusive: true });
    let req = kv::ScanRequest {
        start: bound(start),
        end: end.map(|e| kv::Bound { key: e.as_bytes().to_vec().into(), inclusive: false }),
        limit: 100,
        ..Default::default()
    };
    Ok(KvClient::new(ch.clone()).scan(req).await?.into_inner().kvs.len())
}

async fn ping(ch: &Channel, from: u64) -> Result<(), tonic::Status> {
    let req = raft::PingRequest { from_node: from, ..Default::default() };
    RaftTransportClient::new(ch.clone()).ping(req).await.map(drop)
}

fn assert_code(r: Result<impl std::fmt::Debug, tonic::Status>, code: Code, what: &str) {
    match r {
        Err(s) if s.code() == code => {}
        other => panic!("{what}: expected {code:?}, got {other:?}"),
    }
}

/// A TLS failure: the call fails before it reaches a service (no status from the server).
fn assert_refused_at_handshake(r: Result<impl std::fmt::Debug, tonic::Status>, what: &str) {
    match r {
        Err(s)
            if matches!(s.code(), Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled) => {}
        other => panic!("{what}: expected the TLS handshake to fail, got {other:?}"),
    }
}

/// The Raft batch stream's answer to one pre-vote sent with `header` (the error code of its
/// answer frame, if it was refused).
async fn pre_vote(ch: &Channel, header: raft::RaftHeader, voter: u64) -> Option<i32> {
    let vote = Some(raft::Vote { term: 1, node_id: voter, committed: false });
    let request = raft::VoteRequest { header: Some(header), vote, ..Default::default() };
    let batch =
        raft::RaftBatch { frames: vec![raft::RaftFrame { id: 1, body: Some(Body::PreVote(request)) }] };
    let answers =
        raw::stream_once(ch, "/zonekv.raft.v1.RaftTransport/Batch", batch.encode_to_vec()).await.unwrap();
    answers.iter().flat_map(|a| raft::RaftBatch::decode(&a[..]).unwrap().frames).find_map(|f| match f.body {
        Some(Body::Error(e)) => Some(e.code),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_certificate_reaches_exactly_what_it_may() {
    let s = Secure::start(3, NodeConfig::default()).await;
    let addr = s.addr(1);
    let root = channel(s.user_tls("root"), &addr);
    let absent = |key: &'static str| {
        let root = root.clone();
        async move { assert_eq!(get(&root, key).await.unwrap(), None, "{key} was written by a refused call") }
    };

    // Valid client certificate: served.
    put(&root, "m/valid").await.unwrap();
    assert_eq!(get(&root, "m/valid").await.unwrap().as_deref(), Some(&b"v"[..]));

    // No client certificate, plaintext, a rogue CA, expired, not yet valid: the handshake fails.
    let ca = s.ca().ca_cert();
    assert_refused_at_handshake(
        put(&raw_channel(raw_config(&ca, None), "127.0.0.1", &addr), "m/none").await,
        "no cert",
    );
    absent("m/none").await;
    assert_refused_at_handshake(put(&plain_channel(&addr), "m/plain").await, "plaintext");
    absent("m/plain").await;
    let rogue_dir = tempfile::tempdir().unwrap();
    let rogue = CertsDir::new(rogue_dir.path());
    zonekv_tls::create_ca(&rogue, Validity::days(1), false).unwrap();
    zonekv_tls::create_client(&rogue, &rogue, "root", Validity::days(1), false).unwrap();
    let rogue_cfg = raw_config(&ca, Some((&rogue.client_cert("root"), &rogue.client_key("root"))));
    assert_refused_at_handshake(
        put(&raw_channel(rogue_cfg, "127.0.0.1", &addr), "m/rogue").await,
        "rogue CA",
    );
    absent("m/rogue").await;
    let day = Duration::from_secs(86400);
    let expired = Validity { not_before: std::time::SystemTime::now() - 10 * day, lifetime: day };
    zonekv_tls::create_client(&s.ca(), &s.ca(), "expired", expired, false).unwrap();
    let cfg = raw_config(&ca, Some((&s.ca().client_cert("expired"), &s.ca().client_key("expired"))));
    assert_refused_at_handshake(put(&raw_channel(cfg, "127.0.0.1", &addr), "m/expired").await, "expired");
    absent("m/expired").await;
    let early = Validity { not_before: std::time::SystemTime::now() + day, lifetime: day };
    zonekv_tls::create_client(&s.ca(), &s.ca(), "early", early, false).unwrap();
    let cfg = raw_config(&ca, Some((&s.ca().client_cert("early"), &s.ca().client_key("early"))));
    assert_refused_at_handshake(put(&raw_channel(cfg, "127.0.0.1", &addr), "m/early").await, "not yet valid");
    absent("m/early").await;

    // The client checks the server: a name the node certificate does not carry fails.
    let cfg = raw_config(&ca, Some((&s.ca().client_cert("root"), &s.ca().client_key("root"))));
    assert_refused_at_handshake(
        put(&raw_channel(cfg, "db.example", &addr), "m/host").await,
        "wrong host name",
    );
    absent("m/host").await;

    // A client certificate calling internal RPCs; a node certificate calling the KV API.
    assert_code(ping(&root, 1).await, Code::PermissionDenied, "root pinging");
    let node2 = channel(s.node_tls(2), &addr);
    assert_code(put(&node2, "m/node").await, Code::PermissionDenied, "a node writing a key");
    absent("m/node").await;
    let split = admin::SplitRequest { key: b"m/split".to_vec().into() };
    assert_code(PbAdmin::new(node2.clone()).split(split).await, Code::PermissionDenied, "a node splitting");

    // The node certificate of another cluster: its CA is not ours.
    zonekv_tls::create_node(&rogue, &rogue, 2, &["127.0.0.1".into()], Validity::days(1), false).unwrap();
    let cfg = raw_config(&ca, Some((&rogue.node_cert(), &rogue.node_key())));
    assert_refused_at_handshake(
        ping(&raw_channel(cfg, "127.0.0.1", &addr), 2).await,
        "another cluster's node",
    );

    // Node 2's certificate speaking for node 1: in a ping, in Raft headers, in AddNode.
    assert_code(ping(&node2, 1).await, Code::PermissionDenied, "node 2 pinging as node 1");
    ping(&node2, 2).await.unwrap();
    let as_node1 = raft::RaftHeader { group_id: 1, from_node: 1, to_node: 1, from_node_id: 1 };
    assert_eq!(pre_vote(&node2, as_node1, 1).await, Some(Code::PermissionDenied as i32), "claimed node id");
    let node1_replica = raft::RaftHeader { group_id: 1, from_node: 1, to_node: 1, from_node_id: 2 };
    assert_eq!(
        pre_vote(&node2, node1_replica, 1).await,
        Some(Code::PermissionDenied as i32),
        "claimed replica"
    );
    // Its own replica carrying node 1's vote; a replica of another node.
    let own = raft::RaftHeader { group_id: 1, from_node: 2, to_node: 1, from_node_id: 2 };
    assert_eq!(pre_vote(&node2, own, 1).await, Some(Code::PermissionDenied as i32), "another replica's vote");
    let stranger = raft::RaftHeader { group_id: 1, from_node: 999_999, to_node: 1, from_node_id: 2 };
    // (In the first range a replica's id is its node's: replica 999999 would be node 999999's.)
    assert_eq!(
        pre_vote(&node2, stranger, 999_999).await,
        Some(Code::PermissionDenied as i32),
        "unknown replica"
    );
    assert_eq!(pre_vote(&node2, own, 2).await, None, "node 2's own pre-vote is answered");
    let add = admin::AddNodeRequest {
        member: Some(admin::Member { node_id: 9, addr: "127.0.0.1:1".into() }),
        learner_only: true,
    };
    assert_code(
        PbAdmin::new(node2.clone()).add_node(add).await,
        Code::PermissionDenied,
        "node 2 adding node 9",
    );
    let members = s.cluster.node(1).unwrap().status().await.ranges[0].members.len();
    assert_eq!(members, 3, "a refused AddNode changed the membership");

    // Users with grants: alice reads and writes users/, bob only reads it.
    let root_admin = zonekv_client::AdminClient::with_config({
        let mut c = zonekv_client::ClientConfig::new([addr.clone()]);
        c.tls = Some(s.user_tls("root"));
        c
    })
    .unwrap();
    root_admin.grant("alice", "users/".into(), true, false).await.unwrap();
    root_admin.grant("bob", "users/".into(), false, false).await.unwrap();
    let alice = channel(s.user_tls("alice"), &addr);
    let bob = channel(s.user_tls("bob"), &addr);
    let deadline = Instant::now() + Duration::from_secs(10);
    while put(&alice, "users/alice").await.is_err() {
        assert!(Instant::now() < deadline, "alice's grant never took effect on node 1");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_code(put(&alice, "other/x").await, Code::PermissionDenied, "alice outside her prefix");
    absent("other/x").await;
    assert_code(get(&alice, "m/valid").await, Code::PermissionDenied, "alice reading outside her prefix");
    assert_eq!(scan(&alice, "users/", Some("users0")).await.unwrap(), 1);
    assert_code(scan(&alice, "", None).await, Code::PermissionDenied, "alice scanning everything");
    assert_code(
        PbAdmin::new(alice.clone()).split(admin::SplitRequest { key: b"users/m".to_vec().into() }).await,
        Code::PermissionDenied,
        "alice splitting",
    );
    while get(&bob, "users/alice").await.is_err() {
        assert!(Instant::now() < deadline, "bob's grant never took effect on node 1");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(&bob, "users/alice").await.unwrap().as_deref(), Some(&b"v"[..]));
    assert_code(put(&bob, "users/bob").await, Code::PermissionDenied, "read-only bob writing");
    absent("users/bob").await;
    // A revoked grant stops working.
    root_admin.grant("bob", "users/".into(), false, true).await.unwrap();
    while get(&bob, "users/alice").await.is_ok() {
        assert!(Instant::now() < deadline, "bob's revoked grant still works on node 1");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The cluster served on throughout.
    let n1 = s.cluster.node(1).unwrap();
    assert!(n1.get(b"m/valid", ReadConsistency::Linearizable).await.unwrap().0.is_some());
    for n in s.cluster.running() {
        assert!(n.status().await.ranges.iter().all(|r| r.fatal_error.is_none()), "a replica stopped");
    }
    s.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_spoofed_ping_does_not_keep_a_dead_node_alive() {
    let mut s = Secure::start(3, NodeConfig::default()).await;
    let node2 = channel(s.node_tls(2), &s.addr(1));
    let live3 = |peers: &[zonekv_server::Peer]| peers.iter().any(|p| p.node_id == 3 && p.live);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !live3(&s.cluster.node(1).unwrap().status().await.peers) {
        assert!(Instant::now() < deadline, "node 1 never heard from node 3");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.cluster.stop_node(3).await;
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert_code(ping(&node2, 3).await, Code::PermissionDenied, "node 2 pinging as node 3");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let peers = s.cluster.node(1).unwrap().status().await.peers;
    let three = peers.iter().find(|p| p.node_id == 3).expect("node 1 knows node 3");
    assert!(!three.live, "node 3 is dead but looks live");
    s.cluster.shutdown().await;
}
