//! Routing and retries: which node to ask, and what to do when it says no.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use zonekv_proto::metadata;

use crate::mux::Mux;
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
}

struct State {
    endpoints: Vec<String>,
    leader: Option<String>,
    next: usize,
    nodes: HashMap<String, NodeConn>,
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
        let state =
            State { endpoints: config.endpoints.clone(), leader: None, next: 0, nodes: HashMap::new() };
        Ok(Self { config, state: Mutex::new(state) })
    }

    pub(crate) fn config(&self) -> &ClientConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn target(&self, kind: Kind) -> String {
        let st = self.lock();
        match (&st.leader, kind) {
            (Some(l), Kind::Read | Kind::Write) => l.clone(),
            _ => st.endpoints[st.next % st.endpoints.len()].clone(),
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
        let channel = endpoint.connect_lazy();
        let node = NodeConn { mux: Mux::new(channel.clone(), self.config.max_message_bytes), channel };
        st.nodes.insert(addr.to_string(), node.clone());
        Ok(node)
    }

    fn set_leader(&self, addr: &str) {
        self.lock().leader = Some(addr.to_string());
    }

    fn rotate(&self, failed: &str) {
        let mut st = self.lock();
        if st.leader.as_deref() == Some(failed) {
            st.leader = None;
        }
        st.next = st.next.wrapping_add(1);
    }

    /// Runs `f` against the right node until it succeeds, fails for good, or the retry budget
    /// is spent.
    pub(crate) async fn call<T, F, Fut>(&self, kind: Kind, mut f: F) -> Result<T>
    where
        F: FnMut(NodeConn) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let deadline = Instant::now() + self.config.retry_budget;
        let mut backoff = Duration::from_millis(10);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let addr = self.target(kind);
            let node = self.node(&addr)?;
            let last = match tokio::time::timeout(self.config.request_timeout, f(node)).await {
                Ok(Ok(resp)) => {
                    if kind != Kind::StaleRead {
                        self.set_leader(&addr);
                    }
                    return Ok(resp);
                }
                Ok(Err(status)) => match classify(&status, kind) {
                    Action::Fail(e) => return Err(e),
                    Action::Redirect(leader) if leader != addr => {
                        tracing::debug!(from = %addr, to = %leader, "following leader redirect");
                        self.set_leader(&leader);
                        if Instant::now() < deadline {
                            continue;
                        }
                        status.message().to_string()
                    }
                    Action::Redirect(_) | Action::Rotate => {
                        tracing::debug!(addr = %addr, code = ?status.code(), msg = status.message(), "retrying elsewhere");
                        self.rotate(&addr);
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
                    self.rotate(&addr);
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
