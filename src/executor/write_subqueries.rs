//! An UPDATE or DELETE of a sharded or reference table whose subqueries read sharded tables
//! that no shard can answer alone and that name nothing of the statement around them
//! (`DELETE FROM orders WHERE customer_id IN (SELECT id FROM customers WHERE banned)` with
//! `orders` placed by its own id, `UPDATE accounts SET flagged = true WHERE balance > (SELECT
//! avg(balance) FROM accounts)`), and an INSERT ... VALUES with such subqueries in its rows
//! (`VALUES ((SELECT max(id) + 1 FROM t), ...)`): each subquery is answered first, merged over
//! the shards, and written back as values (`router::uncorrelated`), then the write runs where
//! its own conditions send it, as any other write (in one distributed transaction over several
//! shards).
//!
//! One PostgreSQL reads the subquery and the write's rows in one snapshot. So do the shards
//! here: outside a transaction block the two run in a REPEATABLE READ transaction of the
//! proxy's own (so a row another transaction changed since that snapshot fails the write with
//! 40001, where a READ COMMITTED statement would have waited and gone on: retry it); in a
//! REPEATABLE READ or SERIALIZABLE transaction its snapshot serves both; a READ COMMITTED
//! transaction block, whose statements each take a new snapshot, is refused with a hint, as
//! for reads; `snapshot` consistency keeps the planner's refusal. A Bind of such a write has
//! its subqueries answered at Bind, with the bound values, and its portal carries out the
//! write (parameters of user-defined types keep the refusal, as for reads).

use super::session::{Exec, Step, R};
use super::subqueries_first::{Answered, Bound, Unanswered};
use crate::error::{sqlstate, PgError};
use crate::router::plan::{plan, Plan, READS_BEYOND_ITS_ROWS};
use crate::router::uncorrelated;
use crate::txn::snapshot::Consistency;
use crate::txn::state::TxnState;
use sqlparser::ast::Statement;

/// Whether the planner refused `stmt`, an UPDATE, DELETE or INSERT ... VALUES, for a read of
/// a sharded table beyond its rows (a subquery's, NOT IN's included), which may be answered
/// first.
pub fn answered_first(stmt: &Statement, refusal: &PgError) -> bool {
    uncorrelated::answers_write_subqueries(stmt)
        && (refusal.message == READS_BEYOND_ITS_ROWS || uncorrelated::answered_first(refusal))
}

impl Exec<'_> {
    /// Runs `stmt`, a write the planner refused with `refusal` (see `answered_first`), with
    /// its subqueries answered first.
    pub async fn write_subqueries_first(&mut self, stmt: &Statement, refusal: PgError) -> R<Step> {
        if self.consistency == Consistency::Snapshot || matches!(self.txn, TxnState::Failed(_)) {
            return Ok(self.reject(&refusal));
        }
        let (own, answered) = match self
            .write_answered(stmt, &Bound::default(), refusal)
            .await?
        {
            Ok(a) => a,
            Err(step) => return Ok(step),
        };
        self.rewritten = true;
        let step = self.run_plan(answered.plan, &answered.sql).await;
        self.rewritten = false;
        let step = step?;
        // A failure is ended by the caller, as any failed statement's transaction is.
        self.end_own_implicit(own && step == Step::Done, step).await
    }

    /// For a Bind of `stmt` (refused by the planner with `refusal`) with `bound`: the write
    /// the portal carries out, its subqueries answered now. A transaction of the proxy's own
    /// that this opens is implicit and ends at Sync, as the one of an extended-protocol write
    /// on several shards does. Err: the step, the client told why.
    pub async fn answered_write_portal(
        &mut self,
        stmt: &Statement,
        bound: &Bound,
        refusal: PgError,
    ) -> R<Result<Answered, Step>> {
        if self.consistency == Consistency::Snapshot
            || matches!(self.txn, TxnState::Failed(_))
            || bound.declares_user_types()
        {
            return Ok(Err(self.reject(&refusal)));
        }
        let answered = match self.write_answered(stmt, bound, refusal).await? {
            Ok((_, a)) => a,
            Err(step) => return Ok(Err(step)),
        };
        Ok(Ok(match answered.plan {
            // Run as a write the proxy carries out: no shard prepared this text.
            Plan::Shard { shard, write: true } => Answered {
                plan: Plan::Write {
                    parts: vec![(shard, answered.sql.clone())],
                    sum: true,
                    picks: Vec::new(),
                    serialize: None,
                    row_order: Vec::new(),
                },
                ..answered
            },
            Plan::Write { .. } => answered,
            Plan::Reject(e) => return Ok(Err(self.error(&e))),
            _ => return Ok(Err(self.error(&refusal_of_shape()))),
        }))
    }

    /// `stmt` with its subqueries answered and planned again, with the parameters it still
    /// uses; with whether a transaction of the proxy's own was opened for it (the caller ends
    /// it). Err: the client has been told.
    async fn write_answered(
        &mut self,
        stmt: &Statement,
        bound: &Bound,
        refusal: PgError,
    ) -> R<Result<(bool, Answered), Step>> {
        // An EXISTS correlated by equalities off the key reads as an IN answered first.
        let mut written = uncorrelated::equality_exists::write_decorrelated(stmt, &self.placement)
            .unwrap_or_else(|| stmt.clone());
        let candidates = uncorrelated::write_candidates(&written, &self.placement);
        if candidates.is_empty() {
            return Ok(Err(self.reject(&refusal)));
        }
        let own = match self.one_snapshot_for_two_reads().await? {
            Ok(own) => own,
            Err(()) => {
                return Ok(Err(self.error(&self.two_reads_refused(
                    &refusal,
                    "this write's subquery over several shards",
                ))))
            }
        };
        match self.answered_in(&mut written, candidates, bound, 0).await? {
            Err(Unanswered::Told) => return Ok(Err(Step::Failed)),
            Err(Unanswered::Outside) => return Ok(Err(self.error(&refusal))),
            Ok(()) => {}
        }
        let bound = bound.used_by(&mut written);
        match plan(&written, &self.placement, &bound.params) {
            // A subquery left that names the statement: the refusal as it was.
            Plan::Reject(e) if answered_first(&written, &e) => Ok(Err(self.error(&refusal))),
            plan => Ok(Ok((
                own,
                Answered {
                    plan,
                    sql: written.to_string(),
                    bound,
                },
            ))),
        }
    }
}

/// What a write whose subqueries were answered must still plan as: a write.
fn refusal_of_shape() -> PgError {
    PgError::error(
        sqlstate::FEATURE_NOT_SUPPORTED,
        "a write whose subqueries the proxy answers first must plan as a write",
    )
}
