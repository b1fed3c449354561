//! Unique indexes a sharded table may be given: judged after DDL, in the DDL's own transaction,
//! by each shard's catalog (the session side is `executor::key_columns`).
//!
//! A shard enforces a unique index (PRIMARY KEY, UNIQUE, CREATE UNIQUE INDEX) on its own rows
//! only. One that includes the shard key holds for the whole cluster, since rows with one key
//! live on one shard; one that includes a column the proxy fills from the cluster-wide
//! sequence (`serial`, identity, `DEFAULT nextval`) holds for the values the proxy draws,
//! which is what an ORM's id column relies on. Any other would let two shards each hold a row
//! with the same value where PostgreSQL would raise 23505, so it is refused before it commits.
//!
//! Only indexes the session's own transaction wrote are judged (their catalog row's xmin is an
//! xid the backend holds a lock on, which covers its subtransactions): an index that predates
//! this rule, or that was made on a shard directly, never blocks unrelated DDL. Those are named
//! in a warning at start instead (`existing`).

use super::key_columns::literal;
use crate::config::ShardTarget;
use crate::placement::{Placement, TableRule};
use std::time::Duration;

/// What to do about a refused unique index.
pub const HINT: &str = "Include the shard key in the constraint, as in PRIMARY KEY (key, id) or \
    UNIQUE (key, code), or fill one of its columns from a sequence (serial, bigserial or an \
    identity column), whose values the proxy draws once for the whole cluster.";

/// A query whose rows say why a unique index this transaction made on a sharded table that
/// `wanted` accepts holds on each shard's rows only (first column, text), and which declared
/// table it is on (second); None when no such table is declared.
pub fn refusals_sql(placement: &Placement, wanted: impl Fn(&str) -> bool) -> Option<String> {
    query(placement, wanted, MADE_HERE)
}

/// Every unique index on a sharded table that a shard enforces on its own rows only, however
/// it was made, as why (naming the shard). Err: a shard could not be asked.
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
            TableRule::Sharded { key_column, .. } => Some(format!(
                "({}, {})",
                literal(name),
                literal(&key_column.to_lowercase())
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

// Tables match declarations as `backend::key_columns` matches them. Everything is named in
// pg_catalog, since the query runs under the session's search_path. An index column of 0 is an
// expression, which no attribute matches. A column counts as sequence-filled when it is an
// identity column or its default calls nextval, as the proxy's own reading of sequence columns
// decides.
const QUERY: &str = "\
WITH keys(name, key) AS (
VALUES $KEYS
)
SELECT pg_catalog.format('the unique index \"%s\" on %s.%s does not include the shard key %s, so each shard would enforce it on its own rows only and two shards could hold the same value', i.relname, n.nspname, c.relname, k.key), k.name
  FROM keys k
  JOIN pg_catalog.pg_class c
    ON c.relname OPERATOR(pg_catalog.=) k.name OR pg_catalog.lower(c.relname) OPERATOR(pg_catalog.=) k.name
  JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
  JOIN pg_catalog.pg_index x ON x.indrelid OPERATOR(pg_catalog.=) c.oid
  JOIN pg_catalog.pg_class i ON i.oid OPERATOR(pg_catalog.=) x.indexrelid
 WHERE x.indisunique
   AND c.relkind OPERATOR(pg_catalog.=) ANY ('{r,p}'::pg_catalog.\"char\"[])
   AND NOT n.nspname OPERATOR(pg_catalog.=) ANY ('{pg_catalog,information_schema}'::pg_catalog.name[])
   AND n.nspname OPERATOR(pg_catalog.!~) '^pg_(toast|temp_|toast_temp_)'
$FILTER   AND NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                    WHERE a.attrelid OPERATOR(pg_catalog.=) c.oid
                      AND a.attnum OPERATOR(pg_catalog.=) ANY (x.indkey::pg_catalog.int2[])
                      AND (pg_catalog.lower(a.attname) OPERATOR(pg_catalog.=) k.key
                           OR a.attidentity OPERATOR(pg_catalog.<>) ''
                           OR EXISTS (SELECT FROM pg_catalog.pg_attrdef d
                                       WHERE d.adrelid OPERATOR(pg_catalog.=) c.oid
                                         AND d.adnum OPERATOR(pg_catalog.=) a.attnum
                                         AND pg_catalog.pg_get_expr(d.adbin, d.adrelid) OPERATOR(pg_catalog.~~) 'nextval(%')))
 ORDER BY 1";

/// The indexes the running transaction wrote: their xmin is an xid this backend holds.
const MADE_HERE: &str = "   AND EXISTS (SELECT FROM pg_catalog.pg_locks l
                WHERE l.locktype OPERATOR(pg_catalog.=) 'transactionid'
                  AND l.pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()
                  AND l.transactionid OPERATOR(pg_catalog.=) i.xmin)
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn only_sharded_tables_are_asked_about() {
        let text = "[[users]]\nname=\"a\"\nauth=\"trust\"\n\
            [[shards]]\nname=\"s0\"\nurl=\"postgres://u@h/db\"\n\
            [[shards]]\nname=\"s1\"\nurl=\"postgres://u@h/db\"\n\
            [tables.orders]\nshard_key=\"Customer_Id\"\nkey_type=\"bigint\"\n\
            [tables.countries]\nreference=true\n";
        let placement = Config::from_toml(text).unwrap().placement().unwrap();
        let sql = refusals_sql(&placement, |_| true).unwrap();
        assert!(sql.contains("(E'orders', E'customer_id')"), "{sql}");
        assert!(!sql.contains("countries"), "{sql}");
        assert!(refusals_sql(&placement, |t| t != "orders").is_none());
    }
}
