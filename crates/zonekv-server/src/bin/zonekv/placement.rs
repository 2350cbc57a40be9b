//! `zonekv placement show | explain | simulate`: the placement logic (`zonekv-placement`) on
//! a live node's view of the cluster, or on a what-if scenario file.

use std::path::Path;

use anyhow::{Context, Result};
use zonekv_client::AdminClient;
use zonekv_placement::{Action, Cluster, Planner, Policy, Range, Role};
use zonekv_proto::admin::v1 as pb;
use zonekv_server::placement::{NodeView, RangeView, cluster_view};

/// The policy in `file` (the `[policy]` table format of etc/placement-scenario.toml, without
/// the header), or the default one.
fn policy(file: Option<&Path>) -> Result<Policy> {
    let Some(file) = file else { return Ok(Policy::default()) };
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let spec: zonekv_placement::scenario::PolicySpec =
        toml::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
    Ok(spec.to_policy()?)
}

/// What the node at `addr` sees, as the placement model.
async fn view(addr: &str) -> Result<Cluster> {
    let admin = AdminClient::new([addr.to_string()])?;
    let s = admin.status(addr).await.with_context(|| format!("asking {addr}"))?;
    let me = NodeView { id: s.node_id, locality: s.locality.clone(), live: true };
    let peers =
        s.peers.iter().map(|p| NodeView { id: p.node_id, locality: p.locality.clone(), live: p.live });
    let nodes: Vec<NodeView> = std::iter::once(me).chain(peers).collect();
    let voter = pb::ReplicaRole::Voter as i32;
    let ranges: Vec<RangeView> = s
        .ranges
        .iter()
        .map(|r| RangeView {
            id: r.range_id,
            replicas: r.replicas.iter().map(|m| (m.node_id, m.role == voter)).collect(),
            leader: (r.leader_id != 0).then_some(r.leader_id),
            bytes: r.approximate_bytes,
        })
        .collect();
    Ok(cluster_view(&nodes, &ranges)?)
}

fn place(cluster: &Cluster, node: u64) -> String {
    cluster.node(node).map_or_else(String::new, |n| {
        let state = if n.up() { "live" } else { "down" };
        let l = n.locality.to_string();
        if l.is_empty() { state.to_string() } else { format!("{l}, {state}") }
    })
}

fn replicas(cluster: &Cluster, r: &Range) -> String {
    let parts: Vec<String> = r
        .replicas
        .iter()
        .map(|x| {
            let role = if x.role == Role::Voter { "" } else { " (non-voter)" };
            format!("{}{role} [{}]", x.node, place(cluster, x.node))
        })
        .collect();
    parts.join(", ")
}

/// Per range: replicas with their localities and whether the policy holds; then a summary.
pub async fn show(addr: &str, policy_file: Option<&Path>) -> Result<()> {
    let cluster = view(addr).await?;
    let policy = policy(policy_file)?;
    if let Err(e) = policy.check(&cluster) {
        out!("warning: {e}");
    }
    let planner = Planner::default();
    let (mut broken, mut without_quorum) = (0, 0);
    for r in cluster.ranges() {
        let v = planner.violations(&cluster, &policy, r, 0);
        let leader = r.leader.map_or("none".to_string(), |l| l.to_string());
        let verdict = if v.is_empty() { "ok".to_string() } else { format!("VIOLATES: {}", v.join("; ")) };
        out!("range {}: replicas {}; leader {leader}; {verdict}", r.id, replicas(&cluster, r));
        broken += usize::from(!v.is_empty());
        without_quorum += usize::from(!cluster.has_quorum(r));
    }
    let total = cluster.ranges().count();
    out!("{total} ranges: {broken} violate the policy, {without_quorum} without quorum");
    Ok(())
}

