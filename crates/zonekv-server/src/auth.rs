//! Who may call what (docs/security.md, "Authorization"), in one place: a tower layer in
//! front of every gRPC service turns the connection's verified certificate into a [`Caller`]
//! and refuses a call the caller's kind may not make, before any service sees it; the
//! services then check what depends on the request itself — that a node speaks only for
//! itself ([`Caller::speaks_for`]), and which keys a user may touch (`grants.rs`).
//!
//! | service                    | node cert | `root` | other users          |
//! |----------------------------|-----------|--------|----------------------|
//! | `zonekv.raft.v1` (internal)| yes       | no     | no                   |
//! | `zonekv.admin.v1`          | `AddNode` for itself | yes | no           |
//! | `zonekv.kv.v1`             | no        | yes    | their granted keys   |
//!
//! Without certificates (`--insecure`, or an embedded node without `certs-dir`) every caller
//! is [`Caller::Insecure`] and may do everything, as before.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use zonekv_raft::NodeId;
use zonekv_tls::{Identity, Peer, ROOT_USER};

use crate::{Error, Result};

/// Who is calling, as proved by the connection's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Caller {
    /// The node runs without TLS: nobody is authenticated, everything is allowed.
    Insecure,
    /// A node of the cluster.
    Node(NodeId),
    /// A client user.
    User(String),
}

impl Caller {
    /// The caller of a request that passed the layer. A request that did not (an in-process
    /// test calling a service directly) has no caller and is refused.
    pub(crate) fn of<T>(req: &tonic::Request<T>) -> Result<Caller> {
        req.extensions()
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| Error::Unauthenticated("the call carries no verified identity".into()))
    }

    /// The calling node, if the caller is one (`None` in insecure mode: no claim is checked).
    pub(crate) fn node(&self) -> Option<NodeId> {
        match self {
            Caller::Node(n) => Some(*n),
            Caller::Insecure | Caller::User(_) => None,
        }
    }

    /// Fails unless the caller may speak for node `claimed` (a Raft header's sender, a
    /// ping's origin, the node being added): its certificate must be that node's.
    pub(crate) fn speaks_for(&self, claimed: NodeId, what: &str) -> Result<()> {
        match self {
            Caller::Insecure => Ok(()),
            Caller::Node(n) if *n == claimed => Ok(()),
            Caller::Node(n) => Err(Error::PermissionDenied(format!(
                "{what} claims to come from node {claimed}, but the caller's certificate is node {n}'s"
            ))),
            Caller::User(u) => Err(Error::PermissionDenied(format!("user {u} may not send {what}"))),
        }
    }

    /// Whether the caller may do anything (root, or no authentication at all).
    pub(crate) fn is_root(&self) -> bool {
        match self {
            Caller::Insecure => true,
            Caller::User(u) => u == ROOT_USER,
            Caller::Node(_) => false,
        }
    }
}

/// What a gRPC method needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// A node certificate.
    Node,
    /// The `root` user.
    Root,
    /// `root`, or a node (which the service checks speaks for itself).
    RootOrNode,
    /// Any user (the service checks the keys).
    User,
}

/// What the method at gRPC path `/package.Service/Method` needs. Unknown services need root.
fn need(path: &str) -> Need {
    let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
    match service {
        "zonekv.raft.v1.RaftTransport" => Need::Node,
        "zonekv.admin.v1.Admin" if method == "AddNode" => Need::RootOrNode,
        "zonekv.kv.v1.Kv" => Need::User,
        _ => Need::Root,
    }
}

