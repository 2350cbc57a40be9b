//! The `zonekv` command: run a node, administer a cluster, use the key-value API, run the demo.

// A command-line tool reports to its user on stderr.
#![allow(clippy::print_stderr)]

/// `println!` for the command's output, except that a closed pipe (`zonekv ranges | head`)
/// ends the program quietly and successfully, as it does other Unix tools, instead of with a
/// panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                eprintln!("error: writing the output: {e}");
                std::process::exit(1);
            }
            std::process::exit(0);
        }
    }};
}

mod cert;
mod cli;
mod connect;
mod kv;
mod placement;

/// mimalloc: measurably cheaper than glibc malloc for a node's many small, short-lived
/// allocations (see docs/benchmarks.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{Context, Result, bail};
use clap::Parser;
use cli::{Cli, Command, PlacementCommand, StartArgs};
use tracing_subscriber::EnvFilter;
use zonekv_server::{Node, NodeConfig};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The demo stops a node on purpose; the peers' complaints about it are expected noise.
    let default_level = match cli.command {
        Command::Start(_) => "info",
        Command::Demo { .. } => "error,openraft=off",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let security = cli.security;
    match &cli.command {
        Command::Start(_)
        | Command::Cert(_)
        | Command::Demo { .. }
        | Command::Placement(PlacementCommand::Simulate { addr: None, .. }) => {}
        _ => connect::init(&security)?,
    }
    match cli.command {
        Command::Start(args) => start(args, &security).await,
        Command::Cert(command) => cert::run(security.certs_dir.as_deref(), command),
        Command::Init { addr, nodes } => init(addr, &nodes).await,
        Command::Status { addr } => status(&addr).await,
        Command::Ranges { addr } => ranges(&addr).await,
        Command::Split { addr, key } => {
            let admin = connect::admin([addr.clone()])?;
            let (left, right) =
                admin.split(key.clone()).await.with_context(|| format!("splitting at {key:?}"))?;
            out!("range {left} split at {key:?}; the new range {right} starts there");
            Ok(())
        }
        Command::MoveReplica { addr, range, from, to } => {
            let admin = connect::admin([addr])?;
            let voters = admin
                .move_replica(range, from, to)
                .await
                .with_context(|| format!("moving range {range}'s replica from node {from} to node {to}"))?;
            out!("range {range} moved from node {from} to node {to}; its voters are on nodes {voters:?}");
            Ok(())
        }
        Command::Decommission { addr, node, cancel } => {
            let admin = connect::admin([addr])?;
            admin.decommission(node, cancel).await.with_context(|| format!("decommissioning node {node}"))?;
            if cancel {
                out!("node {node} is no longer decommissioning; it takes replicas again");
            } else {
                out!("node {node} is decommissioning: its replicas move away (see `zonekv placement show`)");
            }
            Ok(())
        }
        Command::Kv(kv) => kv::run(kv).await,
        Command::Grant { addr, user, prefix, read_write, read_only, revoke } => {
            if !revoke && read_write == read_only {
                bail!("pass --read-write or --read-only (or --revoke)");
            }
            let admin = connect::admin([addr])?;
            admin
                .grant(&user, prefix.clone().into(), read_write, revoke)
                .await
                .with_context(|| format!("granting user {user} the prefix {prefix:?}"))?;
            match (revoke, read_write) {
                (true, _) => out!("user {user} no longer has the prefix {prefix:?}"),
                (false, true) => out!("user {user} may read and write the keys under {prefix:?}"),
                (false, false) => out!("user {user} may read the keys under {prefix:?}"),
            }
            Ok(())
        }
        Command::Grants { addr } => {
            let admin = connect::admin([addr.clone()])?;
            for (user, prefix, rw) in admin.grants(&addr).await.with_context(|| format!("asking {addr}"))? {
                out!(
                    "{user}\t{:?}\t{}",
                    String::from_utf8_lossy(&prefix),
                    if rw { "read-write" } else { "read-only" }
                );
            }
            Ok(())
        }
        Command::Placement(PlacementCommand::Simulate { file, addr }) => {
            placement::simulate(&file, addr.as_deref()).await
        }
        Command::Placement(PlacementCommand::Set(args)) => placement::set(args).await,
        Command::Placement(PlacementCommand::Policies { addr }) => placement::policies(&addr).await,
        Command::Placement(PlacementCommand::Show { addr, policy }) => {
            placement::show(&addr, policy.as_deref()).await
        }
        Command::Placement(PlacementCommand::Explain { addr, range, policy }) => {
            placement::explain(&addr, range, policy.as_deref()).await
        }
        Command::Demo { data_dir } => {
            zonekv_server::demo::run(data_dir.as_deref()).await?;
            Ok(())
        }
    }
}

