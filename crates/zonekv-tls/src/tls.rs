//! [`Tls`]: a node's or client's TLS configuration, loaded from its certificates directory
//! and reloadable in place ([`Tls::reload`]), so certificates rotate without a restart: new
//! connections use the new files, open ones keep the session they have.

use std::sync::{Arc, RwLock};

use rustls::{ClientConfig, ServerConfig};

use crate::load::{self, Own};
use crate::{CertsDir, Error, Identity, Result};

/// Whose certificate a [`Tls`] presents.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    /// `node.crt`: serves, and dials peers.
    Node,
    /// `client.USER.crt`: dials nodes.
    Client(String),
}

struct Configs {
    identity: Identity,
    /// End of our certificate's validity.
    not_after: String,
    server: Option<Arc<ServerConfig>>,
    client: Arc<ClientConfig>,
}

/// The TLS configuration of a node or a client; cheap to clone, shared by every clone.
#[derive(Clone)]
pub struct Tls {
    dir: CertsDir,
    role: Role,
    current: Arc<RwLock<Configs>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("dir", &self.dir).field("role", &self.role).finish_non_exhaustive()
    }
}

impl Tls {
    /// A node's configuration: `ca.crt`, `node.crt` and `node.key` of `dir`.
    pub fn node(dir: CertsDir) -> Result<Tls> {
        Self::load(dir, Role::Node)
    }

    /// Client user `user`'s configuration: `ca.crt`, `client.USER.crt` and `client.USER.key`.
    pub fn client(dir: CertsDir, user: &str) -> Result<Tls> {
        crate::check_user(user)?;
        Self::load(dir, Role::Client(user.to_string()))
    }

    fn load(dir: CertsDir, role: Role) -> Result<Tls> {
        let configs = Self::read(&dir, &role)?;
        Ok(Tls { dir, role, current: Arc::new(RwLock::new(configs)) })
    }

    fn read(dir: &CertsDir, role: &Role) -> Result<Configs> {
        let (cert, key) = match role {
            Role::Node => (dir.node_cert(), dir.node_key()),
            Role::Client(user) => (dir.client_cert(user), dir.client_key(user)),
        };
        let own: Own = load::own(&cert, &key)?;
        match (role, &own.identity) {
            (Role::Node, Identity::Node(_)) => {}
            (Role::Client(user), Identity::User(u)) if u == user => {}
            (_, other) => {
                return Err(Error::bad(&cert, format!("identifies {other}, not the {}", role.what())));
            }
        }
        let server = match role {
            Role::Node => Some(Arc::new(load::server_config(dir, &own)?)),
            Role::Client(_) => None,
        };
        let client = Arc::new(load::client_config(dir, &own)?);
        Ok(Configs { identity: own.identity, not_after: own.not_after, server, client })
    }

    /// Reads the directory again. On success, new connections use the new certificates; on
    /// failure (a missing or bad file, or a certificate of someone else: a reload rotates
    /// certificates, it never changes who we are), nothing changes and the error says why.
    pub fn reload(&self) -> Result<()> {
        let configs = Self::read(&self.dir, &self.role)?;
        let current = self.identity();
        if configs.identity != current {
            let cert = match &self.role {
                Role::Node => self.dir.node_cert(),
                Role::Client(user) => self.dir.client_cert(user),
            };
            return Err(Error::bad(
                cert,
                format!("identifies {}, not {current} as before", configs.identity),
            ));
        }
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = configs;
        tracing::info!(dir = %self.dir.path().display(), "certificates reloaded");
        Ok(())
    }

    /// Whom our certificate identifies.
    pub fn identity(&self) -> Identity {
        self.current.read().unwrap_or_else(|p| p.into_inner()).identity.clone()
    }

    /// When our certificate stops being valid.
    pub fn not_after(&self) -> String {
        self.current.read().unwrap_or_else(|p| p.into_inner()).not_after.clone()
    }

    pub(crate) fn server_config(&self) -> Option<Arc<ServerConfig>> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).server.clone()
    }

    pub(crate) fn client_config(&self) -> Arc<ClientConfig> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).client.clone()
    }
}

impl Role {
    fn what(&self) -> String {
        match self {
            Role::Node => "node certificate this file must be".into(),
            Role::Client(user) => format!("user {user} this file is named for"),
        }
    }
}
