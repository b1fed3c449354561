//! Catalog facts the executor needs about a shard while a session's own connections to it are
//! busy (in the middle of an answer): user-defined type OIDs (`type_oids`) and the types binary
//! values name inside them (`type_graph`), a column's table and attribute number as the first
//! shard numbers them, and the collations of text being merged (`collations`), and the columns
//! of the arbiters an upsert leaves unnamed. Asked on the proxy's control connections, one per
//! shard, opened on first use and again after one broke, and cached for the proxy.
//!
//! Everything cached can change with DDL (a type or column dropped and made again, a column's
//! collation altered), so `forget` clears the caches whenever this proxy runs DDL.

pub mod collations;
pub mod type_graph;
pub mod type_oids;

use crate::config::ShardTarget;
use foldhash::HashMap;
use std::time::Duration;
use type_oids::TypeOids;

pub struct Catalog {
    targets: Vec<ShardTarget>,
    timeout: Duration,
    clients: Vec<tokio::sync::Mutex<Option<tokio_postgres::Client>>>,
    pub types: TypeOids,
    collations: collations::Collations,
    /// The same table and column on the first shard: (table OID, attribute number).
    columns: Cache<ShardColumn, (u32, i16)>,
    /// The columns of a table's constraint by name, lower-cased, as the first shard has them.
    constraint_columns: Cache<(String, String), Vec<String>>,
    /// Each unique index without the shard key, by (table, key column).
    unique_without_key: Cache<(String, String), Vec<UniqueIndex>>,
    /// Moved by every `forget`: what a session derived from these caches holds only while it
    /// stays the same.
    generation: std::sync::atomic::AtomicU64,
}

/// How long an answer that DDL on a shard directly (behind the proxy) can change is trusted:
/// DDL through the proxy clears it at once (`Catalog::forget`).
const FRESH: std::time::Duration = std::time::Duration::from_secs(5);

/// A unique index of a table as the first shard has it: its name (what PostgreSQL's 23505
/// names) and its key columns, lower-cased (an expression is left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UniqueIndex {
    pub name: String,
    pub columns: Vec<String>,
    /// Some key of the index is an expression, not a column.
    pub expression: bool,
}

/// A column as one shard numbers it: (shard, table OID, attribute number).
type ShardColumn = (usize, u32, i16);

/// Facts already looked up, shared by every session of the proxy.
pub struct Cache<K, V>(std::sync::Mutex<HashMap<K, V>>);

impl<K: std::hash::Hash + Eq, V: Clone> Cache<K, V> {
    pub fn get(&self, key: &K) -> Option<V> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    pub fn insert(&self, key: K, value: V) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, value);
    }

    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl<K, V> Default for Cache<K, V> {
    fn default() -> Self {
        Cache(std::sync::Mutex::new(HashMap::default()))
    }
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("shards", &self.targets.len())
            .finish_non_exhaustive()
    }
}

impl Catalog {
    pub fn new(targets: Vec<ShardTarget>, timeout: Duration) -> Catalog {
        Catalog {
            clients: targets
                .iter()
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            types: TypeOids::default(),
            targets,
            timeout,
            collations: Default::default(),
            columns: Cache::default(),
            constraint_columns: Cache::default(),
            unique_without_key: Cache::default(),
            generation: Default::default(),
        }
    }

    /// After DDL: cached facts may no longer hold.
    pub fn forget(&self) {
        use std::sync::atomic::Ordering;
        // Moved before the caches are cleared: a session that reads the new generation then
        // finds them cleared too.
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.types.forget();
        self.collations.forget();
        self.columns.clear();
        self.constraint_columns.clear();
        self.unique_without_key.clear();
    }

    /// Which `forget` the caches are at.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Column `column` of table `table_oid` on `shard`, as the first shard numbers the same
    /// table (by schema-qualified name) and column (by name): tables and columns get their
    /// numbers from each server's own history.
    pub async fn home_column(
        &self,
        shard: usize,
        table_oid: u32,
        column: i16,
    ) -> Result<(u32, i16), String> {
        let key = (shard, table_oid, column);
        if let Some(known) = self.columns.get(&key) {
            return Ok(known);
        }
        let name = self
            .value(
                shard,
                "select format('%I.%I', n.nspname, c.relname) || '/' || a.attname \
                 from pg_class c join pg_namespace n on n.oid = c.relnamespace \
                 join pg_attribute a on a.attrelid = c.oid \
                 where c.oid = split_part($1, '/', 1)::oid and a.attnum = split_part($1, '/', 2)::int2",
                &format!("{table_oid}/{column}"),
            )
            .await?
            .ok_or_else(|| format!("column {column} of relation {table_oid} of shard {} does not exist", self.shard_name(shard)))?;
        let home = self
            .value(
                crate::placement::HOME,
                "select a.attrelid::text || '/' || a.attnum::text from pg_attribute a \
                 where a.attrelid = to_regclass(substring($1 from '^(.*)/[^/]*$'))::oid \
                 and a.attname = substring($1 from '/([^/]*)$') and not a.attisdropped",
                &name,
            )
            .await?
            .ok_or_else(|| {
                format!(
                    "{name} does not exist on shard {}",
                    self.shard_name(crate::placement::HOME)
                )
            })?;
        let (oid, attnum) = home
            .split_once('/')
            .and_then(|(o, a)| Some((o.parse().ok()?, a.parse().ok()?)))
            .ok_or_else(|| format!("unreadable column reference {home}"))?;
        self.columns.insert(key, (oid, attnum));
        Ok((oid, attnum))
    }

