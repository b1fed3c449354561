//! Foreign keys that reference a sharded table: judged after DDL, in the DDL's own
//! transaction, by each shard's catalog (the session side is `executor::key_columns`).
//!
//! A shard checks a foreign key against its own rows. A reference to a reference table finds
//! the row on every shard, since each holds all of it. A reference to a sharded table finds it
//! only when the referencing row lives on the same shard as the referenced one: both tables
//! are sharded by a key of the same type, and the key columns correspond in the constraint
//! (`FOREIGN KEY (account_id) REFERENCES accounts (id)` with `account_id` and `id` the two
//! keys). Any other such constraint answers 23503, "is not present in table", for rows that
//! exist on another shard, and lets a DELETE on one shard ignore references held on the
//! others, so it is refused before it commits.
//!
//! As with unique indexes, only constraints the session's own transaction wrote are judged;
//! those made on a shard directly are named in a warning at start (`existing`).

use super::key_columns::literal;
use crate::config::ShardTarget;
use crate::placement::{Placement, TableRule};
use std::time::Duration;

/// What to do about a refused foreign key.
pub const HINT: &str = "Shard both tables by keys of the same type and include both keys in \
    the constraint, as in FOREIGN KEY (account_id, entry_id) REFERENCES entries (account_id, \
    id); or declare the referenced table a reference table.";

/// A query whose rows say why a foreign key this transaction made, referencing a sharded table
/// that `wanted` accepts, is checked on each shard's rows only (first column, text), and
/// which declared table it references (second); None when no sharded table is declared.
pub fn refusals_sql(placement: &Placement, wanted: impl Fn(&str) -> bool) -> Option<String> {
    query(placement, wanted, MADE_HERE)
}

/// Every such foreign key, however it was made, as why (naming the shard). Err: a shard could
/// not be asked.
pub async fn existing(
    shards: &[ShardTarget],
    timeout: Duration,
    placement: &Placement,
) -> Result<Vec<String>, String> {
    match query(placement, |_| true, "") {
        Some(sql) => super::control::first_column_everywhere(shards, timeout, &sql).await,
        None => Ok(Vec::new()),
    }
}

fn query(placement: &Placement, wanted: impl Fn(&str) -> bool, filter: &str) -> Option<String> {
    let mut keys: Vec<String> = placement
        .tables
        .iter()
        .filter(|(name, _)| wanted(name))
        .filter_map(|(name, rule)| match rule {
            TableRule::Sharded {
                key_column,
                key_type,
            } => Some(format!(
                "({}, {}, '{}')",
                literal(name),
                literal(&key_column.to_lowercase()),
                key_type.name()
            )),
            _ => None,
        })
        .collect();
    if keys.is_empty() {
        return None;
    }
    keys.sort();
    Some(
        QUERY
            .replace("$KEYS", &keys.join(",\n       "))
            .replace("$FILTER", filter),
    )
}

// Tables match declarations as `backend::key_columns` matches them, and everything is named in
// pg_catalog, since the query runs under the session's search_path. `a` is the referencing
// table's declaration when it is sharded by a key of the referenced one's type; the
// constraint keeps rows together when some position pairs the two key columns.
const QUERY: &str = "\
WITH sharded(name, key, kind) AS (
VALUES $KEYS
)
SELECT pg_catalog.format('the foreign key \"%s\" of %s.%s references the sharded table %s.%s %s, so each shard would look for the referenced row among its own rows only', con.conname, n.nspname, c.relname, fn.nspname, fc.relname,
           CASE WHEN a.name IS NULL THEN 'from a table not sharded by a key of its type'
                ELSE 'without pairing the two tables'' shard keys' END), b.name
  FROM pg_catalog.pg_constraint con
  JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) con.conrelid
  JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
  JOIN pg_catalog.pg_class fc ON fc.oid OPERATOR(pg_catalog.=) con.confrelid
  JOIN pg_catalog.pg_namespace fn ON fn.oid OPERATOR(pg_catalog.=) fc.relnamespace
  JOIN sharded b
    ON fc.relname OPERATOR(pg_catalog.=) b.name OR pg_catalog.lower(fc.relname) OPERATOR(pg_catalog.=) b.name
  LEFT JOIN sharded a
    ON (c.relname OPERATOR(pg_catalog.=) a.name OR pg_catalog.lower(c.relname) OPERATOR(pg_catalog.=) a.name)
   AND a.kind OPERATOR(pg_catalog.=) b.kind
 WHERE con.contype OPERATOR(pg_catalog.=) 'f'
   AND NOT fn.nspname OPERATOR(pg_catalog.=) ANY ('{pg_catalog,information_schema}'::pg_catalog.name[])
   AND fn.nspname OPERATOR(pg_catalog.!~) '^pg_(toast|temp_|toast_temp_)'
$FILTER   AND NOT EXISTS (SELECT FROM pg_catalog.generate_subscripts(con.conkey, 1) i
                    JOIN pg_catalog.pg_attribute x
                      ON x.attrelid OPERATOR(pg_catalog.=) c.oid AND x.attnum OPERATOR(pg_catalog.=) con.conkey[i]
                    JOIN pg_catalog.pg_attribute y
                      ON y.attrelid OPERATOR(pg_catalog.=) fc.oid AND y.attnum OPERATOR(pg_catalog.=) con.confkey[i]
                   WHERE pg_catalog.lower(x.attname) OPERATOR(pg_catalog.=) a.key
                     AND pg_catalog.lower(y.attname) OPERATOR(pg_catalog.=) b.key)
 ORDER BY 1";

/// The constraints the running transaction wrote: their xmin is an xid this backend holds.
const MADE_HERE: &str = "   AND EXISTS (SELECT FROM pg_catalog.pg_locks l
                WHERE l.locktype OPERATOR(pg_catalog.=) 'transactionid'
                  AND l.pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()
                  AND l.transactionid OPERATOR(pg_catalog.=) con.xmin)
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn sharded_tables_are_listed_with_their_key_and_its_type() {
        let text = "[[users]]\nname=\"a\"\nauth=\"trust\"\n\
            [[shards]]\nname=\"s0\"\nurl=\"postgres://u@h/db\"\n\
            [[shards]]\nname=\"s1\"\nurl=\"postgres://u@h/db\"\n\
            [tables.entries]\nshard_key=\"Account_Id\"\nkey_type=\"bigint\"\n\
            [tables.people]\nshard_key=\"name\"\nkey_type=\"text\"\n\
            [tables.countries]\nreference=true\n";
        let placement = Config::from_toml(text).unwrap().placement().unwrap();
        let sql = refusals_sql(&placement, |_| true).unwrap();
        assert!(
            sql.contains("(E'entries', E'account_id', 'integer')"),
            "{sql}"
        );
        assert!(sql.contains("(E'people', E'name', 'text')"), "{sql}");
        assert!(!sql.contains("countries"), "{sql}");
        assert!(sql.contains("con.xmin"), "{sql}");
        assert!(!query(&placement, |_| true, "")
            .unwrap()
            .contains("pg_locks"));
    }
}
