//! One shard connection driven request/response: send bytes, receive whole messages, or, for a
//! large row on its way to the client, its bytes piece by piece as they arrive.
//!
//! A shard counts as lost, so that the session ends with 08006 and closes its shard connections
//! instead of waiting forever, when the health probe marks it down while the session waits for
//! it (see `backend::health`), or when it stays silent longer than the response timeout, if one
//! is configured.

use crate::backend::ShardStream;
use crate::protocol::frame::{FrameScanner, Scan, MAX_SHARD_MESSAGE_BYTES};
use crate::protocol::Frame;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// What `recv_or_large` found.
pub enum Incoming {
    Whole(Frame),
    /// A DataRow or CopyData larger than asked for: `head` is what has arrived of it (tag and
    /// length included), `remaining` the bytes still to come, read with `piece`.
    Large {
        head: Bytes,
        remaining: usize,
    },
}

/// The shard went away or broke framing; the session cannot go on without it.
#[derive(Debug, thiserror::Error)]
#[error("lost connection to shard {shard}")]
pub struct LinkLost {
    pub shard: String,
}

pub struct ShardLink {
    pub index: usize,
    pub name: String,
    stream: ShardStream,
    buf: BytesMut,
    scanner: FrameScanner,
    response_timeout: Option<std::time::Duration>,
    /// The shard's health state; a wait ends when it turns down.
    health: Option<watch::Receiver<bool>>,
    /// NotificationResponses received while reading answers, for the client (see
    /// `Exec::flush`). They are not part of any answer, so no reader sees them.
    pub notifications: Vec<Frame>,
    /// The FATAL the shard sent before closing, if it did: the client's last words then.
    pub fatal: Option<Frame>,
    /// Messages replacing the unnamed statement sent so far (see `unnamed_parses`), the
    /// client's and the proxy's own (a re-bind of a scattered statement, a catalog query). The client's unnamed statement is still there
    /// only if nothing parsed the unnamed statement after it (see `Statement::held_on`).
    pub unnamed_parses: u64,
}

impl ShardLink {
    pub fn new(index: usize, name: String, stream: ShardStream) -> ShardLink {
        ShardLink {
            index,
            name,
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
            scanner: FrameScanner::new(MAX_SHARD_MESSAGE_BYTES),
            response_timeout: None,
            health: None,
            notifications: Vec::new(),
            fatal: None,
            unnamed_parses: 0,
        }
    }

    pub fn with_health(mut self, health: Option<watch::Receiver<bool>>) -> ShardLink {
        self.health = health;
        self
    }

    pub fn with_response_timeout(mut self, t: Option<std::time::Duration>) -> ShardLink {
        self.response_timeout = t;
        self
    }

    async fn read_more(&mut self) -> Result<(), LinkLost> {
        let read = self.stream.read_buf(&mut self.buf);
        match within(
            self.response_timeout,
            self.health.as_mut(),
            &self.name,
            read,
        )
        .await
        {
            Some(Ok(n)) if n > 0 => Ok(()),
            _ => Err(self.lost()),
        }
    }

