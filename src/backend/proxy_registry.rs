//! Which proxies are running and which placement version each routes by: every several-shard
//! proxy keeps a row of `shardgate.proxies` on the first shard fresh from its placement watch
//! (see `placement_store::watch`). A row not refreshed within three of its proxy's refresh
//! intervals (and two seconds) belongs to a proxy that stopped or lost the first shard.

use super::control;
use crate::config::ShardTarget;
use crate::placement::HOME;
use std::time::Duration;

/// Created with the placement table (see `placement_store`).
pub const CREATE: &str = "CREATE TABLE IF NOT EXISTS shardgate.proxies (
    id text PRIMARY KEY,
    listen text NOT NULL,
    version bigint NOT NULL,
    refresh_secs float8 NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    seen_at timestamptz NOT NULL DEFAULT now()
)";

/// This proxy, as it registers.
#[derive(Debug, Clone)]
pub struct Me {
    /// Unique per process run: address, pid and start time.
    pub id: String,
    pub listen: String,
    pub refresh_secs: f64,
}

impl Me {
    pub fn new(listen: String, refresh_secs: f64) -> Me {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        Me {
            id: format!("{listen}/{}/{started}", std::process::id()),
            listen,
            refresh_secs,
        }
    }
}

/// A registered proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    pub listen: String,
    pub version: i64,
    pub seen_secs_ago: f64,
    /// Refreshed recently enough to count as running.
    pub live: bool,
}

/// Refreshes this proxy's row; rows of proxies gone for a day are removed on the way.
pub async fn register(
    client: &tokio_postgres::Client,
    me: &Me,
    version: i64,
) -> Result<(), String> {
    client
        .execute(
            "INSERT INTO shardgate.proxies (id, listen, version, refresh_secs) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO UPDATE \
             SET version = excluded.version, seen_at = now()",
            &[&me.id, &me.listen, &version, &me.refresh_secs],
        )
        .await
        .map_err(|e| control::describe(&e))?;
    client
        .execute(
            "DELETE FROM shardgate.proxies WHERE seen_at < now() - interval '1 day'",
            &[],
        )
        .await
        .map(|_| ())
        .map_err(|e| control::describe(&e))
}

/// Removes this proxy's row (at a clean stop); a failure only leaves the row to age out.
pub async fn leave(shards: &[ShardTarget], id: &str, timeout: Duration) {
    let removed = async {
        let client = control::connect(&shards[HOME], timeout).await?;
        client
            .execute("DELETE FROM shardgate.proxies WHERE id = $1", &[&id])
            .await
            .map_err(|e| control::describe(&e))
    };
    match tokio::time::timeout(timeout, removed).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::debug!("leaving the proxy registry: {e}"),
        Err(_) => tracing::debug!("leaving the proxy registry: timed out"),
    }
}

/// Every registered proxy, live ones first.
pub async fn list(shards: &[ShardTarget], timeout: Duration) -> Result<Vec<Registered>, String> {
    let client = control::connect(&shards[HOME], timeout).await?;
    let rows = match client
        .query(
            "SELECT listen, version, extract(epoch FROM now() - seen_at)::float8, \
                    seen_at > now() - make_interval(secs => 3 * refresh_secs + 2) AS live \
             FROM shardgate.proxies ORDER BY live DESC, listen",
            &[],
        )
        .await
    {
        Ok(rows) => rows,
        Err(e) if matches!(control::code(&e), Some("3F000" | "42P01")) => Vec::new(),
        Err(e) => return Err(control::describe(&e)),
    };
    Ok(rows
        .iter()
        .map(|r| Registered {
            listen: r.get(0),
            version: r.get(1),
            seen_secs_ago: r.get(2),
            live: r.get(3),
        })
        .collect())
}
