//! From accepted socket to a relaying session: SSL/GSS refusal, startup packet, client
//! authentication, shard login, and the greeting (ParameterStatus, BackendKeyData,
//! ReadyForQuery). A CancelRequest is served here and the connection closed.
//!
//! The greeting forwards the shard's own ParameterStatus values (server_version, encodings,
//! DateStyle ...) so drivers see exactly the server they would see directly.

use super::admission::Admitted;
use super::session;
use crate::auth::{self, Credential};
use crate::backend;
use crate::client::cancel::ShardKey;
use crate::client::send_fatal;
use crate::client::tls::ClientStream;
use crate::config::PoolMode;
use crate::error::{sqlstate, PgError};
use crate::frontend::ProxyContext;
use crate::logsafe::Escaped;
use crate::metrics as m;
use crate::protocol::build;
use crate::protocol::startup::{read_packet, StartupPacket};
use bytes::BytesMut;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

/// Largest message accepted before authentication completes (as PostgreSQL's startup limit).
const MAX_AUTH_MESSAGE: usize = 10_000;

/// Serves one client connection to the end. Never panics on client input; errors end this
/// connection only.
pub async fn handle_client(
    ctx: Arc<ProxyContext>,
    socket: TcpStream,
    peer: SocketAddr,
    shutdown: crate::shutdown::Receiver,
    mut admitted: Admitted,
) {
    let _ = socket.set_nodelay(true);
    let mut socket = ClientStream::Plain(socket);
    // Startup and authentication must finish in time, and give way to newer connections when
    // the startup queue is full (see `admission`).
    let login = tokio::select! {
        r = tokio::time::timeout(ctx.live.timeouts().startup, log_in(&ctx, &mut socket, peer)) => r,
        _ = admitted.evicted() => {
            metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => "evicted").increment(1);
            debug!(%peer, "evicted from the startup queue");
            return;
        }
    };
    let params = match login {
        Ok(Some(params)) => params,
        Ok(None) => return,
        Err(_) => {
            metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => "startup_timeout").increment(1);
            let err = PgError::fatal(
                sqlstate::PROTOCOL_VIOLATION,
                "canceling authentication due to timeout",
            );
            send_fatal(&mut socket, &err).await;
            return;
        }
    };
    admitted.logged_in();
    let user = params.get("user").cloned().unwrap_or_default();
    let logged_user = Escaped(&user);
    if params.get("database").map(String::as_str) == Some(crate::admin::DATABASE) {
        if !ctx.live.users().is_admin(&user) {
            let err = PgError::fatal(
                sqlstate::INVALID_AUTHORIZATION,
                format!("user \"{logged_user}\" may not use the admin console"),
            )
            .with_hint("Give the user admin = true in its [[users]] entry.");
            send_fatal(&mut socket, &err).await;
            return;
        }
        info!(%peer, user = %logged_user, "admin console session");
        crate::frontend::admin_console::serve(&ctx, socket, shutdown).await;
        info!(%peer, user = %logged_user, "admin console session ended");
        return;
    }

    // The database the proxy serves is the first shard's (the one current_database() answers
    // from); as in PostgreSQL, a client that names none asks for its user's name.
    let database = params
        .get("database")
        .filter(|d| !d.is_empty())
        .unwrap_or(&user);
    if *database != ctx.shards[0].dbname {
        let err = PgError::fatal(
            "3D000",
            format!("database \"{}\" does not exist", Escaped(database)),
        )
        .with_hint(format!(
            "shardgate serves database \"{}\".",
            ctx.shards[0].dbname
        ));
        send_fatal(&mut socket, &err).await;
        return;
    }
    // Several shards: statements are read as UTF-8 to be routed (SQL_ASCII is taken as a
    // client that sends ASCII). One shard relays bytes and takes any encoding.
    if let Some(enc) = params.get("client_encoding").filter(|e| {
        ctx.shards.len() > 1
            && !crate::router::plan::is_utf8_name(e)
            && !e.eq_ignore_ascii_case("sql_ascii")
    }) {
        let err = PgError::fatal(
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!(
                "client encoding {} is not supported on several shards",
                Escaped(enc)
            ),
        )
        .with_hint("Connect with client_encoding=UTF8 (PGCLIENTENCODING=UTF8).");
        send_fatal(&mut socket, &err).await;
        return;
    }
    let options = super::startup_options::parse(params.get("options").map_or("", |o| o.as_str()));
    // Several shards: plain strings are read as with standard_conforming_strings on (see
    // `router::plan::string_syntax`), so a login may not turn it off either.
    let strings_off = |(name, value): (&str, &str)| {
        name.eq_ignore_ascii_case(crate::router::plan::string_syntax::NAME)
            && !crate::router::plan::string_syntax::keeps_it_on(value)
    };
    if ctx.shards.len() > 1
        && params
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .chain(
                options
                    .settings
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str())),
            )
            .any(strings_off)
    {
        let err = PgError {
            severity: crate::error::Severity::Fatal,
            ..crate::router::plan::string_syntax::refusal()
        };
        send_fatal(&mut socket, &err).await;
        return;
    }
    let snapshot_possible = ctx.txn.oracle.is_some();
    if let Some(err) = options.own.iter().find_map(|(name, value)| {
        crate::executor::snapshot_read::setting_error(name, value, snapshot_possible)
    }) {
        let fatal = PgError {
            severity: crate::error::Severity::Fatal,
            ..err
        };
        send_fatal(&mut socket, &fatal).await;
        return;
    }
    let mut forwarded: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| {
            !matches!(k.as_str(), "user" | "database" | "replication" | "options")
                && !k.starts_with("_pq_.")
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .chain(options.forward.clone().map(|o| ("options".to_string(), o)))
        .collect();
    if let Some(down) = ctx.health.first_down(&ctx.shards) {
        let err = PgError::fatal(
            sqlstate::CONNECTION_UNABLE,
            format!("shard {down} is not answering (it failed its last health probes)"),
        )
        .with_hint("Every shard must be up to log in; retry once the shard is back.");
        send_fatal(&mut socket, &err).await;
        return;
    }
    let one_shard = ctx.shards.len() == 1;
    let owner = crate::client::cancel::Owner::new(&user, ctx.live.users().is_admin(&user));
    let (end, registration) = if one_shard && ctx.pools.mode == PoolMode::Session {
        let pool = &ctx.pools.shards[0];
        let conn = match pool.checkout(&forwarded, 0).await {
            Ok(conn) => conn,
            Err(err) => {
                warn!(%peer, shard = %pool.target.name, "{}", err.message);
                send_fatal(&mut socket, &err).await;
                return;
            }
        };
        let registration = ctx.cancel.register(
            vec![ShardKey {
                target: pool.target.clone(),
                key: conn.key,
            }],
            owner,
        );
        let mut greeting = BytesMut::with_capacity(512);
        build::auth_ok(&mut greeting);
        for (name, value) in &conn.parameters {
            build::parameter_status(name, value, &mut greeting);
        }
        build::backend_key_data(registration.key.pid, registration.key.secret, &mut greeting);
        build::ready_for_query(b'I', &mut greeting);
        if write(&mut socket, &greeting).await.is_err() {
            pool.discard(conn);
            return;
        }
        info!(%peer, user = %logged_user, shards = 1, "client connected");
        let _connected = m::ClientGauge::enter();
        let registered =
            ctx.clients
                .register(&user, peer, socket.is_tls(), 1, registration.key.pid);
        let key = conn.key;
        let (stream, lease) = conn.into_parts();
        let end = session::run(&ctx, socket, stream, 0, key, shutdown, &registered).await;
        // A session-mode connection carries the client's startup parameters: not for others.
        pool.discard_lease(lease);
        (end, registration)
    } else {
        let startup = super::pooled_login::startup_settings(&forwarded, &options);
        let given = startup.len();
        let startup = crate::backend::output_settings::with_pinned(startup, &ctx.pinned_settings);
        // Session mode logs in with the pinned settings as startup parameters.
        forwarded.extend(startup[given..].iter().cloned());
        let settings = crate::pool::settings::Settings::new(&startup);
        let login = match super::pooled_login::log_in(&ctx, &forwarded, &settings, owner).await {
            Ok(login) => login,
            Err(err) => {
                warn!(%peer, "login to the shards failed: {}", err.message);
                send_fatal(&mut socket, &err).await;
                return;
            }
        };
        if write(&mut socket, &login.greeting).await.is_err() {
            return;
        }
        info!(%peer, user = %logged_user, shards = login.links.len(), "client connected");
        let _connected = m::ClientGauge::enter();
        let registered = ctx.clients.register(
            &user,
            peer,
            socket.is_tls(),
            login.links.len(),
            login.registration.key.pid,
        );
        // The user's own default first, so that a startup option can still change it.
        let own: Vec<(String, String)> = ctx
            .live
            .users()
            .consistency(&user)
            .map(|c| ("consistency".to_string(), c.to_string()))
            .into_iter()
            .chain(options.own.iter().cloned())
            .collect();
        if one_shard {
            let mut links = login.links;
            let link = links.pop().expect("one shard, one link");
            let pooling = super::pooled_relay::Pooling {
                link,
                pool: ctx.pools.shards[0].clone(),
                cancel: login.registration.slot(0),
                settings,
                termination: login.registration.termination(),
            };
            let end = super::pooled_relay::run(&ctx, socket, pooling, shutdown, &registered).await;
            (end, login.registration)
        } else {
            let end = crate::frontend::client_loop::run(
                &ctx,
                socket,
                login.links,
                crate::frontend::client_loop::Start {
                    own: &own,
                    settings,
                    termination: login.registration.termination(),
                },
                shutdown,
                &registered,
            )
            .await;
            (end, login.registration)
        }
    };
    drop(registration);
    if matches!(end, session::SessionEnd::ProtocolViolation(_)) {
        metrics::counter!(m::PROTOCOL_VIOLATIONS).increment(1);
    }
    info!(%peer, user = %logged_user, "client disconnected: {end}");
}

