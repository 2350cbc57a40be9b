//! Test hooks of a node: the fault table its transport consults and the unsafe switches of
//! the negative controls. With the `test-hooks` feature a node can be started with them
//! ([`NodeOptions`], `Node::start_with`); without it (production builds) they cannot be set,
//! and [`FaultTable`] is always empty.

use std::time::Duration;

use tokio::sync::watch;
use zonekv_raft::{NodeId, RangeDescriptor, ReplicaId};

/// The fate of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it, after `delay`, and a second copy if `duplicate`.
    Deliver {
        /// Time to hold the message first.
        delay: Duration,
        /// Send a second copy (unary RPCs only).
        duplicate: bool,
    },
    /// Lose it.
    Drop,
}

impl Verdict {
    /// Send it now, once.
    pub const DELIVER: Verdict = Verdict::Deliver { delay: Duration::ZERO, duplicate: false };
}

/// The fault table a node's transport consults before every outgoing message: the tests'
/// shared table, or none.
#[derive(Clone, Default)]
pub(crate) struct FaultTable {
    #[cfg(feature = "test-hooks")]
    table: Option<crate::NetFaults>,
}

impl FaultTable {
    #[cfg(feature = "test-hooks")]
    pub(crate) fn new(table: Option<crate::NetFaults>) -> Self {
        Self { table }
    }

    /// Whether any fault can be injected (a table is set).
    pub(crate) fn is_set(&self) -> bool {
        #[cfg(feature = "test-hooks")]
        return self.table.is_some();
        #[cfg(not(feature = "test-hooks"))]
        false
    }

    /// The fate of the next message from node `from` to node `to`.
    pub(crate) fn decide(&self, from: NodeId, to: NodeId) -> Verdict {
        #[cfg(feature = "test-hooks")]
        if let Some(t) = &self.table {
            return t.decide(from, to);
        }
        let _ = (from, to);
        Verdict::DELIVER
    }

    /// The faults of the link from this node (`node`) to replica `to` of a range whose
    /// descriptor `desc` follows (Raft addresses replicas, the table nodes; membership changes
    /// add replicas, so the mapping is looked up at every decision). `None` without a table.
    pub(crate) fn link(
        &self,
        node: NodeId,
        desc: &watch::Receiver<RangeDescriptor>,
        to: ReplicaId,
    ) -> Option<LinkFaults> {
        self.is_set().then(|| LinkFaults { table: self.clone(), node, desc: desc.clone(), to })
    }
}

/// The fault table as one link from a replica on this node sees it.
#[derive(Clone)]
pub(crate) struct LinkFaults {
    table: FaultTable,
    node: NodeId,
    desc: watch::Receiver<RangeDescriptor>,
    to: ReplicaId,
}

impl LinkFaults {
    pub(crate) fn decide(&self) -> Verdict {
        let to = self.desc.borrow().node_of(self.to);
        self.table.decide(self.node, to)
    }
}

/// Settings of a node that only code can give, not a config file: test and fault-injection
/// hooks. The default is a normal node.
#[cfg(feature = "test-hooks")]
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// Fault table consulted by the Raft transport before every outgoing message.
    pub faults: Option<crate::NetFaults>,
    /// **Unsafe, for proving the checkers can fail:** serve linearizable reads from the local
    /// applied state on any replica, without confirming leadership or a read index.
    pub unsafe_local_reads: bool,
    /// **Unsafe, for proving the crash tests can fail:** report Raft log appends durable
    /// without an fsync.
    pub unsafe_ack_before_sync: bool,
    /// Disk faults to inject into the nodes' engines (failed or stalled syncs, a full disk),
    /// one switchboard per node, switched at run time through this table.
    pub disk_faults: Option<crate::DiskFaultTable>,
}

/// What a node is started with: its hooks, all off without the `test-hooks` feature.
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    pub(crate) faults: FaultTable,
    pub(crate) store: zonekv_store::StoreHooks,
    /// The switchboard of the node's engine wrapper.
    #[cfg(feature = "test-hooks")]
    pub(crate) disk: crate::DiskFaultTable,
}

#[cfg(feature = "test-hooks")]
impl From<NodeOptions> for Hooks {
    fn from(o: NodeOptions) -> Self {
        Hooks {
            faults: FaultTable::new(o.faults),
            store: zonekv_store::StoreHooks {
                unsafe_local_reads: o.unsafe_local_reads,
                unsafe_ack_before_sync: o.unsafe_ack_before_sync,
            },
            disk: o.disk_faults.unwrap_or_default(),
        }
    }
}
