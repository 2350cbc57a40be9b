//! The node's gRPC API against an in-process cluster: semantics, redirects and bad input.

use std::ops::Bound;
use std::time::Duration;

use bytes::Bytes;
use tonic::Code;
use zonekv_client::{Client, ClientError, Mutation, ReadConsistency, ScanOptions};
use zonekv_proto::kv::v1 as pb;
use zonekv_proto::kv::v1::kv_client::KvClient;
use zonekv_server::{LocalCluster, NodeConfig};

async fn cluster(n: usize) -> LocalCluster {
    let c = LocalCluster::start(n, None).await.expect("cluster starts");
    c.wait_for_leader(Duration::from_secs(20)).await.expect("leader elected");
    c
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn raw(addr: &str) -> KvClient<tonic::transport::Channel> {
    KvClient::connect(format!("http://{addr}")).await.expect("connect").max_encoding_message_size(usize::MAX)
}

async fn leader_and_follower(c: &LocalCluster) -> (String, String) {
    let leader = c.wait_for_leader(Duration::from_secs(20)).await.unwrap();
    let members = c.members();
    let addr = |id| members.iter().find(|(i, _)| *i == id).unwrap().1.clone();
    let follower = members.iter().map(|(i, _)| *i).find(|i| *i != leader).unwrap();
    (addr(leader), addr(follower))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_operations_follow_their_contract() {
    let c = cluster(3).await;
    let client = Client::new(c.addrs()).unwrap();
    client.put("a", "1").await.unwrap();
    client.put("b", "2").await.unwrap();
    client.put("c", "3").await.unwrap();
    assert_eq!(client.get("a").await.unwrap(), Some(b("1")));
    assert_eq!(client.get("zz").await.unwrap(), None);
    assert!(client.delete("c").await.unwrap());
    assert!(!client.delete("c").await.unwrap());

    // Compare-and-swap: on absence, on a value, failing with the current value, and delete.
    let out = client.compare_and_swap("n", None, Some(b("x"))).await.unwrap();
    assert!(out.succeeded && out.current.is_none());
    let out = client.compare_and_swap("n", None, Some(b("y"))).await.unwrap();
    assert_eq!((out.succeeded, out.current), (false, Some(b("x"))));
    let out = client.compare_and_swap("n", Some(b("x")), None).await.unwrap();
    assert!(out.succeeded);
    assert_eq!(client.get("n").await.unwrap(), None);

    client
        .batch(vec![
            Mutation::Put(b("k1"), b("v1")),
            Mutation::Put(b("k2"), b("v2")),
            Mutation::Delete(b("a")),
        ])
        .await
        .unwrap();
    let all = client.scan(&ScanOptions::default()).await.unwrap();
    let keys: Vec<_> = all.pairs.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(keys, vec![b("b"), b("k1"), b("k2")]);
    assert!(!all.more);

    let page = client
        .scan(&ScanOptions { start: Bound::Excluded(b("b")), limit: 1, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(page.pairs, vec![(b("k1"), b("v1"))]);
    assert!(page.more);
    let rev = client
        .scan(&ScanOptions {
            end: Bound::Included(b("k1")),
            reverse: true,
            keys_only: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rev.pairs, vec![(b("k1"), Bytes::new()), (b("b"), Bytes::new())]);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_redirect_to_the_leader_and_serve_stale_reads() {
    let c = cluster(3).await;
    let (leader, follower) = leader_and_follower(&c).await;
    let mut kv = raw(&follower).await;
    let err = kv.put(pb::PutRequest { key: b("k"), value: b("v") }).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("not leader") && err.message().contains(&leader), "{}", err.message());
    assert_eq!(err.metadata().get("zonekv-leader-addr").unwrap().to_str().unwrap(), leader);

    // A client that only knows the follower follows the redirect.
    let client = Client::new([follower.clone()]).unwrap();
    client.put("k", "v").await.unwrap();
    assert_eq!(client.get("k").await.unwrap(), Some(b("v")));

    // Stale reads are served by the follower itself once it has applied the write.
    let stale = Client::new([follower]).unwrap();
    let mut got = None;
    for _ in 0..100 {
        got = stale.get_with("k", ReadConsistency::Stale).await.unwrap();
        if got.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(got, Some(b("v")));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_a_named_problem_and_changes_nothing() {
    let limits = zonekv_server::Limits {
        max_value_bytes: 1024,
        max_batch_ops: 4,
        max_batch_bytes: 2048,
        ..Default::default()
    };
    let template = NodeConfig { limits, ..NodeConfig::default() };
    let c = LocalCluster::start_with(1, None, template).await.unwrap();
    c.wait_for_leader(Duration::from_secs(20)).await.unwrap();
    let addr = c.addrs()[0].clone();
    let mut kv = raw(&addr).await;
    let expect = |r: Result<tonic::Response<pb::PutResponse>, tonic::Status>, code: Code, text: &str| {
        let e = r.unwrap_err();
        assert_eq!(e.code(), code, "{}", e.message());
        assert!(e.message().contains(text), "{:?} does not mention {text:?}", e.message());
    };
    expect(kv.put(pb::PutRequest { key: b(""), value: b("v") }).await, Code::InvalidArgument, "empty");
    expect(
        kv.put(pb::PutRequest { key: vec![7u8; 4097].into(), value: b("v") }).await,
        Code::InvalidArgument,
        "4097 bytes",
    );
    expect(
        kv.put(pb::PutRequest { key: b("k"), value: vec![0u8; 1025].into() }).await,
        Code::InvalidArgument,
        "max-value-bytes",
    );

    let put = |k: &str, n: usize| pb::Mutation {
        op: Some(pb::mutation::Op::Put(pb::mutation::Put { key: b(k), value: vec![1u8; n].into() })),
    };
    let batch_err = |r: Result<tonic::Response<pb::BatchResponse>, tonic::Status>| r.unwrap_err();
    let e = batch_err(kv.batch(pb::BatchRequest { mutations: vec![] }).await);
    assert!(e.code() == Code::InvalidArgument && e.message().contains("no mutations"));
    let five: Vec<_> = (0..5).map(|i| put(&format!("b{i}"), 1)).collect();
    let e = batch_err(kv.batch(pb::BatchRequest { mutations: five }).await);
    assert!(e.code() == Code::InvalidArgument && e.message().contains("max-batch-ops"), "{}", e.message());
    let big: Vec<_> = (0..3).map(|i| put(&format!("b{i}"), 1000)).collect();
    let e = batch_err(kv.batch(pb::BatchRequest { mutations: big }).await);
    assert!(e.code() == Code::InvalidArgument && e.message().contains("max-batch-bytes"), "{}", e.message());
    let e = batch_err(
        kv.batch(pb::BatchRequest { mutations: vec![put("ok", 1), pb::Mutation { op: None }] }).await,
    );
    assert!(e.code() == Code::InvalidArgument && e.message().contains("mutation 1"), "{}", e.message());

    let e = kv.get(pb::GetRequest { key: b("k"), consistency: 9 }).await.unwrap_err();
    assert!(e.code() == Code::InvalidArgument && e.message().contains("read consistency 9"));
    let e = kv
        .scan(pb::ScanRequest {
            start: Some(pb::Bound { key: vec![1u8; 5000].into(), inclusive: true }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = kv
        .compare_and_swap(pb::CompareAndSwapRequest {
            key: b("k"),
            expected: None,
            new_value: Some(vec![0u8; 2000].into()),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // Nothing above changed anything: the keyspace is still empty.
    let scan = kv.scan(pb::ScanRequest::default()).await.unwrap().into_inner();
    assert!(scan.kvs.is_empty(), "{:?}", scan.kvs);
    // The typed client surfaces the same as a typed error.
    let client = Client::new([addr]).unwrap();
    assert!(matches!(client.put("", "v").await, Err(ClientError::InvalidArgument(m)) if m.contains("empty")));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_rejects_unknown_node_ids_and_double_initialization() {
    let c = cluster(3).await;
    let (leader, _) = leader_and_follower(&c).await;
    let admin = Client::new([leader.clone()]).unwrap().admin();
    let err = admin.remove_node(99).await.unwrap_err();
    assert!(matches!(&err, ClientError::NotFound(m) if m.contains("node 99")), "{err}");
    let err = admin.transfer_leader(1, 99).await.unwrap_err();
    assert!(matches!(&err, ClientError::InvalidArgument(m) if m.contains("node 99")), "{err}");
    let err = admin.transfer_leader(5, 1).await.unwrap_err();
    assert!(matches!(&err, ClientError::NotFound(m) if m.contains("range 5")), "{err}");
    let err = admin.add_node(0, "127.0.0.1:1", false).await.unwrap_err();
    assert!(matches!(&err, ClientError::InvalidArgument(m) if m.contains("reserved")), "{err}");
    let err = admin.add_node(2, "127.0.0.9:1", false).await.unwrap_err();
    assert!(matches!(&err, ClientError::FailedPrecondition(m) if m.contains("already a member")), "{err}");
    let members: Vec<(u64, String)> = c.members().into_iter().map(|(id, a)| (id.get(), a)).collect();
    let err = admin.initialize(&leader, &members).await.unwrap_err();
    assert!(matches!(&err, ClientError::FailedPrecondition(m) if m.contains("already")), "{err}");
    let status = admin.status(&leader).await.unwrap();
    assert_eq!(status.ranges[0].replicas.len(), 3);
    assert_eq!(status.ranges[0].state, "leader");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninitialized_nodes_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().into(),
        ..NodeConfig::default()
    };
    let node = zonekv_server::Node::start(config).await.unwrap();
    let mut kv = raw(node.addr()).await;
    let e = kv.put(pb::PutRequest { key: b("k"), value: b("v") }).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("zonekv init"), "{}", e.message());
    let e = node.initialize(&[(2.into(), "127.0.0.1:9".into())]).await.unwrap_err();
    assert!(e.to_string().contains("not in the member list"), "{e}");
    node.shutdown().await;
}

/// A node dropped without `shutdown` (a host that panics, a test that forgets) still goes
/// away: its loops and replicas end and its data directory can be opened again, with every
/// acknowledged write in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_dropped_without_shutdown_releases_its_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let config = NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().into(),
        ..NodeConfig::default()
    };
    let node = zonekv_server::Node::start(config.clone()).await.unwrap();
    node.initialize(&[(node.id(), node.addr().to_string())]).await.unwrap();
    node.wait_for_leader(Duration::from_secs(10)).await.unwrap();
    node.put("k", "v").await.unwrap();
    drop(node);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let again = loop {
        match zonekv_server::Node::start(config.clone()).await {
            Ok(n) => break n,
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "the dropped node still holds its data: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    again.wait_for_leader(Duration::from_secs(10)).await.unwrap();
    let (value, _) = again.get(b"k", zonekv_server::ReadConsistency::Linearizable).await.unwrap();
    assert_eq!(value.as_deref(), Some(&b"v"[..]));
    again.shutdown().await;
}