/// Startup and authentication. `Ok(None)`: the connection is done (closed, served a cancel, or
/// told why it cannot log in).
async fn log_in(
    ctx: &ProxyContext,
    socket: &mut ClientStream,
    peer: SocketAddr,
) -> Option<BTreeMap<String, String>> {
    let params = match negotiate(ctx, socket).await {
        Ok(Some(params)) => params,
        Ok(None) => return None,
        Err(err) => {
            debug!(%peer, "startup rejected: {err}");
            send_fatal(socket, &err).await;
            return None;
        }
    };
    let user = params.get("user").cloned().unwrap_or_default();
    if let Err(err) = authenticate(ctx, socket, &user).await {
        if err.code == sqlstate::INVALID_PASSWORD || err.code == sqlstate::INVALID_AUTHORIZATION {
            metrics::counter!(m::AUTH_FAILURES).increment(1);
            warn!(%peer, user = %Escaped(&user), "authentication failed");
            // Answered only after the throttle's pause, so guessing in a loop is slow.
            tokio::time::sleep(ctx.auth_throttle.failed(&user, peer.ip())).await;
        }
        send_fatal(socket, &err).await;
        return None;
    }
    Some(params)
}

/// A connection over the client limit: told so and closed.
pub async fn refuse_client(mut socket: TcpStream, peer: SocketAddr) {
    metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => "limit").increment(1);
    debug!(%peer, "client limit reached");
    let err = PgError::fatal(
        sqlstate::TOO_MANY_CONNECTIONS,
        "sorry, too many clients already",
    )
    .with_hint("Raise server.max_client_connections, or pool connections in the application.");
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        send_fatal(&mut socket, &err),
    )
    .await;
}

