//! TLS for clients (`[tls]`): the acceptor, and the client socket in plaintext or TLS.
//!
//! A client asks for TLS with an SSLRequest before its startup packet, as libpq does; the proxy
//! answers 'S' and takes the TLS handshake when `[tls] mode` is `prefer` or `require`, 'N'
//! otherwise. With `require`, a startup packet that arrives in plaintext is refused (28000), as
//! a `hostssl`-only pg_hba.conf refuses it.

use crate::config::TlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::{tcp, TcpStream};
use tokio_rustls::server::TlsStream;

/// What the proxy offers clients.
#[derive(Clone)]
pub struct ClientTls {
    pub acceptor: Option<tokio_rustls::TlsAcceptor>,
    /// Plaintext logins are refused.
    pub required: bool,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("enabled", &self.acceptor.is_some())
            .field("required", &self.required)
            .finish()
    }
}

impl ClientTls {
    /// From `[tls]`: reads the certificate chain and key (errors name the file).
    pub fn from_config(tls: &TlsConfig) -> Result<ClientTls, String> {
        if tls.mode == "disable" {
            return Ok(ClientTls {
                acceptor: None,
                required: false,
            });
        }
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert_file)
            .and_then(|certs| certs.collect())
            .map_err(|e| format!("tls.cert_file {}: {e}", tls.cert_file))?;
        if certs.is_empty() {
            return Err(format!(
                "tls.cert_file {}: no certificate in it",
                tls.cert_file
            ));
        }
        let key = PrivateKeyDer::from_pem_file(&tls.key_file)
            .map_err(|e| format!("tls.key_file {}: {e}", tls.key_file))?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls: the certificate and key do not make a server identity: {e}"))?;
        Ok(ClientTls {
            acceptor: Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
            required: tls.mode == "require",
        })
    }
}

/// A client connection, in plaintext or TLS.
pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Between the plaintext and the TLS stream, or after a failed handshake.
    Gone,
}

pub enum ClientReader {
    Plain(tcp::OwnedReadHalf),
    Tls(ReadHalf<TlsStream<TcpStream>>),
}

pub enum ClientWriter {
    Plain(tcp::OwnedWriteHalf),
    Tls(WriteHalf<TlsStream<TcpStream>>),
}

impl ClientWriter {
    /// Whether written bytes may wait in a buffer until a flush (TLS records).
    pub fn buffers(&self) -> bool {
        matches!(self, ClientWriter::Tls(_))
    }

    /// Writes what the socket takes at once, without waiting (`Ok(0)`: nothing now, or TLS,
    /// whose records go only through the async path).
    pub fn try_write_now(&mut self, bytes: &[u8]) -> io::Result<usize> {
        crate::io_enum::taken_now(match self {
            ClientWriter::Plain(w) => w.try_write(bytes),
            ClientWriter::Tls(_) => Ok(0),
        })
    }
}

impl ClientStream {
    pub fn is_tls(&self) -> bool {
        matches!(self, ClientStream::Tls(_))
    }

    /// Takes the TLS handshake on a plaintext stream.
    pub async fn upgrade(&mut self, acceptor: &tokio_rustls::TlsAcceptor) -> io::Result<()> {
        let ClientStream::Plain(tcp) = std::mem::replace(self, ClientStream::Gone) else {
            return Err(io::Error::other("TLS requested twice"));
        };
        *self = ClientStream::Tls(Box::new(acceptor.accept(tcp).await?));
        Ok(())
    }

    pub fn into_split(self) -> (ClientReader, ClientWriter) {
        match self {
            ClientStream::Plain(s) => {
                let (r, w) = s.into_split();
                (ClientReader::Plain(r), ClientWriter::Plain(w))
            }
            ClientStream::Tls(s) => {
                let (r, w) = tokio::io::split(*s);
                (ClientReader::Tls(r), ClientWriter::Tls(w))
            }
            // Never split: a failed upgrade ends the connection before the session.
            ClientStream::Gone => {
                unreachable!("a connection whose TLS handshake failed is not served")
            }
        }
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the TLS handshake failed")
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s).poll_read(cx, buf),
            Self::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, b),
            Self::Tls(s) => Pin::new(s).poll_write(cx, b),
            Self::Gone => Poll::Ready(Err(gone())),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s).poll_flush(cx),
            Self::Gone => Poll::Ready(Ok(())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s).poll_shutdown(cx),
            Self::Gone => Poll::Ready(Ok(())),
        }
    }
}

crate::io_enum::delegate_read!(ClientReader: Plain, Tls);
crate::io_enum::delegate_write!(ClientWriter: Plain, Tls);
