//! Names a statement writes without their table, settled from the catalog: outer columns a
//! subquery names bare, written qualified (`router::subquery::unqualified` has the
//! reasoning), and a GROUP BY name that is an alias and maybe a column
//! (`router::aggregate::group_names`). The tables' columns are read from the first shard's
//! catalog in the client's own transaction, so a column added there and not yet committed
//! counts, and names resolve under the session's search_path.

use super::session::{Exec, Step, R};
use super::subqueries_first::{Bound, Unanswered};
use crate::router::aggregate::group_names;
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
        Ok(match self.catalog_columns(tables).await? {
            Ok(Some(columns)) => Ok(unqualified::qualified(q, &columns)),
            other => other.map(|_| None),
        })
    }

    /// `q` with each GROUP BY name that is an alias and maybe a column written as one or the
    /// other; None when that cannot be settled (the statement keeps its refusal). Err: the
    /// client has been told why.
    pub(super) async fn group_names_resolved(
        &mut self,
        q: &Query,
    ) -> R<Result<Option<Query>, Step>> {
        let Some(tables) = group_names::tables_to_read(q) else {
            return Ok(Ok(None));
        };
        Ok(match self.catalog_columns(tables).await? {
            Ok(Some(columns)) => Ok(group_names::resolved(q, &columns)),
            other => other.map(|_| None),
        })
    }

    /// The columns of each of `tables` (by its name as written), in the order the catalog
    /// lists them; None when a table is not there (the statement fails on its own, as
    /// written). Err: the client has been told why.
    async fn catalog_columns(
        &mut self,
        tables: Vec<String>,
    ) -> R<Result<Option<HashMap<String, Vec<String>>>, Step>> {
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
        Ok(Ok(Some(columns)))
    }
}
