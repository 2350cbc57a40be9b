//! The client side: a connector for tonic's `Endpoint::connect_with_connector`, which dials
//! TCP, then TLS with the current client configuration, checking the server's certificate
//! against the CA and the host in the URI (a name or an IP address).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::BufWriter;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::Tls;

/// Dials `https`-style TLS connections for tonic (give the endpoint an `http://host:port`
/// URI: the TLS is ours, not tonic's).
#[derive(Clone, Debug)]
pub struct Connector {
    tls: Tls,
}

impl Connector {
    /// A connector presenting `tls`'s certificate.
    pub fn new(tls: Tls) -> Self {
        Self { tls }
    }
}

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<BufWriter<TlsStream<TcpStream>>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = self.tls.client_config();
        Box::pin(async move {
            let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{uri}: {why}"));
            let host = uri.host().ok_or_else(|| bad("no host"))?;
            let port = uri.port_u16().ok_or_else(|| bad("no port"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
            let name =
                ServerName::try_from(host.clone()).map_err(|_| bad("not a host name or IP address"))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = TlsConnector::from(config).connect(name, tcp).await?;
            // Buffered as the server side is (serve.rs): small HTTP/2 writes share a record.
            Ok(TokioIo::new(BufWriter::with_capacity(crate::serve::WRITE_BUFFER, tls)))
        })
    }
}
