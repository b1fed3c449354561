//! The one-shard relay in transaction pooling: bytes still flow unexamined in both
//! directions, but the server connection is the session's only while a transaction (or an
//! extended-protocol batch up to its Sync) is open, and goes back to the shard's pool at the
//! ReadyForQuery that ends it.
//!
//! One loop drives both sockets. Each direction has a buffer of what was read and not yet
//! looked at and one of what is due to the other side; the loop reads a side only while what
//! it owes the other side is below a bound, and writes whichever side it owes. A client that
//! streams COPY data therefore never deadlocks against a shard writing results, and a
//! transaction costs no hand-over between tasks: the loop that sees the ReadyForQuery is the
//! one that checks the next connection out.
//!
//! Invariant: a connection goes back to the pool only when the tracker says the session is
//! idle, nothing is due to the shard, and nothing follows the ReadyForQuery (see
//! `Tracker::on_ready`). The client side looks into Query, Parse, Bind, Describe and Close only
//! (settings, pins, statement names, see `tracker` and `statements`; the calls that signal
//! another session by its pid, see `signals`); everything else passes as it came.

mod answers;
mod restore;
mod signals;
mod statement_text;
mod statements;
mod tracker;

use super::session::{write_flushed, SessionEnd, FRONTEND_TAGS};
use crate::admin::clients::{Registered, State as ClientState};
use crate::backend::{ShardReader, ShardWriter};
use crate::client::cancel::{CancelSlot, Termination};
use crate::client::tls::{ClientStream, ClientWriter};
use crate::executor::link::ShardLink;
use crate::frontend::ProxyContext;
use crate::metrics as m;
use crate::pool::settings::Settings;
use crate::pool::{Lease, Pooled, ShardPool};
use crate::protocol::frame::{FrameScanner, Scan, MAX_SHARD_MESSAGE_BYTES};
use answers::Answer;
use bytes::{Buf, BytesMut};
use statements::Translated;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracker::Tracker;

const READ_CHUNK: usize = 16 * 1024;
/// What one side may be owed before the loop stops reading the other side.
const BACKLOG: usize = 256 * 1024;

/// What the session runs with.
pub struct Pooling {
    /// The link that checks connections out and gives them the session's settings; it holds
    /// the login's connection, if any.
    pub link: ShardLink,
    pub pool: std::sync::Arc<ShardPool>,
    pub cancel: CancelSlot,
    pub settings: Settings,
    /// Ends when another session terminates this one (see `signals`).
    pub termination: Termination,
}

/// The connection the session holds.
struct Held {
    reader: ShardReader,
    writer: ShardWriter,
    lease: Lease,
    /// Framing of what the shard sends on this connection.
    scanner: FrameScanner,
    /// The shard sent FATAL: its closing the connection is that, not a lost shard.
    fatal_seen: bool,
}

/// The session's state between reads and writes.
struct Relay<'a> {
    tracker: Tracker,
    held: Option<Held>,
    /// Read from the client, not yet looked at.
    from_client: BytesMut,
    client_scanner: FrameScanner,
    /// Due to the shard.
    to_shard: BytesMut,
    /// Read from the shard, not yet looked at.
    from_shard: BytesMut,
    /// Due to the client.
    to_client: BytesMut,
    /// The first message in `from_client` waits, unsent, for the answer to the proxy's check
    /// (see `statements::Translated::Check`).
    checking: bool,
    metrics: &'a m::SessionMetrics,
    registered: &'a Registered,
    pool: &'a ShardPool,
    cancel: &'a CancelSlot,
    /// The pid in the client's BackendKeyData.
    client_pid: i32,
    signals: signals::Signals<'a>,
}

