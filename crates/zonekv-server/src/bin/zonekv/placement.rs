//! `zonekv placement show | explain | simulate | set | policies`: the placement logic
//! (`zonekv-placement`) on the live cluster as its nodes report it, or on a what-if scenario
//! file; and the span policies stored in the meta range.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use zonekv_client::AdminClient;
use zonekv_placement::{Action, Cluster, Planner, Policy, Range, Role};
use zonekv_proto::admin::v1 as pb;
use zonekv_server::SpanPolicy;
use zonekv_server::placement::{NodeView, RangeView, cluster_view};

/// The policy in `file` (the `[policy]` table format of etc/placement-scenario.toml, without
/// the header).
fn policy_file(file: &Path) -> Result<Policy> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let spec: zonekv_placement::scenario::PolicySpec =
        toml::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
    Ok(spec.to_policy()?)
}

/// Which policy each range is judged by: the one in `--policy FILE` for all (a what-if), or
/// the cluster's own (the span policies in the meta range, else the node's `placement.policy`).
struct Policies {
    file: Option<Policy>,
    spans: Vec<(SpanPolicy, Policy)>,
    default: Policy,
}

impl Policies {
    async fn load(admin: &AdminClient, addr: &str, file: Option<&Path>) -> Result<Policies> {
        let file = file.map(policy_file).transpose()?;
        let list = admin.policies(addr).await.with_context(|| format!("asking {addr} for the policies"))?;
        let spec = |p: Option<pb::Policy>| zonekv_server::placement::spec_from_pb(p.unwrap_or_default());
        let default = spec(list.default_policy).to_policy()?;
        let mut spans = Vec::new();
        for p in list.policies {
            let span = SpanPolicy {
                start: p.start,
                end: (!p.end.is_empty()).then_some(p.end),
                policy: spec(p.policy),
            };
            let policy = span.policy.to_policy()?;
            spans.push((span, policy));
        }
        Ok(Policies { file, spans, default })
    }

    /// The policy of the range starting at `start`.
    fn of(&self, start: &[u8]) -> &Policy {
        let span = || self.spans.iter().find(|(s, _)| s.contains(start)).map(|(_, p)| p);
        self.file.as_ref().or_else(span).unwrap_or(&self.default)
    }
}

