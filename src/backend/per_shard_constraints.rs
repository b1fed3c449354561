//! What each shard checks or does on its own rows where the cluster needs it done for all:
//! constraints of sharded tables, and triggers that write across the placement. Judged after
//! DDL, in the DDL's own transaction, by each shard's catalog (the session side is
//! `executor::key_columns`), and warned of at start and reload.
//!
//! A unique index (PRIMARY KEY, UNIQUE, CREATE UNIQUE INDEX) that includes the shard key holds
//! for the whole cluster, since rows with one key live on one shard; one that includes a
//! column the proxy fills from the cluster-wide sequence (`serial`, identity, `DEFAULT
//! nextval`) holds for the values the proxy draws, which is what an ORM's id column relies on.
//! Any other would let two shards each hold a row with the same value where PostgreSQL raises
//! 23505.
//!
//! A foreign key to a reference table finds the row on every shard. One to a sharded table
//! finds it only when the referencing row lives on the referenced row's shard: both tables
//! sharded by keys of one type, paired in the constraint (`FOREIGN KEY (account_id) REFERENCES
//! accounts (id)` with `account_id` and `id` the keys). Any other answers 23503, "is not
//! present in table", for rows another shard holds, and its ON DELETE actions miss the
//! referencing rows on other shards.
//!
//! A trigger runs on the shard whose row fired it. One on a sharded table that writes a
//! reference table writes that shard's copy only, so the copies differ and reads answer by
//! whichever they reach; one on a reference table that writes a sharded table fires on every
//! copy, so each shard writes the rows. The trigger function's text is read for INSERT INTO,
//! UPDATE, DELETE FROM, MERGE INTO and TRUNCATE of such a table (dynamic SQL is not seen).
//! A BEFORE INSERT or UPDATE row trigger on a sharded table that assigns the row's shard key
//! (`NEW.key := lower(NEW.key)`, `SELECT ... INTO NEW.key`, `NEW := ...`) would store the row
//! under a key other than the one the proxy routed it by, on a shard that key does not choose.
//!
//! Only what the session's own transaction wrote (a constraint, a trigger, or a trigger's
//! function) is judged: its catalog row's xmin is an xid the backend holds a lock on, which
//! covers its subtransactions. One that predates these rules, or that was made on a shard
//! directly, never blocks unrelated DDL; those are named in a warning at start and reload
//! instead (`existing`).

use super::key_columns::literal;
use crate::config::ShardTarget;
use crate::placement::{Placement, TableRule};
use std::time::Duration;

/// The kinds of object judged here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Unique,
    ForeignKey,
    Trigger,
    KeyTrigger,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Unique,
        Kind::ForeignKey,
        Kind::Trigger,
        Kind::KeyTrigger,
    ];

    /// What to do about a refused object of this kind.
    pub fn hint(self) -> &'static str {
        match self {
            Kind::Unique => {
                "Include the shard key in the constraint, as in PRIMARY KEY (key, id) or \
                UNIQUE (key, code), or fill one of its columns from a sequence (serial, bigserial \
                or an identity column), whose values the proxy draws once for the whole cluster."
            }
            Kind::ForeignKey => {
                "Shard both tables by keys of the same type and include both keys \
                in the constraint, as in FOREIGN KEY (account_id, entry_id) REFERENCES entries \
                (account_id, id); or declare the referenced table a reference table."
            }
            Kind::Trigger => {
                "Write that table from the application, in the same transaction (the proxy then \
                writes every copy of a reference table, and each sharded row on its shard), or \
                have the trigger write only tables placed like its own."
            }
            Kind::KeyTrigger => {
                "Compute the shard key in the application or in the INSERT itself, so that the \
                proxy routes the row by the key it is stored with; a trigger may set other columns."
            }
        }
    }

    fn query(self) -> &'static str {
        match self {
            Kind::Unique => UNIQUE,
            Kind::ForeignKey => FOREIGN_KEY,
            Kind::Trigger => TRIGGER,
            Kind::KeyTrigger => KEY_TRIGGER,
        }
    }

    /// The catalog rows' xmin that tells who made the object (as the right side of `=`).
    fn made_by(self) -> &'static str {
        match self {
            Kind::Unique => "i.xmin",
            Kind::ForeignKey => "con.xmin",
            // CREATE TRIGGER, or CREATE OR REPLACE of the function a trigger runs.
            Kind::Trigger | Kind::KeyTrigger => "ANY (ARRAY[w.trigger_xmin, w.function_xmin])",
        }
    }
}