/// Relays until either side ends.
pub async fn run(
    ctx: &ProxyContext,
    client: ClientStream,
    mut pooling: Pooling,
    mut shutdown: crate::shutdown::Receiver,
    registered: &Registered,
) -> SessionEnd {
    let shard_name = pooling.pool.target.name.clone();
    let (mut client_rx, mut client_tx) = client.into_split();
    // The login's connection is idle: back to the pool, for whichever session asks first.
    if let Some(conn) = pooling.link.hand_over() {
        pooling.cancel.set(None);
        pooling.pool.put(conn);
    }
    let metrics = m::SessionMetrics::new(&shard_name);
    let mut relay = Relay {
        tracker: Tracker::new(pooling.settings.clone()),
        held: None,
        from_client: BytesMut::with_capacity(READ_CHUNK),
        client_scanner: FrameScanner::new(ctx.max_message_bytes),
        to_shard: BytesMut::new(),
        from_shard: BytesMut::with_capacity(READ_CHUNK),
        to_client: BytesMut::new(),
        checking: false,
        metrics: &metrics,
        registered,
        pool: &pooling.pool,
        cancel: &pooling.cancel,
        client_pid: pooling.link.client_pid(),
        signals: signals::Signals::new(&ctx.cancel, pooling.link.client_pid()),
    };
    let termination = &mut pooling.termination;
    // Draining: the session ends once it is idle (read through a flag, since the loop holds
    // the tracker).
    let idle = AtomicBool::new(true);
    let draining = crate::shutdown::ends_when(&mut shutdown, || idle.load(Ordering::Relaxed));
    tokio::pin!(draining);
    let outcome = loop {
        // A session another one terminated runs nothing more, whatever its client sent: looked
        // at first in every round (one atomic load); the wait below only wakes an idle loop.
        if termination.moved() {
            break SessionEnd::Killed;
        }
        if relay.wants_connection() {
            if relay.client_scanner.at_boundary() && relay.from_client.first() == Some(&b'X') {
                break SessionEnd::Terminated;
            }
            // Nearly every transaction finds an idle connection with its settings: taken
            // here, without the futures of the wait below.
            let now =
                !ctx.pause.is_paused() && take_now(&relay.tracker.settings, &mut pooling.link);
            // PAUSE and the pool may hold the session back; what the client is owed goes
            // out meanwhile.
            let taken = if now {
                registered.set(ClientState::Active);
                pooling
                    .link
                    .hand_over()
                    .ok_or_else(|| SessionEnd::ShardGone(pooling.link.name.clone()))
            } else {
                let (settings, link) = (&relay.tracker.settings, &mut pooling.link);
                let checkout = async {
                    ctx.pause.wait().await;
                    registered.set(ClientState::Active);
                    check_out(settings, link).await
                };
                tokio::select! {
                    biased;
                    _ = &mut *termination => Err(SessionEnd::Killed),
                    taken = while_writing(checkout, &mut client_tx, &mut relay.to_client) => taken,
                    _ = &mut draining => Err(SessionEnd::Shutdown),
                }
            };
            match taken {
                Ok(conn) => relay.hold(conn),
                Err(end) => break end,
            }
        }
        if let Err(end) = relay.take_client_input() {
            break end;
        }
        match relay.take_shard_input() {
            Err(end) => break end,
            // The message that waited for the check goes on before anything is read.
            Ok(true) => continue,
            Ok(false) => {}
        }
        if let Err(end) = relay.write_now(&mut client_tx) {
            break end;
        }
        idle.store(relay.tracker.idle(), Ordering::Relaxed);
        relay.from_client.reserve(READ_CHUNK);
        relay.from_shard.reserve(READ_CHUNK);
        let r = &mut relay;
        let (shard_rx, shard_tx) = match r.held.as_mut() {
            Some(h) => (Some(&mut h.reader), Some(&mut h.writer)),
            None => (None, None),
        };
        let held = shard_rx.is_some();
        tokio::select! {
            biased;
            sent = write_some(shard_tx, &r.to_shard), if held && !r.to_shard.is_empty() => match sent {
                Ok(n) => r.to_shard.advance(n),
                Err(_) => break SessionEnd::ShardGone(metrics.shard.clone()),
            },
            sent = client_tx.write(&r.to_client), if !r.to_client.is_empty() => match sent {
                Ok(n) if n > 0 => {
                    r.to_client.advance(n);
                    if r.to_client.is_empty() && client_tx.buffers() && client_tx.flush().await.is_err() {
                        break SessionEnd::ClientGone;
                    }
                }
                _ => break SessionEnd::ClientGone,
            },
            got = read_some(shard_rx, &mut r.from_shard), if held && r.to_client.len() < BACKLOG => match got {
                Ok(n) if n > 0 => {}
                _ => {
                    let fatal = r.held.as_ref().is_some_and(|h| h.fatal_seen);
                    break if fatal {
                        SessionEnd::ShardFatal(metrics.shard.clone())
                    } else {
                        SessionEnd::ShardGone(metrics.shard.clone())
                    };
                }
            },
            // What stays in `from_client` is a message not yet whole (or one waiting for a
            // check): reading is bounded by what the shard is owed, not by it.
            got = client_rx.read_buf(&mut r.from_client), if !r.checking && r.to_shard.len() < BACKLOG => match got {
                Ok(n) if n > 0 => {}
                _ => break SessionEnd::ClientGone,
            },
            _ = &mut draining => break SessionEnd::Shutdown,
            _ = &mut *termination => break SessionEnd::Killed,
        }
    };
    relay.finish(outcome, &mut client_tx).await
}