    fn lost(&self) -> LinkLost {
        LinkLost {
            shard: self.name.clone(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), LinkLost> {
        self.unnamed_parses += unnamed_parses(bytes);
        let stream = &mut self.stream;
        // Over TLS, written bytes can wait in the TLS layer until a flush.
        let write = async move {
            stream.write_all(bytes).await?;
            stream.flush().await
        };
        match within(
            self.response_timeout,
            self.health.as_mut(),
            &self.name,
            write,
        )
        .await
        {
            Some(Ok(())) => Ok(()),
            _ => Err(self.lost()),
        }
    }

    /// The next message, except that a DataRow or CopyData over `large` bytes is not waited for
    /// whole: the caller passes it on with `piece` as it arrives, so it is never held.
    pub async fn recv_or_large(&mut self, large: usize) -> Result<Incoming, LinkLost> {
        loop {
            if self.buf.len() >= 5 && matches!(self.buf[0], b'D' | b'd') {
                let declared =
                    i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                let total = usize::try_from(declared).map_or(0, |d| d + 1);
                if total > large && total <= MAX_SHARD_MESSAGE_BYTES {
                    let have = self.buf.len().min(total);
                    let head = self.buf.split_to(have).freeze();
                    return Ok(Incoming::Large {
                        head,
                        remaining: total - have,
                    });
                }
            }
            if self.buf.len() >= 5 {
                break;
            }
            self.buf.reserve(16 * 1024);
            self.read_more().await?;
        }
        self.recv().await.map(Incoming::Whole)
    }

    /// Up to `remaining` bytes of a large message being passed on (see `recv_or_large`).
    pub async fn piece(&mut self, remaining: usize) -> Result<Bytes, LinkLost> {
        if self.buf.is_empty() {
            self.buf.reserve(remaining.min(256 * 1024));
            self.read_more().await?;
        }
        let n = self.buf.len().min(remaining);
        Ok(self.buf.split_to(n).freeze())
    }

    /// The next whole message from the shard. A message over the size limit, or a malformed
    /// length, counts as a lost shard: the framing cannot be trusted after it.
    pub async fn recv(&mut self) -> Result<Frame, LinkLost> {
        loop {
            match self.scanner.scan(&self.buf, 0, |_| true) {
                Ok(Scan::Whole { tag, len }) => {
                    let f = crate::protocol::frame::take_frame(&mut self.buf, tag, len);
                    match self.note(f) {
                        Some(f) => return Ok(f),
                        None => continue,
                    }
                }
                Ok(Scan::NeedMore) => {}
                Ok(Scan::Pass { .. }) => unreachable!("every frame is inspected"),
                Err(e) => {
                    tracing::warn!(shard = %self.name, "unusable message from shard: {e}");
                    return Err(self.lost());
                }
            }
            // Room for the rest of the frame being received, and no more.
            let want = if self.buf.len() >= 5 {
                let declared =
                    i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                (declared as usize + 1)
                    .saturating_sub(self.buf.len())
                    .clamp(1, 1 << 20)
            } else {
                16 * 1024
            };
            self.buf.reserve(want);
            self.read_more().await?;
        }
    }
}

impl ShardLink {
    /// Keeps what is not an answer: a notification is set aside for the client, a FATAL is
    /// remembered (the shard closes next).
    fn note(&mut self, f: Frame) -> Option<Frame> {
        match f.tag {
            b'A' => {
                self.notifications.push(f);
                None
            }
            b'E' if matches!(
                crate::protocol::inspect::error_field(f.body(), b'V'),
                Some("FATAL" | "PANIC")
            ) =>
            {
                self.fatal = Some(f.clone());
                Some(f)
            }
            _ => Some(f),
        }
    }

    /// Waits until the shard sends something while the session is idle (a notification, a
    /// notice, or a FATAL before it closes). Safe to cancel: nothing read is lost.
    pub async fn idle_input(&mut self) -> Result<(), LinkLost> {
        self.buf.reserve(4 * 1024);
        match self.stream.read_buf(&mut self.buf).await {
            Ok(n) if n > 0 => Ok(()),
            _ => Err(self.lost()),
        }
    }

    /// Puts a message back in front of what is still to be read: a step that reads ahead
    /// (see `Exec::gate_statement`) leaves what is not its own for the next reader.
    pub fn unread(&mut self, f: Frame) {
        let mut buf = BytesMut::with_capacity(f.bytes.len() + self.buf.len());
        buf.extend_from_slice(&f.bytes);
        buf.extend_from_slice(&self.buf);
        self.buf = buf;
    }

    /// The whole messages already received, without waiting for more.
    pub fn buffered(&mut self) -> Result<Vec<Frame>, LinkLost> {
        let mut out = Vec::new();
        loop {
            match self.scanner.scan(&self.buf, 0, |_| true) {
                Ok(Scan::Whole { tag, len }) => {
                    let f = crate::protocol::frame::take_frame(&mut self.buf, tag, len);
                    out.extend(self.note(f));
                }
                Ok(Scan::NeedMore) => return Ok(out),
                Ok(Scan::Pass { .. }) => unreachable!("every frame is inspected"),
                Err(_) => return Err(self.lost()),
            }
        }
    }
}

/// Runs a shard read or write until it completes, the response timeout passes, or the health
/// probe marks the shard down; `None` for the last two (counted and logged here).
async fn within<T>(
    timeout: Option<std::time::Duration>,
    health: Option<&mut watch::Receiver<bool>>,
    shard: &str,
    io: impl std::future::Future<Output = T>,
) -> Option<T> {
    let down = async {
        match health {
            Some(h) => {
                if h.wait_for(|up| !*up).await.is_err() {
                    // No prober any more (the proxy is stopping): nothing to wait for.
                    std::future::pending::<()>().await
                }
            }
            None => std::future::pending::<()>().await,
        }
    };
    let silent = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        r = io => Some(r),
        _ = down => {
            tracing::warn!(shard = %shard, "shard failed its health probes: giving up on it");
            None
        }
        _ = silent => {
            metrics::counter!(crate::metrics::SHARD_TIMEOUTS, "shard" => shard.to_string())
                .increment(1);
            tracing::warn!(shard = %shard, "shard silent past the response timeout: giving up on it");
            None
        }
    }
}

/// Messages that replace the unnamed statement, among whole messages: a Parse of it, and a
/// simple Query (PostgreSQL drops the unnamed statement when it runs one).
pub(crate) fn unnamed_parses(mut bytes: &[u8]) -> u64 {
    let mut n = 0;
    while bytes.len() >= 6 {
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        if (bytes[0] == b'P' && bytes[5] == 0) || bytes[0] == b'Q' {
            n += 1;
        }
        bytes = bytes.get(1 + len..).unwrap_or(&[]);
    }
    n
}