/// A query whose rows say why an object of `kind` that this transaction made on a sharded
/// table (or a reference table, for triggers) works on each shard's rows only (first column,
/// text), and which declared table it concerns (second); None when no sharded table is
/// declared.
pub fn refusals_sql(kind: Kind, placement: &Placement) -> Option<String> {
    let filter = format!(
        "   AND EXISTS (SELECT FROM pg_catalog.pg_locks l
                WHERE l.locktype OPERATOR(pg_catalog.=) 'transactionid'
                  AND l.pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()
                  AND l.transactionid OPERATOR(pg_catalog.=) {})
",
        kind.made_by()
    );
    query(kind, placement, &filter)
}

/// Every object of every kind on the shards that does on each shard's rows only what the
/// cluster needs done for all, however it was made, with why (naming the shard). Err: a shard
/// could not be asked.
pub async fn existing(
    shards: &[ShardTarget],
    timeout: Duration,
    placement: &Placement,
) -> Result<Vec<(Kind, String)>, String> {
    let mut found = Vec::new();
    for kind in Kind::ALL {
        if let Some(sql) = query(kind, placement, "") {
            let rows = super::control::first_column_everywhere(shards, timeout, &sql).await?;
            found.extend(rows.into_iter().map(|why| (kind, why)));
        }
    }
    Ok(found)
}

/// Logs a warning for each object `existing` finds, saying what it does wrong. Err: a
/// shard could not be asked.
pub async fn warn_of_existing(
    shards: &[ShardTarget],
    timeout: Duration,
    placement: &Placement,
) -> Result<(), String> {
    for (kind, why) in existing(shards, timeout, placement).await? {
        match kind {
            Kind::Unique => {
                tracing::warn!("{why}: rebuild it with the shard key among its columns")
            }
            Kind::ForeignKey => {
                tracing::warn!("{why}: it may report rows as missing that another shard holds")
            }
            Kind::Trigger => tracing::warn!("{why}: write that table from the application"),
            Kind::KeyTrigger => {
                tracing::warn!("{why}: compute the key before the row reaches the proxy")
            }
        }
    }
    Ok(())
}

/// `kind`'s query over the declared tables: the sharded ones as (name, key column, key type)
/// rows, the reference ones by name, and whether undeclared tables are reference tables.
fn query(kind: Kind, placement: &Placement, filter: &str) -> Option<String> {
    let mut tables: Vec<String> = placement
        .sharded_tables()
        .map(|(name, key_column, key_type)| {
            format!(
                "({}, {}, '{}')",
                literal(name),
                literal(&key_column.to_lowercase()),
                key_type.name()
            )
        })
        .collect();
    if tables.is_empty() {
        return None;
    }
    tables.sort();
    let mut references: Vec<String> = placement
        .tables
        .iter()
        .filter(|(_, rule)| matches!(rule, TableRule::Reference))
        .map(|(name, _)| format!("({})", literal(&name.to_lowercase())))
        .collect();
    references.sort();
    // A VALUES list may not be empty; no table is named by the empty string.
    if references.is_empty() {
        references.push("('')".into());
    }
    let undeclared_reference = matches!(placement.undeclared, Some(TableRule::Reference));
    Some(
        kind.query()
            .replace("$KEYS", &tables.join(",\n       "))
            .replace("$REFERENCES", &references.join(", "))
            .replace("$UNDECLARED_REFERENCE", &undeclared_reference.to_string())
            .replace("$FILTER", filter),
    )
}

