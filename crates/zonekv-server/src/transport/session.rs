//! The batch stream to one peer, the sending side of the batched Raft transport: one `RaftTransport/Batch` stream to each
//! peer node carries the calls and append streams of every range (docs/multiraft.md
//! "Transport"). Frames queued while the stream is busy go out together as one message.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use prost::Message;
use tokio::sync::{mpsc, oneshot, watch};
use tonic::Status;
use tonic::transport::Channel;
use zonekv_proto::raft::v1 as pb;
use zonekv_proto::raft::v1::raft_frame::Body;
use zonekv_proto::raft::v1::raft_transport_client::RaftTransportClient;

/// A batch message stops taking frames once it holds this many bytes (a larger single frame
/// goes alone), so a batch stays near the size of one Raft message.
const BATCH_BYTES: usize = 1 << 20;

/// Frames and batch messages this node has sent on Raft batch streams, both directions; their
/// ratio is how many messages one batch carries.
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Frames sent.
    pub frames: AtomicU64,
    /// Batch messages they went out in.
    pub batches: AtomicU64,
    /// Batch streams from peers being served now: one per live peer.
    pub streams_in: AtomicU64,
}

/// Turns a queue of frames into a stream of batches: each batch takes the frames queued when
/// the stream is polled, up to [`BATCH_BYTES`]. While the connection is busy sending one batch,
/// the next one fills up: batching costs no waiting.
pub(crate) fn batches(
    rx: mpsc::UnboundedReceiver<pb::RaftFrame>,
    stats: Arc<TransportStats>,
) -> impl Stream<Item = pb::RaftBatch> + Send + 'static {
    let carry: Option<pb::RaftFrame> = None;
    futures::stream::unfold((rx, carry, stats), |(mut rx, carry, stats)| async move {
        let first = match carry {
            Some(f) => f,
            None => rx.recv().await?,
        };
        let mut bytes = first.encoded_len();
        let mut frames = vec![first];
        let mut carry = None;
        while bytes < BATCH_BYTES {
            let Ok(f) = rx.try_recv() else { break };
            let len = f.encoded_len();
            if bytes + len > BATCH_BYTES {
                carry = Some(f);
                break;
            }
            bytes += len;
            frames.push(f);
        }
        stats.frames.fetch_add(frames.len() as u64, Ordering::Relaxed);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        Some((pb::RaftBatch { frames }, (rx, carry, stats)))
    })
}

/// What an exchange gets when the stream it waits on fails.
fn broken(why: &Status) -> Status {
    crate::status::link_failed(format!("raft stream to the peer failed: {}", why.message()))
}

/// Where an answer from the peer goes.
enum Waiter {
    Call(oneshot::Sender<Result<Body, Status>>),
    Stream(mpsc::UnboundedSender<Result<Body, Status>>),
}

/// The exchanges waiting for answers; once the stream has failed, why.
#[derive(Default)]
struct Waiters {
    failed: Option<Status>,
    map: HashMap<u64, Waiter>,
}

/// One open batch stream to one peer. Every exchange registers before its first frame goes
/// out; when the stream fails, every registered exchange is told, and so is every later one.
pub(crate) struct Session {
    out: mpsc::UnboundedSender<pb::RaftFrame>,
    waiters: Mutex<Waiters>,
    next_id: AtomicU64,
}

impl Session {
    /// Opens a stream to the peer behind `client`; it ends when the peer ends it, the
    /// connection fails, or `closing` turns true.
    pub(crate) fn open(
        mut client: RaftTransportClient<Channel>,
        stats: Arc<TransportStats>,
        mut closing: watch::Receiver<bool>,
    ) -> Arc<Self> {
        let (session, rx) = Self::new();
        let s = session.clone();
        tokio::spawn(async move {
            let requests = batches(rx, stats);
            let why = tokio::select! {
                _ = closing.wait_for(|c| *c) => crate::status::link_failed("this node is shutting down"),
                why = s.run(client.batch(requests)) => why,
            };
            tracing::debug!(%why, "raft batch stream ended");
            s.fail(why);
        });
        session
    }

    fn new() -> (Arc<Self>, mpsc::UnboundedReceiver<pb::RaftFrame>) {
        let (out, rx) = mpsc::unbounded_channel();
        (Arc::new(Self { out, waiters: Mutex::default(), next_id: AtomicU64::new(1) }), rx)
    }

    /// Delivers the peer's answers until the stream ends; returns why it ended.
    async fn run(
        &self,
        call: impl Future<Output = Result<tonic::Response<tonic::Streaming<pb::RaftBatch>>, Status>>,
    ) -> Status {
        let mut answers = match call.await {
            Ok(resp) => resp.into_inner(),
            Err(status) => return status,
        };
        loop {
            match answers.next().await {
                Some(Ok(batch)) => batch.frames.into_iter().for_each(|f| self.deliver(f)),
                Some(Err(status)) => return status,
                None => return crate::status::link_failed("the peer ended the raft batch stream"),
            }
        }
    }

    fn deliver(&self, frame: pb::RaftFrame) {
        let Some(body) = frame.body else { return };
        let answer = match body {
            Body::Error(e) => Err(crate::status::from_frame(e)),
            body => Ok(body),
        };
        let mut w = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        // An answer to an exchange nobody waits for (timed out, abandoned, or a duplicate sent
        // by fault injection) is dropped.
        match w.map.get(&frame.id) {
            Some(Waiter::Call(_)) => {
                if let Some(Waiter::Call(tx)) = w.map.remove(&frame.id) {
                    let _ = tx.send(answer);
                }
            }
            Some(Waiter::Stream(tx)) => {
                let last = !matches!(answer, Ok(Body::AppendResult(_)));
                let _ = tx.send(answer);
                if last {
                    w.map.remove(&frame.id);
                }
            }
            None => {}
        }
    }

