//! One shard connection driven request/response: send bytes, receive whole messages, or, for a
//! large row on its way to the client, its bytes piece by piece as they arrive.
//!
//! A shard counts as lost, so that the session ends with 08006 and closes its shard connections
//! instead of waiting forever, when the health probe marks it down while the session waits for
//! it (see `backend::health`), or when it stays silent longer than the response timeout, if one
//! is configured.

mod deadline;
mod parses;
pub mod row_types;
use deadline::{within, Health};
use parses::parses;
pub(crate) use parses::unnamed_parses;

use crate::error::PgError;
use crate::pool::{settings, Pooled, ShardPool};
use crate::protocol::frame::{FrameScanner, Scan, MAX_SHARD_MESSAGE_BYTES};
use crate::protocol::Frame;
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
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

/// The shard went away or broke framing, or no connection to it could be had; the session
/// cannot go on without it.
#[derive(Debug, thiserror::Error)]
#[error("lost connection to shard {shard}")]
pub struct LinkLost {
    pub shard: String,
    /// Why, when it is more than a lost connection (the pool had none free in time, a login
    /// failed): the client's last words.
    pub error: Option<Box<PgError>>,
}

/// A session's way to one shard. In transaction mode it holds a server connection only while
/// the session needs one: the first send checks one out of the shard's pool (giving it the
/// session's settings), and `release` returns it between transactions.
pub struct ShardLink {
    pub index: usize,
    pub name: String,
    conn: Option<Pooled>,
    pool: Arc<ShardPool>,
    /// The session's settings (replay text and fingerprint), given to a connection at checkout.
    settings: (Arc<str>, u64),
    /// Where the session's cancel key finds this link's current server connection.
    cancel: Option<crate::client::cancel::CancelSlot>,
    buf: BytesMut,
    scanner: FrameScanner,
    response_timeout: Option<std::time::Duration>,
    /// The wait for the shard's health state to turn down, which ends any read or write.
    health: Option<Health>,
    /// NotificationResponses received while reading answers, for the client (see
    /// `Exec::flush`). They are not part of any answer, so no reader sees them.
    pub notifications: Vec<Frame>,
    /// The FATAL the shard sent before closing, if it did: the client's last words then.
    pub fatal: Option<Frame>,
    /// Messages replacing the unnamed statement sent so far (see `unnamed_parses`), the
    /// client's and the proxy's own (a re-bind of a scattered statement, a catalog query). The client's unnamed statement is still there
    /// only if nothing parsed the unnamed statement after it (see `Statement::held_on`).
    pub unnamed_parses: u64,
    /// The transaction status of the last ReadyForQuery read: a connection goes back to the
    /// pool only at 'I'.
    status: u8,
    /// Something was sent since that ReadyForQuery (an extended-protocol message not yet
    /// followed by Sync, a request still being answered): the connection is mid-conversation
    /// and must not serve anyone else.
    unsettled: bool,
    /// The pid the client was given (BackendKeyData): a notification this session's own
    /// connection sent carries it, so a client recognises its own NOTIFY as it would directly.
    client_pid: i32,
    /// ParameterStatus messages the last settings replay produced (the login's greeting).
    pub replay_status: Vec<Frame>,
    /// When the request being answered was sent, for the latency histogram.
    sent_at: Option<std::time::Instant>,
    latency: metrics::Histogram,
    /// Parses the proxy sends on its own, so that this shard's connection holds a client's
    /// statement before a Bind of it.
    pub prepares: metrics::Counter,
    /// The placement version the session routes by: a connection checked out carries it, so
    /// the shard's fence refuses writes routed by a version it has replaced.
    placement_version: i64,
    /// Results still to come whose binary rows are renumbered (see `row_types`).
    pub row_types: row_types::Pending,
}

