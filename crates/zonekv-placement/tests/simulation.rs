//! The allocator in fake time (docs/placement.md): 9 nodes in 3 zones and 1,000 ranges, then
//! a zone dies, a node dies, nodes join, a node is decommissioned; region survival across 3
//! regions; lease preferences. Every scenario checks quorum at every step.

use std::collections::BTreeSet;

use zonekv_placement::sim::{Sim, SimConfig};
use zonekv_placement::{
    Cluster, Constraint, Locality, Millis, Node, NodeId, NodeState, Planner, Policy, Role,
};

const MIB: u64 = 1 << 20;
const MINUTE: Millis = 60_000;

/// Nodes `ids`, node i in zone `z{(i-1) % 3}` of region `r{(i-1) / per_region}`.
fn nodes(ids: std::ops::RangeInclusive<NodeId>, per_region: NodeId) -> Vec<Node> {
    ids.map(|i| {
        let locality: Locality =
            format!("region=r{},zone=z{}", (i - 1) / per_region, (i - 1) % 3).parse().unwrap();
        Node::new(i, locality)
    })
    .collect()
}

fn sim(node_list: Vec<Node>, policy: Policy, ranges: u64) -> Sim {
    let mut cluster = Cluster::default();
    for n in node_list {
        cluster.add_node(n).unwrap();
    }
    let config =
        SimConfig { planner: Planner { dead_after: MINUTE, ..Planner::default() }, ..SimConfig::default() };
    let mut s = Sim::new(cluster, policy, config);
    s.create_ranges(1, ranges, 64 * MIB).unwrap();
    s
}

fn zone_of(s: &Sim, n: NodeId) -> String {
    s.cluster.node(n).unwrap().zone()
}

/// Every range has `voters` voters, all in distinct zones, none on a node that is down.
fn assert_one_voter_per_zone(s: &Sim, voters: usize) {
    for r in s.cluster.ranges() {
        let v: Vec<NodeId> = r.voters().collect();
        let zones: BTreeSet<String> = v.iter().map(|n| zone_of(s, *n)).collect();
        assert_eq!(
            (v.len(), zones.len()),
            (voters, voters),
            "range {}: voters {v:?} in zones {zones:?}",
            r.id
        );
        assert!(
            v.iter().all(|n| s.cluster.node(*n).unwrap().up()),
            "range {} has a voter on a down node",
            r.id
        );
    }
}

fn counts(s: &Sim) -> Vec<usize> {
    s.cluster.nodes().filter(|n| n.state == NodeState::Live).map(|n| s.cluster.replicas_on(n.id)).collect()
}

fn assert_balanced(s: &Sim, tolerance: f64) {
    let c = counts(s);
    let mean = c.iter().sum::<usize>() as f64 / c.len() as f64;
    assert!(
        c.iter().all(|&x| (x as f64 - mean).abs() <= mean * tolerance),
        "replicas per live node {c:?}, mean {mean:.1}"
    );
}

#[test]
fn nine_nodes_in_three_zones_get_one_replica_per_zone_and_losing_a_zone_loses_no_quorum() {
    let mut s = sim(nodes(1..=9, 9), Policy::default(), 1000);
    assert_one_voter_per_zone(&s, 3);
    assert_balanced(&s, 0.10);
    assert!(s.run_until_settled(10 * MINUTE).is_some(), "a fresh placement has nothing to do");
    assert_eq!(s.log.added, 0);

    for n in [1, 4, 7] {
        s.kill(n); // all of zone z0
    }
    s.run_for(MINUTE * 3);
    assert_eq!(s.log.quorum_lost, vec![], "a range lost quorum with one zone down");
    assert!(s.cluster.ranges().all(|r| s.cluster.has_quorum(r)));
    // Dead for 2 minutes past dead-after, yet nothing moved: the only nodes left are in zones
    // that already hold a voter of every range. Every range says so.
    assert_eq!(s.log.added, 0, "a replacement went into a zone that has a voter");
    assert_eq!(s.log.unsatisfiable.len(), 1000);
    let why = s.log.unsatisfiable.values().next().unwrap();
    assert!(why.contains("dead node") && why.contains("survival zone"), "{why}");
}

