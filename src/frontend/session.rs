//! The relay: client messages to the shard, shard messages to the client, as bytes.
//!
//! Two pumps run concurrently in the session's task, so a client that pipelines or streams COPY
//! data can never deadlock against a shard that is writing results. The client pump validates
//! framing and notes request boundaries in `RelayState`; the shard pump forwards whole runs of
//! messages with one write and looks only at ReadyForQuery and ErrorResponse. Nothing else is
//! decoded: with one shard every statement goes there unexamined, so the session cannot be told
//! from a direct connection.

use super::relay_state::RelayState;
use crate::admin::clients::{Registered, State as ClientState};
use crate::admin::pause::Pause;
use crate::backend::{ShardReader, ShardStream, ShardWriter};
use crate::client::tls::{ClientReader, ClientStream, ClientWriter};
use crate::error::{sqlstate, PgError};
use crate::frontend::ProxyContext;
use crate::metrics as m;
use crate::protocol::frame::{FrameScanner, Scan};
use crate::protocol::inspect;
use bytes::BytesMut;
use std::fmt;
use std::sync::Mutex;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

const READ_CHUNK: usize = 16 * 1024;
/// Frontend message types a client may send after startup.
pub(super) const FRONTEND_TAGS: &[u8] = b"QPBEDCSHXdcfF";

/// How a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    Terminated,
    ClientGone,
    ShardGone(String),
    /// The shard sent FATAL (already forwarded) and closed.
    ShardFatal(String),
    ProtocolViolation(String),
    /// The session would have had to hold more than a per-session limit allows.
    LimitExceeded(String),
    /// The session could not get a shard connection; the error says why.
    Refused(Box<PgError>),
    Shutdown,
    /// Another session ran `pg_terminate_backend` of this one's pid.
    Killed,
}

impl SessionEnd {
    /// The FATAL error the client is told before its connection closes, if any (a client that
    /// left or terminated hears nothing).
    pub fn last_words(&self) -> Option<PgError> {
        match self {
            SessionEnd::ProtocolViolation(msg) => {
                Some(PgError::fatal(sqlstate::PROTOCOL_VIOLATION, msg.clone()))
            }
            SessionEnd::ShardGone(name) => Some(
                PgError::fatal(
                    sqlstate::CONNECTION_FAILURE,
                    format!("lost connection to shard {name}"),
                )
                .with_hint(
                    "The shard closed the connection or became unreachable; reconnect to retry.",
                ),
            ),
            SessionEnd::LimitExceeded(msg) => Some(PgError::fatal(
                sqlstate::PROGRAM_LIMIT_EXCEEDED,
                msg.clone(),
            )),
            SessionEnd::Refused(err) => Some(PgError {
                severity: crate::error::Severity::Fatal,
                ..(**err).clone()
            }),
            SessionEnd::Shutdown => Some(PgError::fatal(
                sqlstate::ADMIN_SHUTDOWN,
                "terminating connection because shardgate is shutting down",
            )),
            SessionEnd::Killed => Some(PgError::fatal(
                sqlstate::ADMIN_SHUTDOWN,
                "terminating connection due to administrator command",
            )),
            _ => None,
        }
    }
}

impl fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionEnd::Terminated => f.write_str("terminate"),
            SessionEnd::ClientGone => f.write_str("client closed the connection"),
            SessionEnd::ShardGone(s) => write!(f, "lost connection to shard {s}"),
            SessionEnd::ShardFatal(s) => write!(f, "shard {s} ended the session with FATAL"),
            SessionEnd::ProtocolViolation(e) => write!(f, "protocol violation: {e}"),
            SessionEnd::LimitExceeded(e) => write!(f, "limit exceeded: {e}"),
            SessionEnd::Refused(e) => write!(f, "{}", e.message),
            SessionEnd::Shutdown => f.write_str("proxy shutting down"),
            SessionEnd::Killed => f.write_str("terminated by pg_terminate_backend"),
        }
    }
}

/// Relays until either side ends; `shard` indexes `ctx.shards`.
pub async fn run(
    ctx: &ProxyContext,
    client: ClientStream,
    shard_stream: ShardStream,
    shard: usize,
    shard_key: (i32, i32),
    mut shutdown: crate::shutdown::Receiver,
    registered: &Registered,
) -> SessionEnd {
    let shard_name = ctx.shards[shard].name.clone();
    let (client_rx, mut client_tx) = client.into_split();
    let (shard_rx, shard_tx) = shard_stream.into_split();
    let state = Mutex::new(RelayState::default());
    let metrics = m::SessionMetrics::new(&shard_name);

    let outcome = {
        let upstream = client_to_shard(
            client_rx,
            shard_tx,
            &state,
            &metrics,
            ctx.max_message_bytes,
            (&ctx.pause, registered),
        );
        let downstream = shard_to_client(
            shard_rx,
            &mut client_tx,
            &state,
            &metrics,
            &shard_name,
            registered,
        );
        tokio::select! {
            end = upstream => end,
            end = downstream => end,
            // Draining: the session ends once its transaction has and nothing is in flight.
            _ = crate::shutdown::ends_when(&mut shutdown, || {
                let state = state.lock().expect("relay state poisoned");
                state.tx_status == b'I' && state.awaiting.is_empty()
            }) => SessionEnd::Shutdown,
        }
    };
    let last_words = outcome.last_words();
    if let Some(err) = last_words {
        crate::client::send_fatal(&mut client_tx, &err).await;
    }
    let in_flight = !state
        .lock()
        .expect("relay state poisoned")
        .awaiting
        .is_empty();
    if in_flight
        && matches!(
            outcome,
            SessionEnd::ClientGone | SessionEnd::Shutdown | SessionEnd::ProtocolViolation(_)
        )
    {
        // PostgreSQL only notices a closed socket when it next writes, so a long query of a
        // vanished client would run on; cancel it so its locks and snapshot go now.
        let target = &ctx.shards[shard];
        if let Err(e) = crate::backend::send_cancel(target, shard_key).await {
            tracing::debug!(shard = %target.name, "cancel of abandoned query failed: {e}");
        }
    }
    outcome
}

