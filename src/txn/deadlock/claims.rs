//! Claims proxies publish to each other: which backends their sessions on several shards hold
//! while those take part in a lock wait. They live in `shardgate.lock_claims` on the first
//! shard, next to the proxy registry. A proxy replaces all of its rows at once when its answer
//! changes, so a reader sees one look's claims or the next's, never a mix; rows of a proxy that
//! stopped are harmless (a claim counts only for the transaction it names) and removed after
//! an hour by whichever proxy writes next.

use super::waits::Claim;
use crate::backend::control;
use crate::config::ShardTarget;
use tokio_postgres::Client;

const CREATE: &str = "CREATE TABLE IF NOT EXISTS shardgate.lock_claims (
    proxy text NOT NULL,
    session int NOT NULL,
    shard text NOT NULL,
    backend int NOT NULL,
    xact text NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now()
)";

const REPLACE: &str = "WITH gone AS (DELETE FROM shardgate.lock_claims \
        WHERE proxy = $1 OR seen_at < now() - interval '1 hour') \
    INSERT INTO shardgate.lock_claims (proxy, session, shard, backend, xact) \
    SELECT $1, s, sh, b, x FROM unnest($2::int4[], $3::text[], $4::int4[], $5::text[]) AS u(s, sh, b, x)";

const OTHERS: &str =
    "SELECT proxy, session, shard, backend, xact FROM shardgate.lock_claims WHERE proxy <> $1";

fn missing(e: &tokio_postgres::Error) -> bool {
    control::code(e) == Some("42P01")
}

/// Replaces this proxy's claims with `claims` (none removes them).
pub async fn publish(
    client: &Client,
    me: &str,
    shards: &[ShardTarget],
    claims: &[Claim],
) -> Result<(), String> {
    let sessions: Vec<i32> = claims.iter().map(|c| c.session).collect();
    let names: Vec<String> = claims
        .iter()
        .map(|c| {
            shards
                .get(c.shard)
                .map(|s| s.name.clone())
                .unwrap_or_default()
        })
        .collect();
    let backends: Vec<i32> = claims.iter().map(|c| c.backend).collect();
    let xacts: Vec<String> = claims.iter().map(|c| c.xact.clone()).collect();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
        [&me, &sessions, &names, &backends, &xacts];
    match client.execute(REPLACE, &params).await {
        Ok(_) => Ok(()),
        // The first claim in this cluster: the table comes with it.
        Err(e) if missing(&e) => {
            client
                .batch_execute(CREATE)
                .await
                .map_err(|e| control::describe(&e))?;
            client
                .execute(REPLACE, &params)
                .await
                .map(|_| ())
                .map_err(|e| control::describe(&e))
        }
        Err(e) => Err(control::describe(&e)),
    }
}

/// Every other proxy's claims, on the shards this proxy knows by name.
pub async fn others(
    client: &Client,
    me: &str,
    shards: &[ShardTarget],
) -> Result<Vec<Claim>, String> {
    let rows = match client.query(OTHERS, &[&me]).await {
        Ok(rows) => rows,
        Err(e) if missing(&e) => return Ok(Vec::new()),
        Err(e) => return Err(control::describe(&e)),
    };
    let mut out = Vec::new();
    for r in rows {
        let name: String = r.try_get(2).map_err(|e| e.to_string())?;
        let Some(shard) = shards.iter().position(|s| s.name == name) else {
            continue;
        };
        out.push(Claim {
            proxy: r.try_get(0).map_err(|e| e.to_string())?,
            session: r.try_get(1).map_err(|e| e.to_string())?,
            shard,
            backend: r.try_get(3).map_err(|e| e.to_string())?,
            xact: r.try_get(4).map_err(|e| e.to_string())?,
        });
    }
    Ok(out)
}