impl ShardLink {
    pub fn new(index: usize, pool: Arc<ShardPool>) -> ShardLink {
        let name = pool.target.name.clone();
        ShardLink {
            index,
            latency: metrics::histogram!(crate::metrics::QUERY_DURATION, "shard" => name.clone()),
            prepares: metrics::counter!(crate::metrics::STATEMENT_PREPARES, "shard" => name.clone()),
            name,
            conn: None,
            pool,
            settings: (Arc::from(""), crate::pool::settings::DEFAULTS),
            cancel: None,
            buf: BytesMut::with_capacity(16 * 1024),
            scanner: FrameScanner::new(MAX_SHARD_MESSAGE_BYTES),
            response_timeout: None,
            health: None,
            notifications: Vec::new(),
            fatal: None,
            unnamed_parses: 0,
            status: b'I',
            unsettled: false,
            client_pid: 0,
            replay_status: Vec::new(),
            sent_at: None,
            placement_version: 0,
            row_types: Default::default(),
        }
    }

    /// The placement version the session routes by from its next checkout on (the session
    /// changes it only between transactions).
    pub fn set_placement_version(&mut self, version: i64) {
        self.placement_version = version;
    }

    /// A link that starts with a connection already checked out (session mode).
    pub fn with_conn(mut self, conn: Pooled) -> ShardLink {
        self.conn = Some(conn);
        self
    }

    pub fn with_health(mut self, health: Option<watch::Receiver<bool>>) -> ShardLink {
        self.health = health.map(Health::new);
        self
    }

    pub fn with_response_timeout(mut self, t: Option<std::time::Duration>) -> ShardLink {
        self.response_timeout = t;
        self
    }

    /// The pid in the client's BackendKeyData (0 before `with_cancel`).
    pub fn client_pid(&self) -> i32 {
        self.client_pid
    }

    /// `client_pid`: the pid in the client's BackendKeyData.
    pub fn with_cancel(
        mut self,
        slot: crate::client::cancel::CancelSlot,
        client_pid: i32,
    ) -> ShardLink {
        if let Some(c) = &self.conn {
            slot.set(Some(c.key));
        }
        self.cancel = Some(slot);
        self.client_pid = client_pid;
        self
    }

    /// The settings the next checked-out connection must carry.
    pub fn set_settings(&mut self, replay: Arc<str>, fingerprint: u64) {
        self.settings = (replay, fingerprint);
    }

    /// After a session statement ran on the connection held now: it carries `fingerprint`.
    /// Unknown settings stay unknown until the next replay: one more SET does not make the
    /// rest known.
    pub fn carries(&mut self, fingerprint: u64) {
        if let Some(c) = &mut self.conn {
            if c.settings != crate::pool::settings::UNKNOWN {
                c.settings = fingerprint;
            }
        }
    }

    /// The server connection held now (0: none), so that what was prepared on one connection
    /// is never taken for prepared on another.
    pub fn conn_id(&self) -> u64 {
        self.conn.as_ref().map_or(0, |c| c.id)
    }

    /// Whether the shard's last ReadyForQuery said it is inside a transaction block (open or
    /// failed).
    pub fn in_transaction(&self) -> bool {
        self.status != b'I'
    }

    /// Whether the connection is between requests: nothing sent since its last
    /// ReadyForQuery, so a Query of the proxy's own may go first.
    pub fn settled(&self) -> bool {
        !self.unsettled
    }

    pub fn holds_conn(&self) -> bool {
        self.conn.is_some()
    }

    /// What the shard announced when the held connection logged in.
    pub fn login_parameters(&self) -> &[(String, String)] {
        self.conn.as_ref().map_or(&[], |c| &c.parameters)
    }

    /// A server connection to send on: the held one, or one from the pool given the
    /// session's settings.
    pub async fn ensure(&mut self) -> Result<(), LinkLost> {
        // Most transactions find a free permit and an idle connection with their settings:
        // taken without the futures of a checkout that may wait.
        if self.conn.is_none() && !self.take_now() && self.take_conn().await? {
            self.give_settings(false).await?;
        }
        Ok(())
    }

