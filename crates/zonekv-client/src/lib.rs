//! An async Rust client for ZoneKV.
//!
//! [`Client`] talks to a cluster given any of its nodes' addresses. It sends linearizable
//! requests to the leader, follows "not leader" redirects, and retries with backoff whatever is
//! safe to retry: every read, and writes that provably had no effect (the server said so, or the
//! connection was refused). A write whose outcome cannot be known (a timeout, a connection lost
//! mid-request) is never retried behind your back: it fails with
//! [`ClientError::OutcomeUnknown`] so the caller can decide.
//!
//! ```no_run
//! # async fn run() -> Result<(), zonekv_client::ClientError> {
//! let client = zonekv_client::Client::new(["127.0.0.1:7001", "127.0.0.1:7002"])?;
//! client.put("greeting", "hello").await?;
//! assert_eq!(client.get("greeting").await?.as_deref(), Some(&b"hello"[..]));
//! # Ok(()) }
//! ```

mod admin;
mod client;
mod error;
mod mux;
mod retry;

pub use admin::{AdminClient, RangeStatus, Replica, StatusResponse};
pub use client::{CasOutcome, Client, ClientConfig, Mutation, ReadConsistency, ScanOptions, ScanPage};
pub use error::{ClientError, Result};
