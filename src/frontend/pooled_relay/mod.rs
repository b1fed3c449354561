//! The one-shard relay in transaction pooling: bytes still flow unexamined in both
//! directions, but the server connection is the session's only while a transaction (or an
//! extended-protocol batch up to its Sync) is open, and goes back to the shard's pool at the
//! ReadyForQuery that ends it.
//!
//! As in the dedicated relay (`session`), two pumps run concurrently, so a client that streams
//! COPY data never deadlocks against a shard writing results. The client pump checks a
//! connection out when a request arrives and none is held, giving it the session's settings;
//! it hands the read half to the shard pump over a channel and keeps the write half in `Shared`.
//! The shard pump gives the connection back: at a ReadyForQuery that leaves the session idle
//! (see `Tracker::on_ready`) it takes the write half under the same lock the client pump holds
//! while it registers a request, so a connection is never returned with a request on its way.
//!
//! The client pump looks into Query, Parse, Bind, Describe and Close only (settings, pins,
//! statement names, see `tracker` and `statements`); everything else passes as it came.

mod restore;
mod statement_text;
mod statements;
mod tracker;

use super::session::{write_flushed, SessionEnd, FRONTEND_TAGS};
use crate::admin::clients::{Registered, State as ClientState};
use crate::backend::{ShardReader, ShardWriter};
use crate::client::cancel::CancelSlot;
use crate::client::tls::{ClientReader, ClientStream, ClientWriter};
use crate::error::PgError;
use crate::executor::link::ShardLink;
use crate::frontend::ProxyContext;
use crate::metrics as m;
use crate::pool::settings::Settings;
use crate::pool::{Lease, ShardPool};
use crate::protocol::frame::{FrameScanner, Scan, MAX_SHARD_MESSAGE_BYTES};
use crate::protocol::inspect;
use bytes::{Buf, BytesMut};
use statements::Translated;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, Notify};
use tracker::Tracker;

const READ_CHUNK: usize = 16 * 1024;

/// What both pumps share.
struct Shared {
    tracker: Tracker,
    /// The held connection's write half, whenever the client pump is not writing with it.
    writer: Option<ShardWriter>,
    /// The rest of the held connection.
    lease: Option<Lease>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().expect("relay state poisoned")
}

/// The shared state, locked, if the session holds a connection.
fn locked_if_held(shared: &Mutex<Shared>) -> Option<MutexGuard<'_, Shared>> {
    let s = lock(shared);
    s.lease.is_some().then_some(s)
}

/// What the session runs with.
pub struct Pooling {
    /// The link that checks connections out and gives them the session's settings; it holds
    /// the login's connection, if any.
    pub link: ShardLink,
    pub pool: Arc<ShardPool>,
    pub cancel: CancelSlot,
    pub settings: Settings,
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
    let (client_rx, mut client_tx) = client.into_split();
    let shared = Mutex::new(Shared {
        tracker: Tracker::new(pooling.settings.clone()),
        writer: None,
        lease: None,
    });
    // The login's connection is idle: back to the pool, for whichever session asks first.
    if let Some(conn) = pooling.link.hand_over() {
        pooling.cancel.set(None);
        pooling.pool.put(conn);
    }
    let metrics = m::SessionMetrics::new(&shard_name);
    let (readers_tx, readers_rx) = mpsc::unbounded_channel();
    // The shard pump tells the client pump that a statement's columns were compared.
    let checked = Notify::new();
    let outcome = {
        let upstream = client_to_shard(
            client_rx,
            (&shared, &checked),
            &mut pooling.link,
            readers_tx,
            &metrics,
            ctx.max_message_bytes,
            (&ctx.pause, registered),
        );
        let downstream = shard_to_client(
            readers_rx,
            &mut client_tx,
            (&shared, &checked),
            (&pooling.pool, &pooling.cancel),
            &metrics,
            registered,
        );
        tokio::select! {
            end = upstream => end,
            end = downstream => end,
            _ = crate::shutdown::ends_when(&mut shutdown, || lock(&shared).tracker.idle()) => {
                SessionEnd::Shutdown
            }
        }
    };
    if let Some(err) = outcome.last_words() {
        crate::client::send_fatal(&mut client_tx, &err).await;
    }
    let (lease, in_flight) = {
        let mut s = lock(&shared);
        s.writer = None;
        (s.lease.take(), s.tracker.in_flight())
    };
    if let Some(lease) = lease {
        if in_flight
            && matches!(
                outcome,
                SessionEnd::ClientGone | SessionEnd::Shutdown | SessionEnd::ProtocolViolation(_)
            )
        {
            // The abandoned query would run on, holding its locks: cancel it.
            if let Err(e) = crate::backend::send_cancel(&pooling.pool.target, lease.key).await {
                tracing::debug!(shard = %shard_name, "cancel of abandoned query failed: {e}");
            }
        }
        // Whatever the connection was in the middle of, PostgreSQL cleans up when it closes.
        pooling.pool.discard_lease(lease);
    }
    pooling.cancel.set(None);
    outcome
}

