//! Internal RPCs that a buggy or hostile member (a caller with a valid node certificate)
//! cannot turn into data loss or a stopped replica, and resources that stay bounded however a
//! caller misbehaves (docs/security.md). Each abuse is refused, the cluster serves on, no
//! replica stops, nothing is deleted.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::secure::{Secure, channel};
use tonic::Code;
use tonic::transport::Channel;
use zonekv_proto::raft::v1 as raft;
use zonekv_proto::raft::v1::raft_transport_client::RaftTransportClient;
use zonekv_raft::{Op, codec};
use zonekv_server::{NodeConfig, NodeHandle, ReadConsistency};

fn meta_op(op: raft::op::Op) -> raft::Op {
    raft::Op { op: Some(op) }
}

async fn propose(ch: &Channel, op: raft::op::Op) -> Result<raft::ProposeMetaResponse, tonic::Status> {
    Ok(RaftTransportClient::new(ch.clone()).propose_meta(meta_op(op)).await?.into_inner())
}

fn code(r: Result<impl std::fmt::Debug, tonic::Status>) -> Code {
    match r {
        Ok(v) => panic!("expected a refusal, got {v:?}"),
        Err(s) => s.code(),
    }
}

/// Every replica on every running node is still running.
async fn all_running(s: &Secure) {
    for n in s.cluster.running() {
        for r in n.status().await.ranges {
            assert!(
                r.fatal_error.is_none(),
                "node {}: range {} stopped: {:?}",
                n.id(),
                r.range_id,
                r.fatal_error
            );
        }
    }
}

/// The node whose replica leads the meta range.
async fn meta_leader(s: &Secure) -> NodeHandle {
    let id = s.cluster.wait_for_leader(Duration::from_secs(10)).await.unwrap();
    s.cluster.node(id).unwrap().handle()
}

