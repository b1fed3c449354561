//! Refuses a cluster that lists one database as two shards: two entries that reach the same
//! server and database (a copy-paste slip, or `localhost` and `127.0.0.1`). Rows routed to
//! "two" shards would land in one table twice, and the start itself would never finish: the
//! placement bootstrap holds a transaction open on one shard while it creates a table on the
//! other.
//!
//! Told apart by a session advisory lock on a key drawn at random for this check, taken on
//! each shard's connection in turn and held to the end: PostgreSQL scopes advisory locks to a
//! database, so a shard where the key is already taken is a database seen before. A copy of a
//! shard on another server (which shares its system identifier and database OIDs) is correctly
//! another shard. The key is random so that proxies starting together cannot collide.

use super::control;
use crate::config::ShardTarget;
use std::time::Duration;

/// Why the check failed.
#[derive(Debug)]
pub enum SameDatabase {
    /// A shard could not be reached.
    Unreachable(String),
    /// Two shards are one database.
    Twice(String),
}

/// Checks that no two of `shards` are one database. A shard that cannot answer the probe
/// (an error other than a lost connection) is let through: the check must not refuse a
/// cluster it cannot judge.
pub async fn check(shards: &[ShardTarget], timeout: Duration) -> Result<(), SameDatabase> {
    let key: i64 = rand::random();
    // Each shard's connection and backend pid, kept open so that its lock stays held.
    let mut held: Vec<(&ShardTarget, i32, tokio_postgres::Client)> = Vec::new();
    for shard in shards {
        let client = control::connect(shard, timeout)
            .await
            .map_err(SameDatabase::Unreachable)?;
        let probe = client
            .query_one("SELECT pg_try_advisory_lock($1), pg_backend_pid()", &[&key])
            .await;
        let row = match probe {
            Ok(row) => row,
            Err(e) => {
                tracing::debug!(shard = %shard.name, "could not check the shard is a database of its own: {e}");
                continue;
            }
        };
        if !row.get::<_, bool>(0) {
            let holder = holder(&client, key).await;
            let earlier = held
                .iter()
                .find(|(_, pid, _)| Some(*pid) == holder)
                .map_or("an earlier shard".to_string(), |(s, _, _)| {
                    format!("{} ({})", s.name, s.describe())
                });
            return Err(SameDatabase::Twice(format!(
                "shards {earlier} and {} ({}) are one database on one server; list each \
                 database once",
                shard.name,
                shard.describe()
            )));
        }
        held.push((shard, row.get(1), client));
    }
    Ok(())
}

/// The backend holding the session advisory lock on `key` in this database.
async fn holder(client: &tokio_postgres::Client, key: i64) -> Option<i32> {
    // A bigint key is kept as its high and low 32 bits (classid, objid), objsubid 1.
    let (high, low) = ((key >> 32) & 0xffff_ffff, key & 0xffff_ffff);
    client
        .query_opt(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 1 \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[&high, &low],
        )
        .await
        .ok()
        .flatten()
        .map(|row| row.get(0))
}
