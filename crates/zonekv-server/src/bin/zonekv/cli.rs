//! Command-line syntax.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// ZoneKV: a Raft-replicated, range-partitioned key-value store.
#[derive(Parser)]
#[command(name = "zonekv", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// How to connect (docs/security.md): every command takes these.
#[derive(Args, Clone, Debug)]
pub struct SecurityArgs {
    /// The certificates directory: `ca.crt` and, for `start`, `node.crt`/`node.key`; for
    /// client commands, `client.USER.crt`/`.key`; for `cert`, where files are created.
    #[arg(long, global = true, env = "ZONEKV_CERTS_DIR")]
    pub certs_dir: Option<PathBuf>,
    /// The client user whose certificate client commands present. Default: root.
    #[arg(long, global = true, env = "ZONEKV_USER", default_value = "root")]
    pub user: String,
    /// No TLS and no authentication: `start` serves plaintext to anyone who reaches the port;
    /// client commands dial plaintext. For a throwaway cluster on loopback only.
    #[arg(long, global = true, env = "ZONEKV_INSECURE")]
    pub insecure: bool,
}

#[derive(Subcommand)]
pub enum Command {
    /// Runs a node until SIGINT or SIGTERM.
    Start(StartArgs),
    /// Bootstraps a new cluster from a list of nodes (all must be running).
    Init {
        /// Node to send the request to (default: the first listed).
        #[arg(long)]
        addr: Option<String>,
        /// The members: ID=HOST:PORT,ID=HOST:PORT,...
        #[arg(long)]
        nodes: String,
    },
    /// Prints a node's view: members, leader, term, commit and applied index.
    Status {
        /// The node to ask.
        #[arg(long, default_value = "127.0.0.1:7001")]
        addr: String,
    },
    /// Lists the ranges a node holds: span, leader, applied index, estimated size, replicas.
    Ranges {
        /// The node to ask.
        #[arg(long, default_value = "127.0.0.1:7001")]
        addr: String,
    },
    /// Splits the range holding KEY at KEY (send to the leader; redirects are followed).
    Split {
        /// A node of the cluster.
        #[arg(long, default_value = "127.0.0.1:7001")]
        addr: String,
        /// The first key of the new range.
        key: String,
    },
    /// Moves a range's voter from one node to another (at the range's leader).
    MoveReplica {
        /// A node of the cluster.
        #[arg(long, default_value = "127.0.0.1:7001")]
        addr: String,
        /// The range (see `zonekv ranges`).
        #[arg(long)]
        range: u64,
        /// The node whose replica leaves.
        #[arg(long)]
        from: u64,
        /// The node that takes it (a member without a replica of the range).
        #[arg(long)]
        to: u64,
    },
    /// Decommissions a node: the placement driver moves every replica off it and places none
    /// there (`zonekv placement show` follows the progress).
    Decommission {
        /// A node of the cluster.
        #[arg(long, default_value = "127.0.0.1:7001")]
        addr: String,
        /// The node to empty.
        node: u64,
        /// Stop decommissioning it instead: it takes replicas again.
        #[arg(long)]
        cancel: bool,
    },
    /// Key-value commands.
    Kv(KvArgs),
    /// Grants a client user reads (`--read-only`) or reads and writes (`--read-write`) of the
    /// keys under a prefix, or with `--revoke` removes that grant. Users other than root
    /// reach only the keys granted to them.
    Grant {
        /// A node of the cluster.
        #[arg(long, default_value = "127.0.0.1:7001")]
        addr: String,
        /// The user (the common name of its client certificate).
        user: String,
        /// The key prefix ("" for every key).
        #[arg(long)]
        prefix: String,
        /// Reads and writes.
        #[arg(long, conflicts_with = "read_only")]
        read_write: bool,
        /// Reads only.
        #[arg(long)]
        read_only: bool,
        /// Remove the grant of this prefix instead.
        #[arg(long, conflicts_with_all = ["read_write", "read_only"])]
        revoke: bool,
    },
    /// Lists every user's grants.
    Grants {
        /// A node of the cluster.
        #[arg(long, default_value = "127.0.0.1:7001")]
        addr: String,
    },
    /// Creates and lists certificates (docs/security.md): the CA, node and client certificates
    /// in `--certs-dir`.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Replica placement.
    #[command(subcommand)]
    Placement(PlacementCommand),
    /// Starts a 3-node cluster in this process, writes, kills the leader, and checks that
    /// nothing acknowledged was lost.
    Demo {
        /// Keep data here instead of a temporary directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum PlacementCommand {
    /// Runs the real allocator on a topology with scripted events (kill, add, decommission,
    /// policy changes) in fake time; prints the moves, bytes moved, time to settle and any
    /// moment a range lacks a quorum. File format: etc/placement-scenario.toml.
    Simulate {
        /// The scenario file (TOML).
        file: PathBuf,
        /// Start from this live cluster's nodes and ranges (as its nodes report them) instead
        /// of the file's nodes and `ranges`; the file's events, policy and nodes apply on top.
        #[arg(long)]
        addr: Option<String>,
    },
    /// Every range a node holds: replicas with their localities, leader, and whether the
    /// placement policy holds; then how many ranges violate it or lack a quorum.
    Show {
        /// The node whose view to judge.
        #[arg(long, default_value = "127.0.0.1:7001")]
        addr: String,
        /// A policy file (the `[policy]` keys of etc/placement-scenario.toml); default: 3
        /// voters, survival zone.
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// Sets the placement policy of the keys [START, END) (replicated in the meta range; the
    /// driver splits ranges at the bounds and places the ranges inside by it). Refused, naming
    /// the shortfall, if the live nodes cannot satisfy it.
    Set(SetPolicyArgs),
    /// The span policies set (other ranges follow each node's `placement.policy`).
    Policies {
        /// A node of the cluster.
        #[arg(long, default_value = "127.0.0.1:7001")]
        addr: String,
    },
    /// Why each replica and the leader of a range are where they are, and what the placement
    /// driver would do next.
    Explain {
        /// The node whose view to judge.
        #[arg(long, default_value = "127.0.0.1:7001")]
        addr: String,
        /// The range id (see `zonekv ranges`).
        range: u64,
        /// A policy file, as for `show`.
        #[arg(long)]
        policy: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct SetPolicyArgs {
    /// A node of the cluster.
    #[arg(long, default_value = "127.0.0.1:7001")]
    pub addr: String,
    /// First key of the span.
    #[arg(long, default_value = "")]
    pub start: String,
    /// First key after the span; default: the end of the keyspace.
    #[arg(long)]
    pub end: Option<String>,
    /// Voting replicas (default 3; 5 with `--survival region`).
    #[arg(long)]
    pub voters: Option<u32>,
    /// Non-voting replicas.
    #[arg(long, default_value_t = 0)]
    pub non_voters: u32,
    /// A rule for every replica: `+key=value[:count]` (required) or `-key=value` (prohibited).
    /// Repeatable.
    #[arg(long = "constraint")]
    pub constraints: Vec<String>,
    /// The same, for voters only. Repeatable.
    #[arg(long = "voter-constraint")]
    pub voter_constraints: Vec<String>,
    /// Where the leader goes: a comma-separated list of `+key=value`; repeat in order of
    /// preference.
    #[arg(long = "lease-preference")]
    pub lease_preferences: Vec<String>,
    /// `zone` (voters in distinct zones; the default) or `region` (at most 2 of 5 per region).
    #[arg(long)]
    pub survival: Option<String>,
    /// Remove the span's policy instead.
    #[arg(long)]
    pub clear: bool,
}

#[derive(Args)]
pub struct StartArgs {
    /// TOML configuration file (see etc/zonekv.toml); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// This node's id (not 0, never reused). Default 1.
    #[arg(long)]
    pub node_id: Option<u64>,
    /// Address to serve gRPC on. Default 127.0.0.1:7001.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Address peers and clients use to reach this node. Default: the listen address.
    #[arg(long)]
    pub advertise_addr: Option<String>,
    /// Data directory. Default ./zonekv-data.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Join the cluster that this node belongs to at startup.
    #[arg(long)]
    pub join: Option<String>,
    /// Where this node runs, most global tier first: region=eu-west,zone=eu-west-1a.
    #[arg(long)]
    pub locality: Option<String>,
}

#[derive(Args)]
pub struct KvArgs {
    /// Comma-separated node addresses.
    #[arg(long, default_value = "127.0.0.1:7001", global = true)]
    pub endpoints: String,
    #[command(subcommand)]
    pub command: KvCommand,
}

#[derive(Subcommand)]
pub enum KvCommand {
    /// Reads a key.
    Get {
        key: String,
        /// Serve from any replica, possibly stale.
        #[arg(long)]
        stale: bool,
    },
    /// Writes a key.
    Put { key: String, value: String },
    /// Removes a key.
    Del { key: String },
    /// Lists keys in [START, END).
    Scan {
        /// First key (inclusive); default: the beginning.
        #[arg(long)]
        start: Option<String>,
        /// End key (exclusive); default: the end.
        #[arg(long)]
        end: Option<String>,
        /// Most pairs.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Descending order.
        #[arg(long)]
        reverse: bool,
        /// Serve from any replica, possibly stale.
        #[arg(long)]
        stale: bool,
    },
    /// Sets KEY to NEW if it holds EXPECTED.
    Cas {
        key: String,
        /// Required current value; omit to require that the key does not exist.
        #[arg(long)]
        expected: Option<String>,
        /// New value; omit to delete the key.
        #[arg(long)]
        new: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum CertCommand {
    /// Creates the cluster's CA: `ca.crt` and `ca.key` (keep the key off the nodes if you can).
    CreateCa {
        /// Validity in days. Default 3650 (10 years).
        #[arg(long, default_value_t = 3650)]
        lifetime_days: u32,
        /// Replace an existing CA (every certificate it signed stops being trusted).
        #[arg(long)]
        overwrite: bool,
    },
    /// Creates `node.crt` and `node.key` for one node, signed by the CA.
    CreateNode {
        /// The node's id (its `node-id`): the certificate lets it speak only for that node.
        #[arg(long)]
        node_id: u64,
        /// A host name or IP address peers and clients dial the node at. Repeatable; at least one.
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        #[command(flatten)]
        leaf: LeafArgs,
    },
    /// Creates `client.USER.crt` and `client.USER.key`, signed by the CA. `root` may call the
    /// admin API; other users reach the keys granted to them (`zonekv grant`).
    CreateClient {
        /// The user name.
        user: String,
        #[command(flatten)]
        leaf: LeafArgs,
    },
    /// Lists the certificates in `--certs-dir`: whom each identifies, hosts, validity.
    List,
}

/// How a node or client certificate is issued.
#[derive(Args)]
pub struct LeafArgs {
    /// Where `ca.crt` and `ca.key` are. Default: `--certs-dir`.
    #[arg(long)]
    pub ca_dir: Option<PathBuf>,
    /// Validity in days. Default 1826 (5 years).
    #[arg(long, default_value_t = 1826)]
    pub lifetime_days: u32,
    /// Replace an existing certificate (rotation).
    #[arg(long)]
    pub overwrite: bool,
}