    /// At login: a connection given the session's settings even if it carries them already,
    /// so that `replay_status` holds what the client's greeting must report.
    pub async fn greet(&mut self) -> Result<(), LinkLost> {
        if self.conn.is_none() {
            self.take_conn().await?;
        }
        self.give_settings(true).await
    }

    /// The connection held now, for a caller that drives the socket itself from here on (the
    /// pooled one-shard relay); it gives it back to the pool when done.
    pub fn hand_over(&mut self) -> Option<Pooled> {
        self.conn.take()
    }

    /// Checks a connection out; true when it does not carry the session's settings.
    async fn take_conn(&mut self) -> Result<bool, LinkLost> {
        let conn = self
            .pool
            .checkout(&[], self.placement_version)
            .await
            .map_err(|e| LinkLost {
                shard: self.name.clone(),
                error: Some(Box::new(e)),
            })?;
        let differs = conn.settings != self.settings.1;
        self.adopt(conn);
        Ok(differs)
    }

    /// `ensure` without waiting: true when a connection is held, which the pool gave at once
    /// with the session's settings on it (see `ShardPool::checkout_now`); false leaves the
    /// link as it was, for `ensure`.
    pub fn take_now(&mut self) -> bool {
        if self.conn.is_some() {
            return true;
        }
        match self
            .pool
            .checkout_now(self.placement_version, self.settings.1)
        {
            Some(conn) => {
                self.adopt(conn);
                true
            }
            None => false,
        }
    }

    fn adopt(&mut self, conn: Pooled) {
        if let Some(slot) = &self.cancel {
            slot.set(Some(conn.key));
        }
        self.conn = Some(conn);
        self.status = b'I';
        self.unsettled = false;
        self.buf.clear();
    }

    /// Replays the session's settings on the connection just checked out, in one round trip.
    /// With `report`, `replay_status` also ends with the current value of every parameter
    /// the connection reported at its login: PostgreSQL sends a ParameterStatus only for a
    /// value that differs from the last one it reported on that connection, so after an
    /// earlier session set the same value (`euc-jp` then `EUC_JP`), the replay alone reports
    /// nothing and the login's value would be stale.
    async fn give_settings(&mut self, report: bool) -> Result<(), LinkLost> {
        let (replay, fingerprint) = self.settings.clone();
        let mut text = if replay.is_empty() {
            crate::pool::settings::REPLAY_BASE.to_string()
        } else {
            replay.to_string()
        };
        if let (Some(c), true) = (&self.conn, report) {
            text.push_str(&settings::current_values_query(&c.parameters));
        }
        let mut q = BytesMut::new();
        crate::protocol::build::query(&text, &mut q);
        self.write(&q).await?;
        self.replay_status.clear();
        let mut failed = None;
        loop {
            let f = self.recv().await?;
            match f.tag {
                b'Z' => break,
                b'S' => self.replay_status.push(f),
                b'D' => self.replay_status.extend(settings::current_value(f.body())),
                b'E' => failed = Some(f),
                _ => {}
            }
        }
        if let Some(e) = failed {
            let message = crate::protocol::inspect::error_field(e.body(), b'M')
                .unwrap_or("")
                .to_string();
            if let Some(c) = self.conn.take() {
                self.pool.discard(c);
            }
            return Err(LinkLost {
                shard: self.name.clone(),
                error: Some(Box::new(PgError::fatal(
                    crate::error::sqlstate::CONNECTION_FAILURE,
                    format!(
                        "could not give a connection to shard {} the session's settings: {message}",
                        self.name
                    ),
                ))),
            });
        }
        if let Some(c) = &mut self.conn {
            c.settings = fingerprint;
        }
        Ok(())
    }

    /// Between transactions: the connection goes back to the pool if it is idle with nothing
    /// unread, and is closed otherwise.
    pub fn release(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if let Some(slot) = &self.cancel {
            slot.set(None);
        }
        if self.buf.is_empty() && self.status == b'I' && !self.unsettled && self.fatal.is_none() {
            self.pool.put(conn);
        } else {
            self.buf.clear();
            self.pool.discard(conn);
        }
    }