async fn client_to_shard(
    mut rx: ClientReader,
    (shared, checked): (&Mutex<Shared>, &Notify),
    link: &mut ShardLink,
    readers: mpsc::UnboundedSender<ShardReader>,
    metrics: &m::SessionMetrics,
    limit: usize,
    (pause, registered): (&crate::admin::pause::Pause, &Registered),
) -> SessionEnd {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut scanner = FrameScanner::new(limit);
    let inspect_tag = |t: u8| matches!(t, b'Q' | b'P' | b'B' | b'D' | b'C' | b'X');
    let mut rewritten = BytesMut::new();
    // False after a check: what is already buffered goes on first.
    let mut read = true;
    loop {
        if read {
            buf.reserve(READ_CHUNK);
            match rx.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return SessionEnd::ClientGone,
                Ok(_) => {}
            }
        }
        read = true;
        if buf.len() < 5 && scanner.at_boundary() {
            continue;
        }
        let mut out = BytesMut::new();
        let (mut copied, mut ready) = (0, 0);
        let mut terminated = false;
        let mut checking = false;
        // The lock is held from the look at the held connection until the messages are
        // registered, so the shard pump cannot give the connection back in between.
        let writer = {
            let mut s = loop {
                if let Some(s) = locked_if_held(shared) {
                    break s;
                }
                // Between transactions: this starts a new one, which PAUSE holds back.
                pause.wait().await;
                registered.set(ClientState::Active);
                if let Err(end) = check_out(shared, link, &readers).await {
                    return end;
                }
            };
            let conn = s.lease.as_ref().map_or(0, |l| l.id);
            loop {
                let scan = match scanner.scan(&buf, ready, inspect_tag) {
                    Ok(s) => s,
                    Err(e) => return SessionEnd::ProtocolViolation(e.to_string()),
                };
                match scan {
                    Scan::NeedMore => break,
                    Scan::Pass { len, start } => {
                        if let Some(tag) = start {
                            if !FRONTEND_TAGS.contains(&tag) {
                                return SessionEnd::ProtocolViolation(format!(
                                    "invalid frontend message type {tag}"
                                ));
                            }
                            if matches!(tag, b'F' | b'E') {
                                metrics.queries.increment(1);
                            }
                            s.tracker.on_client_start(tag);
                        }
                        ready += len;
                    }
                    Scan::Whole { tag: b'X', .. } => {
                        // Not forwarded: the server connection outlives the client.
                        terminated = true;
                        break;
                    }
                    Scan::Whole { tag, len } => {
                        if tag == b'Q' {
                            metrics.queries.increment(1);
                        }
                        rewritten.clear();
                        let frame = &buf[ready..ready + len];
                        match s.tracker.on_client(frame, conn, &mut rewritten) {
                            Translated::Same => {}
                            Translated::Rewritten | Translated::Stale => {
                                out.extend_from_slice(&buf[copied..ready]);
                                out.extend_from_slice(&rewritten);
                                copied = ready + len;
                            }
                            Translated::Check => {
                                // The message waits, whole and unsent, for the answer.
                                out.extend_from_slice(&buf[copied..ready]);
                                out.extend_from_slice(&rewritten);
                                copied = ready;
                                checking = true;
                                break;
                            }
                        }
                        ready += len;
                    }
                }
            }
            let parses = s.tracker.take_named_parses();
            let injected = s.tracker.take_injected();
            if injected > 0 {
                metrics.prepares.increment(injected);
            }
            if let Some(l) = s.lease.as_mut() {
                l.named_parses += parses;
            }
            if out.is_empty() && s.tracker.idle() {
                // Nothing but Flush, with nothing to flush: sending it would hold the
                // connection past the ReadyForQuery that should have given it back.
                buf.advance(ready);
                None
            } else if ready > 0 || !out.is_empty() {
                s.writer.take()
            } else {
                None
            }
        };
        if let Some(mut writer) = writer {
            let sent = if out.is_empty() {
                write_flushed(&mut writer, &buf.split_to(ready)).await
            } else {
                out.extend_from_slice(&buf[copied..ready]);
                buf.advance(ready);
                write_flushed(&mut writer, &out).await
            };
            lock(shared).writer = Some(writer);
            if sent.is_err() {
                return SessionEnd::ShardGone(metrics.shard.clone());
            }
        }
        if terminated {
            return SessionEnd::Terminated;
        }
        if checking {
            loop {
                if lock(shared).tracker.take_check().is_some() {
                    break;
                }
                checked.notified().await;
            }
            read = false;
        }
    }
}

