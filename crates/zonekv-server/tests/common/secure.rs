//! A secure in-process cluster and ways to dial it: with a certificate the TLS layer loads
//! (`channel`), or with any rustls client configuration at all (`raw_channel`), for the
//! certificates the loader itself would refuse (expired, not yet valid, none).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::transport::{Channel, Endpoint};
use zonekv_server::{LocalCluster, NodeConfig};
use zonekv_tls::{CertsDir, Tls};

/// A secure cluster and its certificates directory (the CA and root's certificate).
pub struct Secure {
    pub cluster: LocalCluster,
    pub root: PathBuf,
    _dir: tempfile::TempDir,
}

impl Secure {
    pub async fn start(n: usize, template: NodeConfig) -> Secure {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("certs");
        let template = NodeConfig { certs_dir: Some(root.clone()), ..template };
        let cluster = LocalCluster::start_with(n, None, template).await.expect("start a secure cluster");
        cluster.wait_for_leader(Duration::from_secs(20)).await.expect("leader");
        Secure { cluster, root, _dir: dir }
    }

    pub fn ca(&self) -> CertsDir {
        CertsDir::new(&self.root)
    }

    /// Node `id`'s own TLS configuration (its certificate, as a client of its peers).
    pub fn node_tls(&self, id: u64) -> Tls {
        Tls::node(CertsDir::new(zonekv_tls::local_node_dir(&self.root, id))).unwrap()
    }

    pub fn user_tls(&self, user: &str) -> Tls {
        if !self.ca().client_cert(user).exists() {
            zonekv_tls::create_client(&self.ca(), &self.ca(), user, zonekv_tls::Validity::days(1), false)
                .unwrap();
        }
        Tls::client(self.ca(), user).unwrap()
    }

    pub fn addr(&self, id: u64) -> String {
        self.cluster.node(id).unwrap().addr().to_string()
    }
}

/// A channel to `addr` presenting `tls`'s certificate.
pub fn channel(tls: Tls, addr: &str) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect_with_connector_lazy(zonekv_tls::Connector::new(tls))
}

/// A rustls client configuration trusting `ca` and presenting `cert`/`key`, if given: no
/// checks of our own.
pub fn raw_config(ca: &Path, cert_key: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots);
    let mut config = match cert_key {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert).unwrap().map(Result::unwrap).collect(),
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// A channel to `addr` over TLS with `config`, expecting the server to be `server_name`.
pub fn raw_channel(config: Arc<rustls::ClientConfig>, server_name: &str, addr: &str) -> Channel {
    let name = ServerName::try_from(server_name.to_string()).unwrap();
    let addr = addr.to_string();
    let connector = tower::service_fn(move |_uri: http::Uri| {
        let (config, name, addr) = (config.clone(), name.clone(), addr.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect(&addr).await?;
            let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    Endpoint::from_static("http://zonekv.invalid:1")
        .connect_timeout(Duration::from_secs(2))
        .connect_with_connector_lazy(connector)
}

/// A plaintext channel to `addr` (no TLS at all).
pub fn plain_channel(addr: &str) -> Channel {
    Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy()
}
