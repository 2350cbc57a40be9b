//! An async Rust client for ZoneKV.
//!
//! [`Client`] talks to a cluster given any of its nodes' addresses. It learns which range holds
//! a key and where that range's replicas are (`LookupRange`), sends linearizable requests to the
//! range's leader, follows "not leader" redirects, looks a range up again when a split moved
//! its keys ("range key mismatch"), continues scans from range to range, and retries with
//! backoff whatever is
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
mod ranges;
mod retry;

pub use admin::{
    AdminClient, ListPoliciesResponse, Policy, RangeStatus, Replica, ReplicaRole, SpanPolicy, StatusResponse,
};
pub use client::{CasOutcome, Client, ClientConfig, Mutation, ReadConsistency, ScanOptions, ScanPage};
pub use error::{ClientError, Result};
