//! The server side of a TLS port: accepted TCP connections are handshaken concurrently (a
//! slow or silent client holds only its own handshake, for at most [`HANDSHAKE_TIMEOUT`], and
//! at most [`MAX_HANDSHAKES`] run at once), and each established connection carries the
//! identity its client certificate proves, for tonic to hand every request
//! ([`Peer`], in the request's extensions).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, BufWriter, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::{Identity, Tls};

/// Longest a client may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most TLS handshakes in progress at once; further connections wait to be accepted.
pub const MAX_HANDSHAKES: usize = 256;

/// Who is on the other end of a TLS connection: set once, at the handshake.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's address.
    pub remote: Option<SocketAddr>,
    /// The identity its certificate (verified against the CA) proves, or why it proves none.
    pub identity: Result<Identity, String>,
}

/// One established TLS connection of the server. Writes go through a buffer: HTTP/2 writes a
/// frame's header and payload as separate small writes, and each would otherwise become its
/// own TLS record and its own `write` system call; buffered, a flush sends them as one.
pub struct TlsConn {
    io: BufWriter<TlsStream<TcpStream>>,
    peer: Peer,
}

/// The write buffer of a TLS connection: one full TLS record.
pub(crate) const WRITE_BUFFER: usize = 16 << 10;

impl Connected for TlsConn {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The established TLS connections of `listener`, for `tonic`'s `serve_with_incoming`. The
/// accept task ends when the stream is dropped. A failed handshake (no certificate, one from
/// another CA, expired, plaintext) closes that connection and is logged at debug level.
///
/// # Panics
/// If `tls` is a client's configuration (it has no server side).
pub fn incoming(tls: Tls, listener: TcpListener) -> ReceiverStream<io::Result<TlsConn>> {
    assert!(tls.server_config().is_some(), "a client's TLS configuration cannot serve");
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        loop {
            let Ok(permit) = handshakes.clone().acquire_owned().await else { return };
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = tx.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let config = tls.server_config().expect("checked above");
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let handshake = TlsAcceptor::from(config).accept(tcp);
                let io = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                    Ok(Ok(io)) => io,
                    Ok(Err(e)) => {
                        tracing::debug!(%remote, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%remote, "TLS handshake timed out");
                        return;
                    }
                };
                let identity = match io.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                    Some(cert) => crate::identity_of(cert),
                    None => Err("no client certificate".to_string()),
                };
                let io = BufWriter::with_capacity(WRITE_BUFFER, io);
                let _ = tx.send(Ok(TlsConn { io, peer: Peer { remote: Some(remote), identity } })).await;
            });
        }
    });
    ReceiverStream::new(rx)
}
