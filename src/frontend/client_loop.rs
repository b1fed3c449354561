//! Reading the client's messages in a multi-shard session and dispatching them.

use crate::admin::clients::{Registered, State as ClientState};
use crate::client::tls::ClientStream;
use crate::error::{sqlstate, PgError};
use crate::executor::client_input::ClientInput;
use crate::executor::extended::Extended;
use crate::executor::link::ShardLink;
use crate::executor::session::{Exec, Stop};
use crate::frontend::ProxyContext;
use crate::frontend::SessionEnd;
use crate::protocol::message::Query;
use crate::protocol::Frame;
use crate::txn::state::TxnState;

/// What a session starts with besides its links.
pub struct Start<'s> {
    /// shardgate's own settings from the user's entry and the startup options (checked at
    /// login).
    pub own: &'s [(String, String)],
    /// The client's startup parameters, for pooled connections.
    pub settings: crate::pool::settings::Settings,
    /// Ends when another session terminates this one (`pg_terminate_backend` of its pid).
    pub termination: crate::client::cancel::Termination,
}

pub async fn run(
    ctx: &ProxyContext,
    socket: ClientStream,
    links: Vec<ShardLink>,
    start: Start<'_>,
    mut shutdown: crate::shutdown::Receiver,
    registered: &Registered,
) -> SessionEnd {
    let (rx, tx) = socket.into_split();
    let pool = crate::executor::session::state::SessionPool::new(ctx.pools.mode, start.settings);
    let mut exec = Exec::new(
        ctx.live.placement(),
        &ctx.txn,
        links,
        tx,
        ctx.text_order_c,
        pool,
    );
    exec.catalog = Some(&ctx.catalog);
    exec.live = Some(&ctx.live);
    exec.key_blocks = Some(&ctx.key_blocks);
    exec.signals = exec
        .links
        .first()
        .map(|l| crate::client::cancel::Signaller {
            registry: &ctx.cancel,
            own_pid: l.client_pid(),
        });
    let mut termination = start.termination;
    let version = exec.placement.version;
    for link in exec.links.iter_mut() {
        link.set_placement_version(version);
    }
    for (name, value) in start.own {
        if let Err(e) = exec.apply_setting(name, value) {
            tracing::warn!("startup setting shardgate.{name}: {}", e.message);
        }
    }
    // The login's connection goes back before the client's first request.
    exec.release_if_idle(false);
    let mut extended = Extended::default();
    let mut input = ClientInput::new(rx, ctx.max_message_bytes);
    // The waits for a stop live as long as the session: a wait made for each message registers
    // with the channel and unregisters when dropped, which cost more than the rest of a
    // message's bookkeeping. Each is polled only until it ends the session.
    // Polled only once the phase has moved, which is one atomic load at each message.
    let mut fast_rx = shutdown.clone();
    let probe = shutdown.clone();
    let mut any_stop = std::pin::pin!(crate::shutdown::kept(
        probe.clone(),
        crate::shutdown::ends(&mut shutdown, true)
    ));
    let mut fast_stop = std::pin::pin!(crate::shutdown::kept(
        probe,
        crate::shutdown::now(&mut fast_rx)
    ));
    let end = 'session: loop {
        // A client that stops sending with extended messages unsynced (libpq's pipeline mode
        // does, and sends Flush when it wants results before its Sync) is served as
        // PostgreSQL serves it: the messages run as they came, errors and notices reach it at
        // once, and results wait for its Flush or Sync.
        if extended.has_pending() && !input.ready() {
            exec.input = Some(input);
            let served = match extended.run_unsynced(&mut exec).await {
                Ok(()) => exec.flush_reports().await,
                Err(stop) => Err(stop),
            };
            input = exec.input.take().expect("the client input is lent back");
            if let Err(stop) = served {
                break ended(stop);
            }
        }
        // Draining: an idle session ends now, one in a transaction once the transaction ends.
        let idle = exec.txn == TxnState::Idle && !extended.has_pending();
        // A message already here whole is taken without waiting on anything: pipelined
        // messages (Bind, Execute, Sync in one packet) are the common case.
        let frame = match input.take_whole() {
            Some(f) => f.map(Some),
            // In this order, not a random one (which costs a random number per poll): a stop
            // first, then the client, whose messages are what the session is for; a shard's
            // unprompted message waits at most until the client pauses.
            None => tokio::select! {
                biased;
                _ = &mut fast_stop => break SessionEnd::Shutdown,
                _ = &mut any_stop, if idle => break SessionEnd::Shutdown,
                f = input.read_frame() => f,
                (i, read) = exec.idle_input() => {
                    match exec.on_idle_input(i, read).await {
                        Ok(()) => continue,
                        Err(stop) => break ended(stop),
                    }
                }
                _ = &mut termination => break SessionEnd::Killed,
            },
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => break SessionEnd::ClientGone,
            Err(msg) => break SessionEnd::ProtocolViolation(msg),
        };
        // Between transactions: PAUSE holds the next one back, and tables a reload declared
        // reach the session, so a transaction is planned with one placement throughout.
        if exec.txn == TxnState::Idle && !extended.has_pending() {
            // Marked busy before the gate is looked at: a hold that begins meanwhile then
            // waits for this transaction, or this session sees the hold and waits for it.
            let stopping = loop {
                registered.set(ClientState::Active);
                if !ctx.pause.is_paused() {
                    break false;
                }
                registered.set(ClientState::Idle);
                tokio::select! {
                    _ = ctx.pause.wait() => {}
                    _ = &mut any_stop => break true,
                    _ = &mut termination => break 'session SessionEnd::Killed,
                }
            };
            if stopping {
                break SessionEnd::Shutdown;
            }
            let current = ctx.live.placement();
            if !std::sync::Arc::ptr_eq(&current, &exec.placement) {
                for link in exec.links.iter_mut() {
                    link.set_placement_version(current.version);
                }
                exec.placement = current;
            }
        }
        // An extended-protocol message joins the batch; only a Sync or Flush (or too much
        // pending) makes it run, and until then there is nothing to carry out.
        // The packet's later messages join straight away: with a batch pending, a turn of the
        // loop would do nothing else for them.
        let mut frame = frame;
        let work = loop {
            if !is_extended(frame.tag) {
                break Work::Frame(frame);
            }
            match extended.join(&mut exec, frame) {
                Ok(true) => break Work::RunBatch,
                Ok(false) if exec.wants_all_for_transaction() => break Work::TakeConnections,
                Ok(false) => {}
                Err(e) => break 'session SessionEnd::ProtocolViolation(e.to_string()),
            }
            frame = match input.take_whole() {
                Some(Ok(f)) => f,
                Some(Err(msg)) => break 'session SessionEnd::ProtocolViolation(msg),
                None => {
                    extended.show_buffered();
                    registered.set(client_state(&exec, &extended));
                    continue 'session;
                }
            };
        };
        if !matches!(work, Work::RunBatch) {
            extended.show_buffered();
        }
        if let Err(stop) = exec.take_all_for_transaction().await {
            break ended(stop);
        }
        // A session another one terminated runs nothing more, whatever its client sent (one
        // atomic load; the waits below wake an idle session and stop a running statement).
        if termination.moved() {
            break SessionEnd::Killed;
        }
        // A transaction that began before the session's first call of the clock gets one
        // time on every shard before that call runs (see `executor::transaction_clock`).
        exec.clock_seen |= input.clock_calls();
        if let Err(stop) = exec.keep_one_clock().await {
            break ended(stop);
        }
        // Lent for the message (COPY FROM STDIN reads the client's data mid-statement).
        exec.input = Some(input);
        // A fast stop ends the session even in the middle of a statement.
        // Pinned where it is built: the future is kilobytes, and every move copies it.
        let handled: Result<Result<(), Stop>, SessionEnd> = {
            let handled = std::pin::pin!(async {
                let frame = match work {
                    Work::RunBatch => return Ok(extended.run_joined(&mut exec).await),
                    Work::TakeConnections => return Ok(Ok(())),
                    Work::Frame(frame) => frame,
                };
                match frame.tag {
                    b'Q' => match Query::text(&frame.bytes[5..]) {
                        Ok(sql) => {
                            exec.pin_for(sql);
                            Ok(run_query(&mut exec, &mut extended, sql).await)
                        }
                        // Text that is not UTF-8 is an error in the statement, as PostgreSQL
                        // answers it; the session goes on.
                        Err(crate::protocol::message::DecodeError::NotUtf8 { .. }) => {
                            Ok(not_utf8(&mut exec, &mut extended).await)
                        }
                        Err(e) => Err(SessionEnd::ProtocolViolation(e.to_string())),
                    },
                    b'X' => Err(SessionEnd::Terminated),
                    // Discarded until Sync after an extended-protocol error, as PostgreSQL does.
                    b'F' if extended.skipping_until_sync() => Ok(Ok(())),
                    b'F' => {
                        exec.error(&PgError::error(
                            sqlstate::FEATURE_NOT_SUPPORTED,
                            "the function-call protocol is not supported on several shards",
                        ));
                        exec.ready_for_query();
                        Ok(exec.flush().await)
                    }
                    // Stray COPY messages outside COPY are ignored, as PostgreSQL does.
                    b'd' | b'c' | b'f' => Ok(Ok(())),
                    other => Err(SessionEnd::ProtocolViolation(format!(
                        "invalid frontend message type {other}"
                    ))),
                }
            });
            tokio::select! {
                biased;
                _ = &mut fast_stop => Err(SessionEnd::Shutdown),
                r = handled => r,
                _ = &mut termination => Err(SessionEnd::Killed),
            }
        };
        let result = match handled {
            Ok(result) => result,
            Err(end) => break end,
        };
        if let Err(stop) = result {
            break ended(stop);
        }
        registered.set(client_state(&exec, &extended));
        exec.release_if_idle(extended.has_pending());
        input = exec.input.take().expect("the client input is lent back");
    };
    // A shard that said why it closed (an administrator's pg_terminate_backend, a shutdown):
    // the client hears the shard's own FATAL rather than a generic lost connection.
    let shard_fatal = match &end {
        SessionEnd::ShardGone(name) => exec
            .links
            .iter()
            .find(|l| &l.name == name)
            .and_then(|l| l.fatal.clone()),
        _ => None,
    };
    let last_words = end.last_words();
    // Open shard transactions end when the links are dropped: PostgreSQL rolls back on close.
    let mut client = exec.into_client();
    if let Some(fatal) = shard_fatal {
        use tokio::io::AsyncWriteExt;
        let _ = client.write_all(&fatal.bytes).await;
        let _ = client.flush().await;
        let SessionEnd::ShardGone(name) = end else {
            unreachable!("matched above")
        };
        return SessionEnd::ShardFatal(name);
    }
    if let Some(err) = last_words {
        crate::client::send_fatal(&mut client, &err).await;
    }
    end
}

