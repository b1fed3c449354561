//! Whether declared sharded tables exist on a shard with a key column the proxy cannot route
//! by. One catalog query judges it; the proxy asks it at start and for the tables a reload
//! declares, and a watch asks it at each health-check interval (on control connections here);
//! a session asks it after DDL, in the DDL's own transaction (`executor::key_columns`).
//!
//! The proxy places a row by hashing its key as the declared `key_type` reads it, and finds
//! it again only if PostgreSQL calls two keys equal exactly when the proxy does. An integer
//! column under `key_type = "text"` stores `1` where the proxy looks for `'01'`, and
//! `char(n)`, `citext` or a nondeterministic collation make keys equal that hash apart; a
//! generated key column is computed by the shard from other columns, so neither an INSERT
//! (which cannot give it) nor an UPDATE of those columns (which changes it in place) routes by
//! the key the row is stored with. The
//! shard's catalog is the truth here: it looks through domains and knows which collations are
//! deterministic, which no statement's text tells.
//!
//! A table created or altered on a shard directly, behind the proxy, after the start is seen
//! by the watch, which makes the proxy not ready (`/readyz`), raises a gauge and names the
//! table in the placement sessions route by, whose planner then refuses statements on its rows
//! (`Placement::unroutable`) until a later look finds the column right.

use super::control;
use crate::config::ShardTarget;
use crate::placement::{KeyType, Placement};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_postgres::Client;

/// Why the check failed.
#[derive(Debug)]
pub enum KeyColumns {
    /// A shard could not be asked.
    Unreachable(String),
    /// A table's key column cannot be routed by; the text says which and what to do.
    Refused(String),
}

/// What to do about a refused key column.
pub const HINT: &str = "Give the key column the declared type (bigint, integer or smallint for \
    an integer key; text or varchar for a text key; uuid) and a deterministic collation (the \
    database default, or \"C\"), or declare the key_type it has; a generated column cannot be \
    a shard key (store the value itself, computed by the application).";

/// Checks the key column of every sharded table in `placement` that `wanted` accepts, on every
/// shard that has the table.
pub async fn check(
    shards: &[ShardTarget],
    timeout: Duration,
    placement: &Placement,
    wanted: impl Fn(&str) -> bool,
) -> Result<(), KeyColumns> {
    let mut clients: Vec<Option<Client>> = shards.iter().map(|_| None).collect();
    check_on(&mut clients, shards, timeout, placement, wanted).await
}

/// As `check`, on control connections kept in `clients` (one per shard, opened where missing
/// and dropped after an error).
async fn check_on(
    clients: &mut [Option<Client>],
    shards: &[ShardTarget],
    timeout: Duration,
    placement: &Placement,
    wanted: impl Fn(&str) -> bool,
) -> Result<(), KeyColumns> {
    let found = refusals_on(clients, shards, timeout, placement, wanted, true)
        .await
        .map_err(KeyColumns::Unreachable)?;
    match found.into_iter().next() {
        Some((_, refusal)) => Err(KeyColumns::Refused(format!("{refusal}. {HINT}"))),
        None => Ok(()),
    }
}

/// Every refused key column of the tables `wanted` accepts, shard by shard, as the declared
/// table and why (naming the shard); with `first_only`, the shards after the first refusal are
/// not asked. Err: a shard could not be asked.
async fn refusals_on(
    clients: &mut [Option<Client>],
    shards: &[ShardTarget],
    timeout: Duration,
    placement: &Placement,
    wanted: impl Fn(&str) -> bool,
    first_only: bool,
) -> Result<Vec<(String, String)>, String> {
    let mut found = Vec::new();
    let Some(sql) = refusals_sql(placement, wanted) else {
        return Ok(found);
    };
    for (shard, client) in shards.iter().zip(clients.iter_mut()) {
        if first_only && !found.is_empty() {
            break;
        }
        if client.is_none() {
            *client = Some(control::connect(shard, timeout).await?);
        }
        let Some(asking) = client.as_ref() else {
            continue;
        };
        let answer = tokio::time::timeout(timeout, asking.simple_query(&sql)).await;
        let rows = match answer {
            Ok(Ok(rows)) => rows,
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no answer within the connect timeout".to_string(),
                };
                *client = None;
                return Err(format!(
                    "shard {}: could not read its key columns: {why}",
                    shard.name
                ));
            }
        };
        for row in rows {
            if let tokio_postgres::SimpleQueryMessage::Row(row) = row {
                if let (Some(why), Some(table)) = (row.get(0), row.get(1)) {
                    found.push((table.to_string(), format!("shard {}: {why}", shard.name)));
                }
            }
        }
    }
    Ok(found)
}

