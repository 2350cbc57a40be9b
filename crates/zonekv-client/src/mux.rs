//! Many calls over one long-lived stream per node (`zonekv.kv.v1.Kv/Stream`).
//!
//! Callers hand their request to the stream's sender, which packs whatever is waiting into one
//! message; replies come back batched and are matched to callers by id. This costs a fraction
//! of a unary gRPC call per request (no HTTP/2 stream, headers or task per call), which is what
//! lets one client connection carry tens of thousands of requests per second.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use tonic::Status;
use tonic::transport::Channel;
use zonekv_proto::kv::v1 as pb;
use zonekv_proto::kv::v1::kv_client::KvClient;
use zonekv_proto::metadata;

/// Calls sent in one stream message, at most.
const MAX_CALLS_PER_MESSAGE: usize = 1024;

type Waiter = oneshot::Sender<Result<pb::reply::Response, Status>>;

/// A multiplexed stream to one node, restarted on the next call after it fails.
#[derive(Clone)]
pub(crate) struct Mux {
    channel: Channel,
    max_message_bytes: usize,
    next_id: Arc<AtomicU64>,
    current: Arc<Mutex<Option<Arc<Conn>>>>,
}

struct Conn {
    tx: mpsc::UnboundedSender<pb::Call>,
    pending: Mutex<HashMap<u64, Waiter>>,
    dead: AtomicBool,
}

impl Conn {
    fn fail_all(&self, status: &Status) {
        self.dead.store(true, Ordering::SeqCst);
        let waiters: Vec<Waiter> =
            self.pending.lock().unwrap_or_else(|p| p.into_inner()).drain().map(|(_, w)| w).collect();
        for w in waiters {
            let _ = w.send(Err(status.clone()));
        }
    }

    fn complete(&self, reply: pb::Reply) {
        let waiter = self.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&reply.id);
        if let Some(w) = waiter {
            let response =
                reply.response.ok_or_else(|| Status::internal(format!("reply {} is empty", reply.id)));
            let _ = w.send(response);
        }
    }
}

/// Removes a call's waiter if the caller gives up (timeout) before the reply arrives.
struct Registration {
    conn: Arc<Conn>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.conn.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

impl Mux {
    pub(crate) fn new(channel: Channel, max_message_bytes: usize) -> Self {
        Self { channel, max_message_bytes, next_id: Arc::default(), current: Arc::default() }
    }

    fn conn(&self) -> Arc<Conn> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = current.as_ref().filter(|c| !c.dead.load(Ordering::SeqCst)) {
            return c.clone();
        }
        let c = self.start();
        *current = Some(c.clone());
        c
    }

    fn start(&self) -> Arc<Conn> {
        let (tx, rx) = mpsc::unbounded_channel::<pb::Call>();
        let conn = Arc::new(Conn { tx, pending: Mutex::default(), dead: AtomicBool::new(false) });
        let outgoing = futures::stream::unfold(rx, |mut rx| async move {
            let first = rx.recv().await?;
            // Let calls made at the same moment queue up, so they share one message.
            tokio::task::yield_now().await;
            let mut calls = vec![first];
            while calls.len() < MAX_CALLS_PER_MESSAGE {
                match rx.try_recv() {
                    Ok(c) => calls.push(c),
                    Err(_) => break,
                }
            }
            Some((pb::StreamRequest { calls }, rx))
        });
        let mut client = KvClient::new(self.channel.clone())
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(usize::MAX);
        let task_conn = conn.clone();
        tokio::spawn(async move {
            let conn = task_conn;
            match client.stream(outgoing).await {
                Ok(resp) => {
                    let mut replies = resp.into_inner();
                    while let Some(item) = replies.next().await {
                        match item {
                            Ok(msg) => msg.replies.into_iter().for_each(|r| conn.complete(r)),
                            Err(status) => {
                                conn.fail_all(&status);
                                return;
                            }
                        }
                    }
                    conn.fail_all(&Status::unavailable("the node closed the request stream"));
                }
                Err(status) => conn.fail_all(&status),
            }
        });
        conn
    }

    /// Sends one call and waits for its reply. An in-band error comes back as the status a
    /// unary call would have returned, with the same metadata.
    pub(crate) async fn call(&self, request: pb::call::Request) -> Result<pb::reply::Response, Status> {
        let conn = self.conn();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        conn.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(id, tx);
        let _registration = Registration { conn: conn.clone(), id };
        if conn.dead.load(Ordering::SeqCst) || conn.tx.send(pb::Call { id, request: Some(request) }).is_err()
        {
            // Never handed to the stream: safe to retry anywhere.
            let mut s = Status::unavailable("request stream closed before the call was sent");
            s.metadata_mut().insert(metadata::NOT_APPLIED, "true".parse().expect("valid metadata"));
            return Err(s);
        }
        match rx.await {
            Ok(Ok(pb::reply::Response::Error(e))) => Err(e.into()),
            Ok(other) => other,
            Err(_) => Err(Status::unavailable("request stream closed")),
        }
    }
}
