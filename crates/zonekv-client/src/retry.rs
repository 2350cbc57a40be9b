//! Routing and retries: which node to ask, and what to do when it says no.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use zonekv_proto::metadata;

use bytes::Bytes;
use zonekv_proto::kv::v1 as pb;
use zonekv_proto::kv::v1::kv_client::KvClient;

use crate::mux::Mux;
use crate::ranges::{CachedRange, RangeCache, RouteKey};
use crate::{ClientConfig, ClientError, Result};

/// What a request is, for retry purposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Linearizable read: leader only, always safe to retry.
    Read,
    /// Stale read: any node, always safe to retry.
    StaleRead,
    /// Write: leader only, retried only when it provably had no effect.
    Write,
}

enum Action {
    Fail(ClientError),
    Redirect(String),
    Rotate,
    /// The node shed the request (overloaded, nothing applied): ask it again after a backoff.
    Backoff,
    /// The range moved (split): look it up again.
    Refresh,
}

struct State {
    endpoints: Vec<String>,
    /// The leader of requests that name no key (admin calls: the first range's leader).
    leader: Option<String>,
    next: usize,
    nodes: HashMap<String, NodeConn>,
    ranges: RangeCache,
}

/// Where one attempt goes: the node, and the cached range that chose it (by start key).
struct Target {
    addr: String,
    range: Option<Bytes>,
}

impl State {
    /// Where an attempt goes by what is known now: the cached range of `key`, if any (its
    /// leader for reads and writes, else one of its replicas), else the first range's leader
    /// or the next endpoint.
    fn target(&self, kind: Kind, key: Option<&RouteKey>) -> Target {
        let round = |addrs: &[String]| addrs[self.next % addrs.len()].clone();
        if let Some(r) = key.and_then(|k| self.ranges.get(k)) {
            let addr = match (&r.leader, kind) {
                (Some(l), Kind::Read | Kind::Write) => l.clone(),
                _ if !r.replicas.is_empty() => round(&r.replicas),
                _ => round(&self.endpoints),
            };
            return Target { addr, range: Some(r.start.clone()) };
        }
        let addr = match (&self.leader, kind) {
            (Some(l), Kind::Read | Kind::Write) => l.clone(),
            _ => round(&self.endpoints),
        };
        Target { addr, range: None }
    }
}

/// The ways to reach one node: a gRPC channel for unary calls and a multiplexed stream for
/// key-value calls, sharing one HTTP/2 connection.
#[derive(Clone)]
pub(crate) struct NodeConn {
    pub(crate) channel: Channel,
    pub(crate) mux: Mux,
}

/// Picks nodes, keeps one channel per node, and retries.
pub(crate) struct Router {
    config: ClientConfig,
    state: Mutex<State>,
}

/// True if the request surely never reached a server: the connection was refused or could not
/// be established.
fn never_sent(s: &Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(s);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        if e.to_string().contains("tcp connect error") {
            return true;
        }
        source = e.source();
    }
    false
}

fn classify(s: &Status, kind: Kind) -> Action {
    let md = s.metadata();
    let not_applied = md.get(metadata::NOT_APPLIED).is_some();
    if md.get(metadata::RANGE_MISMATCH).is_some() {
        return Action::Refresh;
    }
    match s.code() {
        Code::Unavailable => {
            if kind != Kind::StaleRead
                && let Some(addr) = md.get(metadata::LEADER_ADDR).and_then(|v| v.to_str().ok())
            {
                return Action::Redirect(addr.to_string());
            }
            if not_applied || kind != Kind::Write || never_sent(s) {
                Action::Rotate
            } else {
                Action::Fail(ClientError::OutcomeUnknown(format!(
                    "connection failed mid-request: {}",
                    s.message()
                )))
            }
        }
        // Load shedding: the leader is the right node, it is busy; the backoff paces the retry.
        Code::ResourceExhausted if not_applied => Action::Backoff,
        // A read can go to another replica: this one may be shutting down or stopped.
        Code::Unknown | Code::Cancelled | Code::DeadlineExceeded | Code::Internal if kind != Kind::Write => {
            Action::Rotate
        }
        _ => Action::Fail(ClientError::from_status(s)),
    }
}

impl Router {
    pub(crate) fn new(config: ClientConfig) -> Result<Self> {
        if config.endpoints.is_empty() {
            return Err(ClientError::Config("no endpoints given".into()));
        }
        let state = State {
            endpoints: config.endpoints.clone(),
            leader: None,
            next: 0,
            nodes: HashMap::new(),
            ranges: RangeCache::default(),
        };
        Ok(Self { config, state: Mutex::new(state) })
    }

    pub(crate) fn config(&self) -> &ClientConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the next attempt goes. Requests with a key go to their range's leader (reads and
    /// writes) or one of its replicas (stale reads, or while the leader is unknown); a range not
    /// in the cache is looked up first. Requests without one (admin) go to the first range's
    /// leader, or round the endpoints.
    async fn target(&self, kind: Kind, key: Option<&RouteKey>) -> Target {
        let target = self.lock().target(kind, key);
        let Some(key) = key.filter(|_| target.range.is_none()) else { return target };
        self.lookup(key).await;
        self.lock().target(kind, Some(key))
    }