/// The caller a connection's peer information makes, if it may call `path`.
fn admit(secure: bool, path: &str, peer: Option<&Peer>) -> Result<Caller> {
    if !secure {
        return Ok(Caller::Insecure);
    }
    let peer =
        peer.ok_or_else(|| Error::Unauthenticated("the connection carries no client certificate".into()))?;
    let caller = match &peer.identity {
        Ok(Identity::Node(n)) => Caller::Node(NodeId::new(*n)),
        Ok(Identity::User(u)) => Caller::User(u.clone()),
        Err(why) => {
            return Err(Error::Unauthenticated(format!("the client certificate identifies nobody: {why}")));
        }
    };
    let need = need(path);
    let allowed = match (need, &caller) {
        (Need::Node, Caller::Node(_))
        | (Need::RootOrNode, Caller::Node(_))
        | (Need::User, Caller::User(_)) => true,
        (Need::Root | Need::RootOrNode, Caller::User(_)) => caller.is_root(),
        _ => false,
    };
    if !allowed {
        let who = match &caller {
            Caller::Node(n) => format!("node {n}"),
            Caller::User(u) => format!("user {u}"),
            Caller::Insecure => "anyone".into(),
        };
        let needs = match need {
            Need::Node => "a node certificate",
            Need::Root => "the root user",
            Need::RootOrNode => "the root user or a node certificate",
            Need::User => "a client certificate",
        };
        return Err(Error::PermissionDenied(format!("{path} needs {needs}; the caller is {who}")));
    }
    Ok(caller)
}

/// The layer (see the module docs): `secure` is whether the node serves TLS.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AuthLayer {
    pub(crate) secure: bool,
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth { inner, secure: self.secure }
    }
}

/// The service [`AuthLayer`] wraps around the routes.
#[derive(Debug, Clone)]
pub(crate) struct Auth<S> {
    inner: S,
    secure: bool,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for Auth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match admit(self.secure, req.uri().path(), req.extensions().get::<Peer>()) {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
                Box::pin(self.inner.call(req))
            }
            Err(e) => {
                tracing::debug!(path = req.uri().path(), error = %e, "call refused");
                let response = tonic::Status::from(e).into_http();
                Box::pin(std::future::ready(Ok(response)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(identity: Result<Identity, String>) -> Peer {
        Peer { remote: None, identity }
    }

    #[test]
    fn each_kind_of_caller_reaches_only_its_services() {
        let node = peer(Ok(Identity::Node(2)));
        let root = peer(Ok(Identity::User("root".into())));
        let alice = peer(Ok(Identity::User("alice".into())));
        let raft = "/zonekv.raft.v1.RaftTransport/Batch";
        let kv = "/zonekv.kv.v1.Kv/Put";
        let split = "/zonekv.admin.v1.Admin/Split";
        let add = "/zonekv.admin.v1.Admin/AddNode";
        assert_eq!(admit(true, raft, Some(&node)).unwrap(), Caller::Node(NodeId::new(2)));
        assert!(matches!(admit(true, raft, Some(&root)), Err(Error::PermissionDenied(_))));
        assert!(matches!(admit(true, kv, Some(&node)), Err(Error::PermissionDenied(_))));
        assert!(admit(true, kv, Some(&alice)).is_ok());
        assert!(matches!(admit(true, split, Some(&alice)), Err(Error::PermissionDenied(_))));
        assert!(admit(true, split, Some(&root)).is_ok());
        assert!(admit(true, add, Some(&node)).is_ok());
        assert!(matches!(admit(true, "/other.Service/X", Some(&alice)), Err(Error::PermissionDenied(_))));
        assert!(matches!(admit(true, kv, None), Err(Error::Unauthenticated(_))));
        assert!(matches!(admit(true, kv, Some(&peer(Err("no id".into())))), Err(Error::Unauthenticated(_))));
        assert_eq!(admit(false, raft, None).unwrap(), Caller::Insecure);
    }

    #[test]
    fn a_node_speaks_only_for_itself() {
        let n2 = Caller::Node(NodeId::new(2));
        assert!(n2.speaks_for(NodeId::new(2), "a ping").is_ok());
        assert!(matches!(n2.speaks_for(NodeId::new(1), "a ping"), Err(Error::PermissionDenied(_))));
        assert!(Caller::Insecure.speaks_for(NodeId::new(1), "a ping").is_ok());
        assert!(Caller::User("root".into()).speaks_for(NodeId::new(1), "a ping").is_err());
    }
}