/// A key-value client of the cluster, as root.
fn client(s: &Secure) -> zonekv_client::Client {
    let mut config = zonekv_client::ClientConfig::new(s.cluster.addrs());
    config.tls = Some(s.user_tls("root"));
    zonekv_client::Client::with_config(config).unwrap()
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn meta_ops_from_a_member_are_checked_before_they_are_proposed() {
    let s = Secure::start(3, NodeConfig::default()).await;
    let leader = meta_leader(&s).await;
    let as_node2 = channel(s.node_tls(2), leader.addr());

    // AllocateIds: a count that would overflow, none, too many.
    for count in [u64::MAX, 0, 1025] {
        let r = propose(&as_node2, raft::op::Op::AllocateIds(raft::op::AllocateIds { count })).await;
        assert_eq!(code(r), Code::InvalidArgument, "AllocateIds {count}");
    }
    // Placement records the registry could not read.
    for (key, value) in
        [(&b"node/x"[..], Some(&b"zzz"[..])), (b"policy/a", Some(b"\x07garbage")), (b"junk", Some(b"1"))]
    {
        let op =
            raft::op::SetPlacement { key: Bytes::from_static(key), value: value.map(Bytes::from_static) };
        assert_eq!(
            code(propose(&as_node2, raft::op::Op::SetPlacement(op)).await),
            Code::InvalidArgument,
            "{key:?}"
        );
    }
    assert!(leader.policies().is_ok() && leader.decommissioning().is_ok(), "the registry no longer reads");
    // A grant, well-formed, forwarded by a node: only root's own call at the meta leader writes one.
    let grant = raft::op::SetPlacement {
        key: Bytes::from_static(b"grant/mallory\0"),
        value: Some(Bytes::from_static(b"\x01")),
    };
    assert_eq!(code(propose(&as_node2, raft::op::Op::SetPlacement(grant)).await), Code::PermissionDenied);
    assert!(leader.grants().unwrap().is_empty(), "a forwarded grant was written");

    // A directory entry without voters.
    leader.split(b"f/".as_slice()).await.unwrap();
    client(&s).put("f/keep", "me").await.unwrap();
    let right = leader.lookup_range(b"f/keep", false).unwrap().desc;
    let mut forged = right.clone();
    forged.epoch.conf_ver += 1;
    forged.replicas.clear();
    let update = raft::op::UpdateDirectory { descriptors: vec![codec::descriptor_to_pb(&forged)] };
    assert_eq!(code(propose(&as_node2, raft::op::Op::UpdateDirectory(update)).await), Code::InvalidArgument);

    // A replica of a range nobody created.
    let mut unknown = right.clone();
    unknown.range_id = zonekv_raft::RangeId::new(999_999);
    unknown.start = "zz".into();
    unknown.end = None;
    let n1 = s.cluster.node(1).unwrap();
    let me = zonekv_raft::ReplicaId::new(1 << 40);
    unknown.replicas.push(zonekv_raft::ReplicaDesc { replica_id: me, node_id: n1.id(), learner: true });
    let before = n1.status().await.ranges.len();
    let create = raft::CreateReplicaRequest {
        descriptor: Some(codec::descriptor_to_pb(&unknown)),
        replica_id: me.get(),
    };
    let r = RaftTransportClient::new(channel(s.node_tls(2), n1.addr())).create_replica(create).await;
    assert!(r.is_err(), "a replica of an unknown range was created");
    assert_eq!(n1.status().await.ranges.len(), before);

    // The cluster serves on: ids are allocated (a split), keys are read.
    leader.split(b"g/".as_slice()).await.unwrap();
    assert_eq!(
        leader.get(b"f/keep", ReadConsistency::Linearizable).await.unwrap().0.as_deref(),
        Some(&b"me"[..])
    );
    all_running(&s).await;
    s.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forged_directory_entry_deletes_no_replica() {
    let s = Secure::start(3, NodeConfig::default()).await;
    let leader = meta_leader(&s).await;
    leader.split(b"f/".as_slice()).await.unwrap();
    client(&s).put("f/keep", "me").await.unwrap();
    let right = leader.lookup_range(b"f/keep", false).unwrap().desc;
    // Node 2 (which hosts the range, so the check lets it report) claims a newer membership
    // of only its own replica: the other nodes' cleanup sees their replicas "removed".
    let mut forged = right.clone();
    forged.epoch.conf_ver += 1;
    forged.replicas.retain(|r| r.node_id == zonekv_raft::NodeId::new(2));
    let as_node2 = channel(s.node_tls(2), leader.addr());
    let update = raft::op::UpdateDirectory { descriptors: vec![codec::descriptor_to_pb(&forged)] };
    let written = propose(&as_node2, raft::op::Op::UpdateDirectory(update)).await.unwrap().written;
    assert_eq!(written, 1, "the forged entry was not recorded; the test proves nothing");
    // Cleanup runs every second; the range's leader says every replica is still a member.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for n in s.cluster.running() {
        assert!(
            n.status().await.ranges.iter().any(|r| r.range_id == right.range_id),
            "node {} deleted its replica",
            n.id()
        );
        let (v, _) = n.get(b"f/keep", ReadConsistency::Stale).await.unwrap();
        assert_eq!(v.as_deref(), Some(&b"me"[..]), "node {} lost the data", n.id());
    }
    all_running(&s).await;
    s.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_committed_op_that_fails_at_apply_stops_no_replica() {
    let mut s = Secure::start(3, NodeConfig::default()).await;
    let leader = meta_leader(&s).await;
    // Past the guard (a test hook, as a buggy node's own proposal would be): committed, and
    // refused at apply on every replica alike.
    let r = leader.propose_meta_unchecked(Op::AllocateIds { count: u64::MAX }).await;
    assert!(
        matches!(&r, Err(zonekv_server::Error::Store(zonekv_server::StoreError::FailedPrecondition(m))) if m.contains("ids")),
        "{r:?}"
    );
    let committed = leader.status().await.ranges[0].committed_index;
    // Every replica applies it (and stays up), also after a restart that replays it.
    let deadline = Instant::now() + Duration::from_secs(10);
    for id in 1..=3u64 {
        while s.cluster.node(id).unwrap().status().await.ranges[0].applied_index < committed {
            assert!(Instant::now() < deadline, "node {id} did not apply the refused op");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    all_running(&s).await;
    let other = if leader.id() == 3 { 2 } else { 3 };
    s.cluster.stop_node(other).await;
    s.cluster.restart_node(other).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    all_running(&s).await;
    // Ids still come (a split allocates them) and writes still commit.
    let leader = meta_leader(&s).await;
    leader.split(b"k/".as_slice()).await.unwrap();
    client(&s).put("k/1", "v").await.unwrap();
    s.cluster.shutdown().await;
}

/// A request body that declares a message of `claimed` bytes, sends a little of it, and then
/// never ends: what a node buffers for it shows in its memory.
fn claiming_body(claimed: u32) -> tonic::body::Body {
    let mut head = vec![0u8];
    head.extend_from_slice(&claimed.to_be_bytes());
    head.extend(std::iter::repeat_n(7u8, 4096));
    let frames = futures::stream::iter([Ok::<_, tonic::Status>(http_body::Frame::data(Bytes::from(head)))])
        .chain(futures::stream::pending());
    tonic::body::Body::new(http_body_util::StreamBody::new(frames))
}

use futures::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_messages_are_refused_before_they_are_buffered() {
    let s = Secure::start(3, NodeConfig::default()).await;
    let n1 = s.cluster.node(1).unwrap();
    let addr = n1.addr().to_string();
    let before = rss_bytes();
    // 8 calls at once, each declaring a 1 GiB message (the limit is a few MiB).
    let calls = (0..8).map(|_| {
        let ch = channel(s.user_tls("root"), &addr);
        let addr = addr.clone();
        async move {
            let mut ch = ch;
            let req = http::Request::builder()
                .method("POST")
                .uri(format!("http://{addr}/zonekv.kv.v1.Kv/Put"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(claiming_body(1 << 30))
                .unwrap();
            tower::ServiceExt::ready(&mut ch).await.unwrap();
            let resp = tokio::time::timeout(Duration::from_secs(10), tower::Service::call(&mut ch, req))
                .await
                .expect("no answer within 10 s")
                .unwrap();
            let status = resp.headers().get("grpc-status").map(|v| v.to_str().unwrap().to_string());
            let message = resp.headers().get("grpc-message").map(|v| v.to_str().unwrap().to_string());
            (status, message)
        }
    });
    for (status, message) in futures::future::join_all(calls).await {
        let status = status.expect("a status in the answer's headers");
        assert!(
            status == (Code::OutOfRange as i32).to_string()
                || status == (Code::ResourceExhausted as i32).to_string(),
            "status {status}: {message:?}"
        );
    }
    let grown = rss_bytes().saturating_sub(before);
    println!("8 calls declaring 1 GiB each: the process grew by {} KiB", grown / 1024);
    assert!(grown < 64 << 20, "memory grew by {grown} bytes");
    client(&s).put("after", "ok").await.unwrap();
    all_running(&s).await;
    s.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_endless_snapshot_stream_is_cut_off_at_the_limit() {
    let mut config = NodeConfig::default();
    config.raft.max_snapshot_bytes = 8 << 20;
    config.raft.snapshot_max_bytes_per_sec = 0;
    let s = Secure::start(3, config).await;
    let n1 = s.cluster.node(1).unwrap();
    let before = rss_bytes();
    let chunk = Bytes::from(vec![1u8; 256 << 10]);
    let crc = crc32fast::hash(&chunk);
    let header = raft::RaftHeader { group_id: 1, from_node: 2, to_node: 1, from_node_id: 2 };
    let first = raft::SnapshotChunk {
        header: Some(header),
        vote: Some(raft::Vote { term: 1, node_id: 2, committed: false }),
        meta: Some(raft::SnapshotMeta::default()),
        data: chunk.clone(),
        crc32: crc,
    };
    let rest = futures::stream::repeat(raft::SnapshotChunk { data: chunk, crc32: crc, ..Default::default() });
    let chunks = futures::stream::iter([first]).chain(rest);
    let mut transport = RaftTransportClient::new(channel(s.node_tls(2), n1.addr()));
    let r = tokio::time::timeout(Duration::from_secs(30), transport.install_snapshot(chunks))
        .await
        .expect("no answer");
    assert_eq!(code(r), Code::ResourceExhausted);
    let grown = rss_bytes().saturating_sub(before);
    println!("an endless snapshot stream: the process grew by {} KiB", grown / 1024);
    assert!(grown < 64 << 20, "memory grew by {grown} bytes");
    client(&s).put("after", "ok").await.unwrap();
    all_running(&s).await;
    s.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_flooding_raft_requests_without_reading_answers_is_cut_off() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    let s = Secure::start(3, NodeConfig::default()).await;
    let n1 = s.cluster.node(1).unwrap();
    let before = rss_bytes();
    // Node 2 (its own certificate, a real member of range 1) sends 200,000 pre-votes, harmless
    // one by one, and never reads an answer.
    let header = raft::RaftHeader { group_id: 1, from_node: 2, to_node: 1, from_node_id: 2 };
    let frame = move |id| raft::RaftFrame {
        id,
        body: Some(raft::raft_frame::Body::PreVote(raft::VoteRequest {
            header: Some(header),
            vote: Some(raft::Vote { term: 1, node_id: 2, committed: false }),
            last_log_id: None,
            leadership_transfer: false,
        })),
    };
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let batches = futures::stream::iter(0..200u64).map(move |b| {
        counter.fetch_add(1, Ordering::Relaxed);
        raft::RaftBatch { frames: (0..1000).map(|i| frame(b * 1000 + i)).collect() }
    });
    let mut transport = RaftTransportClient::new(channel(s.node_tls(2), n1.addr()));
    let mut answers = transport.batch(batches).await.unwrap().into_inner();
    // Until everything is sent, or the node stops reading.
    let mut last = u64::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = sent.load(Ordering::Relaxed);
        if now == 200 || now == last {
            break;
        }
        last = now;
    }
    let grown = rss_bytes().saturating_sub(before);
    println!("200,000 raft requests, no answer read: the process grew by {} KiB", grown / 1024);
    // What the node holds is bounded by its Raft receive budget (64 MiB by default) plus the
    // unread answers; 200,000 requests in flight would take several times more.
    assert!(grown < 128 << 20, "memory grew by {grown} bytes");
    // The answers the node queued, then why it ended the stream.
    let mut frames = 0usize;
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(10), answers.message()).await.expect("answers") {
            Ok(Some(b)) => frames += b.frames.len(),
            Ok(None) => break None,
            Err(status) => break Some(status),
        }
    };
    let status = end.expect("the stream ends with a refusal");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("unread"), "{status:?}");
    assert!(frames < 200_000, "{frames} answers: the node answered everything");
    client(&s).put("after", "ok").await.unwrap();
    all_running(&s).await;
    s.cluster.shutdown().await;
}
