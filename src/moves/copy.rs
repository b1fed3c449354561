//! Rows between shards for a move, through the mover: the first copy of the moving slots into
//! the target's staging table, and catching up, which re-copies the rows of every key the
//! source's capture logged (`capture`). Both stream COPY's text form straight from one shard to
//! the other, naming columns, so tables whose columns were added in another order still match.

use super::capture::{self, MovingTable};
use crate::backend::control;
use futures_util::{SinkExt, StreamExt};
use std::collections::{BTreeMap, BTreeSet};
use tokio_postgres::Client;

/// A table's columns as one source holds them.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Column names, in the shard's order.
    pub names: Vec<String>,
    /// Quoted and comma-separated, generated columns left out (they are computed again).
    pub columns: String,
    /// The key column's SQL type, to compare keys through its index.
    pub key_type: String,
}

/// The shape of `table` on a shard, or None where the shard lacks the table.
pub async fn shape(client: &Client, t: &MovingTable) -> Result<Option<Shape>, String> {
    if !control::relation_exists(client, &t.name)
        .await
        .map_err(|e| control::describe(&e))?
    {
        return Ok(None);
    }
    let rows = client
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = ($1::text)::regclass AND attnum > 0 AND NOT attisdropped \
               AND attgenerated = '' ORDER BY attnum",
            &[&crate::sql::identifier(&t.name)],
        )
        .await
        .map_err(|e| control::describe(&e))?;
    let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    // A reference table is copied whole, by no key.
    let key_type = if t.key.is_empty() {
        String::new()
    } else {
        rows.iter()
            .find(|r| r.get::<_, String>(0) == t.key)
            .map(|r| r.get::<_, String>(1))
            .ok_or_else(|| format!("table {} has no column {:?}", t.name, t.key))?
    };
    Ok(Some(Shape {
        names: names.clone(),
        columns: names
            .iter()
            .map(|n| crate::sql::identifier(n))
            .collect::<Vec<_>>()
            .join(", "),
        key_type,
    }))
}

/// Streams the rows of `select` on `src` into `dest (columns)` on `dst`; `counted` hears the
/// running count. Returns the rows copied.
pub async fn stream(
    src: &Client,
    dst: &Client,
    select: &str,
    (dest, columns): (&str, &str),
    mut counted: impl FnMut(u64),
) -> Result<u64, String> {
    let out = src
        .copy_out(&format!("COPY ({select}) TO STDOUT"))
        .await
        .map_err(|e| format!("reading rows: {}", control::describe(&e)))?;
    let sink = dst
        .copy_in(&format!("COPY {dest} ({columns}) FROM STDIN"))
        .await
        .map_err(|e| format!("writing rows: {}", control::describe(&e)))?;
    futures_util::pin_mut!(out);
    futures_util::pin_mut!(sink);
    let mut rows = 0u64;
    while let Some(chunk) = out.next().await {
        let chunk = chunk.map_err(|e| format!("reading rows: {}", control::describe(&e)))?;
        // Text COPY ends each row with a newline and escapes those inside values.
        rows += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        sink.send(chunk)
            .await
            .map_err(|e| format!("writing rows: {}", control::describe(&e)))?;
        counted(rows);
    }
    sink.finish()
        .await
        .map_err(|e| format!("writing rows: {}", control::describe(&e)))?;
    Ok(rows)
}

/// Applies up to `limit` logged keys of move `move_id` from `src` to the target's staging
/// tables on `dst`, both already in a transaction (the caller commits the target's first, so
/// a crash in between leaves the keys logged and they are applied again). Returns how many log
/// entries it applied; 0 means the log was empty.
pub async fn catch_up(
    src: &Client,
    dst: &Client,
    move_id: i64,
    tables: &[(MovingTable, Shape)],
    limit: i64,
) -> Result<usize, String> {
    let logged = src
        .query(
            "SELECT seq, tbl, key FROM shardgate.move_log WHERE move_id = $1 ORDER BY seq LIMIT $2",
            &[&move_id, &limit],
        )
        .await
        .map_err(|e| control::describe(&e))?;
    if logged.is_empty() {
        return Ok(0);
    }
    let mut keys: BTreeMap<i32, BTreeSet<String>> = BTreeMap::new();
    let mut seqs: Vec<i64> = Vec::with_capacity(logged.len());
    for r in &logged {
        seqs.push(r.get(0));
        keys.entry(r.get(1)).or_default().insert(r.get(2));
    }
    for (n, keys) in keys {
        let Some((t, shape)) = tables.iter().find(|(t, _)| t.n as i32 == n) else {
            return Err(format!(
                "the move log names table number {n}, which this move does not move"
            ));
        };
        let keys: Vec<String> = keys.into_iter().collect();
        let filter = capture::key_in(&t.key, &shape.key_type, &keys);
        let staging = capture::staging(move_id, t);
        dst.batch_execute(&format!("DELETE FROM {staging} WHERE {filter}"))
            .await
            .map_err(|e| control::describe(&e))?;
        let select = format!(
            "SELECT {} FROM {} WHERE {filter}",
            shape.columns,
            crate::sql::identifier(&t.name)
        );
        stream(src, dst, &select, (&staging, &shape.columns), |_| {}).await?;
    }
    src.execute(
        "DELETE FROM shardgate.move_log WHERE seq = ANY($1)",
        &[&seqs],
    )
    .await
    .map_err(|e| control::describe(&e))?;
    Ok(logged.len())
}

/// Log entries of move `move_id` not yet applied on a source (0 where it has no log).
pub async fn backlog(src: &Client, move_id: i64) -> Result<i64, String> {
    match src
        .query_one(
            "SELECT count(*) FROM shardgate.move_log WHERE move_id = $1",
            &[&move_id],
        )
        .await
    {
        Ok(r) => Ok(r.get(0)),
        Err(e) if control::code(&e) == Some("42P01") => Ok(0),
        Err(e) => Err(control::describe(&e)),
    }
}
