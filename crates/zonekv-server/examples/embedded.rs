//! ZoneKV inside a host process: a single node, then a 3-node cluster in one process.
//!
//! Run with `cargo run -p zonekv-server --example embedded`.

use std::time::Duration;

use zonekv_server::{LocalCluster, Node, NodeConfig, ReadConsistency};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // One node, listening on a free loopback port, data in a temporary directory.
    let dir = tempfile::tempdir()?;
    let config =
        NodeConfig { listen: "127.0.0.1:0".parse()?, data_dir: dir.path().into(), ..NodeConfig::default() };
    let node = Node::start(config).await?;
    node.initialize(&[(node.id(), node.addr().to_string())]).await?;
    node.wait_for_leader(Duration::from_secs(10)).await?;
    node.put("user/1", "alice").await?;
    let (value, index) = node.get(b"user/1", ReadConsistency::Linearizable).await?;
    println!("single node at {}: user/1 = {:?} (log index {index})", node.addr(), value);
    node.shutdown().await;

    // Three replicas in this process; any of them can be reached over gRPC as well.
    let cluster = LocalCluster::start(3, None).await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await?;
    let node = cluster.node(leader).expect("the leader runs");
    node.put("user/2", "bob").await?;
    for n in cluster.running() {
        // Followers serve stale reads once they have applied the write.
        let mut v = None;
        for _ in 0..100 {
            v = n.get(b"user/2", ReadConsistency::Stale).await?.0;
            if v.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        println!(
            "node {} ({}): user/2 = {:?}",
            n.id(),
            if n.id() == leader { "leader" } else { "follower" },
            v
        );
    }
    cluster.shutdown().await;
    Ok(())
}
