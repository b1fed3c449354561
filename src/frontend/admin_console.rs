//! The admin console session: simple-protocol commands, each answered with text columns, as
//! PgBouncer's console answers them (psql's `\x` makes the wide ones readable).
//!
//! SHOW SHARDS | POOLS | CLIENTS | STATS | TRANSACTIONS | CONFIG | SLOTS, RELOAD, PAUSE, RESUME,
//! and SHOW HELP. Commands may be separated by `;`. The extended protocol is refused.

use crate::client::tls::ClientStream;
use crate::error::{sqlstate, PgError};
use crate::frontend::ProxyContext;
use crate::protocol::build;
use bytes::BytesMut;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Rows = (Vec<&'static str>, Vec<Vec<Option<String>>>);

/// Serves an admin until it leaves or the proxy stops.
pub async fn serve(
    ctx: &ProxyContext,
    mut socket: ClientStream,
    mut stop: crate::shutdown::Receiver,
) {
    let mut out = BytesMut::new();
    build::auth_ok(&mut out);
    for (name, value) in [
        ("server_version", "15.0 (shardgate admin console)"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("application_name", ""),
    ] {
        build::parameter_status(name, value, &mut out);
    }
    build::backend_key_data(0, 0, &mut out);
    build::ready_for_query(b'I', &mut out);
    if write(&mut socket, &out).await.is_err() {
        return;
    }
    // Extended-protocol messages are refused once, at their Sync.
    let mut refusing = false;
    loop {
        let message = tokio::select! {
            m = read_message(&mut socket, ctx.max_message_bytes) => m,
            _ = crate::shutdown::ends(&mut stop, true) => {
                let err = PgError::fatal("57P01", "terminating connection because shardgate is shutting down");
                crate::client::send_fatal(&mut socket, &err).await;
                return;
            }
        };
        let Some((tag, body)) = message else { return };
        let mut out = BytesMut::new();
        match tag {
            b'Q' => {
                let text = String::from_utf8_lossy(body.split(|&b| b == 0).next().unwrap_or(&[]))
                    .into_owned();
                run_all(ctx, &text, &mut out).await;
                build::ready_for_query(b'I', &mut out);
            }
            b'X' => return,
            b'S' => {
                if refusing {
                    build::error(
                        &PgError::error(
                            sqlstate::FEATURE_NOT_SUPPORTED,
                            "the admin console takes simple queries only",
                        )
                        .with_hint("Use psql, or a driver's simple-query call."),
                        &mut out,
                    );
                }
                refusing = false;
                build::ready_for_query(b'I', &mut out);
            }
            _ => refusing = true,
        }
        if !out.is_empty() && write(&mut socket, &out).await.is_err() {
            return;
        }
    }
}

async fn run_all(ctx: &ProxyContext, text: &str, out: &mut BytesMut) {
    let commands: Vec<&str> = text
        .split(';')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    if commands.is_empty() {
        build::empty(b'I', out);
        return;
    }
    for command in commands {
        match run(ctx, command).await {
            Ok(Answer::Rows((columns, rows))) => {
                build::row_description_text(&columns, out);
                for row in &rows {
                    let values: Vec<Option<&str>> = row.iter().map(|v| v.as_deref()).collect();
                    build::data_row_text(&values, out);
                }
                build::command_complete(&format!("SHOW {}", rows.len()), out);
            }
            Ok(Answer::Done(tag, notice)) => {
                if let Some(notice) = notice {
                    build::warning("00000", &notice, out);
                }
                build::command_complete(tag, out);
            }
            Err(e) => {
                build::error(&e, out);
                return;
            }
        }
    }
}

enum Answer {
    Rows(Rows),
    /// A command tag, and a notice to go with it.
    Done(&'static str, Option<String>),
}

const HELP: &[(&str, &str)] = &[
    (
        "SHOW SHARDS",
        "each shard: address, state, and the round trip of a probe now",
    ),
    ("SHOW POOLS", "server connections per shard"),
    ("SHOW CLIENTS", "connected sessions and what each is doing"),
    ("SHOW STATS", "counters and gauges, as /metrics has them"),
    (
        "SHOW TRANSACTIONS",
        "open transactions, and in-doubt prepared ones on the shards",
    ),
    ("SHOW CONFIG", "the running config (passwords hidden)"),
    ("SHOW SLOTS", "which slots each shard owns"),
    ("RELOAD", "read the config file again (as SIGHUP)"),
    ("PAUSE", "hold new transactions; returns when none is open"),
    ("RESUME", "let held transactions start"),
];

async fn run(ctx: &ProxyContext, command: &str) -> Result<Answer, PgError> {
    let words: Vec<String> = command
        .split_whitespace()
        .map(|w| w.to_ascii_uppercase())
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    Ok(match words.as_slice() {
        ["SHOW", "HELP"] | ["HELP"] => Answer::Rows((
            vec!["command", "what it does"],
            HELP.iter()
                .map(|(c, w)| vec![Some(c.to_string()), Some(w.to_string())])
                .collect(),
        )),
        ["SHOW", "SHARDS"] => Answer::Rows(shards(ctx).await),
        ["SHOW", "POOLS"] => Answer::Rows(pools(ctx)),
        ["SHOW", "CLIENTS"] => Answer::Rows(clients(ctx)),
        ["SHOW", "STATS"] => Answer::Rows(stats()),
        ["SHOW", "TRANSACTIONS"] => Answer::Rows(transactions(ctx).await),
        ["SHOW", "CONFIG"] => Answer::Rows(config(ctx)),
        ["SHOW", "SLOTS"] => Answer::Rows(slots(ctx)),
        ["RELOAD"] => match ctx.live.reload(&ctx.shards, ctx.connect_timeout).await {
            Ok(done) => Answer::Done("RELOAD", Some(format!("config reloaded: {done}"))),
            Err(e) => {
                return Err(PgError::error("F0000", format!("config not reloaded: {e}"))
                    .with_hint("The running config stays as it was."))
            }
        },
        ["PAUSE"] => {
            ctx.pause.pause();
            while ctx.clients.busy() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Answer::Done("PAUSE", None)
        }
        ["RESUME"] => {
            ctx.pause.resume();
            Answer::Done("RESUME", None)
        }
        _ => {
            return Err(
                PgError::error("42601", format!("unknown admin command: {command}"))
                    .with_hint("SHOW HELP lists the commands."),
            )
        }
    })
}

async fn shards(ctx: &ProxyContext) -> Rows {
    let mut rows = Vec::new();
    for (i, shard) in ctx.shards.iter().enumerate() {
        let state = if ctx.health.is_up(i) { "up" } else { "down" };
        let probe = async {
            let client = crate::backend::control::connect(shard, ctx.connect_timeout).await?;
            let started = Instant::now();
            client
                .simple_query("SELECT 1")
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(started.elapsed())
        };
        let latency = match tokio::time::timeout(ctx.connect_timeout, probe).await {
            Ok(Ok(d)) => format!("{:.2}", d.as_secs_f64() * 1000.0),
            Ok(Err(e)) => format!("unreachable: {e}"),
            Err(_) => "unreachable: timed out".to_string(),
        };
        rows.push(vec![
            Some(shard.name.clone()),
            Some(shard.describe()),
            Some(state.to_string()),
            Some(latency),
        ]);
    }
    (vec!["name", "address", "state", "latency_ms"], rows)
}

fn pools(ctx: &ProxyContext) -> Rows {
    let mode = match ctx.pools.mode {
        crate::config::PoolMode::Transaction => "transaction",
        crate::config::PoolMode::Session => "session",
    };
    let rows = ctx
        .pools
        .shards
        .iter()
        .map(|pool| {
            let s = pool.stats();
            vec![
                Some(pool.target.name.clone()),
                Some(mode.to_string()),
                Some((s.active + s.idle).to_string()),
                Some(s.active.to_string()),
                Some(s.idle.to_string()),
                Some(s.waiting.to_string()),
                Some(s.size.to_string()),
            ]
        })
        .collect();
    (
        vec![
            "shard",
            "pool_mode",
            "server_connections",
            "active",
            "idle",
            "waiting",
            "size",
        ],
        rows,
    )
}

fn clients(ctx: &ProxyContext) -> Rows {
    let rows = ctx
        .clients
        .list()
        .iter()
        .map(|c| {
            let since = c
                .transaction_since()
                .map(|t| format!("{:.1}", t.elapsed().as_secs_f64()));
            vec![
                Some(c.id.to_string()),
                Some(c.user.clone()),
                Some(c.peer.to_string()),
                Some(if c.tls { "yes" } else { "no" }.to_string()),
                Some(c.state().name().to_string()),
                since,
                Some(seconds_since(c.connected_at)),
                Some(c.shards.to_string()),
                Some(c.pid.to_string()),
            ]
        })
        .collect();
    (
        vec![
            "id",
            "user",
            "address",
            "tls",
            "state",
            "transaction_secs",
            "connected_secs",
            "shards",
            "pid",
        ],
        rows,
    )
}

fn seconds_since(t: std::time::SystemTime) -> String {
    format!("{:.0}", t.elapsed().unwrap_or_default().as_secs_f64())
}

fn stats() -> Rows {
    let text = crate::metrics::rendered().unwrap_or_default();
    let rows = text
        .lines()
        .filter(|l| l.starts_with("shardgate_"))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}')),
                None => (series, ""),
            };
            if name.ends_with("_bucket") {
                return None;
            }
            Some(vec![
                Some(name.to_string()),
                Some(labels.to_string()),
                Some(value.to_string()),
            ])
        })
        .collect();
    (vec!["metric", "labels", "value"], rows)
}