    async fn read_more(&mut self) -> Result<(), LinkLost> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(self.lost());
        };
        let read = conn.stream.read_buf(&mut self.buf);
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
            error: None,
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), LinkLost> {
        self.ensure().await?;
        if self.sent_at.is_none() {
            self.sent_at = Some(std::time::Instant::now());
        }
        self.write(bytes).await
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), LinkLost> {
        let (unnamed, named) = parses(bytes);
        self.unnamed_parses += unnamed;
        self.unsettled = true;
        let Some(conn) = self.conn.as_mut() else {
            return Err(self.lost());
        };
        conn.named_parses += named;
        let stream = &mut conn.stream;
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
            // A row to renumber is read whole.
            if self.buf.len() >= 5
                && matches!(self.buf[0], b'D' | b'd')
                && self.row_types.is_empty()
            {
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

    /// Moves the whole messages already received that `plain` accepts into `out`, up to the
    /// first other one (see `frame::move_plain`); none of them is one `note` keeps.
    pub fn move_plain(&mut self, out: &mut BytesMut, plain: impl Fn(u8) -> bool, room: usize) {
        // Each message is followed then (see `row_types`).
        if !self.row_types.is_empty() {
            return;
        }
        let plain = |t| plain(t) && !matches!(t, b'Z' | b'E' | b'A');
        crate::protocol::frame::move_plain(&mut self.buf, out, plain, room, room);
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
        let f = if self.row_types.is_empty() {
            f
        } else {
            self.row_types.note(f)
        };
        match f.tag {
            b'Z' => {
                self.status = f.body().first().copied().unwrap_or(b'I');
                self.unsettled = false;
                if let Some(slot) = &self.cancel {
                    slot.settled();
                }
                if let Some(at) = self.sent_at.take() {
                    self.latency.record(at.elapsed().as_secs_f64());
                }
                Some(f)
            }
            b'E' => {
                let fields = f.body();
                if let Some(code) = crate::protocol::inspect::error_field(fields, b'C') {
                    metrics::counter!(crate::metrics::SHARD_ERRORS,
                        "shard" => self.name.clone(),
                        "class" => code.get(..2).unwrap_or("").to_string())
                    .increment(1);
                }
                if matches!(
                    crate::protocol::inspect::error_field(fields, b'V'),
                    Some("FATAL" | "PANIC")
                ) {
                    self.fatal = Some(f.clone());
                }
                let cancelled = crate::protocol::inspect::error_field(fields, b'C')
                    == Some(crate::error::sqlstate::QUERY_CANCELED);
                if cancelled && self.cancel.as_ref().is_some_and(|s| s.take_victim()) {
                    return Some(crate::txn::deadlock::victim_error());
                }
                Some(f)
            }
            b'A' => {
                let f = self.as_client_sees(f);
                self.notifications.push(f);
                None
            }
            _ => Some(f),
        }
    }

    /// A notification with the pid of the connection held now replaced by the client's.
    fn as_client_sees(&self, f: Frame) -> Frame {
        let own = self.conn.as_ref().map(|c| c.key.0);
        let body = f.body();
        if body.len() < 4 || own.is_none() || self.client_pid == 0 {
            return f;
        }
        let pid = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        if Some(pid) != own || pid == self.client_pid {
            return f;
        }
        let mut b = BytesMut::from(&f.bytes[..]);
        b[5..9].copy_from_slice(&self.client_pid.to_be_bytes());
        Frame {
            tag: f.tag,
            bytes: b.freeze(),
        }
    }

    /// Waits until the shard sends something while the session is idle (a notification, a
    /// notice, or a FATAL before it closes). Safe to cancel: nothing read is lost.
    pub async fn idle_input(&mut self) -> Result<(), LinkLost> {
        let Some(conn) = self.conn.as_mut() else {
            // No connection held: nothing can arrive.
            return std::future::pending().await;
        };
        self.buf.reserve(4 * 1024);
        match conn.stream.read_buf(&mut self.buf).await {
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