/// Why each replica and the leader of `range_id` are where they are, and what the driver
/// would do next.
pub async fn explain(addr: &str, range_id: u64, policy_file: Option<&Path>) -> Result<()> {
    let cluster = view(addr).await?;
    let policy = policy(policy_file)?;
    let r = cluster
        .range(range_id)
        .with_context(|| format!("node at {addr} holds no replica of range {range_id}"))?;
    let planner = Planner::default();
    let a = planner.allocator;
    out!("range {range_id}: policy {policy}");
    for x in &r.replicas {
        let others: Vec<_> = r.replicas.iter().copied().filter(|o| o.node != x.node).collect();
        let diversity = cluster.node(x.node).map_or(0.0, |n| a.diversity(&cluster, n, &others));
        let rules =
            if a.violates(&cluster, &policy, r, x.node) { "BREAKS the policy" } else { "keeps every rule" };
        out!(
            "  {:?} on node {} [{}]: {rules}; diversity {diversity:.2} against the others; the node holds {} replicas, leads {}",
            x.role,
            x.node,
            place(&cluster, x.node),
            cluster.replicas_on(x.node),
            cluster.leaders_on(x.node)
        );
    }
    match r.leader {
        Some(l) => out!("  leader on node {l} [{}]", place(&cluster, l)),
        None => out!("  no leader known"),
    }
    for v in planner.violations(&cluster, &policy, r, 0) {
        out!("  violation: {v}");
    }
    let next = match planner.next(&cluster, &policy, r, 0, None) {
        Action::Nothing => "nothing: every rule holds, the leader is where the preferences want it, and replica counts are within the rebalance threshold".to_string(),
        Action::Add { role, to } => format!("add a {role:?} on node {to} [{}]", place(&cluster, to)),
        Action::Replace { role, from, to, repair } => format!(
            "{} the {role:?} on node {from} with one on node {to} [{}]",
            if repair { "replace (repair)" } else { "move (rebalance)" },
            place(&cluster, to)
        ),
        Action::Remove { from } => format!("remove the replica on node {from}"),
        Action::TransferLease { to } => format!("transfer the leadership to node {to} [{}]", place(&cluster, to)),
        Action::Unsatisfiable(why) => format!("nothing it can do: {why}"),
    };
    out!("  next: {next}");
    Ok(())
}

/// Runs a what-if scenario file and prints the report.
pub fn simulate(file: &Path) -> Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let report = zonekv_placement::scenario::Scenario::from_toml(&text)
        .and_then(|s| s.run())
        .with_context(|| format!("simulating {}", file.display()))?;
    out!("{report}");
    Ok(())
}

/// `zonekv placement set`.
pub async fn set(args: crate::cli::SetPolicyArgs) -> Result<()> {
    let admin = AdminClient::new([args.addr.clone()])?;
    let span =
        format!("[{:?}, {})", args.start, args.end.as_ref().map_or("∞".to_string(), |e| format!("{e:?}")));
    let policy = (!args.clear).then(|| pb::Policy {
        voters: args.voters.unwrap_or(0),
        non_voters: args.non_voters,
        constraints: args.constraints,
        voter_constraints: args.voter_constraints,
        lease_preferences: args.lease_preferences,
        survival: args.survival.unwrap_or_default(),
    });
    let cleared = policy.is_none();
    admin
        .set_policy(args.start.into(), args.end.map(Into::into), policy)
        .await
        .with_context(|| format!("setting the policy of {span}"))?;
    if cleared {
        out!("the policy of {span} is cleared; its ranges follow the default policy");
    } else {
        out!("the policy of {span} is set; the placement driver moves its ranges to it");
    }
    Ok(())
}

/// `zonekv placement policies`.
pub async fn policies(addr: &str) -> Result<()> {
    let admin = AdminClient::new([addr.to_string()])?;
    let list = admin.policies(addr).await.with_context(|| format!("asking {addr}"))?;
    if list.is_empty() {
        out!("no span policies: every range follows the nodes' placement.policy");
    }
    for p in list {
        let show = |k: &[u8]| format!("{:?}", String::from_utf8_lossy(k));
        let end = if p.end.is_empty() { "∞".to_string() } else { show(&p.end) };
        let spec = zonekv_server::placement::spec_from_pb(p.policy.unwrap_or_default());
        let text = spec.to_policy().map_or_else(|e| format!("unreadable: {e}"), |p| p.to_string());
        out!("[{}, {end})  {text}", show(&p.start));
    }
    Ok(())
}