async fn transactions(ctx: &ProxyContext) -> Rows {
    let mut rows: Vec<Vec<Option<String>>> = ctx
        .clients
        .list()
        .iter()
        .filter_map(|c| {
            let since = c.transaction_since()?;
            Some(vec![
                Some("open".to_string()),
                Some(format!("client {} ({})", c.id, c.user)),
                None,
                Some(format!("{:.1}", since.elapsed().as_secs_f64())),
            ])
        })
        .collect();
    for shard in &ctx.shards {
        let listed = async {
            let client = crate::backend::control::connect(shard, ctx.connect_timeout).await?;
            client
                .query(
                    "SELECT gid, extract(epoch FROM now() - prepared)::float8 FROM pg_prepared_xacts \
                     WHERE database = current_database() AND gid LIKE 'sg\\_%' ORDER BY prepared",
                    &[],
                )
                .await
                .map_err(|e| crate::backend::control::describe(&e))
        };
        match listed.await {
            Ok(found) => {
                for row in found {
                    rows.push(vec![
                        Some("in doubt".to_string()),
                        Some(row.get::<_, String>(0)),
                        Some(shard.name.clone()),
                        Some(format!("{:.1}", row.get::<_, f64>(1))),
                    ]);
                }
            }
            Err(e) => rows.push(vec![
                Some("unknown".to_string()),
                Some(format!("cannot list: {e}")),
                Some(shard.name.clone()),
                None,
            ]),
        }
    }
    (vec!["kind", "transaction", "shard", "age_secs"], rows)
}

