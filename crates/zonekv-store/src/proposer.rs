//! Proposal batching: the writes of many concurrent clients become one Raft entry.
//!
//! Every write request hands its op to the replica's proposer. The proposer task takes whatever
//! is waiting (up to `max-ops-per-entry` ops or `max-bytes-per-entry` bytes), proposes it as one
//! [`Command`], and hands each caller its own result. Up to `max-proposals-in-flight` entries
//! are in flight at once; while they are, new requests queue up and form the next, larger
//! batch. One client alone still gets one entry per write, with one extra channel hop.
//!
//! Ops in an entry apply in order, so the log order is the linearization order, also for
//! compare-and-swap. A failed proposal fails every op in it with the same error.

use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use zonekv_raft::{Command, Op, OpResult};

use crate::config::BatchLimits;
use crate::{Error, Result};

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
    close: Arc<Notify>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Proposer {
    /// Starts the proposer task of `group`. It ends on [`Proposer::close`] or when the
    /// proposer is dropped.
    pub(crate) fn start<P: Propose>(group: P, limits: BatchLimits) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let close = Arc::new(Notify::new());
        let task = tokio::spawn(run(group, limits, rx, close.clone()));
        Self { tx, close, task: Mutex::new(Some(task)) }
    }

    /// Proposes `op` (batched with others) and waits until it is applied. Returns its result
    /// and the log index of the entry that carried it.
    pub(crate) async fn propose(&self, op: Op) -> Result<(OpResult, u64)> {
        let (reply, rx) = oneshot::channel();
        let bytes = op.bytes();
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