#[test]
fn a_dead_nodes_replicas_are_replaced_after_dead_after_and_not_before() {
    let mut s = sim(nodes(1..=9, 9), Policy::default(), 1000);
    let victim = 5;
    let had = s.cluster.replicas_on(victim);
    assert!(had > 300, "{had}");
    s.kill(victim);
    s.run_for(MINUTE - 2_000);
    assert_eq!(s.log.added, 0, "replaced before dead-after");
    let took = s.run_until_settled(30 * MINUTE).expect("never settled");
    // Its replicas went to the other nodes of its zone, one snapshot at a time per sender
    // and receiver slot (2 each, 1 s per 64 MiB range): ~3 minutes for ~333 ranges.
    assert_eq!(s.log.added, had, "one new replica per lost one");
    assert!(took < 10 * MINUTE, "took {took} ms after dead-after");
    assert_eq!(s.log.quorum_lost, vec![]);
    assert_eq!(s.cluster.replicas_on(victim), 0);
    assert_one_voter_per_zone(&s, 3);
    println!(
        "replaced {had} replicas in {:.0} s after dead-after, {} MiB moved",
        took as f64 / 1e3,
        s.log.bytes_moved / MIB
    );
}

#[test]
fn three_new_nodes_get_an_even_share_without_quorum_loss_or_a_replica_moved_twice() {
    let mut s = sim(nodes(1..=9, 12), Policy::default(), 1000);
    for n in nodes(10..=12, 12) {
        s.cluster.add_node(n).unwrap();
    }
    let took = s.run_until_settled(6 * 60 * MINUTE).expect("never settled");
    assert_balanced(&s, 0.10);
    assert_eq!(s.log.quorum_lost, vec![]);
    assert_eq!(s.log.moved_twice, vec![], "a replica was moved twice");
    assert_one_voter_per_zone(&s, 3);
    // Each new node took about its share, and only that: 250 moves each.
    assert!(s.log.added <= 3 * 260, "{} moves", s.log.added);
    println!(
        "{} moves ({} MiB) in {:.0} s; replicas per node {:?}",
        s.log.added,
        s.log.bytes_moved / MIB,
        took as f64 / 1e3,
        counts(&s)
    );
}

#[test]
fn lease_preferences_put_leaders_in_the_preferred_zone_also_after_a_failover() {
    let c = |s: &str| s.parse::<Constraint>().unwrap();
    let policy = Policy { lease_preferences: vec![vec![c("+zone=z1")]], ..Policy::default() };
    let mut s = sim(nodes(1..=9, 9), policy, 1000);
    let in_z1 =
        |s: &Sim| s.cluster.ranges().filter(|r| r.leader.is_some_and(|l| zone_of(s, l) == "z1")).count();
    assert_eq!(in_z1(&s), 1000);
    // A z1 node dies: its ranges fail over to whichever voter wins, outside z1, until their
    // z1 replica is replaced; then the leases come back.
    s.kill(2);
    s.run_for(5_000);
    assert!(in_z1(&s) < 800, "{}", in_z1(&s));
    s.run_until_settled(30 * MINUTE).expect("never settled");
    assert!(in_z1(&s) >= 950, "{} of 1000 leaders in z1", in_z1(&s));
    // Leaders are spread over z1's live nodes.
    let per_node: Vec<usize> = [5, 8].iter().map(|n| s.cluster.leaders_on(*n)).collect();
    assert!(per_node.iter().all(|&l| l > 400), "{per_node:?}");
}

#[test]
fn region_survival_spreads_five_voters_over_three_regions_and_survives_losing_one() {
    // 3 regions of 3 nodes (each in its own zone).
    let mut s = sim(nodes(1..=9, 3), Policy::region_survival(), 1000);
    for r in s.cluster.ranges() {
        let regions: Vec<String> = r.voters().map(|n| s.cluster.node(n).unwrap().region()).collect();
        let distinct: BTreeSet<&String> = regions.iter().collect();
        assert_eq!(regions.len(), 5);
        assert!(distinct.len() >= 3, "range {}: {regions:?}", r.id);
        assert!(distinct.iter().all(|d| regions.iter().filter(|x| x == d).count() <= 2), "{regions:?}");
    }
    for n in [4, 5, 6] {
        s.kill(n); // region r1
    }
    s.run_for(3 * MINUTE);
    assert_eq!(s.log.quorum_lost, vec![], "a range lost quorum with one region down");
}