/// Takes a server connection for the session, given its settings, and hands the read half to
/// the shard pump.
async fn check_out(
    shared: &Mutex<Shared>,
    link: &mut ShardLink,
    readers: &mpsc::UnboundedSender<ShardReader>,
) -> Result<(), SessionEnd> {
    let (replay, fingerprint) = {
        let s = lock(shared);
        (
            s.tracker.settings.replay(),
            s.tracker.settings.fingerprint(),
        )
    };
    link.set_settings(replay, fingerprint);
    if let Err(lost) = link.ensure().await {
        return Err(match lost.error {
            Some(e) => SessionEnd::Refused(e),
            None => SessionEnd::ShardGone(lost.shard),
        });
    }
    let Some(conn) = link.hand_over() else {
        return Err(SessionEnd::ShardGone(link.name.clone()));
    };
    let (r, w, lease) = conn.split();
    {
        let mut s = lock(shared);
        s.tracker.new_connection();
        s.writer = Some(w);
        s.lease = Some(lease);
    }
    // The shard pump outlives this pump's sends; a closed channel means the session is ending.
    let _ = readers.send(r);
    Ok(())
}

async fn shard_to_client(
    mut readers: mpsc::UnboundedReceiver<ShardReader>,
    tx: &mut ClientWriter,
    (shared, checked): (&Mutex<Shared>, &Notify),
    (pool, cancel): (&ShardPool, &CancelSlot),
    metrics: &m::SessionMetrics,
    registered: &Registered,
) -> SessionEnd {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let inspect_tag = |t: u8| {
        matches!(
            t,
            b'Z' | b'E' | b'1' | b'2' | b'3' | b'C' | b't' | b'T' | b'n'
        )
    };
    loop {
        let Some(mut rx) = readers.recv().await else {
            return SessionEnd::ClientGone;
        };
        buf.clear();
        // Shards are trusted to frame correctly; the limit only guards against a corrupt
        // length.
        let mut scanner = FrameScanner::new(MAX_SHARD_MESSAGE_BYTES);
        let mut fatal_seen = false;
        'connection: loop {
            buf.reserve(READ_CHUNK);
            match rx.read_buf(&mut buf).await {
                Ok(0) | Err(_) => {
                    return if fatal_seen {
                        SessionEnd::ShardFatal(metrics.shard.clone())
                    } else {
                        SessionEnd::ShardGone(metrics.shard.clone())
                    };
                }
                Ok(_) => {}
            }
            let mut ready = 0;
            let mut release = None;
            loop {
                let scan = match scanner.scan(&buf, ready, inspect_tag) {
                    Ok(s) => s,
                    Err(_) => return SessionEnd::ShardGone(metrics.shard.clone()),
                };
                let (tag, len) = match scan {
                    Scan::NeedMore => break,
                    Scan::Pass { len, .. } => {
                        ready += len;
                        continue;
                    }
                    Scan::Whole { tag, len } => (tag, len),
                };
                let frame = &buf[ready..ready + len];
                fatal_seen |= tag == b'E'
                    && matches!(
                        inspect::error_field(&frame[5..], b'S'),
                        Some("FATAL") | Some("PANIC")
                    );
                let answer = on_answer(&mut lock(shared), frame, metrics, registered, checked);
                let instead = match answer {
                    Answer::Pass => {
                        ready += len;
                        continue;
                    }
                    Answer::Release(w, l) => {
                        release = Some((w, l));
                        ready += len;
                        continue;
                    }
                    Answer::Drop => None,
                    Answer::Replace(b) => Some(b),
                };
                // What went before goes as it is; this frame does not.
                let head = buf.split_to(ready);
                if !head.is_empty() && write_flushed(tx, &head).await.is_err() {
                    return SessionEnd::ClientGone;
                }
                if let Some(b) = instead {
                    if write_flushed(tx, &b).await.is_err() {
                        return SessionEnd::ClientGone;
                    }
                }
                buf.advance(len);
                ready = 0;
                continue;
            }
            if ready > 0 && write_flushed(tx, &buf.split_to(ready)).await.is_err() {
                return SessionEnd::ClientGone;
            }
            if let Some((w, lease)) = release {
                cancel.set(None);
                // Bytes after the last ReadyForQuery are the start of something unasked for:
                // such a connection is not fit to share.
                match lease.reunite(rx, w) {
                    Some(conn) if buf.is_empty() => pool.put(conn),
                    Some(conn) => pool.discard(conn),
                    None => {}
                }
                break 'connection;
            }
        }
    }
}

