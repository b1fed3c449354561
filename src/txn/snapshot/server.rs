//! The standalone oracle (`shardgate oracle --config FILE`): the oracle service behind a small
//! line protocol over TCP, for several proxies.
//!
//! Requests, one per line; each connection holds at most one grant:
//! - `ACQUIRE C <gid> <shard>,<shard>...` (commit window) or `ACQUIRE S - <shards>` (snapshot)
//!   → `GRANT <ts>` once granted, or `ERR <message>`;
//! - `RELEASE` → no answer.
//!
//! When a connection ends while it holds a commit window, the window stays closed to snapshots
//! until its gid has no prepared branch left: the proxy may have died between the decision and
//! its last COMMIT PREPARED, and recovery finishes that.

use super::gate::Class;
use super::oracle::OracleService;
use crate::config::Config;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Runs the oracle until the process is stopped.
pub async fn serve(config: &Config) -> Result<(), String> {
    let timeout = Duration::from_secs(config.server.connect_timeout_secs);
    let shards = config.shard_targets();
    for s in &shards {
        crate::txn::schema::prepare_shard(s, timeout).await?;
    }
    let names: Vec<String> = shards.iter().map(|s| s.name.clone()).collect();
    let svc = OracleService::start(shards, timeout).await?;
    let listener = TcpListener::bind(&config.oracle.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.oracle.listen))?;
    tracing::info!(addr = %config.oracle.listen, "shardgate oracle listening");
    let names = Arc::new(names);
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::error!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        tokio::spawn(connection(svc.clone(), names.clone(), socket, peer));
    }
}

async fn connection(
    svc: Arc<OracleService>,
    names: Arc<Vec<String>>,
    socket: TcpStream,
    peer: std::net::SocketAddr,
) {
    let mut conn = BufReader::new(socket);
    // The grant this connection holds: (id, gid of a commit window).
    let mut held: Option<(u64, Option<String>)> = None;
    let mut line = String::new();
    loop {
        line.clear();
        match conn.read_line(&mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["RELEASE"] => {
                if let Some((id, _)) = held.take() {
                    svc.release(id);
                }
                continue;
            }
            ["ACQUIRE", class, gid, shards] if held.is_none() => {
                match parse(class, shards, &names) {
                    Ok((class, shards)) => match svc.acquire(class, shards).await {
                        Ok(id) => {
                            let gid =
                                (class == Class::Commit && *gid != "-").then(|| gid.to_string());
                            held = Some((id, gid));
                            format!("GRANT {id}\n")
                        }
                        Err(e) => format!("ERR {e}\n"),
                    },
                    Err(e) => format!("ERR {e}\n"),
                }
            }
            _ => format!("ERR unknown request {:?}\n", line.trim_end()),
        };
        if conn.get_mut().write_all(answer.as_bytes()).await.is_err() {
            break;
        }
    }
    match held {
        Some((id, Some(gid))) => {
            tracing::warn!(%peer, %gid, "a proxy left while holding a commit window; it stays closed until the transaction is resolved");
            svc.orphan(id, gid);
        }
        Some((id, None)) => svc.release(id),
        None => {}
    }
}

fn parse(class: &str, shards: &str, names: &[String]) -> Result<(Class, Vec<usize>), String> {
    let class = match class {
        "C" => Class::Commit,
        "S" => Class::Snapshot,
        other => return Err(format!("unknown class {other}")),
    };
    let mut out = Vec::new();
    for s in shards.split(',') {
        match names.iter().position(|n| n == s) {
            Some(i) => out.push(i),
            None => return Err(format!("unknown shard {s}")),
        }
    }
    Ok((class, out))
}
