//! Reading a certificates directory into rustls configurations: TLS 1.3 only, HTTP/2 by
//! ALPN, client certificates required and verified against the cluster's CA, the ring
//! crypto provider.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::{CertsDir, Error, Identity, Result};

pub(crate) fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = std::fs::read(path).map_err(Error::io(path))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::bad(path, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(Error::bad(path, "holds no certificate"));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let bytes = std::fs::read(path).map_err(Error::io(path))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| Error::bad(path, format!("not a PEM private key: {e}")))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(dir: &CertsDir) -> Result<Arc<RootCertStore>> {
    let path = dir.ca_cert();
    let mut roots = RootCertStore::empty();
    for c in certs(&path)? {
        roots.add(c).map_err(|e| Error::bad(&path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(Arc::new(roots))
}

/// A certificate chain and key, and the identity the certificate proves.
pub(crate) struct Own {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    pub(crate) identity: Identity,
    pub(crate) not_after: String,
}

/// Reads the certificate at `cert` and its key; fails unless it is valid now and identifies
/// someone.
pub(crate) fn own(cert: &Path, key_path: &Path) -> Result<Own> {
    let chain = certs(cert)?;
    let parsed = crate::identity::parse(&chain[0]).map_err(|e| Error::bad(cert, e))?;
    if parsed.expired {
        return Err(Error::bad(
            cert,
            format!("is not valid now (valid from {} to {})", parsed.not_before, parsed.not_after),
        ));
    }
    let identity = parsed.identity.map_err(|e| Error::bad(cert, e))?;
    Ok(Own { chain, key: key(key_path)?, identity, not_after: parsed.not_after })
}

/// The server side: our certificate, clients' certificates required and checked against the
/// CA.
pub(crate) fn server_config(dir: &CertsDir, own: &Own) -> Result<ServerConfig> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(dir)?, provider.clone())
        .build()
        .map_err(|e| Error::Tls(format!("client verifier: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(own.chain.clone(), own.key.clone_key())?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The client side: the server's certificate checked against the CA and the host dialled;
/// our certificate presented.
pub(crate) fn client_config(dir: &CertsDir, own: &Own) -> Result<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(dir)?)
        .with_client_auth_cert(own.chain.clone(), own.key.clone_key())?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}
