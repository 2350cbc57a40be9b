//! [`Client`]: the key-value API.

use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use zonekv_proto::kv::v1 as pb;
use zonekv_proto::kv::v1::call::Request as Q;
use zonekv_proto::kv::v1::reply::Response as A;

use crate::retry::{Kind, Router};
use crate::{ClientError, Result};

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Addresses (`host:port`) of some or all nodes.
    pub endpoints: Vec<String>,
    /// Deadline of one attempt. Default: 10 s.
    pub request_timeout: Duration,
    /// Total time spent retrying one call. Default: 15 s.
    pub retry_budget: Duration,
    /// Deadline for establishing a connection. Default: 1 s.
    pub connect_timeout: Duration,
    /// Largest response accepted, in bytes. Default: 64 MiB.
    pub max_message_bytes: usize,
}

impl ClientConfig {
    /// Defaults for the given endpoints.
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            request_timeout: Duration::from_secs(10),
            retry_budget: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(1),
            max_message_bytes: 64 << 20,
        }
    }
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReadConsistency {
    /// Reflects every write acknowledged before the read started.
    #[default]
    Linearizable,
    /// Any replica's applied state; may lag.
    Stale,
}

impl ReadConsistency {
    fn to_pb(self) -> i32 {
        match self {
            ReadConsistency::Linearizable => pb::ReadConsistency::Linearizable as i32,
            ReadConsistency::Stale => pb::ReadConsistency::Stale as i32,
        }
    }

    fn kind(self) -> Kind {
        match self {
            ReadConsistency::Linearizable => Kind::Read,
            ReadConsistency::Stale => Kind::StaleRead,
        }
    }
}

/// One mutation of an atomic [`Client::batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    /// Set a key.
    Put(Bytes, Bytes),
    /// Remove a key.
    Delete(Bytes),
}

/// A scan request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanOptions {
    /// Lower bound.
    pub start: Bound<Bytes>,
    /// Upper bound.
    pub end: Bound<Bytes>,
    /// Most pairs (0: server default).
    pub limit: u32,
    /// Descending order.
    pub reverse: bool,
    /// Keys only.
    pub keys_only: bool,
    /// Freshness.
    pub consistency: ReadConsistency,
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self {
            start: Bound::Unbounded,
            end: Bound::Unbounded,
            limit: 0,
            reverse: false,
            keys_only: false,
            consistency: ReadConsistency::Linearizable,
        }
    }
}

/// A page of scan results.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanPage {
    /// Pairs in the requested order.
    pub pairs: Vec<(Bytes, Bytes)>,
    /// More pairs remain in the range.
    pub more: bool,
}

/// The outcome of a compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasOutcome {
    /// Whether the swap happened.
    pub succeeded: bool,
    /// The value found when comparing.
    pub current: Option<Bytes>,
}

/// A ZoneKV client. Cheap to clone; clones share connections and the leader cache.
#[derive(Clone)]
pub struct Client {
    router: Arc<Router>,
}

fn bound(b: &Bound<Bytes>) -> Option<pb::Bound> {
    match b {
        Bound::Included(k) => Some(pb::Bound { key: k.clone(), inclusive: true }),
        Bound::Excluded(k) => Some(pb::Bound { key: k.clone(), inclusive: false }),
        Bound::Unbounded => None,
    }
}

impl Client {
    /// A client for the cluster reachable at any of `endpoints`, with default settings.
    pub fn new<I, S>(endpoints: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::with_config(ClientConfig::new(endpoints))
    }

    /// A client with explicit settings.
    pub fn with_config(config: ClientConfig) -> Result<Self> {
        Ok(Self { router: Arc::new(Router::new(config)?) })
    }

    /// Sends `request` through the multiplexed stream of the right node, with routing and
    /// retries, and unpacks the reply with `unpack`.
    async fn call<T>(
        &self,
        kind: Kind,
        request: pb::call::Request,
        unpack: fn(pb::reply::Response) -> Option<T>,
    ) -> Result<T> {
        let response = self
            .router
            .call(kind, |node| {
                let request = request.clone();
                async move { node.mux.call(request).await }
            })
            .await?;
        unpack(response).ok_or_else(|| ClientError::Server {
            code: tonic::Code::Internal,
            message: "the server answered a different kind of request".into(),
        })
    }

    /// Reads a key linearizably.
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Option<Bytes>> {
        self.get_with(key, ReadConsistency::Linearizable).await
    }

    /// Reads a key at the given consistency.
    pub async fn get_with(
        &self,
        key: impl Into<Bytes>,
        consistency: ReadConsistency,
    ) -> Result<Option<Bytes>> {
        let req = pb::GetRequest { key: key.into(), consistency: consistency.to_pb() };
        let resp = self
            .call(consistency.kind(), Q::Get(req), |r| match r {
                A::Get(g) => Some(g),
                _ => None,
            })
            .await?;
        Ok(resp.value)
    }

    /// Writes a key.
    pub async fn put(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<()> {
        let req = pb::PutRequest { key: key.into(), value: value.into() };
        self.call(Kind::Write, Q::Put(req), |r| matches!(r, A::Put(_)).then_some(())).await
    }

    /// Removes a key; returns whether it existed.
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<bool> {
        let req = pb::DeleteRequest { key: key.into() };
        self.call(Kind::Write, Q::Delete(req), |r| match r {
            A::Delete(d) => Some(d.existed),
            _ => None,
        })
        .await
    }

    /// Sets (`new_value = Some`) or removes (`None`) `key` if it holds `expected` (`None`: if
    /// it does not exist).
    pub async fn compare_and_swap(
        &self,
        key: impl Into<Bytes>,
        expected: Option<Bytes>,
        new_value: Option<Bytes>,
    ) -> Result<CasOutcome> {
        let req = pb::CompareAndSwapRequest { key: key.into(), expected, new_value };
        self.call(Kind::Write, Q::Cas(req), |r| match r {
            A::Cas(c) => Some(CasOutcome { succeeded: c.succeeded, current: c.current }),
            _ => None,
        })
        .await
    }

    /// Applies puts and deletes atomically.
    pub async fn batch(&self, mutations: Vec<Mutation>) -> Result<()> {
        let mutations = mutations
            .into_iter()
            .map(|m| pb::Mutation {
                op: Some(match m {
                    Mutation::Put(key, value) => pb::mutation::Op::Put(pb::mutation::Put { key, value }),
                    Mutation::Delete(key) => pb::mutation::Op::Delete(pb::mutation::Delete { key }),
                }),
            })
            .collect();
        let req = pb::BatchRequest { mutations };
        self.call(Kind::Write, Q::Batch(req), |r| matches!(r, A::Batch(_)).then_some(())).await
    }

    /// Reads one page of a range.
    pub async fn scan(&self, opts: &ScanOptions) -> Result<ScanPage> {
        let req = pb::ScanRequest {
            start: bound(&opts.start),
            end: bound(&opts.end),
            limit: opts.limit,
            reverse: opts.reverse,
            consistency: opts.consistency.to_pb(),
            keys_only: opts.keys_only,
        };
        let resp = self
            .call(opts.consistency.kind(), Q::Scan(req), |r| match r {
                A::Scan(s) => Some(s),
                _ => None,
            })
            .await?;
        Ok(ScanPage { pairs: resp.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect(), more: resp.more })
    }

    /// An admin client sharing this client's connections and retry settings.
    pub fn admin(&self) -> crate::AdminClient {
        crate::AdminClient::from_router(self.router.clone())
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("endpoints", &self.router.config().endpoints).finish()
    }
}