fn config(ctx: &ProxyContext) -> Rows {
    let rows = ctx
        .live
        .running_settings()
        .into_iter()
        .map(|(k, v)| vec![Some(k), Some(v)])
        .collect();
    (vec!["key", "value"], rows)
}

fn slots(ctx: &ProxyContext) -> Rows {
    let placement = ctx.live.placement();
    let text = placement.slots.to_config(&placement.shard_names);
    let rows = text
        .lines()
        .filter_map(|l| l.split_once(" = "))
        .map(|(shard, ranges)| {
            let ranges = ranges.trim_matches('"');
            let count: u32 = ranges
                .split(',')
                .filter_map(|r| match r.split_once('-') {
                    Some((a, b)) => Some(b.parse::<u32>().ok()? - a.parse::<u32>().ok()? + 1),
                    None => r.parse::<u32>().ok().map(|_| 1),
                })
                .sum();
            vec![
                Some(shard.to_string()),
                Some(count.to_string()),
                Some(ranges.to_string()),
            ]
        })
        .collect();
    (vec!["shard", "slot_count", "slots"], rows)
}

async fn write(socket: &mut ClientStream, bytes: &[u8]) -> std::io::Result<()> {
    socket.write_all(bytes).await?;
    socket.flush().await
}

/// One message (tag and body), or None at the end of the connection or on a bad length.
async fn read_message(socket: &mut ClientStream, limit: usize) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    socket.read_exact(&mut head).await.ok()?;
    let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    let len = usize::try_from(len)
        .ok()
        .filter(|l| *l >= 4 && *l <= limit)?;
    let mut body = vec![0u8; len - 4];
    socket.read_exact(&mut body).await.ok()?;
    Some((head[0], body))
}