// Tables match declarations as `backend::key_columns` matches them. Everything is named in
// pg_catalog, since the query runs under the session's search_path. An index column of 0 is an
// expression, which no attribute matches, and only the key columns count, not INCLUDE's. An
// exclusion constraint holds for the cluster when such a column is compared with `=` (its
// operator at that position). A column counts as sequence-filled when it is an identity
// column or its default calls nextval, as the proxy's own reading of sequence columns decides.
const UNIQUE: &str = "\
WITH sharded(name, key, kind) AS (
VALUES $KEYS
)
SELECT pg_catalog.format('the %s index \"%s\" on %s.%s does not %s the shard key %s, so each shard would enforce it on its own rows only and two shards could hold %s',
           CASE WHEN x.indisexclusion THEN 'exclusion' ELSE 'unique' END, i.relname, n.nspname, c.relname,
           CASE WHEN x.indisexclusion THEN 'compare with =' ELSE 'include' END, k.key,
           CASE WHEN x.indisexclusion THEN 'rows it excludes' ELSE 'the same value' END), k.name
  FROM sharded k
  JOIN pg_catalog.pg_class c
    ON c.relname OPERATOR(pg_catalog.=) k.name OR pg_catalog.lower(c.relname) OPERATOR(pg_catalog.=) k.name
  JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
  JOIN pg_catalog.pg_index x ON x.indrelid OPERATOR(pg_catalog.=) c.oid
  JOIN pg_catalog.pg_class i ON i.oid OPERATOR(pg_catalog.=) x.indexrelid
  LEFT JOIN pg_catalog.pg_constraint xc
    ON xc.conindid OPERATOR(pg_catalog.=) x.indexrelid AND xc.contype OPERATOR(pg_catalog.=) 'x'
 WHERE (x.indisunique OR x.indisexclusion)
   AND c.relkind OPERATOR(pg_catalog.=) ANY ('{r,p}'::pg_catalog.\"char\"[])
   AND NOT n.nspname OPERATOR(pg_catalog.=) ANY ('{pg_catalog,information_schema}'::pg_catalog.name[])
   AND n.nspname OPERATOR(pg_catalog.!~) '^pg_(toast|temp_|toast_temp_)'
$FILTER   AND NOT EXISTS (SELECT FROM pg_catalog.generate_series(0, x.indnkeyatts::pg_catalog.int4 OPERATOR(pg_catalog.-) 1) p
                    JOIN pg_catalog.pg_attribute a
                      ON a.attrelid OPERATOR(pg_catalog.=) c.oid AND a.attnum OPERATOR(pg_catalog.=) x.indkey[p]
                   WHERE (NOT x.indisexclusion
                          OR EXISTS (SELECT FROM pg_catalog.pg_operator o
                                      WHERE o.oid OPERATOR(pg_catalog.=) xc.conexclop[p OPERATOR(pg_catalog.+) 1]
                                        AND o.oprname OPERATOR(pg_catalog.=) '='))
                     AND (pg_catalog.lower(a.attname) OPERATOR(pg_catalog.=) k.key
                          OR a.attidentity OPERATOR(pg_catalog.<>) ''
                          OR EXISTS (SELECT FROM pg_catalog.pg_attrdef d
                                      WHERE d.adrelid OPERATOR(pg_catalog.=) c.oid
                                        AND d.adnum OPERATOR(pg_catalog.=) a.attnum
                                        AND pg_catalog.pg_get_expr(d.adbin, d.adrelid) OPERATOR(pg_catalog.~~) 'nextval(%')))
 ORDER BY 1";

// `a` is the referencing table's declaration when it is sharded by a key of the referenced
// one's type; the constraint keeps rows together when some position pairs the two key columns.
// The copies PostgreSQL makes of a partitioned table's constraint on each partition (a
// `conparentid`) are judged by their parent, since partitions are not declared themselves.
const FOREIGN_KEY: &str = "\
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
   AND con.conparentid OPERATOR(pg_catalog.=) 0
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

// A trigger's table and each table its function writes are classed as the placement reads
// them (declared sharded, declared reference, or undeclared under `undeclared_tables`); the
// written name is the last part of a qualified one, folded to lower case as unquoted names
// are. String literals and comments are blanked first, so that words in them are not read as
// statements. Internal triggers (those of foreign keys) are PostgreSQL's own.
const TRIGGER: &str = "\
WITH sharded(name, key, kind) AS (
VALUES $KEYS
), reference(name) AS (
VALUES $REFERENCES
), triggers AS (
SELECT t.tgname, n.nspname, c.relname, p.proname,
       pg_catalog.regexp_replace(pg_catalog.regexp_replace(pg_catalog.regexp_replace(p.prosrc,
           '''(?:[^'']|'''')*''', ' ', 'g'), '--[^\\n]*', ' ', 'g'), '/\\*(?:[^*]|\\*+[^*/])*\\*+/', ' ', 'g') AS code,
       t.xmin AS trigger_xmin, p.xmin AS function_xmin,
       CASE WHEN EXISTS (SELECT FROM sharded s WHERE c.relname OPERATOR(pg_catalog.=) s.name OR pg_catalog.lower(c.relname) OPERATOR(pg_catalog.=) s.name) THEN 'sharded'
            WHEN EXISTS (SELECT FROM reference r WHERE pg_catalog.lower(c.relname) OPERATOR(pg_catalog.=) r.name) OR $UNDECLARED_REFERENCE THEN 'reference'
       END AS class
  FROM pg_catalog.pg_trigger t
  JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) t.tgrelid
  JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
  JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) t.tgfoid
 WHERE NOT t.tgisinternal
   AND NOT n.nspname OPERATOR(pg_catalog.=) ANY ('{pg_catalog,information_schema,shardgate}'::pg_catalog.name[])
   AND n.nspname OPERATOR(pg_catalog.!~) '^pg_(toast|temp_|toast_temp_)'
), w AS (
SELECT DISTINCT triggers.*, pg_catalog.lower(m[1]) AS written
  FROM triggers,
       pg_catalog.regexp_matches(triggers.code,
           '\\m(?:insert\\s+into|update|delete\\s+from|merge\\s+into|truncate(?:\\s+table)?)\\s+(?:only\\s+)?(?:\"?\\w+\"?\\s*\\.\\s*)?\"?(\\w+)', 'gi') m
 WHERE triggers.class IS NOT NULL
), judged AS (
SELECT w.*,
       EXISTS (SELECT FROM sharded s WHERE s.name OPERATOR(pg_catalog.=) w.written) AS writes_sharded,
       (EXISTS (SELECT FROM reference r WHERE r.name OPERATOR(pg_catalog.=) w.written)
        OR ($UNDECLARED_REFERENCE AND NOT EXISTS (SELECT FROM sharded s WHERE s.name OPERATOR(pg_catalog.=) w.written))) AS writes_reference
  FROM w
)
SELECT pg_catalog.format('the trigger \"%s\" on the %s table %s.%s runs %s(), which writes the %s table %s, so %s', w.tgname, w.class, w.nspname, w.relname, w.proname,
           CASE WHEN w.class OPERATOR(pg_catalog.=) 'sharded' THEN 'reference' ELSE 'sharded' END, w.written,
           CASE WHEN w.class OPERATOR(pg_catalog.=) 'sharded' THEN 'only the copy on the shard of the row that fired it would be written and the copies would differ'
                ELSE 'it would fire on every copy and each shard would write the rows' END), w.relname
  FROM judged w
 WHERE ((w.class OPERATOR(pg_catalog.=) 'sharded' AND w.writes_reference)
        OR (w.class OPERATOR(pg_catalog.=) 'reference' AND w.writes_sharded))