impl Relay<'_> {
    /// Writes what each side is owed as far as its socket takes it at once: most answers and
    /// requests go here, without a round of the loop's select for each.
    fn write_now(&mut self, client_tx: &mut ClientWriter) -> Result<(), SessionEnd> {
        if let Some(h) = self.held.as_mut().filter(|_| !self.to_shard.is_empty()) {
            match h.writer.try_write_now(&self.to_shard) {
                Ok(n) => self.to_shard.advance(n),
                Err(_) => return Err(SessionEnd::ShardGone(self.metrics.shard.clone())),
            }
        }
        if !self.to_client.is_empty() {
            match client_tx.try_write_now(&self.to_client) {
                Ok(n) => self.to_client.advance(n),
                Err(_) => return Err(SessionEnd::ClientGone),
            }
        }
        Ok(())
    }

    /// A message has come and no connection is held for it.
    fn wants_connection(&self) -> bool {
        self.held.is_none()
            && !self.checking
            && (self.from_client.len() >= 5 || !self.client_scanner.at_boundary())
    }

    fn hold(&mut self, conn: Pooled) {
        let (reader, writer, lease) = conn.split();
        self.tracker.new_connection();
        self.from_shard.clear();
        self.held = Some(Held {
            reader,
            writer,
            lease,
            // Shards are trusted to frame correctly; the limit only guards against a corrupt
            // length.
            scanner: FrameScanner::new(MAX_SHARD_MESSAGE_BYTES),
            fatal_seen: false,
        });
    }

    /// Looks at what the client sent and puts what goes on in `to_shard`.
    fn take_client_input(&mut self) -> Result<(), SessionEnd> {
        let Some(held) = self.held.as_mut().filter(|_| !self.checking) else {
            return Ok(());
        };
        let inspect_tag = |t: u8| matches!(t, b'Q' | b'P' | b'B' | b'D' | b'C' | b'X');
        let conn = held.lease.id;
        let buf = &mut self.from_client;
        let out = &mut self.to_shard;
        // Bytes before `copied` are in `out` already; those up to `ready` go as they came.
        let (mut copied, mut ready) = (0, 0);
        let mut edited = false;
        let mut rewritten = BytesMut::new();
        loop {
            let scan = self
                .client_scanner
                .scan(buf, ready, inspect_tag)
                .map_err(|e| SessionEnd::ProtocolViolation(e.to_string()))?;
            match scan {
                Scan::NeedMore => break,
                Scan::Pass { len, start } => {
                    if let Some(tag) = start {
                        if !FRONTEND_TAGS.contains(&tag) {
                            return Err(SessionEnd::ProtocolViolation(format!(
                                "invalid frontend message type {tag}"
                            )));
                        }
                        if matches!(tag, b'F' | b'E') {
                            self.metrics.queries.increment(1);
                        }
                        self.tracker.on_client_start(tag);
                    }
                    ready += len;
                }
                Scan::Whole { tag: b'X', .. } => {
                    // Not forwarded: the server connection outlives the client. What came
                    // before it still goes.
                    out.extend_from_slice(&buf[copied..ready]);
                    buf.clear();
                    return Err(SessionEnd::Terminated);
                }
                Scan::Whole { tag, len } => {
                    if tag == b'Q' {
                        self.metrics.queries.increment(1);
                    }
                    rewritten.clear();
                    let frame = &buf[ready..ready + len];
                    let instead = match tag {
                        b'Q' | b'P' | b'B' | b'C' => {
                            self.signals.instead(frame, &self.tracker.statements)
                        }
                        _ => None,
                    };
                    let replaced = instead.and_then(|i| {
                        self.tracker
                            .on_client_instead(frame, &i.sql, i.due, &mut rewritten)
                    });
                    let translated = match replaced {
                        Some(()) => Translated::Rewritten,
                        None => self.tracker.on_client(frame, conn, &mut rewritten),
                    };
                    match translated {
                        Translated::Same => {}
                        Translated::Rewritten | Translated::Stale => {
                            out.extend_from_slice(&buf[copied..ready]);
                            out.extend_from_slice(&rewritten);
                            copied = ready + len;
                            edited = true;
                        }
                        Translated::Check => {
                            // The message stays at the front of `from_client` until the
                            // answer is in; the check goes now.
                            out.extend_from_slice(&buf[copied..ready]);
                            out.extend_from_slice(&rewritten);
                            buf.advance(ready);
                            self.checking = true;
                            self.count_parses();
                            return Ok(());
                        }
                    }
                    ready += len;
                }
            }
        }
        if !edited && self.tracker.idle() {
            // Nothing but Flush, with nothing to flush: sending it would hold the connection
            // past the ReadyForQuery that should have given it back.
        } else {
            out.extend_from_slice(&buf[copied..ready]);
        }
        buf.advance(ready);
        self.count_parses();
        Ok(())
    }

    fn count_parses(&mut self) {
        let parses = self.tracker.take_named_parses();
        let injected = self.tracker.take_injected();
        if injected > 0 {
            self.metrics.prepares.increment(injected);
        }
        if let Some(h) = self.held.as_mut() {
            h.lease.named_parses += parses;
        }
    }

    /// Looks at what the shard sent and puts what goes on in `to_client`; gives the
    /// connection back at the ReadyForQuery that leaves the session idle. True when a check
    /// was answered, so the message that waited for it can go on.
    fn take_shard_input(&mut self) -> Result<bool, SessionEnd> {
        let Some(held) = self.held.as_mut() else {
            return Ok(false);
        };
        let inspect_tag = |t: u8| {
            matches!(
                t,
                b'Z' | b'E' | b'1' | b'2' | b'3' | b'C' | b't' | b'T' | b'n' | b'A'
            )
        };
        let buf = &mut self.from_shard;
        let out = &mut self.to_client;
        let mut ready = 0;
        let mut release = false;
        while !release {
            let scan = held
                .scanner
                .scan(buf, ready, inspect_tag)
                .map_err(|_| SessionEnd::ShardGone(self.metrics.shard.clone()))?;
            let len = match scan {
                Scan::NeedMore => break,
                Scan::Pass { len, .. } => {
                    ready += len;
                    continue;
                }
                Scan::Whole { len, .. } => len,
            };
            let frame = &buf[ready..ready + len];
            held.fatal_seen |= answers::is_fatal(frame);
            let answer = if frame[0] == b'A' {
                answers::notification(frame, held.lease.key.0, self.client_pid)
            } else {
                answers::on_answer(&mut self.tracker, frame, self.metrics, self.registered)
            };
            let instead = match answer {
                Answer::Pass => {
                    ready += len;
                    continue;
                }
                Answer::Ready {
                    release: idle,
                    wiped,
                } => {
                    if wiped {
                        held.lease.renumber();
                    }
                    release = idle && self.to_shard.is_empty();
                    ready += len;
                    continue;
                }
                Answer::Drop => None,
                Answer::Replace(b) => Some(b),
            };
            // What went before goes as it is; this frame does not.
            out.extend_from_slice(&buf[..ready]);
            if let Some(b) = instead {
                out.extend_from_slice(&b);
            }
            buf.advance(ready + len);
            ready = 0;
        }
        out.extend_from_slice(&buf[..ready]);
        buf.advance(ready);
        if let Some(due) = self.tracker.take_signals_due() {
            for (pid, kind) in due {
                self.signals.deliver(pid, kind);
            }
        }
        if release {
            self.release();
        }
        let resumed = self.checking && self.tracker.take_check().is_some();
        if resumed {
            self.checking = false;
        }
        Ok(resumed)
    }

    /// The session is idle: the connection goes back to the pool.
    fn release(&mut self) {
        let Some(held) = self.held.take() else {
            return;
        };
        self.cancel.set(None);
        let mut lease = held.lease;
        lease.settings = self.tracker.connection_settings();
        // Bytes after the last ReadyForQuery are the start of something unasked for: such a
        // connection is not fit to share.
        let unasked = !self.from_shard.is_empty() || !held.scanner.at_boundary();
        self.from_shard.clear();
        match lease.reunite(held.reader, held.writer) {
            Some(conn) if !unasked => self.pool.put(conn),
            Some(conn) => self.pool.discard(conn),
            None => {}
        }
    }

    /// Ends the session: what is still due goes out, the client hears why, and a connection
    /// still held is closed (cancelling what it runs for a client that left).
    async fn finish(mut self, outcome: SessionEnd, client_tx: &mut ClientWriter) -> SessionEnd {
        if let (SessionEnd::Terminated, Some(held)) = (&outcome, self.held.as_mut()) {
            if !self.to_shard.is_empty() {
                let _ = write_flushed(&mut held.writer, &self.to_shard).await;
            }
        }
        if !matches!(outcome, SessionEnd::ClientGone) && !self.to_client.is_empty() {
            let _ = write_flushed(client_tx, &self.to_client).await;
        }
        if let Some(err) = outcome.last_words() {
            crate::client::send_fatal(client_tx, &err).await;
        }
        if let Some(held) = self.held.take() {
            if self.tracker.in_flight()
                && matches!(
                    outcome,
                    SessionEnd::ClientGone
                        | SessionEnd::Shutdown
                        | SessionEnd::Killed
                        | SessionEnd::ProtocolViolation(_)
                )
            {
                // The abandoned query would run on, holding its locks: cancel it.
                if let Err(e) = crate::backend::send_cancel(&self.pool.target, held.lease.key).await
                {
                    tracing::debug!(shard = %self.metrics.shard, "cancel of abandoned query failed: {e}");
                }
            }
            // Whatever the connection was in the middle of, PostgreSQL cleans up when it
            // closes.
            self.pool.discard_lease(held.lease);
        }
        self.cancel.set(None);
        outcome
    }
}

