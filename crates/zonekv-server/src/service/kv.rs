//! `zonekv.kv.v1.Kv`: unary calls and the multiplexed stream, both on the same handlers.

use std::ops::Bound;

use futures::StreamExt;
use futures::stream::BoxStream;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};
use zonekv_proto::kv::v1 as pb;
use zonekv_proto::kv::v1::kv_server::Kv;
use zonekv_raft::{Mutation, RangeId};
use zonekv_store::{ReadConsistency, Scan, Served, Store};

use crate::auth::Caller;
use crate::grants::KeyAccess;
use crate::handle::Engine;
use crate::{Error, Result};

/// Replies sent in one stream message, at most.
const MAX_REPLIES_PER_MESSAGE: usize = 1024;

/// Calls of one stream in progress at once, and replies queued for it, at most: past it the
/// stream's next message is not read until a call finishes and its reply is taken (HTTP/2
/// flow control then holds the client), so a client cannot make the node hold more than this
/// many calls and replies per stream.
const MAX_CALLS_PER_STREAM: usize = 4096;

#[derive(Clone)]
pub(crate) struct KvService {
    pub(crate) store: Store<Engine>,
    pub(crate) access: KeyAccess,
}

fn consistency(c: i32) -> Result<ReadConsistency> {
    match pb::ReadConsistency::try_from(c) {
        Ok(pb::ReadConsistency::Linearizable) => Ok(ReadConsistency::Linearizable),
        Ok(pb::ReadConsistency::Stale) => Ok(ReadConsistency::Stale),
        Err(_) => Err(Error::Malformed(format!("unknown read consistency {c}"))),
    }
}

fn bound(b: Option<pb::Bound>) -> Bound<bytes::Bytes> {
    match b {
        None => Bound::Unbounded,
        Some(pb::Bound { key, inclusive: true }) => Bound::Included(key),
        Some(pb::Bound { key, inclusive: false }) => Bound::Excluded(key),
    }
}

fn range_info(d: &zonekv_raft::RangeDescriptor) -> pb::RangeInfo {
    pb::RangeInfo {
        range_id: d.range_id.get(),
        start: d.start.clone(),
        end: d.end.clone().unwrap_or_default(),
        version: d.epoch.version,
    }
}

/// The handlers, independent of how the request arrived. Each uses the range the store
/// served the request from for the response header.
impl KvService {
    fn header<T>(&self, served: &Served<T>) -> Option<pb::ResponseHeader> {
        self.header_at(served.range, served.index)
    }

