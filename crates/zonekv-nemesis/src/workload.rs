//! The clients: register operations (read, write, compare-and-swap) over a few keys, and
//! append-only set adds, against random nodes, recording everything they learn.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Mutex;
use zonekv_server::{Error, NodeHandle, ReadConsistency};

use crate::history::{self, History, Record, Status};
use crate::linearizable::{RegOp, Value};
use crate::nemesis::{Cluster, NodeId};
use crate::set::{self, AddStatus};

/// Longest a client waits for one operation before calling its outcome unknown.
pub const OP_TIMEOUT: Duration = Duration::from_secs(2);

/// The storage key of register `k`.
pub fn register_key(k: u32) -> Bytes {
    Bytes::from(format!("register/{k}"))
}

/// The storage key of set `k`.
pub fn set_key(k: u32) -> Bytes {
    Bytes::from(format!("set/{k}"))
}

/// Whether a failed call certainly changed nothing.
fn status_of(e: &Error) -> Status {
    match e {
        Error::NotLeader { .. }
        | Error::Unavailable(_)
        | Error::NotInitialized(_)
        | Error::InvalidArgument(_) => Status::Fail,
        _ => Status::Unknown,
    }
}

/// Runs `call` at a random running node, then (once) at the leader it names; times out as
/// unknown. Attempts refused with "not leader" changed nothing, so one op may take two.
async fn at_some_node<T, F, Fut>(cluster: &Cluster, rng: &mut StdRng, call: F) -> Result<T, Status>
where
    F: Fn(NodeHandle) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut target: NodeId = cluster.ids[rng.random_range(0..cluster.ids.len())];
    for _ in 0..2 {
        let Some(h) = cluster.handle(target).await else { return Err(Status::Fail) };
        match tokio::time::timeout(OP_TIMEOUT, call(h)).await {
            Err(_) => return Err(Status::Unknown),
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(Error::NotLeader { leader: Some(l), .. })) => target = l.node_id,
            Ok(Err(e)) => return Err(status_of(&e)),
        }
    }
    Err(Status::Fail)
}

/// One register client: until `stop`, random operations on random keys.
pub async fn register_client(
    id: u32,
    seed: u64,
    keys: u32,
    cluster: Arc<Cluster>,
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
            let r = at_some_node(&cluster, &mut rng, |h| {
                let k = k.clone();
                async move { h.get(&k, ReadConsistency::Linearizable).await.map(|(v, _)| v) }
            })
            .await;
            match r.map(|v| history::decode(v.as_deref())) {
                Ok(Ok(v)) => {
                    last_seen.insert(key, v);
                    (RegOp::Read(v), Ok(()))
                }
                Ok(Err(why)) => panic!("register {key} holds a malformed value: {why}"),
                Err(s) => (RegOp::Read(None), Err(s)),
            }
        } else if roll < 8 {
            let r = at_some_node(&cluster, &mut rng, |h| {
                let k = k.clone();
                async move { h.put(k, history::encode(fresh)).await }
            })
            .await;
            (RegOp::Write(fresh), r.map(|_| ()))
        } else {
            let from = last_seen.get(&key).copied().flatten();
            let r =
                at_some_node(&cluster, &mut rng, |h| {
                    let k = k.clone();
                    async move {
                        h.compare_and_swap(k, from.map(history::encode), Some(history::encode(fresh))).await
                    }
                })
                .await;
            match r {
                Ok(out) => (RegOp::Cas { from, to: fresh, ok: out.succeeded }, Ok(())),
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

/// Adds recorded by the set clients: element → outcome.
pub type Adds = Arc<Mutex<BTreeMap<u64, AddStatus>>>;

/// One set client: until `stop`, adds fresh elements to random sets by read + compare-and-swap.
pub async fn set_client(
    id: u32,
    seed: u64,
    sets: u32,
    cluster: Arc<Cluster>,
    adds: Adds,
    stop: Arc<AtomicBool>,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ (u64::from(id) << 48) ^ 0x5e7);
    let mut counter = 0u64;
    while !stop.load(Ordering::Relaxed) {
        counter += 1;
        let element = (u64::from(id) + 1) << 40 | counter;
        let key = set_key(rng.random_range(0..sets));
        let status = add(&cluster, &mut rng, &key, element).await;
        adds.lock().await.insert(element, status);
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..10))).await;
    }
}

/// One add: read the set, swap in the set plus `element`; retry lost races a few times.
async fn add(cluster: &Cluster, rng: &mut StdRng, key: &Bytes, element: u64) -> AddStatus {
    for _ in 0..20 {
        let read = at_some_node(cluster, rng, |h| {
            let k = key.clone();
            async move { h.get(&k, ReadConsistency::Linearizable).await.map(|(v, _)| v) }
        })
        .await;
        let Ok(current) = read else { continue };
        let mut elements = match current.as_deref().map(set::decode) {
            Some(Ok(e)) => e,
            Some(Err(why)) => panic!("set {key:?} holds a malformed value: {why}"),
            None => Vec::new(),
        };
        let expected = current.clone();
        elements.push(element);
        let swap = at_some_node(cluster, rng, |h| {
            let (k, expected, new) = (key.clone(), expected.clone(), set::encode(&elements));
            async move { h.compare_and_swap(k, expected, Some(new)).await }
        })
        .await;
        match swap {
            Ok(out) if out.succeeded => return AddStatus::Ok,
            Ok(_) | Err(Status::Fail) => continue,
            Err(_) => return AddStatus::Unknown,
        }
    }
    AddStatus::Fail
}
