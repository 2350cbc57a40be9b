//! What-if scenarios for `zonekv placement simulate`: a topology, a policy and scripted
//! events (kill nodes, add nodes, decommission, change the policy) run through the simulator
//! in fake time; the report says what moved, how many bytes, how long until settled, and any
//! moment a range lacked a quorum. The file format is TOML (kebab-case), see
//! `etc/placement-scenario.toml`.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, Node, NodeId, NodeState};
use crate::policy::{Constraint, Policy, Survival};
use crate::sim::{Sim, SimConfig};
use crate::{Error, Locality, Planner, Result};

/// A scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Scenario {
    /// Tie-break seed of the allocator. Default 0.
    #[serde(default)]
    pub seed: u64,
    /// Ranges to place at the start. Default 100.
    #[serde(default = "default_ranges")]
    pub ranges: u64,
    /// Bytes per range (what each move's snapshot carries). Default 64 MiB.
    #[serde(default = "default_range_bytes")]
    pub range_bytes: u64,
    /// A node down this long is dead and its replicas are replaced. Default 300.
    #[serde(default = "default_dead_after")]
    pub dead_after_secs: u64,
    /// Snapshot rate per transfer. Default 64 MiB/s.
    #[serde(default = "default_range_bytes")]
    pub snapshot_bytes_per_sec: u64,
    /// Snapshots a node sends, and receives, at once. Default 2.
    #[serde(default = "default_max_snapshots")]
    pub max_snapshots: usize,
    /// The policy of every range. Default: 3 voters, survival zone.
    #[serde(default)]
    pub policy: PolicySpec,
    /// The nodes at the start (with a live cluster: nodes added to it).
    #[serde(default)]
    pub nodes: Vec<NodeSpec>,
    /// What happens, in order of time.
    #[serde(default)]
    pub events: Vec<EventSpec>,
}

fn default_ranges() -> u64 {
    100
}
fn default_range_bytes() -> u64 {
    64 << 20
}
fn default_dead_after() -> u64 {
    300
}
fn default_max_snapshots() -> usize {
    2
}

/// A policy as written in a file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PolicySpec {
    /// Voters (default 3; 5 with `survival = "region"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voters: Option<usize>,
    /// Non-voters. Default 0.
    #[serde(default)]
    pub non_voters: usize,
    /// `+key=value[:count]` / `-key=value`, every replica.
    #[serde(default)]
    pub constraints: Vec<String>,
    /// The same, voters only.
    #[serde(default)]
    pub voter_constraints: Vec<String>,
    /// Lists of `+key=value`, in order of preference.
    #[serde(default)]
    pub lease_preferences: Vec<Vec<String>>,
    /// `zone` (default) or `region`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub survival: Option<String>,
}

/// A node as written in a file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NodeSpec {
    /// Node id.
    pub id: NodeId,
    /// `region=…,zone=…`.
    #[serde(default)]
    pub locality: String,
}

/// Something that happens at `at-secs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct EventSpec {
    /// When, in seconds from the start.
    pub at_secs: u64,
    /// Nodes that die.
    #[serde(default)]
    pub kill: Vec<NodeId>,
    /// Nodes that join.
    #[serde(default)]
    pub add: Vec<NodeSpec>,
    /// Nodes that start decommissioning.
    #[serde(default)]
    pub decommission: Vec<NodeId>,
    /// A new policy for every range.
    pub policy: Option<PolicySpec>,
}

impl PolicySpec {
    /// The policy it describes, validated.
    pub fn to_policy(&self) -> Result<Policy> {
        let parse =
            |list: &[String]| list.iter().map(|c| c.parse::<Constraint>()).collect::<Result<Vec<_>>>();
        let survival = match self.survival.as_deref() {
            None | Some("zone") => Survival::Zone,
            Some("region") => Survival::Region,
            Some(other) => return Err(Error::BadPolicy(format!("survival {other:?}: zone or region"))),
        };
        let default_voters = if survival == Survival::Region { 5 } else { 3 };
        let policy = Policy {
            voters: self.voters.unwrap_or(default_voters),
            non_voters: self.non_voters,
            constraints: parse(&self.constraints)?,
            voter_constraints: parse(&self.voter_constraints)?,
            lease_preferences: self.lease_preferences.iter().map(|l| parse(l)).collect::<Result<_>>()?,
            survival,
        };
        policy.validate()?;
        Ok(policy)
    }
}

impl NodeSpec {
    fn to_node(&self) -> Result<Node> {
        Ok(Node::new(self.id, self.locality.parse::<Locality>()?))
    }
}