fn node_config(args: &StartArgs) -> Result<NodeConfig> {
    let mut config = match &args.config {
        Some(path) => NodeConfig::from_file(path)?,
        None => NodeConfig::default(),
    };
    if let Some(id) = args.node_id {
        config.node_id = id;
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(join) = &args.join {
        config.join = Some(join.clone());
    }
    if let Some(adv) = &args.advertise_addr {
        config.advertise_addr = Some(adv.clone());
    }
    if let Some(locality) = &args.locality {
        config.locality = locality.clone();
    }
    config.validate()?;
    Ok(config)
}

/// Starts the node. In builds with the `test-hooks` feature (the workspace's test and
/// benchmark builds, never `cargo build -p zonekv-server`), `ZONEKV_UNSAFE_ACK_BEFORE_SYNC=1`
/// makes it acknowledge appends before they are synced: the crash tests' negative control
/// (docs/testing.md).
async fn start_node(config: NodeConfig) -> zonekv_server::Result<Node> {
    #[cfg(feature = "test-hooks")]
    {
        let options = zonekv_server::NodeOptions {
            unsafe_ack_before_sync: std::env::var_os("ZONEKV_UNSAFE_ACK_BEFORE_SYNC")
                .is_some_and(|v| v == "1"),
            ..zonekv_server::NodeOptions::default()
        };
        Node::start_with(config, options).await
    }
    #[cfg(not(feature = "test-hooks"))]
    Node::start(config).await
}

async fn start(args: StartArgs, security: &cli::SecurityArgs) -> Result<()> {
    let mut config = node_config(&args)?;
    if let Some(dir) = &security.certs_dir {
        config.certs_dir = Some(dir.clone());
    }
    match (&config.certs_dir, security.insecure) {
        (Some(_), true) => {
            bail!("--certs-dir (or certs-dir in the configuration) and --insecure exclude each other")
        }
        (None, false) => bail!(
            "zonekv start needs --certs-dir DIR with ca.crt, node.crt and node.key (see `zonekv cert` and docs/security.md), or --insecure to serve without TLS or authentication"
        ),
        (None, true) => eprintln!(
            "WARNING: running INSECURE: no TLS and no authentication. Anyone who can reach {} can read and write every key, call every admin RPC, and disrupt the cluster. Use only on a trusted loopback network.",
            config.advertise_addr.clone().unwrap_or_else(|| config.listen.to_string())
        ),
        (Some(_), false) => {}
    }
    let node = start_node(config).await.context("starting the node")?;
    out!(
        "zonekv node {} serving on {}{}",
        node.id(),
        node.addr(),
        if node.tls().is_some() { " (TLS)" } else { " (INSECURE)" }
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let failed = node.storage_failed();
    tokio::pin!(failed);
    loop {
        tokio::select! {
            reason = &mut failed => {
                node.shutdown().await;
                bail!("node stopped: {reason}");
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            // Rotation: the operator replaced the files; new connections use them.
            _ = hup.recv() => match node.reload_certificates() {
                Ok(()) => tracing::info!("SIGHUP: certificates reloaded"),
                Err(e) => tracing::error!(error = %e, "SIGHUP: certificates not reloaded; the old ones stay in use"),
            },
        }
    }
    node.shutdown().await;
    Ok(())
}

fn parse_nodes(spec: &str) -> Result<Vec<(u64, String)>> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((id, addr)) = part.split_once('=') else {
            bail!("{part:?} is not ID=HOST:PORT");
        };
        let id: u64 = id.trim().parse().with_context(|| format!("{id:?} is not a node id"))?;
        out.push((id, addr.trim().to_string()));
    }
    if out.is_empty() {
        bail!("--nodes lists no node");
    }
    Ok(out)
}

async fn init(addr: Option<String>, nodes: &str) -> Result<()> {
    let members = parse_nodes(nodes)?;
    let target = addr.unwrap_or_else(|| members[0].1.clone());
    let admin = connect::admin([target.clone()])?;
    admin.initialize(&target, &members).await.with_context(|| format!("initializing through {target}"))?;
    out!("initialized a cluster of {} nodes through {target}", members.len());
    Ok(())
}

/// One line per range: `range ID [START, END)  leader ADDR  applied N  ~SIZE  replicas A,B,C`.
async fn ranges(addr: &str) -> Result<()> {
    let admin = connect::admin([addr.to_string()])?;
    let s = admin.status(addr).await.with_context(|| format!("asking {addr}"))?;
    let show = |k: &[u8]| format!("{:?}", String::from_utf8_lossy(k));
    out!("node {} holds {} ranges", s.node_id, s.ranges.len());
    for r in s.ranges {
        let end = if r.end_key.is_empty() { "∞".to_string() } else { show(&r.end_key) };
        let leader = if r.leader_addr.is_empty() { "unknown" } else { &r.leader_addr };
        let replicas: Vec<&str> = r.replicas.iter().map(|m| m.addr.as_str()).collect();
        out!(
            "range {} [{}, {end})  leader {leader}{}  applied {}  ~{} KiB  replicas {}",
            r.range_id,
            show(&r.start_key),
            if r.quiesced { " (quiet)" } else { "" },
            r.applied_index,
            r.approximate_bytes / 1024,
            replicas.join(",")
        );
    }
    Ok(())
}

async fn status(addr: &str) -> Result<()> {
    let admin = connect::admin([addr.to_string()])?;
    let s = admin.status(addr).await.with_context(|| format!("asking {addr}"))?;
    out!(
        "node {} at {} ({})",
        s.node_id,
        s.addr,
        if s.initialized { "initialized" } else { "not initialized" }
    );
    if !s.locality.is_empty() {
        out!("locality: {}", s.locality);
    }
    for p in &s.peers {
        let place = if p.locality.is_empty() { "no locality".to_string() } else { p.locality.clone() };
        out!("peer node {} ({place}): {}", p.node_id, if p.live { "live" } else { "not heard from" });
    }
    if s.log_syncs > 0 {
        out!(
            "log: {} syncs made {} appends durable ({:.1} per sync)",
            s.log_syncs,
            s.log_appends_synced,
            s.log_appends_synced as f64 / s.log_syncs as f64
        );
    }
    if s.raft_batches_sent > 0 {
        out!(
            "raft transport: {} messages sent in {} batches ({:.1} per batch); streams from {} peers",
            s.raft_frames_sent,
            s.raft_batches_sent,
            s.raft_frames_sent as f64 / s.raft_batches_sent as f64,
            s.raft_streams_from_peers
        );
    }
    for r in s.ranges {
        let leader = if r.leader_id == 0 {
            "unknown".to_string()
        } else {
            format!("node {} at {}", r.leader_id, r.leader_addr)
        };
        let show = |k: &[u8]| format!("{:?}", String::from_utf8_lossy(k));
        let end = if r.end_key.is_empty() { "∞".to_string() } else { show(&r.end_key) };
        out!(
            "range {} [{}, {end}): {} term {}, leader {leader}",
            r.range_id,
            show(&r.start_key),
            r.state,
            r.term
        );
        out!(
            "  last log {}  committed {}  applied {}  purged {}",
            r.last_log_index,
            r.committed_index,
            r.applied_index,
            r.purged_index
        );
        for m in r.replicas {
            let role = if m.role == zonekv_proto::admin::v1::ReplicaRole::Learner as i32 {
                "learner"
            } else {
                "voter"
            };
            out!("  member node {} at {} ({role})", m.node_id, m.addr);
        }
        if !r.fatal_error.is_empty() {
            out!("  STOPPED: {}", r.fatal_error);
        }
    }
    Ok(())
}