/// Reads opening packets until a StartupMessage. `Ok(None)`: nothing more to do (closed, or a
/// cancel request that has been served).
async fn negotiate(
    ctx: &ProxyContext,
    socket: &mut ClientStream,
) -> Result<Option<BTreeMap<String, String>>, PgError> {
    loop {
        match read_packet(socket).await? {
            None => return Ok(None),
            Some(StartupPacket::SslRequest) if !socket.is_tls() => {
                let Some(acceptor) = &ctx.client_tls.acceptor else {
                    // 'N': go on in plaintext.
                    write(socket, b"N").await?;
                    continue;
                };
                write(socket, b"S").await?;
                // A failed handshake has nobody to tell in a protocol both sides speak.
                if let Err(e) = socket.upgrade(acceptor).await {
                    debug!("TLS handshake failed: {e}");
                    return Ok(None);
                }
            }
            Some(StartupPacket::SslRequest) => {
                return Err(PgError::fatal(
                    sqlstate::PROTOCOL_VIOLATION,
                    "SSLRequest received over an encrypted connection",
                ))
            }
            // No GSS encryption: 'N' tells the client to go on without it.
            Some(StartupPacket::GssEncRequest) => write(socket, b"N").await?,
            Some(StartupPacket::Cancel { pid, secret }) => {
                serve_cancel(ctx, pid, secret).await;
                return Ok(None);
            }
            Some(StartupPacket::Startup { minor, params }) => {
                if ctx.client_tls.required && !socket.is_tls() {
                    return Err(PgError::fatal(
                        sqlstate::INVALID_AUTHORIZATION,
                        "SSL connection is required",
                    )
                    .with_hint("Connect with sslmode=require (or verify-full)."));
                }
                if params.get("user").is_none_or(|u| u.is_empty()) {
                    return Err(PgError::fatal(
                        sqlstate::INVALID_AUTHORIZATION,
                        "no PostgreSQL user name specified in startup packet",
                    ));
                }
                if params
                    .get("replication")
                    .is_some_and(|r| r != "false" && r != "0" && r != "off")
                {
                    return Err(PgError::fatal(
                        sqlstate::FEATURE_NOT_SUPPORTED,
                        "replication connections are not supported through shardgate",
                    )
                    .with_hint("Connect to the shard directly for replication."));
                }
                let unsupported: Vec<String> = params
                    .keys()
                    .filter(|k| k.starts_with("_pq_."))
                    .cloned()
                    .collect();
                if minor > 0 || !unsupported.is_empty() {
                    let mut buf = BytesMut::new();
                    build::negotiate_protocol_version(&unsupported, &mut buf);
                    write(socket, &buf).await?;
                }
                return Ok(Some(params));
            }
        }
    }
}