/// `check_out` when the pool has a connection ready with the session's settings on it.
fn take_now(settings: &Settings, link: &mut ShardLink) -> bool {
    link.set_settings(settings.replay(), settings.fingerprint());
    link.take_now()
}

/// Takes a server connection for the session, given its settings.
async fn check_out(settings: &Settings, link: &mut ShardLink) -> Result<Pooled, SessionEnd> {
    link.set_settings(settings.replay(), settings.fingerprint());
    if let Err(lost) = link.ensure().await {
        return Err(match lost.error {
            Some(e) => SessionEnd::Refused(e),
            None => SessionEnd::ShardGone(lost.shard),
        });
    }
    link.hand_over()
        .ok_or_else(|| SessionEnd::ShardGone(link.name.clone()))
}

/// Runs `task` while writing what the client is owed, so that a session waiting (for the
/// pool, for PAUSE) does not hold back the answers it has.
async fn while_writing<T>(
    task: impl Future<Output = Result<T, SessionEnd>>,
    tx: &mut ClientWriter,
    owed: &mut BytesMut,
) -> Result<T, SessionEnd> {
    tokio::pin!(task);
    if owed.is_empty() {
        return task.await;
    }
    while !owed.is_empty() {
        tokio::select! {
            biased;
            done = &mut task => return done,
            sent = tx.write(owed) => match sent {
                Ok(n) if n > 0 => owed.advance(n),
                _ => return Err(SessionEnd::ClientGone),
            },
        }
    }
    if tx.buffers() && tx.flush().await.is_err() {
        return Err(SessionEnd::ClientGone);
    }
    task.await
}

/// A write to the shard, when a connection is held; never ready otherwise.
async fn write_some<W: AsyncWrite + Unpin>(w: Option<&mut W>, bytes: &[u8]) -> io::Result<usize> {
    let Some(w) = w else {
        return std::future::pending().await;
    };
    let n = w.write(bytes).await?;
    if n == 0 {
        return Err(io::ErrorKind::WriteZero.into());
    }
    if n == bytes.len() {
        w.flush().await?;
    }
    Ok(n)
}

/// A read from the shard, when a connection is held; never ready otherwise.
async fn read_some<R: AsyncRead + Unpin>(
    r: Option<&mut R>,
    buf: &mut BytesMut,
) -> io::Result<usize> {
    match r {
        Some(r) => r.read_buf(buf).await,
        None => std::future::pending().await,
    }
}