$FILTER ORDER BY 1";

// A BEFORE row trigger (tgtype bits: 1 row, 2 before, 4 insert, 16 update) on a sharded table
// whose function, strings and comments blanked as above, assigns NEW's key column: `NEW.key :=`
// (or `=`) at the start of a statement, `INTO ... NEW.key`, or all of NEW at once. The key's
// name is put in the pattern with every non-word character escaped.
const KEY_TRIGGER: &str = "\
WITH sharded(name, key, kind) AS (
VALUES $KEYS
), w AS (
SELECT t.tgname, n.nspname, c.relname, p.proname, s.key,
       pg_catalog.regexp_replace(s.key, '(\\W)', '\\\\\\1', 'g') AS key_pattern,
       pg_catalog.regexp_replace(pg_catalog.regexp_replace(pg_catalog.regexp_replace(p.prosrc,
           '''(?:[^'']|'''')*''', ' ', 'g'), '--[^\\n]*', ' ', 'g'), '/\\*(?:[^*]|\\*+[^*/])*\\*+/', ' ', 'g') AS code,
       t.xmin AS trigger_xmin, p.xmin AS function_xmin
  FROM pg_catalog.pg_trigger t
  JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) t.tgrelid
  JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
  JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) t.tgfoid
  JOIN sharded s
    ON c.relname OPERATOR(pg_catalog.=) s.name OR pg_catalog.lower(c.relname) OPERATOR(pg_catalog.=) s.name
 WHERE NOT t.tgisinternal
   AND (t.tgtype::pg_catalog.int4 OPERATOR(pg_catalog.&) 3) OPERATOR(pg_catalog.=) 3
   AND (t.tgtype::pg_catalog.int4 OPERATOR(pg_catalog.&) 20) OPERATOR(pg_catalog.<>) 0
   AND NOT n.nspname OPERATOR(pg_catalog.=) ANY ('{pg_catalog,information_schema,shardgate}'::pg_catalog.name[])
   AND n.nspname OPERATOR(pg_catalog.!~) '^pg_(toast|temp_|toast_temp_)'
)
SELECT pg_catalog.format('the trigger \"%s\" on the sharded table %s.%s runs %s(), which sets the shard key %s of the row before it is stored, so the row would be stored under a key other than the one it was routed by, on a shard that key does not choose', w.tgname, w.nspname, w.relname, w.proname, w.key), w.relname
  FROM w
 WHERE (w.code OPERATOR(pg_catalog.~*) ('(^|;|\\mbegin|\\mthen|\\melse|\\mloop)\\s*new\\s*\\.\\s*\"?' OPERATOR(pg_catalog.||) w.key_pattern OPERATOR(pg_catalog.||) '\"?\\s*:?=')
        OR w.code OPERATOR(pg_catalog.~*) ('\\minto\\s+(strict\\s+)?([^;]*,\\s*)?new\\s*\\.\\s*\"?' OPERATOR(pg_catalog.||) w.key_pattern OPERATOR(pg_catalog.||) '\"?\\M')
        OR w.code OPERATOR(pg_catalog.~*) '(^|;|\\mbegin|\\mthen|\\melse|\\mloop)\\s*new\\s*:?=')
