//! The recorded history of a run: every client operation with its invocation and completion
//! times and what the client learned, kept even when the outcome is unknown.

use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::linearizable::{Entry, RegOp, Value};

/// What the client learned about an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// It completed; `RegOp` carries its result.
    Ok,
    /// It definitely did not take effect (the node said so: not leader, unavailable).
    Fail,
    /// It may or may not have taken effect (timeout, leadership lost mid-flight).
    Unknown,
}

/// One register operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The client that ran it.
    pub client: u32,
    /// The register (key index).
    pub key: u32,
    /// Invocation, microseconds since the start of the run.
    pub call_us: u64,
    /// Completion, microseconds since the start of the run.
    pub ret_us: u64,
    /// The operation and its result.
    pub op: RegOp,
    /// Whether the result is known.
    pub status: Status,
}

/// A thread-safe history of register operations.
pub struct History {
    start: Instant,
    records: Mutex<Vec<Record>>,
}

impl History {
    /// An empty history whose clock starts now.
    pub fn new() -> Self {
        Self { start: Instant::now(), records: Mutex::new(Vec::new()) }
    }

    /// Microseconds since the history started.
    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// Adds a finished (or given-up) operation.
    pub fn push(&self, record: Record) {
        self.records.lock().unwrap_or_else(|p| p.into_inner()).push(record);
    }

    /// Every record so far.
    pub fn records(&self) -> Vec<Record> {
        self.records.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

/// The checker's input for `key`: failed operations dropped (they did nothing), reads with
/// unknown outcome dropped (they change nothing), unknown writes kept without a return time.
pub fn register_entries(records: &[Record], key: u32) -> Vec<Entry> {
    records
        .iter()
        .filter(|r| r.key == key)
        .filter_map(|r| match (r.status, r.op) {
            (Status::Fail, _) | (Status::Unknown, RegOp::Read(_)) => None,
            (Status::Ok, op) => Some(Entry { call: r.call_us, ret: Some(r.ret_us), op }),
            (Status::Unknown, op) => Some(Entry { call: r.call_us, ret: None, op }),
        })
        .collect()
}

/// Encodes a register value as stored in ZoneKV.
pub fn encode(v: u64) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(&v.to_be_bytes())
}

/// Decodes a stored register value.
pub fn decode(b: Option<&[u8]>) -> Result<Value, String> {
    match b {
        None => Ok(None),
        Some(b) => <[u8; 8]>::try_from(b)
            .map(|a| Some(u64::from_be_bytes(a)))
            .map_err(|_| format!("a register holds {} bytes, not 8", b.len())),
    }
}