/// What the shard pump does with an answer it looked into.
enum Answer {
    Pass,
    /// Not for the client.
    Drop,
    /// The client gets this instead.
    Replace(BytesMut),
    /// The session is idle: the connection goes back to the pool once this is forwarded.
    Release(ShardWriter, Lease),
}

fn on_answer(
    s: &mut Shared,
    frame: &[u8],
    metrics: &m::SessionMetrics,
    registered: &Registered,
    checked: &Notify,
) -> Answer {
    let (tag, body) = (frame[0], &frame[5..]);
    match tag {
        b'Z' => {
            let status = inspect::ready_status(body).unwrap_or(b'I');
            let r = s.tracker.on_ready(status);
            if let Some(sent) = r.sent {
                metrics.latency.record(sent.elapsed().as_secs_f64());
            }
            if r.wiped {
                if let Some(l) = s.lease.as_mut() {
                    l.renumber();
                }
            }
            registered.set(match (status, s.tracker.idle()) {
                (b'I', true) => ClientState::Idle,
                (b'I', false) => ClientState::Active,
                _ => ClientState::InTransaction,
            });
            if r.release && s.writer.is_some() && s.lease.is_some() {
                let carries = s.tracker.connection_settings();
                if let (Some(w), Some(mut l)) = (s.writer.take(), s.lease.take()) {
                    l.settings = carries;
                    return Answer::Release(w, l);
                }
            }
            Answer::Pass
        }
        b'1' if s.tracker.on_parse_complete() => Answer::Drop,
        b'3' => {
            s.tracker.on_close_complete();
            Answer::Pass
        }
        b'2' if s.tracker.on_bind_complete() => Answer::Drop,
        b't' if s.tracker.on_parameter_description() => Answer::Drop,
        b'T' | b'n' => {
            let ours = s.tracker.on_description(frame);
            if ours {
                checked.notify_one();
                Answer::Drop
            } else {
                Answer::Pass
            }
        }
        b'E' => {
            let moved = s.tracker.client_position().map(|to_client| {
                BytesMut::from(&inspect::map_error_position(frame, to_client)[..])
            });
            let refusal = s.tracker.on_error();
            checked.notify_one();
            if let Some(moved) = moved.filter(|_| !refusal) {
                Answer::Replace(moved)
            } else if refusal {
                let err = PgError::changed_result_type();
                let mut b = BytesMut::new();
                crate::protocol::build::error(&err, &mut b);
                Answer::Replace(b)
            } else {
                Answer::Pass
            }
        }
        b'C' if s.tracker.on_command_complete(body) => Answer::Drop,
        _ => Answer::Pass,
    }
}
