//! The clients: register operations (read, write, compare-and-swap) over a few keys, and
//! append-only set adds, through a [`Backend`], recording everything they learn.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Mutex;

use crate::backend::Backend;
use crate::history::{self, History, Record, Status};
use crate::linearizable::{RegOp, Value};
use crate::set::{self, AddStatus};

/// The storage key of register `k`.
pub fn register_key(k: u32) -> Bytes {
    Bytes::from(format!("register/{k}"))
}

/// A key to split the keyspace at, chosen so that ranges divide the default workload (4
/// registers, 2 sets): each split moves live keys into a new range.
pub fn split_point(rng: &mut impl Rng) -> Bytes {
    const POINTS: [&str; 5] = ["register/1", "register/2", "register/3", "s", "set/1"];
    Bytes::from_static(POINTS[rng.random_range(0..POINTS.len())].as_bytes())
}

/// The storage key of set `k`.
pub fn set_key(k: u32) -> Bytes {
    Bytes::from(format!("set/{k}"))
}

/// One register client: until `stop`, random operations on random keys.
pub async fn register_client(
    id: u32,
    seed: u64,
    keys: u32,
    cluster: Arc<dyn Backend>,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ (u64::from(id) << 40));
    let mut counter = 0u64;
    let mut last_seen: BTreeMap<u32, Value> = BTreeMap::new();
    while !stop.load(Ordering::Relaxed) {
        let key = rng.random_range(0..keys);
        counter += 1;
        let fresh = (u64::from(id) + 1) << 32 | counter;
        let k = register_key(key);
        let call_us = history.now_us();
        let roll = rng.random_range(0..10);
        let (op, result) = if roll < 5 {
            match cluster.get(&mut rng, &k).await.map(|v| history::decode(v.as_deref())) {
                Ok(Ok(v)) => {
                    last_seen.insert(key, v);
                    (RegOp::Read(v), Ok(()))
                }
                Ok(Err(why)) => panic!("register {key} holds a malformed value: {why}"),
                Err(s) => (RegOp::Read(None), Err(s)),
            }
        } else if roll < 8 {
            (RegOp::Write(fresh), cluster.put(&mut rng, &k, history::encode(fresh)).await)
        } else {
            let from = last_seen.get(&key).copied().flatten();
            match cluster.cas(&mut rng, &k, from.map(history::encode), history::encode(fresh)).await {
                Ok(ok) => (RegOp::Cas { from, to: fresh, ok }, Ok(())),
                Err(s) => (RegOp::Cas { from, to: fresh, ok: false }, Err(s)),
            }
        };
        let status = match result {
            Ok(()) => Status::Ok,
            Err(s) => s,
        };
        history.push(Record { client: id, key, call_us, ret_us: history.now_us(), op, status });
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..5))).await;
    }
}

/// One add as a set client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AddRecord {
    /// The set (key index).
    pub set: u32,
    /// How it ended.
    pub status: AddStatus,
    /// First read, microseconds since the start of the run.
    pub call_us: u64,
    /// Outcome known, microseconds since the start of the run.
    pub ret_us: u64,
}

/// Adds recorded by the set clients: element → what happened.
pub type Adds = Arc<Mutex<BTreeMap<u64, AddRecord>>>;

/// One set client: until `stop`, adds fresh elements to random sets by read + compare-and-swap.
pub async fn set_client(
    id: u32,
    seed: u64,
    sets: u32,
    cluster: Arc<dyn Backend>,
    adds: Adds,
    clock: Arc<History>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ (u64::from(id) << 48) ^ 0x5e7);
    let mut counter = 0u64;
    while !stop.load(Ordering::Relaxed) {
        counter += 1;
        let element = (u64::from(id) + 1) << 40 | counter;
        let set = rng.random_range(0..sets);
        let call_us = clock.now_us();
        let status = add(cluster.as_ref(), &mut rng, &set_key(set), element).await;
        adds.lock().await.insert(element, AddRecord { set, status, call_us, ret_us: clock.now_us() });
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..10))).await;
    }
}

/// One add: read the set, swap in the set plus `element`; retry lost races a few times.
async fn add(cluster: &dyn Backend, rng: &mut StdRng, key: &Bytes, element: u64) -> AddStatus {
    for _ in 0..20 {
        let Ok(current) = cluster.get(rng, key).await else { continue };
        let mut elements = match current.as_deref().map(set::decode) {
            Some(Ok(e)) => e,
            Some(Err(why)) => panic!("set {key:?} holds a malformed value: {why}"),
            None => Vec::new(),
        };
        elements.push(element);
        match cluster.cas(rng, key, current, set::encode(&elements)).await {
            Ok(true) => return AddStatus::Ok,
            Ok(false) | Err(Status::Fail) => continue,
            Err(_) => return AddStatus::Unknown,
        }
    }
    AddStatus::Fail
}
