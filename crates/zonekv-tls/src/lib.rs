//! Mutual TLS for ZoneKV (docs/security.md): every connection between nodes and between
//! clients and nodes is TLS 1.3, both ends present a certificate signed by the cluster's CA,
//! and the certificate says who is calling — node `N` or user `U` ([`Identity`]).
//!
//! - [`CertsDir`]: where the files are (`ca.crt`, `node.crt`, `client.USER.crt`, …).
//! - [`create_ca`], [`create_node`], [`create_client`], [`list`]: `zonekv cert …`.
//! - [`Tls`]: a node's or client's configuration, reloadable without a restart.
//! - [`incoming`]: a TLS listener for tonic, handing each request the caller's [`Peer`].
//! - [`Connector`]: the dialling side for tonic channels.
//! - [`local_pki`]: every certificate of a cluster on one machine (tests, demo, harnesses).
//!
//! Built on rustls (ring provider) and tokio-rustls directly rather than tonic's TLS feature:
//! tonic's configuration is fixed at start, and certificates must rotate in place.

mod connect;
mod create;
mod error;
mod identity;
mod layout;
mod load;
mod local;
mod serve;
mod tls;

pub use connect::Connector;
pub use create::{
    CA_VALIDITY, CertInfo, Created, LEAF_VALIDITY, Validity, create_ca, create_client, create_node, list,
};
pub use error::{Error, Result};
pub use identity::{Identity, NODE_COMMON_NAME, identity_of};
pub use layout::{CertsDir, ROOT_USER, check_user};
pub use local::{local_node_dir, local_pki};
pub use serve::{HANDSHAKE_TIMEOUT, MAX_HANDSHAKES, Peer, TlsConn, incoming};
pub use tls::Tls;