impl Scenario {
    /// Parses a scenario file.
    pub fn from_toml(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::BadCluster(format!("scenario file: {e}")))
    }

    /// Runs it; returns the report, or why it cannot run (bad input, a policy the nodes
    /// cannot meet at the start).
    pub fn run(&self) -> Result<String> {
        self.play(Cluster::default(), true)
    }

    /// Runs the events on `live` as it is — a running cluster's nodes and ranges (`zonekv
    /// placement simulate --addr`): the file's nodes join it, and no ranges are created (its
    /// `ranges` setting is ignored). Nodes down in `live` count as down since the start.
    pub fn run_on(&self, live: Cluster) -> Result<String> {
        self.play(live, false)
    }

    fn play(&self, mut cluster: Cluster, create_ranges: bool) -> Result<String> {
        for n in &self.nodes {
            cluster.add_node(n.to_node()?)?;
        }
        let policy = self.policy.to_policy()?;
        policy.check(&cluster)?;
        let mut planner = Planner { dead_after: self.dead_after_secs * 1000, ..Planner::default() };
        planner.allocator.seed = self.seed;
        let config = SimConfig {
            planner,
            snapshot_bytes_per_sec: self.snapshot_bytes_per_sec,
            max_snapshots: self.max_snapshots,
            ..SimConfig::default()
        };
        let mut sim = Sim::new(cluster, policy, config);
        let mut out = String::new();
        if create_ranges {
            sim.create_ranges(1, self.ranges, self.range_bytes)?;
            let _ = writeln!(
                out,
                "placed {} ranges ({} per replica set)",
                self.ranges,
                sim.policy.voters + sim.policy.non_voters
            );
        } else {
            let (nodes, ranges) = (sim.cluster.nodes().count(), sim.cluster.ranges().count());
            let _ = writeln!(out, "starting from the live cluster: {nodes} nodes, {ranges} ranges");
        }
        summary(&sim, &mut out);
        let mut events = self.events.clone();
        events.sort_by_key(|e| e.at_secs);
        for e in &events {
            let at = e.at_secs * 1000;
            let before = sim.log.clone();
            if at > sim.now {
                sim.run_for(at - sim.now);
            }
            phase(&sim, &before, &mut out);
            let _ = writeln!(out, "\nt={}s: {}", e.at_secs, describe(e));
            apply(&mut sim, e)?;
        }
        let before = sim.log.clone();
        let start = sim.now;
        let settled = sim.run_until_settled(7 * 24 * 3600 * 1000);
        phase(&sim, &before, &mut out);
        match settled {
            Some(_) => {
                let _ = writeln!(
                    out,
                    "settled at t={}s ({} s after the last event)",
                    sim.now / 1000,
                    (sim.now - start) / 1000
                );
            }
            None => {
                let _ = writeln!(out, "did not settle within a week of fake time");
            }
        }
        summary(&sim, &mut out);
        Ok(out)
    }
}

fn describe(e: &EventSpec) -> String {
    let mut parts = Vec::new();
    if !e.kill.is_empty() {
        parts.push(format!("kill nodes {:?}", e.kill));
    }
    if !e.add.is_empty() {
        parts.push(format!("add nodes {:?}", e.add.iter().map(|n| n.id).collect::<Vec<_>>()));
    }
    if !e.decommission.is_empty() {
        parts.push(format!("decommission nodes {:?}", e.decommission));
    }
    if e.policy.is_some() {
        parts.push("new policy".to_string());
    }
    parts.join("; ")
}

fn apply(sim: &mut Sim, e: &EventSpec) -> Result<()> {
    for &id in &e.kill {
        sim.cluster.node(id).ok_or_else(|| Error::BadCluster(format!("kill: no node {id}")))?;
        sim.kill(id);
    }
    for n in &e.add {
        sim.cluster.add_node(n.to_node()?)?;
    }
    for &id in &e.decommission {
        sim.cluster.node(id).ok_or_else(|| Error::BadCluster(format!("decommission: no node {id}")))?;
        sim.decommission(id);
    }
    if let Some(p) = &e.policy {
        let policy = p.to_policy()?;
        policy.check(&sim.cluster)?;
        sim.policy = policy;
    }
    Ok(())
}

/// What happened since `before`.
fn phase(sim: &Sim, before: &crate::sim::SimLog, out: &mut String) {
    let log = &sim.log;
    let lost: Vec<_> = log.quorum_lost[before.quorum_lost.len()..].to_vec();
    let _ = writeln!(
        out,
        "  until t={}s: {} replicas added, {} removed, {} MiB moved, {} lease transfers",
        sim.now / 1000,
        log.added - before.added,
        log.removed - before.removed,
        (log.bytes_moved - before.bytes_moved) >> 20,
        log.lease_transfers - before.lease_transfers,
    );
    match lost.first() {
        None => {
            let _ = writeln!(out, "  no range lost quorum");
        }
        Some((t, r)) => {
            let _ = writeln!(
                out,
                "  {} ranges LOST QUORUM, the first (range {r}) at t={}s",
                lost.len(),
                t / 1000
            );
        }
    }
    if let Some((r, why)) = log.unsatisfiable.iter().next() {
        let _ =
            writeln!(out, "  {} ranges cannot be fixed now, e.g. range {r}: {why}", log.unsatisfiable.len());
    }
}

/// Replicas and leaders per node.
fn summary(sim: &Sim, out: &mut String) {
    for n in sim.cluster.nodes() {
        let state = match n.state {
            NodeState::Live => "live",
            NodeState::Down { .. } => "down",
            NodeState::Decommissioning => "decommissioning",
        };
        let _ = writeln!(
            out,
            "  node {:>3} {:<28} {:<15} {:>5} replicas {:>5} leaders",
            n.id,
            n.locality.to_string(),
            state,
            sim.cluster.replicas_on(n.id),
            sim.cluster.leaders_on(n.id)
        );
    }
    let without: usize = sim.cluster.ranges().filter(|r| !sim.cluster.has_quorum(r)).count();
    if without > 0 {
        let _ = writeln!(out, "  {without} ranges without quorum now");
    }
}
