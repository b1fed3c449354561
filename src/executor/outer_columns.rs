//! Outer columns a subquery names without their table, written qualified
//! (`router::subquery::unqualified` has the reasoning). The tables' columns are read from the
//! first shard's catalog in the client's own transaction, so a column added there and not yet
//! committed counts, and names resolve under the session's search_path.

use super::session::{Exec, Step, R};
use super::subqueries_first::{Bound, Unanswered};
use crate::router::subquery::unqualified;
use sqlparser::ast::Query;
use std::collections::HashMap;

impl Exec<'_> {
    /// `q` with the bare outer columns of its subqueries qualified; None when there are none,
    /// or a table's columns could not be read (the statement keeps its refusal). Err: the
    /// client has been told why.
    pub(super) async fn outer_columns_qualified(
        &mut self,
        q: &Query,
    ) -> R<Result<Option<Query>, Step>> {
        let tables = unqualified::tables_to_read(q);
        if tables.is_empty() {
            return Ok(Ok(None));
        }
        let mut columns = HashMap::new();
        for table in tables {
            let text = format!(
                "SELECT attname::text FROM pg_catalog.pg_attribute \
                 WHERE attrelid = CAST('{}' AS pg_catalog.regclass) AND attnum > 0 AND NOT attisdropped",
                table.replace('\'', "''")
            );
            let Some(read) = crate::router::uncorrelated::parse_query(&text) else {
                return Ok(Ok(None));
            };
            match Box::pin(self.answer_of(read, &Bound::default(), 0)).await? {
                Ok(answer) => {
                    let names: Vec<String> = answer
                        .rows
                        .into_iter()
                        .filter_map(|row| row.into_iter().next().flatten())
                        .collect();
                    columns.insert(table, names);
                }
                // No such table (42P01): the statement fails on its own, as written.
                Err(Unanswered::Outside) => return Ok(Ok(None)),
                Err(Unanswered::Told) => return Ok(Err(Step::Failed)),
            }
        }
        Ok(Ok(unqualified::qualified(q, &columns)))
    }
}