async fn serve_cancel(ctx: &ProxyContext, pid: i32, secret: i32) {
    // As in PostgreSQL, a cancel request gets no answer either way.
    let Some(shards) = ctx.cancel.lookup(pid, secret) else {
        debug!(pid, "cancel request for an unknown key ignored");
        return;
    };
    backend::forward_cancel(shards).await;
}

async fn authenticate(
    ctx: &ProxyContext,
    socket: &mut ClientStream,
    user: &str,
) -> Result<(), PgError> {
    let failed = || {
        PgError::fatal(
            sqlstate::INVALID_PASSWORD,
            format!("password authentication failed for user \"{user}\""),
        )
    };
    match ctx.live.users().get(user) {
        Some(Credential::Trust) => Ok(()),
        Some(Credential::Md5(stored)) => md5(socket, stored, &failed).await,
        Some(Credential::Scram(v)) => scram(socket, v.clone(), &failed).await,
        // Unknown users go through the exchange a real user would, failing only at the end.
        None => match ctx.live.users().unknown(user) {
            Credential::Md5(stored) => md5(socket, &stored, &failed).await,
            Credential::Scram(v) => scram(socket, v, &failed).await,
            Credential::Trust => Err(failed()),
        },
    }
}

async fn md5(
    socket: &mut ClientStream,
    stored: &str,
    failed: &(dyn Fn() -> PgError + Sync),
) -> Result<(), PgError> {
    let mut out = BytesMut::new();
    let salt: [u8; 4] = rand::random();
    build::auth_md5(salt, &mut out);
    write(socket, &out).await?;
    let response = read_password_message(socket).await?;
    let text = std::str::from_utf8(response.strip_suffix(&[0]).unwrap_or(&response)).unwrap_or("");
    if auth::md5::verify(stored, salt, text) {
        Ok(())
    } else {
        Err(failed())
    }
}