$FILTER ORDER BY 1";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn declared_tables_are_listed_as_each_query_needs_them() {
        let text = "[[users]]\nname=\"a\"\nauth=\"trust\"\n\
            [[shards]]\nname=\"s0\"\nurl=\"postgres://u@h/db\"\n\
            [[shards]]\nname=\"s1\"\nurl=\"postgres://u@h/db\"\n\
            [tables.entries]\nshard_key=\"Account_Id\"\nkey_type=\"bigint\"\n\
            [tables.people]\nshard_key=\"name\"\nkey_type=\"text\"\n\
            [tables.countries]\nreference=true\n";
        let placement = Config::from_toml(text).unwrap().placement().unwrap();
        for kind in Kind::ALL {
            let sql = refusals_sql(kind, &placement).unwrap();
            assert!(
                sql.contains("(E'entries', E'account_id', 'integer')"),
                "{sql}"
            );
            assert!(sql.contains("(E'people', E'name', 'text')"), "{sql}");
            // Only triggers care which tables are reference tables.
            assert_eq!(
                sql.contains("(E'countries')"),
                kind == Kind::Trigger,
                "{sql}"
            );
            assert!(!sql.contains('$'), "{sql}");
            assert!(sql.contains(kind.made_by()), "{sql}");
            assert!(!query(kind, &placement, "").unwrap().contains("pg_locks"));
        }
    }
}