    /// The columns (lower-cased) of the constraint `constraint` of the tables named `table` (as
    /// placement names them) on the first shard; empty when there is none there.
    pub async fn constraint_columns(
        &self,
        table: &str,
        constraint: &str,
    ) -> Result<Vec<String>, String> {
        let key = (table.to_string(), constraint.to_string());
        if let Some(known) = self.constraint_columns.get(&key) {
            return Ok(known);
        }
        // One text argument: the table and the constraint, parted by chr(1); a name holding
        // that character finds nothing, and its upsert runs as written.
        let found = self
            .texts(
                crate::placement::HOME,
                "select lower(a.attname) from pg_constraint con \
                 join pg_class c on c.oid = con.conrelid \
                 join pg_attribute a on a.attrelid = c.oid and a.attnum = any (con.conkey) \
                 where con.conname = split_part($1, chr(1), 2) \
                 and (c.relname = split_part($1, chr(1), 1) or lower(c.relname) = split_part($1, chr(1), 1))",
                &format!("{table}\u{1}{constraint}"),
            )
            .await?
            .into_iter()
            .flatten()
            .collect::<Vec<_>>();
        self.constraint_columns.insert(key, found.clone());
        Ok(found)
    }

    /// Each unique index of the tables named `table` on the first shard whose columns leave
    /// out `key_column`.
    pub async fn unique_without_key(
        &self,
        table: &str,
        key_column: &str,
    ) -> Result<Vec<UniqueIndex>, String> {
        let key = (table.to_string(), key_column.to_lowercase());
        if let Some(known) = self.unique_without_key.get(&key) {
            return Ok(known);
        }
        // As `constraint_columns`, names parted by chr(1), in the argument and in each index's
        // answer (its name first); only the index's key columns count, not its INCLUDE columns.
        let found: Vec<UniqueIndex> = self
            .texts(
                crate::placement::HOME,
                "select i.relname || chr(1) || string_agg(coalesce(lower(a.attname), ''), chr(1) order by p) \
                 from pg_index x join pg_class c on c.oid = x.indrelid \
                 join pg_class i on i.oid = x.indexrelid \
                 cross join lateral generate_series(0, x.indnkeyatts - 1) p \
                 left join pg_attribute a on a.attrelid = c.oid and a.attnum = x.indkey[p] \
                 where x.indisunique \
                 and (c.relname = split_part($1, chr(1), 1) or lower(c.relname) = split_part($1, chr(1), 1)) \
                 group by x.indexrelid, i.relname \
                 having not coalesce(bool_or(lower(a.attname) = split_part($1, chr(1), 2)), false)",
                &format!("{table}\u{1}{}", key_column.to_lowercase()),
            )
            .await?
            .into_iter()
            .flatten()
            .filter_map(|row| {
                let mut parts = row.split('\u{1}');
                let name = parts.next()?.to_string();
                let keys: Vec<&str> = parts.collect();
                Some(UniqueIndex {
                    name,
                    expression: keys.iter().any(|c| c.is_empty()),
                    columns: keys
                        .into_iter()
                        .filter(|c| !c.is_empty())
                        .map(str::to_string)
                        .collect(),
                })
            })
            .collect();
        self.unique_without_key.insert(key, found.clone());
        Ok(found)
    }

    pub fn shard_name(&self, shard: usize) -> &str {
        &self.targets[shard].name
    }

    /// The one text value `sql` (with `$1` = `arg`) returns on `shard`; None for no row or
    /// NULL.
    pub async fn value(
        &self,
        shard: usize,
        sql: &str,
        arg: &str,
    ) -> Result<Option<String>, String> {
        Ok(self
            .texts(shard, sql, arg)
            .await?
            .into_iter()
            .next()
            .flatten())
    }

    /// The first column, as text, of every row `sql` (with `$1` = `arg`) returns on `shard`,
    /// on the proxy's own connection (never a session's, whose statements it would disturb).
    pub async fn texts(
        &self,
        shard: usize,
        sql: &str,
        arg: &str,
    ) -> Result<Vec<Option<String>>, String> {
        self.first_column(shard, sql, &[&arg]).await
    }

    /// As `texts`, for a statement without parameters: what the proxy reads outside any
    /// session's transaction, in a snapshot of its own.
    pub async fn texts_of(&self, shard: usize, sql: &str) -> Result<Vec<Option<String>>, String> {
        self.first_column(shard, sql, &[]).await
    }

    async fn first_column(
        &self,
        shard: usize,
        sql: &str,
        args: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Option<String>>, String> {
        let mut slot = self.clients[shard].lock().await;
        for attempt in 0..2 {
            if slot.as_ref().is_none_or(|c| c.is_closed()) {
                *slot = Some(super::control::connect(&self.targets[shard], self.timeout).await?);
            }
            let client = slot.as_ref().expect("connected above");
            match client.query(sql, args).await {
                Ok(rows) => {
                    return Ok(rows.iter().map(|r| r.get::<_, Option<String>>(0)).collect())
                }
                Err(e) if attempt == 0 && client.is_closed() => {
                    tracing::debug!(shard = %self.targets[shard].name, "catalog connection lost: {e}");
                    *slot = None;
                }
                Err(e) => {
                    return Err(format!(
                        "catalog lookup on shard {} failed: {e}",
                        self.targets[shard].name
                    ))
                }
            }
        }
        Err(format!(
            "catalog lookup on shard {} failed",
            self.targets[shard].name
        ))
    }
}