async fn client_to_shard(
    mut rx: ClientReader,
    mut tx: ShardWriter,
    state: &Mutex<RelayState>,
    metrics: &m::SessionMetrics,
    limit: usize,
    (pause, registered): (&Pause, &Registered),
) -> SessionEnd {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut scanner = FrameScanner::new(limit);
    // Only Terminate is read whole.
    let inspect_tag = |t: u8| t == b'X';
    loop {
        buf.reserve(READ_CHUNK);
        match rx.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return SessionEnd::ClientGone,
            Ok(_) => {}
        }
        // Between transactions with nothing in flight: this starts a new one, which PAUSE
        // holds back.
        let between = {
            let st = state.lock().expect("relay state poisoned");
            st.tx_status == b'I' && st.awaiting.is_empty()
        };
        if between {
            pause.wait().await;
            registered.set(ClientState::Active);
        }
        let mut ready = 0;
        loop {
            let scan = match scanner.scan(&buf, ready, inspect_tag) {
                Ok(s) => s,
                Err(e) => return SessionEnd::ProtocolViolation(e.to_string()),
            };
            match scan {
                Scan::NeedMore => break,
                Scan::Pass { len, start } => {
                    if let Some(tag) = start {
                        if let Err(end) = note_request(tag, state, metrics) {
                            return end;
                        }
                    }
                    ready += len;
                }
                Scan::Whole { len, .. } => {
                    // Forward Terminate too, so the shard logs a clean goodbye, not an EOF.
                    let _ = write_flushed(&mut tx, &buf[..ready + len]).await;
                    return SessionEnd::Terminated;
                }
            }
        }
        if ready > 0 && write_flushed(&mut tx, &buf.split_to(ready)).await.is_err() {
            return SessionEnd::ShardGone(metrics.shard.clone());
        }
    }
}

/// Validates a frontend message type and records request boundaries.
fn note_request(
    tag: u8,
    state: &Mutex<RelayState>,
    metrics: &m::SessionMetrics,
) -> Result<(), SessionEnd> {
    if !FRONTEND_TAGS.contains(&tag) {
        return Err(SessionEnd::ProtocolViolation(format!(
            "invalid frontend message type {tag}"
        )));
    }
    match tag {
        b'Q' | b'S' | b'F' => {
            if tag != b'S' {
                metrics.queries.increment(1);
            }
            state
                .lock()
                .expect("relay state poisoned")
                .awaiting
                .push_back(Instant::now());
        }
        b'E' => metrics.queries.increment(1),
        _ => {}
    }
    Ok(())
}

async fn shard_to_client(
    mut rx: ShardReader,
    tx: &mut ClientWriter,
    state: &Mutex<RelayState>,
    metrics: &m::SessionMetrics,
    shard_name: &str,
    registered: &Registered,
) -> SessionEnd {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    // Shards are trusted to frame correctly; the limit only guards against a corrupt length.
    let mut scanner = FrameScanner::new(crate::protocol::frame::MAX_SHARD_MESSAGE_BYTES);
    let mut fatal_seen = false;
    loop {
        buf.reserve(READ_CHUNK);
        match rx.read_buf(&mut buf).await {
            Ok(0) | Err(_) => {
                // A shard that sent FATAL has already told the client why it is closing.
                return if fatal_seen {
                    SessionEnd::ShardFatal(shard_name.to_string())
                } else {
                    SessionEnd::ShardGone(shard_name.to_string())
                };
            }
            Ok(_) => {}
        }
        let mut ready = 0;
        loop {
            let scan = match scanner.scan(&buf, ready, |t| t == b'Z' || t == b'E') {
                Ok(s) => s,
                Err(_) => return SessionEnd::ShardGone(shard_name.to_string()),
            };
            match scan {
                Scan::NeedMore => break,
                Scan::Pass { len, .. } => ready += len,
                Scan::Whole { tag: b'Z', len } => {
                    let status =
                        inspect::ready_status(&buf[ready + 5..ready + len]).unwrap_or(b'I');
                    let mut st = state.lock().expect("relay state poisoned");
                    if let Some(started) = st.on_ready(status) {
                        metrics.latency.record(started.elapsed().as_secs_f64());
                    }
                    registered.set(match (status, st.awaiting.is_empty()) {
                        (b'I', true) => ClientState::Idle,
                        (b'I', false) => ClientState::Active,
                        _ => ClientState::InTransaction,
                    });
                    drop(st);
                    ready += len;
                }
                Scan::Whole { len, .. } => {
                    let body = &buf[ready + 5..ready + len];
                    fatal_seen |= matches!(
                        inspect::error_field(body, b'S'),
                        Some("FATAL") | Some("PANIC")
                    );
                    ready += len;
                }
            }
        }
        if ready > 0 && write_flushed(tx, &buf.split_to(ready)).await.is_err() {
            return SessionEnd::ClientGone;
        }
    }
}

/// Writes and flushes: over TLS, written bytes can wait in the TLS layer until a flush.
pub(super) async fn write_flushed<W: AsyncWrite + Unpin>(
    tx: &mut W,
    bytes: &[u8],
) -> std::io::Result<()> {
    tx.write_all(bytes).await?;
    tx.flush().await
}
