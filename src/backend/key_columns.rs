//! Refuses declared sharded tables that already exist on a shard with a key column the proxy
//! cannot route by: checked at start and for the tables a reload declares.
//!
//! The proxy places a row by hashing its key as the declared `key_type` reads it, and finds
//! it again only if PostgreSQL calls two keys equal exactly when the proxy does. A `CREATE
//! TABLE` through the proxy is held to that (see `router::plan::create_table`), but tables made
//! on the shards directly, or before the table was declared, are not: an integer column under
//! `key_type = "text"` stores `1` where the proxy looks for `'01'`, and `char(n)`, `citext` or
//! a nondeterministic collation make keys equal that hash apart. The shard's catalog is the
//! truth here, so a deterministic collation that `CREATE TABLE` refuses by name passes.
//!
//! Only the check: tables created on a shard behind the proxy's back after it is made go
//! unseen until the next start.

use super::control;
use crate::config::ShardTarget;
use crate::placement::{KeyType, Placement, TableRule};
use std::time::Duration;

/// Why the check failed.
#[derive(Debug)]
pub enum KeyColumns {
    /// A shard could not be asked.
    Unreachable(String),
    /// A table's key column cannot be routed by; the text says which and what to do.
    Refused(String),
}

/// One key column as a shard's catalog describes it.
#[derive(Debug)]
struct Column {
    schema: String,
    table: String,
    column: String,
    /// `format_type` of the column's own type, for the message.
    type_name: String,
    /// The type under any domains.
    base_type: u32,
    collation: Option<String>,
    /// `None` where the collation is the database default, C or POSIX, or the server predates
    /// nondeterministic collations.
    deterministic: Option<bool>,
}

// Columns of relations whose name and a column's name match a declared key, lower-cased as the
// proxy matches them, outside the system and temporary schemas. The base type follows domains
// down; `collisdeterministic` is read through to_jsonb so that servers before 12 (which have
// no such column, and no nondeterministic collations) answer NULL instead of an error.
const QUERY: &str = "\
SELECT n.nspname::text, c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod),
       (WITH RECURSIVE d(oid, kind, base) AS (
            SELECT t.oid, t.typtype, t.typbasetype FROM pg_type t WHERE t.oid = a.atttypid
            UNION ALL
            SELECT t.oid, t.typtype, t.typbasetype FROM pg_type t JOIN d ON t.oid = d.base
             WHERE d.kind = 'd')
        SELECT d.oid FROM d WHERE d.kind <> 'd'),
       CASE WHEN a.attcollation IN (0, 100, 950, 951) THEN NULL ELSE co.collname::text END,
       CASE WHEN a.attcollation IN (0, 100, 950, 951) THEN NULL
            ELSE (to_jsonb(co) ->> 'collisdeterministic')::bool END
  FROM pg_attribute a
  JOIN pg_class c ON c.oid = a.attrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_collation co ON co.oid = a.attcollation
 WHERE c.relkind IN ('r', 'p', 'f', 'v', 'm')
   AND a.attnum > 0 AND NOT a.attisdropped
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
   AND lower(c.relname) = ANY($1) AND lower(a.attname) = ANY($2)";

/// Checks the key column of every sharded table in `placement` that `wanted` accepts, on every
/// shard that has the table.
pub async fn check(
    shards: &[ShardTarget],
    timeout: Duration,
    placement: &Placement,
    wanted: impl Fn(&str) -> bool,
) -> Result<(), KeyColumns> {
    let (tables, columns): (Vec<String>, Vec<String>) = placement
        .tables
        .iter()
        .filter(|(name, _)| wanted(name))
        .filter_map(|(name, rule)| match rule {
            TableRule::Sharded { key_column, .. } => {
                Some((name.to_lowercase(), key_column.to_lowercase()))
            }
            _ => None,
        })
        .unzip();
    if tables.is_empty() {
        return Ok(());
    }
    for shard in shards {
        let client = control::connect(shard, timeout)
            .await
            .map_err(KeyColumns::Unreachable)?;
        let rows = client
            .query(QUERY, &[&tables, &columns])
            .await
            .map_err(|e| {
                KeyColumns::Unreachable(format!(
                    "shard {}: could not read its key columns: {e}",
                    shard.name
                ))
            })?;
        for row in rows {
            let column = Column {
                schema: row.get(0),
                table: row.get(1),
                column: row.get(2),
                type_name: row.get(3),
                base_type: row.get(4),
                collation: row.get(5),
                deterministic: row.get(6),
            };
            if let Some(refusal) = judge(placement, &column) {
                return Err(KeyColumns::Refused(format!(
                    "shard {}: {refusal}",
                    shard.name
                )));
            }
        }
    }
    Ok(())
}

/// Why this column cannot key its table, if it is that table's key and cannot.
fn judge(placement: &Placement, c: &Column) -> Option<String> {
    // The query matched names and columns separately; only a table's own key counts.
    let Some(TableRule::Sharded {
        key_column,
        key_type,
    }) = placement.rule(&c.table)
    else {
        return None;
    };
    if !key_column.eq_ignore_ascii_case(&c.column) {
        return None;
    }
    let name = format!("{}.{}", c.schema, c.table);
    if !routable_as(c.base_type, *key_type) {
        return Some(format!(
            "the shard key {} of {name} is of type {}, which does not compare as its key_type {} \
             does, so rows would be stored on one shard and looked for on another. Give the \
             column the declared type (bigint, integer or smallint for an integer key; text or \
             varchar for a text key; uuid), or declare the key_type it has",
            c.column,
            c.type_name,
            key_type.name()
        ));
    }
    if c.deterministic == Some(false) {
        return Some(format!(
            "the shard key {} of {name} has the nondeterministic collation {}, which compares \
             strings that differ as equal, so such keys would be looked for on one shard and \
             stored on another. Give the column a deterministic collation (the database \
             default, or \"C\")",
            c.column,
            c.collation.as_deref().unwrap_or("?")
        ));
    }
    None
}

/// Whether a column whose type is `base` (under its domains) holds keys that compare and hash
/// as `key_type` reads them.
fn routable_as(base: u32, key_type: KeyType) -> bool {
    const INT8: u32 = 20;
    const INT2: u32 = 21;
    const INT4: u32 = 23;
    const TEXT: u32 = 25;
    const VARCHAR: u32 = 1043;
    const UUID: u32 = 2950;
    match key_type {
        KeyType::Integer => matches!(base, INT2 | INT4 | INT8),
        KeyType::Text => matches!(base, TEXT | VARCHAR),
        KeyType::Uuid => base == UUID,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_types_that_compare_as_the_key_type_route() {
        assert!(routable_as(23, KeyType::Integer));
        assert!(routable_as(20, KeyType::Integer));
        assert!(!routable_as(1700, KeyType::Integer), "numeric");
        assert!(routable_as(1043, KeyType::Text));
        assert!(!routable_as(1042, KeyType::Text), "char(n)");
        assert!(!routable_as(25, KeyType::Uuid));
        assert!(!routable_as(2950, KeyType::Text));
    }
}
