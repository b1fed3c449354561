//! A shard socket: TCP, TCP with TLS (see `config::shard_tls`), or Unix-domain, and its owned halves.

use crate::config::{ShardHost, ShardTarget};
use std::io;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::{tcp, unix, TcpStream, UnixStream};
use tokio_rustls::client::TlsStream;

pub enum ShardStream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Unix(UnixStream),
}

pub enum ShardReader {
    Tcp(tcp::OwnedReadHalf),
    Tls(ReadHalf<TlsStream<TcpStream>>),
    Unix(unix::OwnedReadHalf),
}

pub enum ShardWriter {
    Tcp(tcp::OwnedWriteHalf),
    Tls(WriteHalf<TlsStream<TcpStream>>),
    Unix(unix::OwnedWriteHalf),
}

impl ShardStream {
    pub async fn open(target: &ShardTarget) -> io::Result<ShardStream> {
        match &target.host {
            ShardHost::Tcp(host) => {
                let s = TcpStream::connect((host.as_str(), target.port)).await?;
                s.set_nodelay(true)?;
                match &target.tls {
                    None => Ok(ShardStream::Tcp(s)),
                    Some(tls) => Ok(match tls.negotiate(s, host).await? {
                        Ok(tls) => ShardStream::Tls(Box::new(tls)),
                        Err(plain) => ShardStream::Tcp(plain),
                    }),
                }
            }
            ShardHost::Unix(dir) => {
                let path = dir.join(format!(".s.PGSQL.{}", target.port));
                Ok(ShardStream::Unix(UnixStream::connect(path).await?))
            }
        }
    }

    pub fn into_split(self) -> (ShardReader, ShardWriter) {
        match self {
            ShardStream::Tcp(s) => {
                let (r, w) = s.into_split();
                (ShardReader::Tcp(r), ShardWriter::Tcp(w))
            }
            ShardStream::Tls(s) => {
                let (r, w) = tokio::io::split(*s);
                (ShardReader::Tls(r), ShardWriter::Tls(w))
            }
            ShardStream::Unix(s) => {
                let (r, w) = s.into_split();
                (ShardReader::Unix(r), ShardWriter::Unix(w))
            }
        }
    }
}

impl ShardReader {
    /// The stream again, from the two halves of one `into_split`; None for halves of
    /// different streams.
    pub fn reunite(self, writer: ShardWriter) -> Option<ShardStream> {
        match (self, writer) {
            (ShardReader::Tcp(r), ShardWriter::Tcp(w)) => r.reunite(w).ok().map(ShardStream::Tcp),
            (ShardReader::Tls(r), ShardWriter::Tls(w)) => {
                if r.is_pair_of(&w) {
                    Some(ShardStream::Tls(Box::new(r.unsplit(w))))
                } else {
                    None
                }
            }
            (ShardReader::Unix(r), ShardWriter::Unix(w)) => {
                r.reunite(w).ok().map(ShardStream::Unix)
            }
            _ => None,
        }
    }
}

impl ShardWriter {
    /// Writes what the socket takes at once, without waiting (`Ok(0)`: nothing now, or a TLS
    /// stream, whose records go only through the async path).
    pub fn try_write_now(&mut self, bytes: &[u8]) -> io::Result<usize> {
        crate::io_enum::taken_now(match self {
            ShardWriter::Tcp(w) => w.try_write(bytes),
            ShardWriter::Unix(w) => w.try_write(bytes),
            ShardWriter::Tls(_) => Ok(0),
        })
    }
}

crate::io_enum::delegate_read!(ShardStream: Tcp, Tls, Unix);
crate::io_enum::delegate_read!(ShardReader: Tcp, Tls, Unix);
crate::io_enum::delegate_write!(ShardStream: Tcp, Tls, Unix);
crate::io_enum::delegate_write!(ShardWriter: Tcp, Tls, Unix);
