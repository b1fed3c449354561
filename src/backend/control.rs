//! Control-plane connections to a shard (start-up checks, recovery, catalog look-ups), with
//! tokio-postgres: the data plane speaks the protocol itself, but these need typed queries.

use crate::config::{ShardHost, ShardTarget};
use std::time::Duration;

/// Connects with tokio-postgres; the connection runs on its own task until the client drops.
pub async fn connect(
    shard: &ShardTarget,
    timeout: Duration,
) -> Result<tokio_postgres::Client, String> {
    let mut cfg = tokio_postgres::Config::new();
    match &shard.host {
        ShardHost::Tcp(h) => cfg.host(h),
        ShardHost::Unix(p) => cfg.host_path(p),
    };
    cfg.port(shard.port)
        .user(&shard.user)
        .dbname(&shard.dbname)
        .application_name("shardgate-control")
        .connect_timeout(timeout);
    if let Some(pw) = &shard.password {
        cfg.password(pw);
    }
    let failed = |e: String| format!("cannot connect to shard {}: {e}", shard.name);
    if shard.tls.is_none() {
        let (client, conn) = cfg
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| failed(describe(&e)))?;
        tokio::spawn(conn);
        return Ok(client);
    }
    // TLS is negotiated as the sessions' connections do it (see `config::shard_tls`); tokio-postgres then
    // logs in over the encrypted stream.
    let login = async {
        let stream = super::ShardStream::open(shard)
            .await
            .map_err(|e| failed(e.to_string()))?;
        cfg.connect_raw(stream, tokio_postgres::NoTls)
            .await
            .map_err(|e| failed(describe(&e)))
    };
    let (client, conn) = tokio::time::timeout(timeout, login)
        .await
        .map_err(|_| failed("timed out".into()))??;
    tokio::spawn(conn);
    Ok(client)
}

/// Whether the shard has a relation of this name (as written, not folded to lower case).
pub async fn relation_exists(
    client: &tokio_postgres::Client,
    name: &str,
) -> Result<bool, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&crate::sql::identifier(name)],
        )
        .await?;
    Ok(row.get(0))
}

/// The first column of every row `sql` answers on each shard in turn (on a connection of its
/// own), each prefixed with `shard <name>: `. Err: a shard could not be asked.
pub async fn first_column_everywhere(
    shards: &[ShardTarget],
    timeout: Duration,
    sql: &str,
) -> Result<Vec<String>, String> {
    let mut found = Vec::new();
    for shard in shards {
        let client = connect(shard, timeout).await?;
        let rows = match tokio::time::timeout(timeout, client.simple_query(sql)).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => return Err(format!("shard {}: {}", shard.name, describe(&e))),
            Err(_) => return Err(format!("shard {}: no answer", shard.name)),
        };
        for row in rows {
            if let tokio_postgres::SimpleQueryMessage::Row(row) = row {
                if let Some(value) = row.get(0) {
                    found.push(format!("shard {}: {value}", shard.name));
                }
            }
        }
    }
    Ok(found)
}

/// A tokio-postgres error with the server's message when there is one.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// The SQLSTATE of a server error, if it was one.
pub fn code(e: &tokio_postgres::Error) -> Option<&str> {
    e.code().map(|c| c.code())
}
