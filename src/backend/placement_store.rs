//! The cluster's placement on the shards: `shardgate.placement(version, slots)` on every shard
//! (see `placement::record` for what is decided from it). Whoever reads to decide or writes a
//! version holds an advisory lock in a transaction on the first shard, so proxies starting
//! together, and `shardgate slots --record`, take turns and agree.
//!
//! The placement fence: before a new version is written, each sharded table on every shard gets
//! a statement trigger that refuses a write (even one that matches no row, which a row trigger
//! would miss) from a session tagged with an older version (`pool::PLACEMENT_VERSION_PARAMETER`).
//! Sessions without the tag (direct clients, the proxy's control connections) pass.

use super::control;
use crate::config::ShardTarget;
use crate::placement::record::{self, Decision, Recorded};
use crate::placement::{SlotTable, HOME};
use std::time::Duration;

/// Lock key for placement changes ("sgplacmt" in ASCII).
const LOCK: i64 = 0x7367_706c_6163_6d74;

const CREATE: &str = "CREATE TABLE IF NOT EXISTS shardgate.placement (
    version bigint PRIMARY KEY,
    slots text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
)";
const NEWEST: &str = "SELECT version, slots FROM shardgate.placement ORDER BY version DESC LIMIT 1";
const INSERT: &str =
    "INSERT INTO shardgate.placement (version, slots) VALUES ($1, $2) ON CONFLICT (version) DO NOTHING";

/// Why `establish` failed.
#[derive(Debug)]
pub enum EstablishError {
    /// A shard could not be read or written.
    Shard(String),
    /// The config disagrees with the cluster's placement (see `placement::record::decide`).
    Refused(String),
}

/// At start: the cluster's placement, recording the file's table on the first start and copying
/// the newest version to shards that lack it. Every shard must be reachable.
pub async fn establish(
    shards: &[ShardTarget],
    file: &SlotTable,
    pinned: bool,
    timeout: Duration,
) -> Result<Decision, EstablishError> {
    let clients = locked(shards, timeout)
        .await
        .map_err(EstablishError::Shard)?;
    let found = newest_everywhere(shards, &clients, true)
        .await
        .map_err(EstablishError::Shard)?;
    let names: Vec<String> = shards.iter().map(|s| s.name.clone()).collect();
    // A refusal leaves the lock's transaction to end with the connection, rolled back.
    let decision = record::decide(&found, file, pinned, &names).map_err(EstablishError::Refused)?;
    for &i in &decision.write {
        write(
            &shards[i],
            &clients[i],
            decision.current.version,
            &decision.text,
        )
        .await
        .map_err(EstablishError::Shard)?;
    }
    commit(shards, &clients)
        .await
        .map_err(EstablishError::Shard)?;
    Ok(decision)
}

/// Records `table` as a new version on every shard (for a placement changed while no proxy
/// ran: rows moved by hand), after fencing the sharded `tables` against proxies that still
/// route by an older one. Returns the version written.
pub async fn record_new(
    shards: &[ShardTarget],
    table: &SlotTable,
    tables: &[String],
    timeout: Duration,
) -> Result<i64, String> {
    let clients = locked(shards, timeout).await?;
    let found = newest_everywhere(shards, &clients, true).await?;
    fence(shards, &clients, tables).await?;
    let names: Vec<String> = shards.iter().map(|s| s.name.clone()).collect();
    let version = found.iter().flatten().map(|(v, _)| *v).max().unwrap_or(0) + 1;
    let text = record::encode(table, &names);
    for (shard, client) in shards.iter().zip(&clients) {
        write(shard, client, version, &text).await?;
    }
    commit(shards, &clients).await?;
    Ok(version)
}

/// The fence function; `FENCE_MESSAGE` starts its error.
const FENCE: &str = "CREATE OR REPLACE FUNCTION shardgate.placement_fence() RETURNS trigger
LANGUAGE plpgsql AS $fence$
DECLARE
    mine text := current_setting('shardgate.placement_version', true);
    newest bigint;
BEGIN
    IF coalesce(mine, '') = '' THEN
        RETURN NULL;
    END IF;
    SELECT max(version) INTO newest FROM shardgate.placement;
    IF mine::bigint < newest THEN
        RAISE EXCEPTION 'placement changed: this proxy routes by placement version %, the cluster is at version %', mine, newest
            USING ERRCODE = 'serialization_failure',
                  HINT = 'Nothing was written. Retry the transaction: the proxy reads the new placement within its placement.refresh_interval_secs.';
    END IF;
    RETURN NULL;
END
$fence$";

