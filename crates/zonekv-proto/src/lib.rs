//! Generated protobuf messages and gRPC stubs for ZoneKV, one module per versioned package
//! under the workspace's `proto/` directory.
//!
//! - [`kv::v1`]: the public key-value API (`zonekv.kv.v1.Kv`);
//! - [`raft::v1`]: the internal Raft transport between nodes (`zonekv.raft.v1.RaftTransport`)
//!   and the on-disk encoding of Raft log entries;
//! - [`admin::v1`]: cluster administration (`zonekv.admin.v1.Admin`).
//!
//! The gRPC service stubs and the status conversion come with the `grpc` feature; without it
//! the crate is the messages alone (what the storage layers need).
//!
//! Only wire and storage encodings live here; conversions to the core types are in the crates
//! that own those types.

#![allow(missing_docs, unused_qualifications, clippy::all, clippy::pedantic)]

/// The public key-value API.
pub mod kv {
    /// Version 1.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/zonekv.kv.v1.rs"));
    }
}

/// The internal Raft transport and log-entry encoding.
pub mod raft {
    /// Version 1.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/zonekv.raft.v1.rs"));
    }
}

/// Cluster administration.
pub mod admin {
    /// Version 1.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/zonekv.admin.v1.rs"));
    }
}

/// gRPC metadata keys ZoneKV sets on error statuses.
pub mod metadata {
    /// The leader's node id, on `UNAVAILABLE` not-leader errors.
    pub const LEADER_ID: &str = "zonekv-leader-id";
    /// The leader's address (`host:port`), on `UNAVAILABLE` not-leader errors.
    pub const LEADER_ADDR: &str = "zonekv-leader-addr";
    /// Set to `true` on errors returned before anything was proposed: the request had no
    /// effect and may be retried anywhere, even if it is not idempotent.
    pub const NOT_APPLIED: &str = "zonekv-not-applied";
    /// Set to `true` on "range key mismatch" errors: the key is not in the range that
    /// received the request; refresh the range and retry.
    pub const RANGE_MISMATCH: &str = "zonekv-range-mismatch";
}

#[cfg(feature = "grpc")]
/// The status a unary call returns for an error that a stream carries in-band: same code,
/// message and metadata. The node builds its statuses through this too, so both paths agree.
impl From<kv::v1::Error> for tonic::Status {
    fn from(e: kv::v1::Error) -> Self {
        let mut status = tonic::Status::new(tonic::Code::from(e.code), e.message);
        let md = status.metadata_mut();
        if e.leader_id != 0 {
            md.insert(
                metadata::LEADER_ID,
                e.leader_id.to_string().parse().expect("digits are valid metadata"),
            );
        }
        if !e.leader_addr.is_empty()
            && let Ok(addr) = e.leader_addr.parse()
        {
            md.insert(metadata::LEADER_ADDR, addr);
        }
        if e.not_applied {
            md.insert(metadata::NOT_APPLIED, "true".parse().expect("valid metadata"));
        }
        if e.range_mismatch {
            md.insert(metadata::RANGE_MISMATCH, "true".parse().expect("valid metadata"));
        }
        status
    }
}
