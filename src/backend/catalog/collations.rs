//! The collations a shard compares text under: a column's own, and those a table's columns
//! and the database's domains use.
//!
//! The merge compares text by its bytes (see `executor::merge::collation`), which agrees with
//! PostgreSQL's comparison only under some collations, so it asks what the text it compares
//! was collated by. A collation is kept as its name and whether it is deterministic: the
//! default collation is named `default`, and nothing but the name tells it apart from "C".
//!
//! The answers are kept for `FRESH` only: DDL through this proxy clears them at once
//! (`Catalog::forget`), and a column altered on a shard directly, behind the proxy, is seen
//! once they are older.

use super::{Cache, Catalog};
use std::time::Instant;

use super::FRESH;

/// A collation as `pg_collation` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collation {
    pub name: String,
    pub deterministic: bool,
}

impl Collation {
    /// The database's default collation.
    pub fn default_collation() -> Collation {
        Collation {
            name: "default".into(),
            deterministic: true,
        }
    }

    /// `name/true` as the catalog queries below write it.
    fn parse(text: &str) -> Option<Collation> {
        let (name, deterministic) = text.rsplit_once('/')?;
        Some(Collation {
            name: name.to_string(),
            deterministic: deterministic == "true",
        })
    }

    fn named_code_point(&self) -> bool {
        matches!(self.name.as_str(), "C" | "POSIX" | "ucs_basic")
    }

    /// Orders text by code point, as the merge does; `database_c`: the database's default
    /// collation does.
    pub fn by_code_point(&self, database_c: bool) -> bool {
        self.named_code_point() || (self.name == "default" && database_c)
    }

    /// Compares text as the database's default collation does.
    pub fn like_default(&self, database_c: bool) -> bool {
        self.name == "default" || (database_c && self.named_code_point())
    }
}

/// An answer, and when it was given.
type Dated<T> = (T, Instant);

/// What was asked of the catalog, and when.
#[derive(Default)]
pub struct Collations {
    /// (shard, table OID, attribute number) → the column's collation (None: it has none).
    columns: Cache<(usize, u32, i16), Dated<Option<Collation>>>,
    /// (shard, table name) → the collations its columns and the database's domains use (None:
    /// no such table).
    tables: Cache<(usize, String), Dated<Option<Vec<Collation>>>>,
    /// (shard, table OID, attribute number) → the collation the column has other than its
    /// type's, schema-qualified (None: its type's own, or none).
    clauses: Cache<(usize, u32, i16), Dated<Option<String>>>,
}

impl Collations {
    pub fn forget(&self) {
        self.columns.clear();
        self.tables.clear();
        self.clauses.clear();
    }
}

/// `name/deterministic` of the collation with OID `c.oid`, for the queries below.
const NAMED: &str = "c.collname || '/' || c.collisdeterministic::text";

impl Catalog {
    /// The collation of column `column` of table `table_oid` on `shard`; None for a column of
    /// a type without one.
    pub async fn column_collation(
        &self,
        shard: usize,
        table_oid: u32,
        column: i16,
    ) -> Result<Option<Collation>, String> {
        let key = (shard, table_oid, column);
        if let Some((known, at)) = self.collations.columns.get(&key) {
            if at.elapsed() < FRESH {
                return Ok(known);
            }
        }
        let answer = self
            .value(
                shard,
                &format!(
                    "select {NAMED} from pg_attribute a join pg_collation c on c.oid = a.attcollation \
                     where a.attrelid = split_part($1, '/', 1)::oid \
                     and a.attnum = split_part($1, '/', 2)::int2"
                ),
                &format!("{table_oid}/{column}"),
            )
            .await?;
        let collation = answer.as_deref().and_then(Collation::parse);
        self.collations
            .columns
            .insert(key, (collation.clone(), Instant::now()));
        Ok(collation)
    }

    /// The collation column `column` of table `table_oid` on `shard` has other than its type's
    /// own, as a COLLATE clause names it (`pg_catalog."und-x-icu"`): what a value of the
    /// column written as a literal of its type needs to compare as the column's do. None: the
    /// type's own collation, or none.
    pub async fn column_collation_clause(
        &self,
        shard: usize,
        table_oid: u32,
        column: i16,
    ) -> Result<Option<String>, String> {
        let key = (shard, table_oid, column);
        if let Some((known, at)) = self.collations.clauses.get(&key) {
            if at.elapsed() < FRESH {
                return Ok(known);
            }
        }
        let clause = self
            .value(
                shard,
                "select format('%I.%I', n.nspname, c.collname) from pg_attribute a \
                 join pg_type t on t.oid = a.atttypid \
                 join pg_collation c on c.oid = a.attcollation \
                 join pg_namespace n on n.oid = c.collnamespace \
                 where a.attrelid = split_part($1, '/', 1)::oid \
                 and a.attnum = split_part($1, '/', 2)::int2 and a.attcollation <> t.typcollation",
                &format!("{table_oid}/{column}"),
            )
            .await?;
        self.collations
            .clauses
            .insert(key, (clause.clone(), Instant::now()));
        Ok(clause)
    }

    /// Every collation that columns of `table` or any domain of the database use on `shard`:
    /// text computed from the table's columns, or cast to a domain, is compared under one of
    /// them or the default. `table` is schema-qualified as written, or a bare table name,
    /// matched in every schema (the catalog connection's search_path need not be the
    /// session's). None: no such table.
    pub async fn table_collations(
        &self,
        shard: usize,
        table: &str,
    ) -> Result<Option<Vec<Collation>>, String> {
        let key = (shard, table.to_string());
        if let Some((known, at)) = self.collations.tables.get(&key) {
            if at.elapsed() < FRESH {
                return Ok(known);
            }
        }
        let rows = self
            .texts(
                shard,
                &format!(
                    "with rel as (select r.oid from pg_class r where case \
                     when strpos($1, '.') > 0 then r.oid = to_regclass($1) else r.relname = $1 end) \
                     select '?' where not exists (select from rel) \
                     union select {NAMED} from pg_attribute a \
                     join pg_collation c on c.oid = a.attcollation \
                     where a.attrelid in (select oid from rel) and a.attnum > 0 and not a.attisdropped \
                     union select {NAMED} from pg_type t \
                     join pg_collation c on c.oid = t.typcollation where t.typtype = 'd'"
                ),
                table,
            )
            .await?;
        let found = if rows.iter().any(|r| r.as_deref() == Some("?")) {
            None
        } else {
            Some(
                rows.iter()
                    .filter_map(|r| r.as_deref().and_then(Collation::parse))
                    .collect(),
            )
        };
        self.collations
            .tables
            .insert(key, (found.clone(), Instant::now()));
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str, deterministic: bool) -> Collation {
        Collation {
            name: name.into(),
            deterministic,
        }
    }

    #[test]
    fn reads_the_catalog_spelling() {
        assert_eq!(Collation::parse("ci/false"), Some(named("ci", false)));
        assert_eq!(
            Collation::parse("en-x-icu/true"),
            Some(named("en-x-icu", true))
        );
        assert_eq!(Collation::parse("no separator"), None);
    }

    #[test]
    fn code_point_and_default_depend_on_the_database() {
        let default = Collation::default_collation();
        let c = named("C", true);
        let icu = named("und-x-icu", true);
        assert!(default.by_code_point(true) && !default.by_code_point(false));
        assert!(c.by_code_point(false) && c.by_code_point(true));
        assert!(!icu.by_code_point(true));
        assert!(default.like_default(false) && default.like_default(true));
        assert!(c.like_default(true) && !c.like_default(false));
        assert!(!icu.like_default(true));
    }
}
