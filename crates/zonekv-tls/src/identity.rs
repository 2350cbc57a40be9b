//! Who a certificate says its holder is. A node certificate has the common name `node` and
//! names its node id in a URI subject alternative name, `urn:zonekv:node:ID`, beside the
//! node's host names; a client certificate has the user's name as its common name. The CA
//! signed both, so the identity is as trustworthy as the CA's key.

use std::fmt;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The common name of every node certificate.
pub const NODE_COMMON_NAME: &str = "node";

const NODE_URI_PREFIX: &str = "urn:zonekv:node:";

/// The URI subject alternative name that binds a node certificate to node `id`.
pub(crate) fn node_uri(id: u64) -> String {
    format!("{NODE_URI_PREFIX}{id}")
}

/// The holder of a verified certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// ZoneKV node `id`.
    Node(u64),
    /// Client user `name`.
    User(String),
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Node(id) => write!(f, "node {id}"),
            Identity::User(name) => write!(f, "user {name}"),
        }
    }
}

/// What a certificate (DER) shows: its identity and host names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub(crate) identity: Result<Identity, String>,
    pub(crate) hosts: Vec<String>,
    pub(crate) not_before: String,
    pub(crate) not_after: String,
    pub(crate) expired: bool,
    pub(crate) is_ca: bool,
}

/// The identity certificate `der` proves, or why it proves none.
pub fn identity_of(der: &[u8]) -> Result<Identity, String> {
    parse(der)?.identity
}

pub(crate) fn parse(der: &[u8]) -> Result<Parsed, String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let cn = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_string);
    let mut hosts = Vec::new();
    let mut node_ids = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => hosts.push(d.to_string()),
                GeneralName::IPAddress(ip) => hosts.push(ip_text(ip)),
                GeneralName::URI(u) => {
                    if let Some(id) = u.strip_prefix(NODE_URI_PREFIX) {
                        node_ids.push(id.parse::<u64>().map_err(|_| format!("bad node URI {u:?}")));
                    }
                }
                _ => {}
            }
        }
    }
    let identity = match (cn.as_deref(), node_ids.as_slice()) {
        (Some(NODE_COMMON_NAME), [Ok(id)]) => Ok(Identity::Node(*id)),
        (Some(NODE_COMMON_NAME), []) => {
            Err("a node certificate without a node id (urn:zonekv:node:ID)".into())
        }
        (Some(NODE_COMMON_NAME), [Err(e)]) => Err(e.clone()),
        (Some(NODE_COMMON_NAME), _) => Err("a node certificate naming several node ids".into()),
        (Some(user), []) => {
            crate::check_user(user).map(|()| Identity::User(user.to_string())).map_err(|e| e.to_string())
        }
        (Some(user), _) => Err(format!("client certificate of {user:?} names a node id")),
        (None, _) => Err("the certificate has no common name".into()),
    };
    let validity = cert.validity();
    Ok(Parsed {
        identity,
        hosts,
        not_before: validity.not_before.to_string(),
        not_after: validity.not_after.to_string(),
        expired: !validity.is_valid(),
        is_ca: cert.is_ca(),
    })
}

fn ip_text(ip: &[u8]) -> String {
    match ip.len() {
        4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(ip).expect("4 bytes")).to_string(),
        16 => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(ip).expect("16 bytes")).to_string(),
        _ => format!("{ip:?}"),
    }
}
