//! A minimal raw protocol client: exact bytes in, messages out. For the cases a driver would
//! never produce (bad versions, bad lengths, unknown message types).

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Raw {
    pub stream: TcpStream,
}

pub fn startup_packet(version: u32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    shardgate::protocol::build::startup(version, params, &mut buf);
    buf.to_vec()
}

pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

pub fn query(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    message(b'Q', &body)
}

/// libpq's one-shot query of `sql` with `params` bound in text, as psycopg sends each
/// statement: Parse (declaring `types`, which may be none) and Bind of the unnamed statement
/// and portal, Describe of the portal, Execute and Sync, in one batch.
pub fn one_shot<S: AsRef<str>>(sql: &str, types: &[u32], params: &[S]) -> Vec<u8> {
    let mut parse = vec![0u8];
    parse.extend_from_slice(sql.as_bytes());
    parse.push(0);
    parse.extend_from_slice(&(types.len() as i16).to_be_bytes());
    for t in types {
        parse.extend_from_slice(&t.to_be_bytes());
    }
    let mut bind = vec![0u8, 0, 0, 0];
    bind.extend_from_slice(&(params.len() as i16).to_be_bytes());
    for p in params {
        let p = p.as_ref();
        bind.extend_from_slice(&(p.len() as i32).to_be_bytes());
        bind.extend_from_slice(p.as_bytes());
    }
    bind.extend_from_slice(&[0, 0]);
    let mut request = message(b'P', &parse);
    request.extend(message(b'B', &bind));
    request.extend(message(b'D', b"P\0"));
    request.extend(message(b'E', &[0, 0, 0, 0, 0]));
    request.extend(message(b'S', &[]));
    request
}

/// `one_shot` of `sql` bound to `value`, without its Sync: one query of a pipeline, as
/// libpq's pipeline mode and psycopg's send them.
pub fn piped(sql: &str, value: i64) -> Vec<u8> {
    let mut m = one_shot(sql, &[], &[value.to_string()]);
    m.truncate(m.len() - 5);
    m
}

impl Raw {
    pub async fn connect(port: u16) -> Raw {
        Raw {
            stream: TcpStream::connect(("127.0.0.1", port)).await.unwrap(),
        }
    }

    /// Connects and logs in as the trust user; returns the greeting messages.
    pub async fn login(port: u16) -> (Raw, Vec<(u8, Vec<u8>)>) {
        let mut raw = Raw::connect(port).await;
        raw.send(&startup_packet(
            196608,
            &[("user", "trustuser"), ("database", "postgres")],
        ))
        .await;
        let greeting = raw.until_ready().await;
        (raw, greeting)
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Next message, or None when the connection is closed (or silent for 10 s).
    pub async fn recv(&mut self) -> Option<(u8, Vec<u8>)> {
        let read = async {
            let mut head = [0u8; 5];
            self.stream.read_exact(&mut head).await.ok()?;
            let len = i32::from_be_bytes(head[1..].try_into().unwrap()) as usize;
            let mut body = vec![0u8; len - 4];
            self.stream.read_exact(&mut body).await.ok()?;
            Some((head[0], body))
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .ok()
            .flatten()
    }

    /// True if nothing arrives for `wait`. Only ever a check that something is held back: a
    /// proxy that holds it passes however long the wait, one that does not fails unless its
    /// answer takes longer than the wait.
    pub async fn silent_for(&mut self, wait: Duration) -> bool {
        let mut b = [0u8; 1];
        tokio::time::timeout(wait, self.stream.peek(&mut b))
            .await
            .is_err()
    }

    /// One byte (the answer to SSLRequest / GSSENCRequest).
    pub async fn recv_byte(&mut self) -> u8 {
        let mut b = [0u8; 1];
        self.stream.read_exact(&mut b).await.unwrap();
        b[0]
    }

    /// Messages up to and including ReadyForQuery (or until the connection closes).
    pub async fn until_ready(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some((tag, body)) = self.recv().await {
            out.push((tag, body));
            if tag == b'Z' {
                break;
            }
        }
        out
    }

    /// True once the server has closed the connection.
    pub async fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 64];
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// The columns of a DataRow body, in text (None: SQL NULL).
pub fn data_row(body: &[u8]) -> Vec<Option<String>> {
    let n = i16::from_be_bytes([body[0], body[1]]) as usize;
    let (mut at, mut out) = (2, Vec::with_capacity(n));
    for _ in 0..n {
        let len = i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
        at += 4;
        if len < 0 {
            out.push(None);
        } else {
            let len = len as usize;
            out.push(Some(String::from_utf8_lossy(&body[at..at + len]).into()));
            at += len;
        }
    }
    out
}

/// A field of an ErrorResponse body.
pub fn field(body: &[u8], code: u8) -> Option<String> {
    shardgate::protocol::inspect::error_field(body, code).map(String::from)
}