/// The cluster as its nodes report it: the node at `addr` names the members (its replica of
/// the first range) and their localities and liveness; every member is asked for its status
/// (one that does not answer is left out: it shows as down); a range is taken as its leader
/// reports it, else as any holder does. Also each range's start key. The first range, which
/// has a replica on every node, is not placed and left out.
async fn view(admin: &AdminClient, addr: &str) -> Result<(Cluster, BTreeMap<u64, Vec<u8>>)> {
    let s = admin.status(addr).await.with_context(|| format!("asking {addr}"))?;
    let members: Vec<String> = s
        .ranges
        .iter()
        .find(|r| r.range_id == 1)
        .map(|r| r.replicas.iter().map(|m| m.addr.clone()).filter(|a| a != addr).collect())
        .unwrap_or_default();
    let me = NodeView { id: s.node_id, locality: s.locality.clone(), live: true };
    let peers =
        s.peers.iter().map(|p| NodeView { id: p.node_id, locality: p.locality.clone(), live: p.live });
    let nodes: Vec<NodeView> = std::iter::once(me).chain(peers).collect();
    let mut statuses = vec![s];
    for a in members {
        if let Ok(Ok(other)) = tokio::time::timeout(Duration::from_secs(3), admin.status(&a)).await {
            statuses.push(other);
        }
    }
    let voter = pb::ReplicaRole::Voter as i32;
    let mut ranges: BTreeMap<u64, (bool, RangeView)> = BTreeMap::new();
    let mut starts = BTreeMap::new();
    for r in statuses.iter().flat_map(|s| &s.ranges).filter(|r| r.range_id != 1) {
        let leads = r.state == "leader";
        if ranges.get(&r.range_id).is_some_and(|(led, _)| *led || !leads) {
            continue;
        }
        let view = RangeView {
            id: r.range_id,
            replicas: r.replicas.iter().map(|m| (m.node_id, m.role == voter)).collect(),
            leader: (r.leader_id != 0).then_some(r.leader_id),
            bytes: r.approximate_bytes,
        };
        ranges.insert(r.range_id, (leads, view));
        starts.insert(r.range_id, r.start_key.to_vec());
    }
    let ranges: Vec<RangeView> = ranges.into_values().map(|(_, v)| v).collect();
    Ok((cluster_view(&nodes, &ranges)?, starts))
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
    let admin = crate::connect::admin([addr.to_string()])?;
    let (cluster, starts) = view(&admin, addr).await?;
    let policies = Policies::load(&admin, addr, policy_file).await?;
    let mut checked = Vec::new();
    for p in std::iter::once(&policies.default)
        .chain(policies.file.iter())
        .chain(policies.spans.iter().map(|s| &s.1))
    {
        if !checked.contains(&p) {
            checked.push(p);
            if let Err(e) = p.check(&cluster) {
                out!("warning: policy {p}: {e}");
            }
        }
    }
    let planner = Planner::default();
    let (mut broken, mut without_quorum) = (0, 0);
    for r in cluster.ranges() {
        let policy = policies.of(starts.get(&r.id).map_or(&[][..], Vec::as_slice));
        let v = planner.violations(&cluster, policy, r, 0);
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
    let admin = crate::connect::admin([addr.to_string()])?;
    let (cluster, starts) = view(&admin, addr).await?;
    let r = cluster.range(range_id).with_context(|| {
        format!("no node of the cluster reports range {range_id} (the first range, 1, is not placed: it is on every node)")
    })?;
    let policies = Policies::load(&admin, addr, policy_file).await?;
    let policy = policies.of(starts.get(&range_id).map_or(&[][..], Vec::as_slice));
    let planner = Planner::default();
    let a = planner.allocator;
    out!("range {range_id}: policy {policy}");
    for x in &r.replicas {
        let others: Vec<_> = r.replicas.iter().copied().filter(|o| o.node != x.node).collect();
        let diversity = cluster.node(x.node).map_or(0.0, |n| a.diversity(&cluster, n, &others));
        let rules =
            if a.violates(&cluster, policy, r, x.node) { "BREAKS the policy" } else { "keeps every rule" };
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
    for v in planner.violations(&cluster, policy, r, 0) {
        out!("  violation: {v}");
    }
    let next = match planner.next(&cluster, policy, r, 0, None) {
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

/// Runs a what-if scenario file and prints the report: from the file's topology, or from the
/// live cluster at `addr`.
pub async fn simulate(file: &Path, addr: Option<&str>) -> Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let scenario = zonekv_placement::scenario::Scenario::from_toml(&text)
        .with_context(|| format!("reading {}", file.display()))?;
    let report = match addr {
        None => scenario.run(),
        Some(addr) => {
            let admin = crate::connect::admin([addr.to_string()])?;
            let (cluster, _) = view(&admin, addr).await?;
            scenario.run_on(cluster)
        }
    }
    .with_context(|| format!("simulating {}", file.display()))?;
    out!("{report}");
    Ok(())
}

/// `zonekv placement set`.
pub async fn set(args: crate::cli::SetPolicyArgs) -> Result<()> {
    let admin = crate::connect::admin([args.addr.clone()])?;
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
    let admin = crate::connect::admin([addr.to_string()])?;
    let list = admin.policies(addr).await.with_context(|| format!("asking {addr}"))?;
    let default = zonekv_server::placement::spec_from_pb(list.default_policy.unwrap_or_default());
    let default = default.to_policy().map_or_else(|e| format!("unreadable: {e}"), |p| p.to_string());
    out!("default (placement.policy of the node at {addr}): {default}");
    if list.policies.is_empty() {
        out!("no span policies");
    }
    for p in list.policies {
        let show = |k: &[u8]| format!("{:?}", String::from_utf8_lossy(k));
        let end = if p.end.is_empty() { "∞".to_string() } else { show(&p.end) };
        let spec = zonekv_server::placement::spec_from_pb(p.policy.unwrap_or_default());
        let text = spec.to_policy().map_or_else(|e| format!("unreadable: {e}"), |p| p.to_string());
        out!("[{}, {end})  {text}", show(&p.start));
    }
    Ok(())
}