/// How the fence's refusal begins.
pub const FENCE_MESSAGE: &str = "placement changed:";

/// Fences `tables` (bare names, as the config declares them) on every shard where they exist.
pub async fn fence(
    shards: &[ShardTarget],
    clients: &[tokio_postgres::Client],
    tables: &[String],
) -> Result<(), String> {
    for (shard, client) in shards.iter().zip(clients) {
        client
            .batch_execute(FENCE)
            .await
            .map_err(|e| failed(shard, &e))?;
        for table in tables {
            let exists = control::relation_exists(client, table)
                .await
                .map_err(|e| failed(shard, &e))?;
            if exists {
                let quoted = crate::sql::identifier(table);
                client
                    .batch_execute(&format!(
                        "CREATE OR REPLACE TRIGGER shardgate_placement_fence \
                         BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON {quoted} \
                         FOR EACH STATEMENT EXECUTE FUNCTION shardgate.placement_fence()"
                    ))
                    .await
                    .map_err(|e| failed(shard, &e))?;
            }
        }
    }
    Ok(())
}

/// The newest version on the first shard, cheaply, to notice a change (see `current`).
pub async fn newest_version(client: &tokio_postgres::Client) -> Result<Option<i64>, String> {
    match client
        .query_one("SELECT max(version) FROM shardgate.placement", &[])
        .await
    {
        Ok(row) => Ok(row.get(0)),
        Err(e) if matches!(control::code(&e), Some("3F000" | "42P01")) => Ok(None),
        Err(e) => Err(control::describe(&e)),
    }
}

/// The newest recorded placement, or None before the cluster's first start. Reads only.
pub async fn current(
    shards: &[ShardTarget],
    timeout: Duration,
) -> Result<Option<Recorded>, String> {
    let mut clients = Vec::new();
    for shard in shards {
        clients.push(control::connect(shard, timeout).await?);
    }
    let found = newest_everywhere(shards, &clients, false).await?;
    let names: Vec<String> = shards.iter().map(|s| s.name.clone()).collect();
    match found.into_iter().flatten().max_by_key(|(v, _)| *v) {
        None => Ok(None),
        Some((version, text)) => Ok(Some(Recorded {
            version,
            table: record::decode(&text, &names)
                .map_err(|e| format!("placement version {version}: {e}"))?,
        })),
    }
}

/// One connection per shard, the first holding the placement lock in an open transaction.
async fn locked(
    shards: &[ShardTarget],
    timeout: Duration,
) -> Result<Vec<tokio_postgres::Client>, String> {
    let mut clients = Vec::new();
    for shard in shards {
        clients.push(control::connect(shard, timeout).await?);
    }
    clients[HOME]
        .batch_execute(&format!("BEGIN; SELECT pg_advisory_xact_lock({LOCK})"))
        .await
        .map_err(|e| failed(&shards[HOME], &e))?;
    Ok(clients)
}

async fn newest_everywhere(
    shards: &[ShardTarget],
    clients: &[tokio_postgres::Client],
    create: bool,
) -> Result<Vec<Option<(i64, String)>>, String> {
    let mut found = Vec::new();
    for (shard, client) in shards.iter().zip(clients) {
        if create {
            client
                .batch_execute(&format!(
                    "{CREATE}; {}; {}",
                    super::proxy_registry::CREATE,
                    super::move_journal::CREATE
                ))
                .await
                .map_err(|e| failed(shard, &e))?;
        }
        match client.query_opt(NEWEST, &[]).await {
            Ok(row) => found.push(row.map(|r| (r.get(0), r.get(1)))),
            // Before the first start: no schema (3F000) or no table (42P01) yet.
            Err(e) if matches!(control::code(&e), Some("3F000" | "42P01")) => found.push(None),
            Err(e) => return Err(failed(shard, &e)),
        }
    }
    Ok(found)
}

async fn write(
    shard: &ShardTarget,
    client: &tokio_postgres::Client,
    version: i64,
    text: &str,
) -> Result<(), String> {
    client
        .execute(INSERT, &[&version, &text])
        .await
        .map(|_| ())
        .map_err(|e| failed(shard, &e))
}

async fn commit(shards: &[ShardTarget], clients: &[tokio_postgres::Client]) -> Result<(), String> {
    clients[HOME]
        .batch_execute("COMMIT")
        .await
        .map_err(|e| failed(&shards[HOME], &e))
}

fn failed(shard: &ShardTarget, e: &tokio_postgres::Error) -> String {
    format!(
        "shard {}: cannot read or record the placement: {}",
        shard.name,
        control::describe(e)
    )
}
