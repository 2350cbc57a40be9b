//! Proposal batching: the writes of many concurrent clients become one Raft entry.
//!
//! Every write request hands its op to the replica's proposer. The proposer task takes whatever
//! is waiting (up to `max-ops-per-entry` ops, or until the ops' encoding reaches
//! `max-bytes-per-entry` bytes: an entry is at most that plus one op), proposes it as one
//! [`Command`], and hands each caller its own result. Up to `max-proposals-in-flight` entries
//! are in flight at once; while they are, new requests queue up and form the next, larger
//! batch. One client alone still gets one entry per write, with one extra channel hop.
//!
//! Ops in an entry apply in order, so the log order is the linearization order, also for
//! compare-and-swap. A failed proposal fails every op in it with the same error.
//!
//! Every write holds a share of the node's write budget (`raft.max-queued-write-bytes`: its
//! encoding plus [`WRITE_OVERHEAD_BYTES`]) from when it arrives until its outcome is
//! known. A write that does not fit is refused at once with [`Error::Overloaded`] (nothing was
//! proposed): however many clients send, the queues of a node hold at most the budget.

use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use zonekv_raft::{Command, Op, OpResult};

use crate::budget::MemoryBudget;
use crate::config::BatchLimits;
use crate::{Error, Result};

/// What one queued write costs beside its encoding (its queue slot, reply channel and decoded
/// op), for the write budget.
pub(crate) const WRITE_OVERHEAD_BYTES: usize = 256;

/// What the proposer proposes through: one command as one log entry, waiting until it is
/// applied; one result per op and the entry's log index. (The replica's Raft group.)
pub(crate) trait Propose: Clone + Send + Sync + 'static {
    fn propose(&self, cmd: Command) -> impl Future<Output = Result<(Vec<OpResult>, u64)>> + Send;
}

struct Pending {
    op: Op,
    bytes: usize,
    reply: oneshot::Sender<Result<(OpResult, u64)>>,
}

/// The proposal queue of one replica.
pub(crate) struct Proposer {
    tx: mpsc::UnboundedSender<Pending>,
    /// The node's write budget, shared by every replica's proposer.
    budget: Arc<MemoryBudget>,
    close: Arc<Notify>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Proposer {
    /// Starts the proposer task of `group`, whose writes take their share of `budget`. It ends
    /// on [`Proposer::close`] or when the proposer is dropped.
    pub(crate) fn start<P: Propose>(group: P, limits: BatchLimits, budget: Arc<MemoryBudget>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let close = Arc::new(Notify::new());
        let task = tokio::spawn(run(group, limits, rx, close.clone()));
        Self { tx, budget, close, task: Mutex::new(Some(task)) }
    }

    /// Proposes `op` (batched with others) and waits until it is applied. Returns its result
    /// and the log index of the entry that carried it. Refused with [`Error::Overloaded`],
    /// before anything is proposed, when the node's write budget is spent.
    pub(crate) async fn propose(&self, op: Op) -> Result<(OpResult, u64)> {
        // Its size in the entry: what fills the entry, and what it holds of the budget.
        let bytes = zonekv_raft::codec::op_wire_bytes(&op);
        // Held until the outcome is known: queued and in-flight writes both count.
        let _charge = self.budget.try_charge(bytes + WRITE_OVERHEAD_BYTES).ok_or_else(|| {
            Error::Overloaded(format!(
                "this node holds {} bytes of writes waiting to be committed, its limit \
                 (raft.max-queued-write-bytes) is {}; nothing was applied, retry later",
                self.budget.used(),
                self.budget.limit()
            ))
        })?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending { op, bytes, reply })
            .map_err(|_| Error::Unavailable("the replica is shutting down".into()))?;
        let outcome = rx
            .await
            .map_err(|_| Error::OutcomeUnknown("the replica stopped while the write was in flight".into()))?;
        match outcome {
            // Refused at apply: the op was routed when the range still held its key.
            Ok((OpResult::RangeKeyMismatch(desc), _)) => Err(Error::RangeKeyMismatch(desc)),
            // Committed, refused at apply on every replica alike, nothing written.
            Ok((OpResult::Refused { reason }, _)) => Err(Error::FailedPrecondition(reason)),
            other => other,
        }
    }

