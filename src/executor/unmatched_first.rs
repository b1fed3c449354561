//! An outer join that keeps a reference table's rows against a sharded table, carried out in
//! two reads (`router::uncorrelated::unmatched` has the reasoning): first which reference rows
//! some shard matches, then the statement, every shard returning its matched rows and one
//! shard also the NULL-extended rows of the reference rows no shard matched. Both reads run in
//! one snapshot, as `subqueries_first` arranges for the statement it is part of.

use super::session::{Exec, R};
use super::subqueries_first::{Bound, Unanswered};
use crate::error::{sqlstate, PgError};
use crate::router::plan::{plan, Plan};
use crate::router::uncorrelated::unmatched;
use sqlparser::ast::{Query, Statement};

impl Exec<'_> {
    /// The plan of `query`, which the planner refused with `refusal` for the rows its outer
    /// join keeps: a scatter of the join made inner whose first shard runs the outer join
    /// keeping only the reference rows no shard matched. The refusal itself when `query` is not
    /// the shape handled.
    pub(super) async fn kept_rows_plan(
        &mut self,
        query: &Query,
        bound: &Bound,
        refusal: PgError,
    ) -> R<Result<Plan, Unanswered>> {
        let Some(kept) = unmatched::kept_join(query, &self.placement) else {
            return Ok(Ok(Plan::Reject(refusal)));
        };
        let inner = plan(
            &Statement::Query(Box::new(kept.inner.clone())),
            &self.placement,
            &bound.params,
        );
        let (shards, sql, mut merge) = match inner {
            Plan::Scatter { shards, sql, merge } if shards.len() > 1 => (shards, sql, merge),
            // The inner join refused for a reason of its own: that reason stands.
            Plan::Reject(e) => return Ok(Ok(Plan::Reject(e))),
            _ => return Ok(Ok(Plan::Reject(refusal))),
        };
        // Rows known by their text need columns whose text every copy writes alike.
        let refused = |name: &str, oid: u32| {
            PgError::error(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!("{}: the kept table's column {name} is of a type (OID {oid}) whose text can differ between its copies", refusal.message),
            )
            .with_hint("Keep the sharded table's rows instead (sharded LEFT JOIN reference), or read the two tables apart.")
        };
        if let Err(e) = self
            .rows_known_by_text(kept.columns.clone(), bound, 0, refused)
            .await?
        {
            return Ok(Err(e));
        }
        let answer = match Box::pin(self.answer_of(kept.matched.clone(), bound, 0)).await? {
            Ok(answer) => answer,
            Err(e) => return Ok(Err(e)),
        };
        crate::failpoint::hit(crate::failpoint::KEPT_ROWS_BEFORE_STATEMENT).await;
        let matched: Vec<Option<String>> = answer
            .rows
            .into_iter()
            .map(|row| row.into_iter().next().flatten())
            .collect();
        match unmatched::home_text(&sql, &kept, &matched) {
            Ok(text) => merge.shard_text = Some((shards[0], text)),
            Err(e) => {
                self.error(&e);
                return Ok(Err(Unanswered::Told));
            }
        }
        metrics::counter!(crate::metrics::KEPT_ROWS_ANSWERED_FIRST).increment(1);
        Ok(Ok(Plan::Scatter { shards, sql, merge }))
    }
}