/// What the watch last found: the refusal of a key column a shard holds now, made there
/// behind the proxy's back after its start.
#[derive(Debug, Default)]
pub struct Verdict(std::sync::Mutex<Option<String>>);

impl Verdict {
    /// Why the proxy cannot route a declared table as it stands, if it cannot.
    pub fn refusal(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, found: Option<String>) {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if *held == found {
            return;
        }
        match &found {
            Some(refusal) => tracing::error!(
                "a sharded table's key column cannot be routed by, so the proxy reports itself \
                 not ready (/readyz) until it is put right: {refusal}"
            ),
            None => tracing::info!("every sharded table's key column can be routed by again"),
        }
        metrics::gauge!(crate::metrics::UNROUTABLE_KEY_COLUMNS).set(found.is_some() as u8 as f64);
        *held = found;
    }
}

/// Asks every `interval`, for as long as the proxy runs, whether a declared sharded table's
/// key column on some shard has become one the proxy cannot route by: DDL through the proxy
/// is judged before it commits, but DDL run on a shard directly is seen only here. What it
/// finds goes to `publish` (each such table, with why) before the verdict changes, so that
/// once `/readyz` reports a table, sessions that start a transaction refuse its rows. A shard
/// that cannot be asked leaves the last verdict standing (the health probes report it).
pub async fn watch(
    verdict: std::sync::Arc<Verdict>,
    shards: Vec<ShardTarget>,
    interval: Duration,
    timeout: Duration,
    placement: impl Fn() -> std::sync::Arc<Placement>,
    publish: impl Fn(BTreeMap<String, String>),
) {
    metrics::gauge!(crate::metrics::UNROUTABLE_KEY_COLUMNS).set(0.0);
    let mut clients: Vec<Option<Client>> = shards.iter().map(|_| None).collect();
    loop {
        tokio::time::sleep(interval).await;
        let placement = placement();
        match refusals_on(&mut clients, &shards, timeout, &placement, |_| true, false).await {
            Ok(found) => {
                let first = found.first().map(|(_, why)| format!("{why}. {HINT}"));
                let mut tables = BTreeMap::new();
                for (table, why) in found {
                    // A table refused on several shards is named by the first.
                    tables.entry(table).or_insert(why);
                }
                publish(tables);
                verdict.set(first);
            }
            Err(e) => tracing::debug!("key columns not checked: {e}"),
        }
    }
}

/// A query whose rows say why a key column of the sharded tables that `wanted` accepts cannot
/// be routed by, on the shard that runs it (the first column, text), and which declared table
/// that is (the second); None when no such table is declared. The judgement is made in SQL so
/// that a session can ask inside its own transaction, after its DDL and before its commit, as
/// a control connection asks at start.
pub fn refusals_sql(placement: &Placement, wanted: impl Fn(&str) -> bool) -> Option<String> {
    let mut keys: Vec<String> = placement
        .sharded_tables()
        .filter(|(name, _, _)| wanted(name))
        .map(|(name, key_column, key_type)| {
            format!(
                "({}, {}, '{}', '{}'::pg_catalog.oid[])",
                literal(name),
                literal(&key_column.to_lowercase()),
                key_type.name(),
                routable_types(key_type)
            )
        })
        .collect();
    if keys.is_empty() {
        return None;
    }
    keys.sort();
    Some(QUERY.replace("$KEYS", &keys.join(",\n       ")))
}

