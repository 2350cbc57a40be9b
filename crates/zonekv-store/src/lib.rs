//! A ZoneKV node's replicas as data: every range replica on the node, on one engine.
//!
//! [`Store`] opens an engine (any [`zonekv_engine::Engine`]: RocksDB in a node, `MemEngine` in
//! tests), checks it belongs to this node and starts a [`Replica`] for every range stored
//! there. A replica is one range's Raft group with its proposal queue (writes of many
//! clients batched into one log entry), its descriptor as applied and its quiescence state.
//! The store routes each key-value request to the replica of the range holding its key and
//! reads with the requested consistency; it creates, starts and destroys replicas.
//!
//! It knows nothing of gRPC or RocksDB: the network reaches it through the [`Transport`] trait
//! it defines (the server implements it), and its errors are domain errors ([`Error`]) that
//! the server maps to statuses. Decisions about where replicas go, when ranges split and who
//! is alive are the control plane's (`zonekv-control`); the store carries them out.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), zonekv_store::Error> {
//! use std::sync::Arc;
//! use zonekv_store::{NoTransport, ReadConsistency, Store, StoreConfig};
//!
//! let config = StoreConfig::single_node(zonekv_raft::NodeId::new(1));
//! let store = Store::open(zonekv_engine::MemEngine::new(), config, Arc::new(NoTransport)).await?;
//! store.bootstrap_alone("127.0.0.1:7001").await?;
//! store.put("user/1".into(), "alice".into()).await?;
//! let read = store.get(b"user/1", ReadConsistency::Linearizable).await?;
//! assert_eq!(read.value.as_deref(), Some(&b"alice"[..]));
//! store.shutdown().await;
//! store.close();
//! # Ok(()) }
//! ```

mod budget;
mod config;
mod error;
mod proposer;
mod read;
mod replica;
mod replicas;
mod space;
mod status;
mod store;
mod transport;

pub use budget::{Charge, MemoryBudget};
pub use config::{BatchLimits, Limits, MAX_KEY_BYTES, StoreConfig, StoreHooks};
pub use error::{Error, LeaderHint, Result};
pub use read::{ReadConsistency, Scan, ScanPage};
pub use replica::{Quiet, Replica, election_rank, voters};
pub use status::{Member, RangeStatus, Role, state_name};
pub use store::{CasOutcome, RangeLocation, Served, Store, stored_ranges, validate};
pub use transport::{LinkTarget, NoTransport, RaftLink, RpcResult, Snapshot, Transport};
