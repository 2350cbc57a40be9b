//! A ZoneKV node's control plane: the decisions about the node's replicas that are not
//! requests from clients. Who is alive (`liveness`), which idle ranges stop their Raft timers
//! (`quiesce`), when a range splits (`splitter`, `split`), moving replicas (`mover`) and
//! deleting the ones moved away (`cleanup`), the cluster's membership (`membership`), what
//! the meta range records for placement (`registry`, changed through `registrar`) and the
//! placement driver that keeps every range where its policy wants it (`driver`, carried out
//! by `place`).
//!
//! Every component works on narrow handles: the [`zonekv_store::Store`] (the node's replicas,
//! through their methods), a [`MetaClient`] for the meta range wherever it leads, and the
//! [`Peers`] trait for calls to other nodes, which the server implements over gRPC. Nothing
//! here touches the network or the engine's keys directly, and nothing holds a node-wide
//! struct: each background loop gets what it reads and acts through, and ends when the store
//! stops. [`ControlPlane`] builds the components and starts the loops.

mod cleanup;
mod config;
mod driver;
mod error;
pub mod grants;
mod guard;
mod liveness;
mod membership;
mod meta;
mod mover;
mod peers;
mod place;
mod quiesce;
mod registrar;
mod registry;
mod split;
mod splitter;

use std::sync::Arc;

pub use config::{ControlConfig, PlacementConfig, SplitConfig};
pub use driver::{View, ViewSource, What};
pub use error::{Error, PeerError, Result};
pub use guard::check_create_replica;
pub use liveness::{Disk, Liveness, Peer, PeerState, Ping};
pub use membership::Membership;
pub use meta::MetaClient;
pub use mover::Mover;
pub use peers::Peers;
pub use place::{PlaceStep, Placer, StepAction};
pub use registrar::Registrar;
pub use registry::{Registry, SpanPolicy};
pub use split::Splits;
pub use splitter::split_key;
use tokio::task::JoinHandle;
use zonekv_engine::Engine;
use zonekv_store::Store;

/// The control plane of one node: its components, each a cheap handle, and the background
/// loops they run.
pub struct ControlPlane<E: Engine> {
    config: ControlConfig,
    store: Store<E>,
    peers: Arc<dyn Peers>,
    liveness: Arc<Liveness>,
    meta: MetaClient<E>,
    members: Membership<E>,
    splits: Splits<E>,
    mover: Mover<E>,
    placer: Placer<E>,
    registrar: Registrar<E>,
    views: ViewSource<E>,
}

impl<E: Engine> ControlPlane<E> {
    /// The control plane of the node `store` belongs to, calling other nodes through `peers`.
    pub fn new(store: Store<E>, peers: Arc<dyn Peers>, config: ControlConfig) -> Self {
        let liveness = Arc::new(Liveness::new(config.liveness_timeout));
        let meta = MetaClient::new(store.clone(), peers.clone(), config.addr.clone());
        let members = Membership::new(store.clone());
        let splits = Splits::new(store.clone(), meta.clone());
        let mover = Mover::new(store.clone(), meta.clone(), peers.clone());
        let placer = Placer::new(store.clone(), meta.clone(), mover.clone(), splits.clone());
        let views = ViewSource {
            store: store.clone(),
            liveness: liveness.clone(),
            locality: config.locality.clone(),
            data_dir: config.data_dir.clone(),
        };
        let registrar =
            Registrar::new(store.clone(), meta.clone(), views.clone(), config.placement.policy.clone());
        Self { config, store, peers, liveness, meta, members, splits, mover, placer, registrar, views }
    }

    /// Starts the background loops: liveness pings and quiescence (if `quiesce`), removed
    /// replica cleanup, the placement driver, automatic splits (if a threshold is set). Each
    /// ends when the store stops; the handles let the node wait for them.
    pub fn spawn_loops(&self) -> Vec<JoinHandle<()>> {
        let c = &self.config;
        let mut loops = Vec::new();
        if c.quiesce {
            let pinger = liveness::Pinger {
                store: self.store.clone(),
                members: self.members.clone(),
                peers: self.peers.clone(),
                locality: c.locality.clone(),
                data_dir: c.data_dir.clone(),
                interval: c.liveness_interval,
            };
            loops.push(tokio::spawn(pinger.run()));
            let pace = quiesce::Pace {
                interval: c.liveness_interval,
                // Long enough to span a candidate's next few campaigns (one per election timeout).
                campaign_window: 2 * c.election_timeout.1,
                // Time for one election to finish before the next survivor may start one.
                stagger: c.election_timeout.0,
            };
            let quiescer =
                quiesce::Quiescer { store: self.store.clone(), liveness: self.liveness.clone(), pace };
            loops.push(tokio::spawn(quiescer.run()));
        }
        let cleanup = cleanup::Cleanup {
            store: self.store.clone(),
            members: self.members.clone(),
            peers: self.peers.clone(),
        };
        loops.push(tokio::spawn(cleanup.run()));
        let driver = driver::Driver {
            store: self.store.clone(),
            views: self.views.clone(),
            placer: self.placer.clone(),
            peers: self.peers.clone(),
            members: self.members.clone(),
            registrar: self.registrar.clone(),
            config: c.placement.clone(),
            snapshot_timeout: c.snapshot_timeout,
        };
        loops.push(tokio::spawn(driver.run()));
        if c.split.range_max_keys > 0 || c.split.range_max_bytes > 0 {
            let splitter = splitter::Splitter {
                store: self.store.clone(),
                splits: self.splits.clone(),
                config: c.split.clone(),
            };
            loops.push(tokio::spawn(splitter.run()));
        }
        loops
    }

    /// The liveness table (pings received land here).
    pub fn liveness(&self) -> &Arc<Liveness> {
        &self.liveness
    }

    /// Proposals to the meta range.
    pub fn meta(&self) -> &MetaClient<E> {
        &self.meta
    }

    /// Cluster membership.
    pub fn members(&self) -> &Membership<E> {
        &self.members
    }

    /// Splits.
    pub fn splits(&self) -> &Splits<E> {
        &self.splits
    }

    /// Replica moves.
    pub fn mover(&self) -> &Mover<E> {
        &self.mover
    }

    /// Placement steps on ranges this node leads.
    pub fn placer(&self) -> &Placer<E> {
        &self.placer
    }

    /// The registry: decommissioning, span policies.
    pub fn registrar(&self) -> &Registrar<E> {
        &self.registrar
    }

    /// The cluster as this node sees it.
    pub fn views(&self) -> &ViewSource<E> {
        &self.views
    }
}