/// What a client message asks of the session once its transaction's connections are taken.
enum Work {
    /// Anything but an extended-protocol message.
    Frame(Frame),
    /// The extended-protocol batch must run (see `Extended::join`).
    RunBatch,
    /// An extended-protocol message joined the batch; nothing to run yet.
    TakeConnections,
}

/// The extended protocol's messages, which join the batch.
fn is_extended(tag: u8) -> bool {
    matches!(tag, b'P' | b'B' | b'D' | b'E' | b'C' | b'H' | b'S')
}

/// What the client list shows for the session after a message.
fn client_state(exec: &Exec<'_>, extended: &Extended) -> ClientState {
    match exec.txn {
        TxnState::Idle if !extended.has_pending() => ClientState::Idle,
        TxnState::Idle => ClientState::Active,
        _ => ClientState::InTransaction,
    }
}

fn ended(stop: Stop) -> SessionEnd {
    match stop {
        Stop::Refused(err) => SessionEnd::Refused(err),
        Stop::Client => SessionEnd::ClientGone,
        Stop::Shard(name) => SessionEnd::ShardGone(name),
        Stop::Limit(msg) => SessionEnd::LimitExceeded(msg),
    }
}

/// A simple Query. Extended-protocol messages the client sent before it without a Sync run
/// first, in order; after an error in them, PostgreSQL ignores the Query until Sync (the client
/// gets no answer, exactly as from PostgreSQL), and so does the proxy.
async fn run_query(exec: &mut Exec<'_>, extended: &mut Extended, sql: &str) -> Result<(), Stop> {
    extended.run_pending(exec).await?;
    if extended.skipping_until_sync() {
        return exec.flush().await;
    }
    exec.named_portal = extended.portal_named_by(sql);
    let ran = exec.simple_query(sql).await;
    exec.named_portal = None;
    ran
}

/// A simple Query whose text is not UTF-8.
async fn not_utf8(exec: &mut Exec<'_>, extended: &mut Extended) -> Result<(), Stop> {
    extended.run_pending(exec).await?;
    if extended.skipping_until_sync() {
        return exec.flush().await;
    }
    exec.error(&PgError::error(
        "22021",
        "invalid byte sequence for encoding \"UTF8\"",
    ));
    exec.after_error().await?;
    exec.ready_for_query();
    exec.flush().await
}
