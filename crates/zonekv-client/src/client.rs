//! [`Client`]: the key-value API.

use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use zonekv_proto::kv::v1 as pb;
use zonekv_proto::kv::v1::call::Request as Q;
use zonekv_proto::kv::v1::reply::Response as A;

use crate::ranges::RouteKey;
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
    /// The certificate to present and the CA to check nodes against (docs/security.md):
    /// [`zonekv_tls::Tls::client`] for a user, or a node's own. Default: `None`, plaintext,
    /// which only a node started `--insecure` (or embedded without certificates) accepts.
    pub tls: Option<zonekv_tls::Tls>,
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
            tls: None,
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
    /// Most pairs (0: 1,000).
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
    /// The limit stopped the scan before its end bound: more pairs may remain.
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

/// Pairs a scan returns when it sets no limit (the server's default too).
const DEFAULT_SCAN_LIMIT: u32 = 1000;

/// The key a bound starts at ("" when unbounded).
fn bound_key(b: &Bound<Bytes>) -> Bytes {
    match b {
        Bound::Included(k) | Bound::Excluded(k) => k.clone(),
        Bound::Unbounded => Bytes::new(),
    }
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
        key: RouteKey,
        request: pb::call::Request,
        unpack: fn(pb::reply::Response) -> Option<T>,
    ) -> Result<T> {
        let response = self
            .router
            .call(kind, Some(&key), |node| {
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
        let key = key.into();
        let req = pb::GetRequest { key: key.clone(), consistency: consistency.to_pb() };
        let resp = self
            .call(consistency.kind(), RouteKey::At(key), Q::Get(req), |r| match r {
                A::Get(g) => Some(g),
                _ => None,
            })
            .await?;
        Ok(resp.value)
    }

    /// Writes a key.
    pub async fn put(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<()> {
        let key = key.into();
        let req = pb::PutRequest { key: key.clone(), value: value.into() };
        self.call(Kind::Write, RouteKey::At(key), Q::Put(req), |r| matches!(r, A::Put(_)).then_some(())).await
    }

    /// Removes a key; returns whether it existed.
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<bool> {
        let key = key.into();
        let req = pb::DeleteRequest { key: key.clone() };
        self.call(Kind::Write, RouteKey::At(key), Q::Delete(req), |r| match r {
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
        let key = key.into();
        let req = pb::CompareAndSwapRequest { key: key.clone(), expected, new_value };
        self.call(Kind::Write, RouteKey::At(key), Q::Cas(req), |r| match r {
            A::Cas(c) => Some(CasOutcome { succeeded: c.succeeded, current: c.current }),
            _ => None,
        })
        .await
    }

    /// Applies puts and deletes atomically. All keys must lie in one range: atomicity across
    /// ranges needs transactions, which are not built yet, so a batch spanning ranges fails
    /// with [`ClientError::InvalidArgument`] and changes nothing.
    pub async fn batch(&self, mutations: Vec<Mutation>) -> Result<()> {
        let first = mutations.first().map_or_else(Bytes::new, |m| match m {
            Mutation::Put(k, _) | Mutation::Delete(k) => k.clone(),
        });
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
        self.call(Kind::Write, RouteKey::At(first), Q::Batch(req), |r| matches!(r, A::Batch(_)).then_some(()))
            .await
    }

    /// Reads keys in order (or reverse order) across ranges: up to `opts.limit` pairs (0:
    /// 1,000), each key once. Each range serves its part; the client continues from one range
    /// to the next. `more` is set when the limit stopped the scan before its end bound:
    /// continue from after the last key returned (before it, for a reverse scan).
    ///
    /// Consistency is per range: each range's part is linearizable (or stale) on its own, read
    /// at its own moment; a scan across ranges is not a snapshot of the whole keyspace.
    pub async fn scan(&self, opts: &ScanOptions) -> Result<ScanPage> {
        let limit = if opts.limit == 0 { DEFAULT_SCAN_LIMIT } else { opts.limit };
        let (mut start, mut end) = (opts.start.clone(), opts.end.clone());
        let mut page = ScanPage::default();
        loop {
            let remaining = limit - page.pairs.len() as u32;
            let route = match (opts.reverse, &end) {
                (false, _) => RouteKey::At(bound_key(&start)),
                (true, Bound::Included(k)) => RouteKey::At(k.clone()),
                (true, Bound::Excluded(k)) if !k.is_empty() => RouteKey::Before(k.clone()),
                (true, Bound::Excluded(_)) => RouteKey::At(Bytes::new()),
                (true, Bound::Unbounded) => RouteKey::Last,
            };
            let req = pb::ScanRequest {
                start: bound(&start),
                end: bound(&end),
                limit: remaining,
                reverse: opts.reverse,
                consistency: opts.consistency.to_pb(),
                keys_only: opts.keys_only,
            };
            let resp = self
                .call(opts.consistency.kind(), route, Q::Scan(req), |r| match r {
                    A::Scan(s) => Some(s),
                    _ => None,
                })
                .await?;
            page.pairs.extend(resp.kvs.into_iter().map(|kv| (kv.key, kv.value)));
            if resp.more {
                page.more = true;
                return Ok(page);
            }
            let Some(range) = resp.range else { return Ok(page) };
            // Does the scan reach past the range that served it?
            let next = if opts.reverse {
                let before_start = match &start {
                    Bound::Included(k) | Bound::Excluded(k) => k[..] < range.start[..],
                    Bound::Unbounded => true,
                };
                (!range.start.is_empty() && before_start).then(|| (None, Some(Bound::Excluded(range.start))))
            } else {
                let past_end = match &end {
                    Bound::Included(k) => k[..] >= range.end[..],
                    Bound::Excluded(k) => k[..] > range.end[..],
                    Bound::Unbounded => true,
                };
                (!range.end.is_empty() && past_end).then(|| (Some(Bound::Included(range.end)), None))
            };
            let Some((next_start, next_end)) = next else { return Ok(page) };
            if page.pairs.len() as u32 >= limit {
                page.more = true;
                return Ok(page);
            }
            start = next_start.unwrap_or(start);
            end = next_end.unwrap_or(end);
        }
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