    /// Stops taking writes and waits until every proposal in flight has finished, so nothing
    /// holds the replica afterwards. Queued writes that were never proposed fail as
    /// `Unavailable` (not applied).
    pub(crate) async fn close(&self) {
        self.close.notify_one();
        let task = self.task.lock().expect("proposer task lock").take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

async fn run<P: Propose>(
    group: P,
    limits: BatchLimits,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    close: Arc<Notify>,
) {
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight.max(1)));
    let mut proposals = JoinSet::new();
    loop {
        let first = tokio::select! {
            biased;
            _ = close.notified() => break,
            p = rx.recv() => match p {
                Some(p) => p,
                None => break,
            },
        };
        while proposals.try_join_next().is_some() {}
        // Wait for a slot first: requests arriving meanwhile join this batch.
        let permit = tokio::select! {
            biased;
            _ = close.notified() => {
                refuse(first);
                break;
            }
            permit = in_flight.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < limits.max_ops && bytes < limits.max_bytes {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.bytes;
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        proposals.spawn(propose_batch(group.clone(), batch, permit));
    }
    rx.close();
    while let Ok(p) = rx.try_recv() {
        refuse(p);
    }
    while proposals.join_next().await.is_some() {}
}

fn refuse(p: Pending) {
    let _ = p.reply.send(Err(Error::Unavailable("the replica is shutting down".into())));
}

async fn propose_batch<P: Propose>(group: P, batch: Vec<Pending>, permit: OwnedSemaphorePermit) {
    let (ops, replies): (Vec<Op>, Vec<_>) = batch.into_iter().map(|p| (p.op, p.reply)).unzip();
    let n = ops.len();
    let outcome = group.propose(Command { ops }).await;
    drop(permit);
    match outcome {
        Ok((results, index)) if results.len() == n => {
            for (reply, r) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok((r, index)));
            }
        }
        Ok((results, _)) => {
            let e = format!("the entry produced {} results for {n} ops", results.len());
            for reply in replies {
                let _ = reply.send(Err(Error::OutcomeUnknown(e.clone())));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.duplicate()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use bytes::Bytes;

    use super::*;

    /// A Raft group whose proposals wait until the test opens the gate; records what it got.
    #[derive(Clone)]
    struct Gated {
        gate: Arc<Semaphore>,
        proposed: Arc<StdMutex<Vec<Op>>>,
    }

    impl Default for Gated {
        fn default() -> Self {
            Self { gate: Arc::new(Semaphore::new(0)), proposed: Arc::default() }
        }
    }

    impl Propose for Gated {
        async fn propose(&self, cmd: Command) -> Result<(Vec<OpResult>, u64)> {
            let n = cmd.ops.len();
            self.proposed.lock().unwrap().extend(cmd.ops);
            self.gate.acquire().await.expect("gate open").forget();
            Ok((vec![OpResult::Done; n], 7))
        }
    }

    fn put(key: &str) -> Op {
        Op::Put { key: Bytes::from(key.to_string()), value: Bytes::from_static(b"0123456789") }
    }

    fn proposed_keys(g: &Gated) -> Vec<Bytes> {
        g.proposed
            .lock()
            .unwrap()
            .iter()
            .map(|op| match op {
                Op::Put { key, .. } => key.clone(),
                other => panic!("unexpected op {other:?}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn a_full_write_budget_sheds_writes_without_proposing_them() {
        let group = Gated::default();
        // Room for exactly three writes of key "kN" and a 10-byte value.
        let one = zonekv_raft::codec::op_wire_bytes(&put("k0")) + WRITE_OVERHEAD_BYTES;
        let budget = MemoryBudget::new(3 * one);
        let limits = BatchLimits { max_ops: 1024, max_bytes: 1 << 20, max_in_flight: 1, max_queued_bytes: 0 };
        let proposer = Arc::new(Proposer::start(group.clone(), limits, budget.clone()));
        let mut waiting = JoinSet::new();
        for i in 0..3 {
            let p = proposer.clone();
            waiting.spawn(async move { p.propose(put(&format!("k{i}"))).await });
        }
        while budget.used() < 3 * one {
            tokio::task::yield_now().await;
        }
        let shed = proposer.propose(put("k9")).await;
        let Err(Error::Overloaded(message)) = shed else { panic!("expected Overloaded, got {shed:?}") };
        assert!(message.contains("raft.max-queued-write-bytes"), "{message}");
        assert!(Error::Overloaded(message).not_applied());
        // Let the three through: each is applied, and the shed write never reached Raft.
        group.gate.add_permits(3);
        while let Some(r) = waiting.join_next().await {
            assert!(matches!(r.unwrap(), Ok((OpResult::Done, 7))));
        }
        let mut keys = proposed_keys(&group);
        keys.sort();
        assert_eq!(keys, vec!["k0", "k1", "k2"]);
        assert_eq!(budget.used(), 0, "every write returned its share");
        // With room again, the retry goes through.
        group.gate.add_permits(1);
        assert!(matches!(proposer.propose(put("k9")).await, Ok((OpResult::Done, 7))));
        assert_eq!(proposed_keys(&group).len(), 4);
        proposer.close().await;
    }
}