#[test]
fn decommissioning_empties_a_node_or_fails_fast_with_the_reason() {
    let mut s = sim(nodes(1..=9, 9), Policy::default(), 300);
    s.decommission(4);
    s.run_until_settled(60 * MINUTE).expect("never settled");
    assert_eq!(s.cluster.replicas_on(4), 0);
    assert_eq!(s.log.quorum_lost, vec![]);

    // Three nodes, three voters: nowhere to go.
    let mut s = sim(nodes(1..=3, 3), Policy::default(), 10);
    s.decommission(1);
    s.step();
    assert_eq!(s.log.added, 0);
    let why = s.log.unsatisfiable.get(&1).expect("range 1 reports why");
    assert!(why.contains("decommissioning node 1") && why.contains("no node can take it"), "{why}");
}

#[test]
fn placement_is_deterministic_for_a_seed() {
    let voters = |seed: u64| {
        let mut cluster = Cluster::default();
        nodes(1..=9, 9).into_iter().for_each(|n| cluster.add_node(n).unwrap());
        let mut config = SimConfig::default();
        config.planner.allocator.seed = seed;
        let mut s = Sim::new(cluster, Policy::default(), config);
        s.create_ranges(1, 50, MIB).unwrap();
        s.cluster.ranges().map(|r| r.voters().collect::<Vec<_>>()).collect::<Vec<_>>()
    };
    assert_eq!(voters(7), voters(7));
    assert_ne!(voters(7), voters(8));
    let _ = Role::Voter;
}

#[test]
fn the_example_scenario_runs_and_reports_moves_and_quorum() {
    let text = include_str!("../../../etc/placement-scenario.toml");
    let report = zonekv_placement::scenario::Scenario::from_toml(text).unwrap().run().unwrap();
    println!("{report}");
    assert!(report.contains("placed 1000 ranges"), "{report}");
    assert!(report.contains("t=60s: kill nodes [5]"), "{report}");
    assert!(!report.contains("LOST QUORUM"), "{report}");
    assert!(report.contains("settled at t="), "{report}");
    // The decommissioned node ends empty.
    let node1 = report.lines().rev().find(|l| l.trim_start().starts_with("node   1 ")).unwrap();
    assert!(node1.contains("decommissioning") && node1.contains("    0 replicas"), "{node1}");

    // Bad input: a clear error, nothing run.
    for (bad, why) in [
        ("nodes = [{ id = 1, locality = \"zone\" }]", "not key=value"),
        ("nodes = [{ id = 1 }, { id = 1 }]", "listed twice"),
        ("nodes = [{ id = 1 }]\npolicy = { survival = \"rack\" }", "zone or region"),
        ("nodes = [{ id = 1 }, { id = 2 }]", "3 replicas need 3 live nodes"),
        ("nodes = [{ id = 1 }]\nbogus = 1", "unknown field"),
    ] {
        let err = zonekv_placement::scenario::Scenario::from_toml(bad)
            .and_then(|s| s.run())
            .unwrap_err()
            .to_string();
        assert!(err.contains(why), "{bad:?}: {err}");
    }
}

/// `zonekv placement simulate --addr`: the events of a file played on a cluster as it is (a
/// live one's nodes and ranges), the file's nodes joining it.
#[test]
fn a_scenario_plays_on_a_given_cluster() {
    // Three nodes in three zones holding 30 ranges, one voter per zone.
    let live = sim(nodes(1..=3, 3), Policy::default(), 30).cluster;
    let text = "dead-after-secs = 60
nodes = [{ id = 4, locality = \"region=r0,zone=z0\" }]
events = [{ at-secs = 10, kill = [1] }]
";
    let report = zonekv_placement::scenario::Scenario::from_toml(text).unwrap().run_on(live).unwrap();
    println!("{report}");
    assert!(report.contains("starting from the live cluster: 4 nodes, 30 ranges"), "{report}");
    assert!(!report.contains("LOST QUORUM"), "{report}");
    // Node 1 dies; node 4, in its zone, takes every one of its replicas.
    let node4 = report.lines().rev().find(|l| l.trim_start().starts_with("node   4 ")).unwrap();
    assert!(node4.contains("   30 replicas"), "{node4}");
}