    fn fail(&self, why: Status) {
        let mut w = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        for (_, waiter) in w.map.drain() {
            let err = Err(broken(&why));
            match waiter {
                Waiter::Call(tx) => drop(tx.send(err)),
                Waiter::Stream(tx) => drop(tx.send(err)),
            }
        }
        w.failed = Some(why);
    }

    /// Whether the stream has failed; a failed session is replaced by a new one.
    pub(crate) fn failed(&self) -> bool {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner()).failed.is_some()
    }

    fn register(&self, waiter: Waiter) -> Result<u64, Status> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut w = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(why) = &w.failed {
            return Err(broken(why));
        }
        w.map.insert(id, waiter);
        Ok(id)
    }

    /// Stops waiting for exchange `id`.
    pub(crate) fn forget(&self, id: u64) {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner()).map.remove(&id);
    }

    /// Queues one frame. A frame queued on a stream that then fails is lost; its exchange is
    /// told through its waiter.
    pub(crate) fn send(&self, id: u64, body: Body) {
        let _ = self.out.send(pb::RaftFrame { id, body: Some(body) });
    }

    /// Sends `request` as a call whose answer nobody waits for (fault injection's duplicates).
    pub(crate) fn send_unanswered(&self, request: Body) {
        self.send(self.next_id.fetch_add(1, Ordering::Relaxed), request);
    }

    /// Starts a call: returns its id (to [`Self::forget`] it on timeout) and its answer.
    pub(crate) fn call(
        &self,
        request: Body,
    ) -> Result<(u64, oneshot::Receiver<Result<Body, Status>>), Status> {
        let (tx, rx) = oneshot::channel();
        let id = self.register(Waiter::Call(tx))?;
        self.send(id, request);
        Ok((id, rx))
    }

    /// Opens an append stream: returns its id, for its requests, and its answers, which end
    /// after the peer's `end` or an error.
    pub(crate) fn open_stream(&self) -> Result<(u64, mpsc::UnboundedReceiver<Result<Body, Status>>), Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.register(Waiter::Stream(tx))?;
        Ok((id, rx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(id: u64, message_bytes: usize) -> pb::RaftFrame {
        let e = pb::FrameError { code: 0, message: "x".repeat(message_bytes) };
        pb::RaftFrame { id, body: Some(Body::Error(e)) }
    }

    fn ids(batch: &pb::RaftBatch) -> Vec<u64> {
        batch.frames.iter().map(|f| f.id).collect()
    }

    #[tokio::test]
    async fn frames_queued_together_go_out_as_one_batch() {
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(TransportStats::default());
        let mut batches = std::pin::pin!(batches(rx, stats.clone()));
        (1..=100).for_each(|id| tx.send(frame(id, 10)).unwrap());
        assert_eq!(ids(&batches.next().await.unwrap()), (1..=100).collect::<Vec<_>>());
        tx.send(frame(101, 10)).unwrap();
        assert_eq!(ids(&batches.next().await.unwrap()), vec![101]);
        drop(tx);
        assert!(batches.next().await.is_none());
        assert_eq!((stats.frames.load(Ordering::Relaxed), stats.batches.load(Ordering::Relaxed)), (101, 2));
    }

    #[tokio::test]
    async fn a_batch_stops_at_its_byte_budget_and_the_rest_follows_in_order() {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut batches = std::pin::pin!(batches(rx, Arc::default()));
        let big = BATCH_BYTES * 2 / 5;
        for (id, bytes) in [(1, big), (2, big), (3, big), (4, BATCH_BYTES * 2), (5, 10)] {
            tx.send(frame(id, bytes)).unwrap();
        }
        drop(tx);
        let mut got = Vec::new();
        while let Some(b) = batches.next().await {
            got.push(ids(&b));
        }
        // Two fit the budget; a frame larger than the budget goes alone.
        assert_eq!(got, vec![vec![1, 2], vec![3], vec![4], vec![5]]);
    }

    #[tokio::test]
    async fn a_failed_stream_answers_every_waiting_exchange_and_refuses_new_ones() {
        let (session, mut sent) = Session::new();
        let (call, answer) = session.call(Body::Vote(pb::VoteRequest::default())).unwrap();
        let (stream, mut results) = session.open_stream().unwrap();
        assert_ne!(call, stream);
        assert_eq!(sent.recv().await.unwrap().id, call);

        // Answers go to their exchange; a stream stays open until its `end`.
        let result = Body::AppendResult(pb::StreamAppendResponse::default());
        session.deliver(pb::RaftFrame { id: stream, body: Some(result.clone()) });
        assert_eq!(results.recv().await.unwrap().unwrap(), result);
        session.deliver(pb::RaftFrame { id: 999, body: Some(result) }); // nobody waits: dropped

        session.fail(Status::unavailable("connection reset"));
        let err = answer.await.unwrap().unwrap_err();
        assert!(err.message().contains("connection reset"), "{err}");
        assert!(results.recv().await.unwrap().is_err());
        assert!(results.recv().await.is_none());
        assert!(session.failed());
        assert!(session.call(Body::Vote(pb::VoteRequest::default())).is_err());
    }
}