/// A string literal read alike whatever `standard_conforming_strings` is.
pub(super) fn literal(text: &str) -> String {
    format!("E'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// The types (under any domains) whose values compare and hash as `key_type` reads them:
/// smallint, integer and bigint; text and varchar; uuid.
fn routable_types(key_type: KeyType) -> &'static str {
    match key_type {
        KeyType::Integer => "{20,21,23}",
        KeyType::Text => "{25,1043}",
        KeyType::Uuid => "{2950}",
    }
}

// A relation matches a declaration as `Placement::rule` matches it (the name as it is, or
// lower-cased), the key column case-insensitively; system and temporary schemas are left out.
// Catalogs, functions, operators and types are named in pg_catalog: sessions run this under
// their own search_path, where a schema of theirs could come first with a `=` that never
// matches, and the check would find nothing.
// The base type follows domains down. `collisdeterministic` is read through to_jsonb so that
// servers before 12 (which have no such column, and no nondeterministic collations) answer
// NULL instead of an error; the database default, C and POSIX are deterministic.
const QUERY: &str = "\
WITH keys(name, key, kind, types) AS (
VALUES $KEYS
), cols AS (
SELECT k.name AS declared, n.nspname, c.relname, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type, k.kind,
       k.types,
       coalesce((WITH RECURSIVE d(oid, kind, base) AS (
            SELECT t.oid, t.typtype, t.typbasetype FROM pg_catalog.pg_type t WHERE t.oid OPERATOR(pg_catalog.=) a.atttypid
            UNION ALL
            SELECT t.oid, t.typtype, t.typbasetype FROM pg_catalog.pg_type t JOIN d ON t.oid OPERATOR(pg_catalog.=) d.base
             WHERE d.kind OPERATOR(pg_catalog.=) 'd')
        SELECT d.oid FROM d WHERE d.kind OPERATOR(pg_catalog.<>) 'd'), 0) AS base,
       co.collname,
       CASE WHEN a.attcollation OPERATOR(pg_catalog.=) ANY ('{0,100,950,951}'::pg_catalog.oid[]) THEN NULL
            ELSE (pg_catalog.to_jsonb(co) OPERATOR(pg_catalog.->>) 'collisdeterministic')::pg_catalog.bool
       END AS deterministic,
       COALESCE(pg_catalog.to_jsonb(a) OPERATOR(pg_catalog.->>) 'attgenerated', '') OPERATOR(pg_catalog.<>) '' AS generated
  FROM keys k
  JOIN pg_catalog.pg_class c
    ON c.relname OPERATOR(pg_catalog.=) k.name OR pg_catalog.lower(c.relname) OPERATOR(pg_catalog.=) k.name
  JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
  JOIN pg_catalog.pg_attribute a
    ON a.attrelid OPERATOR(pg_catalog.=) c.oid AND pg_catalog.lower(a.attname) OPERATOR(pg_catalog.=) k.key
  LEFT JOIN pg_catalog.pg_collation co ON co.oid OPERATOR(pg_catalog.=) a.attcollation
 WHERE c.relkind OPERATOR(pg_catalog.=) ANY ('{r,p,f,v,m}'::pg_catalog.\"char\"[])
   AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
   AND NOT n.nspname OPERATOR(pg_catalog.=) ANY ('{pg_catalog,information_schema}'::pg_catalog.name[])
   AND n.nspname OPERATOR(pg_catalog.!~) '^pg_(toast|temp_|toast_temp_)'
)
SELECT CASE WHEN base OPERATOR(pg_catalog.<>) ALL (types)
    THEN pg_catalog.format('the shard key %s of %s.%s is of type %s, which does not compare as its key_type %s does, so rows would be stored on one shard and looked for on another', attname, nspname, relname, type, kind)
    WHEN deterministic IS FALSE
    THEN pg_catalog.format('the shard key %s of %s.%s has the nondeterministic collation %s, which compares strings that differ as equal, so rows would be stored on one shard and looked for on another', attname, nspname, relname, collname)
    ELSE pg_catalog.format('the shard key %s of %s.%s is a generated column, which each shard computes from other columns as it stores the row, so rows would be stored under keys the proxy did not route them by', attname, nspname, relname)
    END, declared
  FROM cols
 WHERE base OPERATOR(pg_catalog.<>) ALL (types) OR deterministic IS FALSE OR generated
 ORDER BY 1";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_literals_whatever_they_hold() {
        assert_eq!(literal("people"), "E'people'");
        assert_eq!(literal(r"o'k\"), r"E'o''k\\'");
    }
}