    fn header_at(&self, range: RangeId, index: u64) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader { node_id: self.store.node_id().get(), range_id: range.get(), index })
    }

    async fn do_get(&self, who: &Caller, req: pb::GetRequest) -> Result<pb::GetResponse> {
        self.access.check_key(who, &req.key, false)?;
        let got = self.store.get(&req.key, consistency(req.consistency)?).await?;
        Ok(pb::GetResponse { header: self.header(&got), value: got.value })
    }

    async fn do_put(&self, who: &Caller, req: pb::PutRequest) -> Result<pb::PutResponse> {
        self.access.check_key(who, &req.key, true)?;
        let put = self.store.put(req.key, req.value).await?;
        Ok(pb::PutResponse { header: self.header(&put) })
    }

    async fn do_delete(&self, who: &Caller, req: pb::DeleteRequest) -> Result<pb::DeleteResponse> {
        self.access.check_key(who, &req.key, true)?;
        let deleted = self.store.delete(req.key).await?;
        Ok(pb::DeleteResponse { header: self.header(&deleted), existed: deleted.value })
    }

    async fn do_scan(&self, who: &Caller, req: pb::ScanRequest) -> Result<pb::ScanResponse> {
        let scan = Scan {
            start: bound(req.start),
            end: bound(req.end),
            limit: req.limit,
            reverse: req.reverse,
            keys_only: req.keys_only,
            consistency: consistency(req.consistency)?,
        };
        self.access.check_span(who, &scan.start, &scan.end)?;
        let page = self.store.scan(&scan).await?;
        Ok(pb::ScanResponse {
            header: self.header_at(page.range.range_id, page.index),
            kvs: page.pairs.into_iter().map(|(key, value)| pb::KeyValue { key, value }).collect(),
            more: page.more,
            range: Some(range_info(&page.range)),
        })
    }

    async fn do_cas(
        &self,
        who: &Caller,
        req: pb::CompareAndSwapRequest,
    ) -> Result<pb::CompareAndSwapResponse> {
        self.access.check_key(who, &req.key, true)?;
        let cas = self.store.compare_and_swap(req.key, req.expected, req.new_value).await?;
        Ok(pb::CompareAndSwapResponse {
            header: self.header(&cas),
            succeeded: cas.value.succeeded,
            current: cas.value.current,
        })
    }

    async fn do_batch(&self, who: &Caller, req: pb::BatchRequest) -> Result<pb::BatchResponse> {
        let mut mutations = Vec::with_capacity(req.mutations.len());
        for (i, m) in req.mutations.into_iter().enumerate() {
            mutations.push(match m.op {
                Some(pb::mutation::Op::Put(p)) => Mutation::Put { key: p.key, value: p.value },
                Some(pb::mutation::Op::Delete(d)) => Mutation::Delete { key: d.key },
                None => return Err(Error::Malformed(format!("mutation {i} has no operation"))),
            });
        }
        for m in &mutations {
            let (Mutation::Put { key, .. } | Mutation::Delete { key }) = m;
            self.access.check_key(who, key, true)?;
        }
        let written = self.store.batch(mutations).await?;
        Ok(pb::BatchResponse { header: self.header(&written) })
    }

    /// Runs one call of a stream; errors become in-band replies.
    async fn do_call(&self, who: &Caller, call: pb::Call) -> pb::Reply {
        use pb::call::Request as Q;
        use pb::reply::Response as A;
        let response = match call.request {
            Some(Q::Get(r)) => self.do_get(who, r).await.map(A::Get),
            Some(Q::Put(r)) => self.do_put(who, r).await.map(A::Put),
            Some(Q::Delete(r)) => self.do_delete(who, r).await.map(A::Delete),
            Some(Q::Scan(r)) => self.do_scan(who, r).await.map(A::Scan),
            Some(Q::Cas(r)) => self.do_cas(who, r).await.map(A::Cas),
            Some(Q::Batch(r)) => self.do_batch(who, r).await.map(A::Batch),
            None => Err(Error::Malformed(format!("call {} has no request", call.id))),
        };
        pb::Reply { id: call.id, response: Some(response.unwrap_or_else(|e| A::Error(e.into()))) }
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let who = Caller::of(&req)?;
        Ok(Response::new(self.do_get(&who, req.into_inner()).await?))
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let who = Caller::of(&req)?;
        Ok(Response::new(self.do_put(&who, req.into_inner()).await?))
    }

    async fn delete(&self, req: Request<pb::DeleteRequest>) -> Result<Response<pb::DeleteResponse>, Status> {
        let who = Caller::of(&req)?;
        Ok(Response::new(self.do_delete(&who, req.into_inner()).await?))
    }

    async fn scan(&self, req: Request<pb::ScanRequest>) -> Result<Response<pb::ScanResponse>, Status> {
        let who = Caller::of(&req)?;
        Ok(Response::new(self.do_scan(&who, req.into_inner()).await?))
    }

    async fn compare_and_swap(
        &self,
        req: Request<pb::CompareAndSwapRequest>,
    ) -> Result<Response<pb::CompareAndSwapResponse>, Status> {
        let who = Caller::of(&req)?;
        Ok(Response::new(self.do_cas(&who, req.into_inner()).await?))
    }

    async fn batch(&self, req: Request<pb::BatchRequest>) -> Result<Response<pb::BatchResponse>, Status> {
        let who = Caller::of(&req)?;
        Ok(Response::new(self.do_batch(&who, req.into_inner()).await?))
    }

    async fn lookup_range(
        &self,
        req: Request<pb::LookupRangeRequest>,
    ) -> Result<Response<pb::LookupRangeResponse>, Status> {
        let req = req.into_inner();
        let found = self.store.lookup_range(&req.key, req.before).map_err(Error::from)?;
        Ok(Response::new(pb::LookupRangeResponse {
            range: Some(range_info(&found.desc)),
            leader_addr: found.leader_addr.unwrap_or_default(),
            replica_addrs: found.replica_addrs,
        }))
    }

    type StreamStream = BoxStream<'static, Result<pb::StreamResponse, Status>>;

    /// The calls of a stream run concurrently; replies are gathered into as few messages as the
    /// completion rate allows. The stream ends when the client closes its side and every call
    /// has been answered.
    async fn stream(
        &self,
        req: Request<Streaming<pb::StreamRequest>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let who = Caller::of(&req)?;
        let stopped = futures::FutureExt::shared(self.store.stopped());
        let mut incoming = req.into_inner().take_until(stopped.clone());
        // Bounded like the calls: a client that stops reading its replies stops the stream's
        // calls (the send below waits), it does not make the node queue replies for ever.
        let (tx, rx) = mpsc::channel::<pb::Reply>(MAX_CALLS_PER_STREAM);
        let service = self.clone();
        // One task per stream runs all of its calls concurrently: a task per call cost a spawn
        // (and a copy of the call's future into it) per request.
        tokio::spawn(async move {
            let mut calls = FuturesUnordered::new();
            let mut open = true;
            loop {
                tokio::select! {
                    msg = incoming.next(), if open && calls.len() < MAX_CALLS_PER_STREAM => match msg {
                        Some(Ok(msg)) => calls.extend(msg.calls.into_iter().map(|c| service.do_call(&who, c))),
                        _ => open = false,
                    },
                    Some(reply) = calls.next(), if !calls.is_empty() => {
                        if tx.send(reply).await.is_err() {
                            break;
                        }
                    }
                    else => break,
                }
            }
        });
        let out = futures::stream::unfold(rx, |mut rx| async move {
            let first = rx.recv().await?;
            // Let the other replies of the same Raft entry arrive first, so they share one
            // message and one write to the socket (+3-7 % writes/s at 256 clients).
            tokio::task::yield_now().await;
            let mut replies = vec![first];
            while replies.len() < MAX_REPLIES_PER_MESSAGE {
                match rx.try_recv() {
                    Ok(r) => replies.push(r),
                    Err(_) => break,
                }
            }
            Some((Ok(pb::StreamResponse { replies }), rx))
        })
        .take_until(stopped);
        Ok(Response::new(Box::pin(out)))
    }
}