async fn scram(
    socket: &mut ClientStream,
    verifier: auth::scram::Verifier,
    failed: &(dyn Fn() -> PgError + Sync),
) -> Result<(), PgError> {
    use auth::scram::{Exchange, ScramError};
    let mut out = BytesMut::new();
    build::auth_sasl(&["SCRAM-SHA-256"], &mut out);
    write(socket, &out).await?;

    let initial = read_password_message(socket).await?;
    let (mechanism, rest) = crate::protocol::inspect::cstr(&initial).ok_or_else(malformed_sasl)?;
    if mechanism != "SCRAM-SHA-256" {
        return Err(PgError::fatal(
            sqlstate::PROTOCOL_VIOLATION,
            format!("client selected an invalid SASL authentication mechanism {mechanism:?}"),
        ));
    }
    if rest.len() < 4 {
        return Err(malformed_sasl());
    }
    let client_first = &rest[4..];
    let to_pg = |e: ScramError| match e {
        ScramError::Failed => failed(),
        ScramError::ChannelBindingUnsupported => PgError::fatal(
            sqlstate::PROTOCOL_VIOLATION,
            "channel binding is not supported: shardgate does not offer TLS yet",
        ),
        ScramError::Malformed(what) => PgError::fatal(
            sqlstate::PROTOCOL_VIOLATION,
            format!("malformed SCRAM message: {what}"),
        ),
    };
    let (exchange, server_first) = Exchange::start(verifier, client_first).map_err(to_pg)?;
    out.clear();
    build::auth_sasl_continue(server_first.as_bytes(), &mut out);
    write(socket, &out).await?;

    let client_final = read_password_message(socket).await?;
    let server_final = exchange.finish(&client_final).map_err(to_pg)?;
    out.clear();
    build::auth_sasl_final(server_final.as_bytes(), &mut out);
    write(socket, &out).await
}

fn malformed_sasl() -> PgError {
    PgError::fatal(sqlstate::PROTOCOL_VIOLATION, "malformed SASL message")
}

/// Reads one 'p' message body (password, SASLInitialResponse or SASLResponse).
async fn read_password_message(socket: &mut ClientStream) -> Result<Vec<u8>, PgError> {
    let mut head = [0u8; 5];
    socket.read_exact(&mut head).await.map_err(|_| {
        PgError::fatal(
            sqlstate::PROTOCOL_VIOLATION,
            "connection closed during authentication",
        )
    })?;
    if head[0] != b'p' {
        return Err(PgError::fatal(
            sqlstate::PROTOCOL_VIOLATION,
            format!("expected password response, got message type {}", head[0]),
        ));
    }
    let len = i32::from_be_bytes(head[1..].try_into().expect("4 bytes"));
    if len < 4 || len as usize > MAX_AUTH_MESSAGE {
        return Err(PgError::fatal(
            sqlstate::PROTOCOL_VIOLATION,
            format!("invalid message length {len}"),
        ));
    }
    let mut body = vec![0u8; len as usize - 4];
    socket.read_exact(&mut body).await.map_err(|_| {
        PgError::fatal(
            sqlstate::PROTOCOL_VIOLATION,
            "connection closed during authentication",
        )
    })?;
    Ok(body)
}

async fn write(socket: &mut ClientStream, buf: &[u8]) -> Result<(), PgError> {
    let failed = |e: std::io::Error| PgError::fatal(sqlstate::CONNECTION_FAILURE, e.to_string());
    socket.write_all(buf).await.map_err(failed)?;
    // Over TLS, written bytes can wait in the TLS layer until a flush.
    socket.flush().await.map_err(failed)
}