    /// Asks the nodes, in turn, which range serves `key`, and caches the first answer. Failing
    /// that (no node reachable, cluster not initialised), requests go round the endpoints and
    /// their errors say why.
    async fn lookup(&self, key: &RouteKey) {
        let (k, before) = key.lookup();
        let (endpoints, first) = {
            let st = self.lock();
            (st.endpoints.clone(), st.next)
        };
        for i in 0..endpoints.len() {
            let addr = &endpoints[(first + i) % endpoints.len()];
            let Ok(channel) = self.channel(addr) else { continue };
            let req = pb::LookupRangeRequest { key: k.clone(), before };
            let mut client = KvClient::new(channel);
            let call = client.lookup_range(req);
            let Ok(Ok(resp)) = tokio::time::timeout(self.config.request_timeout, call).await else {
                continue;
            };
            let resp = resp.into_inner();
            let Some(info) = resp.range else { continue };
            let range = CachedRange {
                start: info.start,
                end: (!info.end.is_empty()).then_some(info.end),
                leader: (!resp.leader_addr.is_empty()).then_some(resp.leader_addr),
                replicas: resp.replica_addrs,
            };
            tracing::debug!(?range, "range looked up");
            self.lock().ranges.insert(range);
            return;
        }
    }

    pub(crate) fn channel(&self, addr: &str) -> Result<Channel> {
        Ok(self.node(addr)?.channel)
    }

    pub(crate) fn node(&self, addr: &str) -> Result<NodeConn> {
        let mut st = self.lock();
        if let Some(c) = st.nodes.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| ClientError::Config(format!("bad address {addr:?}: {e}")))?
            .connect_timeout(self.config.connect_timeout)
            .tcp_nodelay(true);
        let channel = match &self.config.tls {
            Some(tls) => endpoint.connect_with_connector_lazy(zonekv_tls::Connector::new(tls.clone())),
            None => endpoint.connect_lazy(),
        };
        let node = NodeConn { mux: Mux::new(channel.clone(), self.config.max_message_bytes), channel };
        st.nodes.insert(addr.to_string(), node.clone());
        Ok(node)
    }

    fn set_leader(&self, target: &Target, addr: &str) {
        let mut st = self.lock();
        match &target.range {
            Some(start) => st.ranges.set_leader(start, addr),
            None => st.leader = Some(addr.to_string()),
        }
    }

    fn rotate(&self, target: &Target) {
        let mut st = self.lock();
        match &target.range {
            Some(start) => st.ranges.clear_leader(start, &target.addr),
            None if st.leader.as_deref() == Some(&target.addr) => st.leader = None,
            None => {}
        }
        st.next = st.next.wrapping_add(1);
    }

    /// Runs `f` against the right node until it succeeds, fails for good, or the retry budget
    /// is spent.
    pub(crate) async fn call<T, F, Fut>(&self, kind: Kind, key: Option<&RouteKey>, mut f: F) -> Result<T>
    where
        F: FnMut(NodeConn) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let deadline = Instant::now() + self.config.retry_budget;
        let mut backoff = Duration::from_millis(10);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let target = self.target(kind, key).await;
            let addr = target.addr.clone();
            let node = self.node(&addr)?;
            let last = match tokio::time::timeout(self.config.request_timeout, f(node)).await {
                Ok(Ok(resp)) => {
                    if kind != Kind::StaleRead {
                        self.set_leader(&target, &addr);
                    }
                    return Ok(resp);
                }
                Ok(Err(status)) => match classify(&status, kind) {
                    Action::Fail(e) => return Err(e),
                    Action::Redirect(leader) if leader != addr => {
                        tracing::debug!(from = %addr, to = %leader, "following leader redirect");
                        self.set_leader(&target, &leader);
                        if Instant::now() < deadline {
                            continue;
                        }
                        status.message().to_string()
                    }
                    Action::Refresh => {
                        tracing::debug!(addr = %addr, msg = status.message(), "range moved; looking it up again");
                        if let Some(start) = &target.range {
                            self.lock().ranges.remove(start);
                        }
                        // The first refresh is immediate: a split is routine, not trouble.
                        if attempts == 1 && Instant::now() < deadline {
                            continue;
                        }
                        format!("{addr}: {}", status.message())
                    }
                    Action::Backoff => {
                        tracing::debug!(addr = %addr, msg = status.message(), "node overloaded; backing off");
                        format!("{addr}: {}", status.message())
                    }
                    Action::Redirect(_) | Action::Rotate => {
                        tracing::debug!(addr = %addr, code = ?status.code(), msg = status.message(), "retrying elsewhere");
                        self.rotate(&target);
                        format!("{addr}: {}", status.message())
                    }
                },
                Err(_) if kind == Kind::Write => {
                    return Err(ClientError::OutcomeUnknown(format!(
                        "no answer from {addr} within {:?}",
                        self.config.request_timeout
                    )));
                }
                Err(_) => {
                    self.rotate(&target);
                    format!("{addr}: no answer within {:?}", self.config.request_timeout)
                }
            };
            if Instant::now() + backoff > deadline {
                return Err(ClientError::Unavailable { message: last, attempts });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: Code, not_applied: bool) -> Status {
        let mut s = Status::new(code, "this node holds too many writes");
        if not_applied {
            s.metadata_mut().insert(metadata::NOT_APPLIED, "true".parse().unwrap());
        }
        s
    }

    #[test]
    fn a_shed_request_is_retried_after_a_backoff_only_when_nothing_was_applied() {
        for kind in [Kind::Write, Kind::Read, Kind::StaleRead] {
            assert!(matches!(classify(&status(Code::ResourceExhausted, true), kind), Action::Backoff));
        }
        // Without the server's word that nothing was applied (a message over the size limit,
        // refused by gRPC itself), retrying cannot help.
        assert!(matches!(
            classify(&status(Code::ResourceExhausted, false), Kind::Write),
            Action::Fail(ClientError::Server { code: Code::ResourceExhausted, .. })
        ));
    }
}
