//! INSERT ... SELECT into a reference table whose source the copies would each read their
//! own way.
//!
//! A write of a reference table runs on every copy, and each copy runs its source itself. That
//! writes the same rows only while every copy reads the same rows in the same order, which
//! fails when:
//!
//! - the source reads a table living on one shard: the other shards hold an empty table of
//!   that name, or none;
//! - the order of the source's rows decides what is written. A column filled by a sequence
//!   (serial, identity, a `nextval` default) numbers the rows in the order the source returns
//!   them, and that order is each copy's: its physical order (a `CLUSTER` or `VACUUM FULL` run
//!   on one shard changes it) and its planner's choice (statistics and indexes differ between
//!   shards). ON CONFLICT DO NOTHING keeps the first of two rows with one key; LIMIT, OFFSET,
//!   FETCH, DISTINCT ON and window functions pick rows or compute values by that order.
//!
//! Such a source is read once where its tables are whole (the first shard, or the shard its
//! tables live on), in the client's transaction, and the statement is written as INSERT ...
//! VALUES of its rows on every copy (`insert_select`), where a sequence numbers them in one
//! order everywhere.

use super::session::{Exec, R};
use crate::router::params::Params;
use crate::router::plan::{last_ident, plan, relations, rows_picked_by_order, Plan};
use sqlparser::ast::{Insert, OnConflictAction, OnInsert, Query, Statement};

/// Whether the source picks rows or computes values by the order it returns them in, in
/// itself or in a subquery: under an ORDER BY too, which may leave ties each copy breaks its
/// own way.
fn picks_by_order(source: &Query) -> bool {
    rows_picked_by_order(source).is_some()
}

impl Exec<'_> {
    /// The shard to read the source of `ins`, an INSERT ... SELECT into reference table
    /// `table`, from once (see the module comment); None when every copy may read it itself,
    /// or when the planner places or refuses the statement as written (a source reading
    /// sharded tables).
    pub(super) async fn copies_read_once(
        &mut self,
        ins: &Insert,
        table: &str,
        source: &Query,
        params: &Params,
    ) -> R<Option<usize>> {
        let shard = match plan(
            &Statement::Query(Box::new(source.clone())),
            &self.placement,
            params,
        ) {
            Plan::Shard { shard, .. } => shard,
            _ => return Ok(None),
        };
        // DO NOTHING keeps the first row of a key; DO UPDATE fails on a second row of one
        // on every copy alike ("cannot affect row a second time").
        let first_wins = matches!(&ins.on, Some(OnInsert::OnConflict(c))
            if c.action == OnConflictAction::DoNothing);
        // A table living on one shard, the first one included, is read there.
        let lives_on_one = relations(source, &self.placement).pinned_shard().is_some();
        if lives_on_one || first_wins || picks_by_order(source) {
            return Ok(Some(shard));
        }
        // Without a column list every column may be given, or the rest left to defaults.
        let given: Vec<String> = ins.columns.iter().map(last_ident).collect();
        let defaulted =
            self.sequence_columns(table).await?.iter().any(|c| {
                given.is_empty() || !given.iter().any(|g| g.eq_ignore_ascii_case(&c.column))
            });
        Ok(defaulted.then_some(shard))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(sql: &str) -> Query {
        let Some(Statement::Query(q)) =
            sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, sql)
                .unwrap()
                .pop()
        else {
            panic!("{sql} is not a query")
        };
        *q
    }

    #[test]
    fn rows_picked_or_computed_by_their_order_are_seen() {
        for sql in [
            "select name from src limit 3",
            "select name from src order by name offset 2",
            "select name from src fetch first 2 rows only",
            "select distinct on (kind) kind, name from src",
            "select row_number() over (), name from src",
            "select name from src where id in (select id from src2 order by id limit 1)",
        ] {
            assert!(picks_by_order(&source(sql)), "{sql}");
        }
        for sql in [
            "select name from src",
            "select distinct name from src order by name",
            "select kind, count(*) from src group by kind",
        ] {
            assert!(!picks_by_order(&source(sql)), "{sql}");
        }
    }
}
