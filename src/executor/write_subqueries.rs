//! An UPDATE or DELETE of a sharded or reference table whose subqueries read sharded tables
//! that no shard can answer alone and that name nothing of the statement around them
//! (`DELETE FROM orders WHERE customer_id IN (SELECT id FROM customers WHERE banned)` with
//! `orders` placed by its own id, `UPDATE accounts SET flagged = true WHERE balance > (SELECT
//! avg(balance) FROM accounts)`): each subquery is answered first, merged over the shards, and
//! written back as values (`router::uncorrelated`), then the write runs where its own
//! conditions send it, as any other write (in one distributed transaction over several shards).
//!
//! One PostgreSQL reads the subquery and the write's rows in one snapshot. So do the shards
//! here: outside a transaction block the two run in a REPEATABLE READ transaction of the
//! proxy's own (so a row another transaction changed since that snapshot fails the write with
//! 40001, where a READ COMMITTED statement would have waited and gone on: retry it); in a
//! REPEATABLE READ or SERIALIZABLE transaction its snapshot serves both; a READ COMMITTED
//! transaction block, whose statements each take a new snapshot, is refused with a hint, as
//! for reads; `snapshot` consistency keeps the planner's refusal. Only in the simple protocol:
//! a Bind of such a write keeps the refusal.

use super::session::{Exec, Step, R};
use super::subqueries_first::{Bound, Unanswered};
use crate::error::{sqlstate, PgError};
use crate::router::params::Params;
use crate::router::plan::{plan, Plan, READS_BEYOND_ITS_ROWS};
use crate::router::uncorrelated;
use crate::txn::snapshot::Consistency;
use crate::txn::state::TxnState;
use sqlparser::ast::Statement;

/// Whether the planner refused `stmt`, an UPDATE or DELETE, for a read of a sharded table
/// beyond its rows (a subquery's, NOT IN's included), which may be answered first.
pub fn answered_first(stmt: &Statement, refusal: &PgError) -> bool {
    matches!(stmt, Statement::Update(_) | Statement::Delete(_))
        && (refusal.message == READS_BEYOND_ITS_ROWS || uncorrelated::answered_first(refusal))
}

impl Exec<'_> {
    /// Runs `stmt`, a write the planner refused with `refusal` (see `answered_first`), with
    /// its subqueries answered first; `sql` is the client's text.
    pub async fn write_subqueries_first(
        &mut self,
        stmt: &Statement,
        sql: &str,
        refusal: PgError,
    ) -> R<Step> {
        // An EXISTS correlated by equalities off the key reads as an IN answered first.
        let mut written = uncorrelated::equality_exists::write_decorrelated(stmt, &self.placement)
            .unwrap_or_else(|| stmt.clone());
        let candidates = uncorrelated::write_candidates(&written, &self.placement);
        if candidates.is_empty()
            || self.consistency == Consistency::Snapshot
            || matches!(self.txn, TxnState::Failed(_))
        {
            return self.run_plan(Plan::Reject(refusal), sql).await;
        }
        let own = match self.one_snapshot_for_two_reads().await? {
            Ok(own) => own,
            Err(()) => {
                return Ok(self.error(
                    &PgError::error(
                        sqlstate::FEATURE_NOT_SUPPORTED,
                        format!("{}, in a READ COMMITTED transaction block", refusal.message),
                    )
                    .with_hint("The proxy reads this write's subquery over several shards first, which needs one snapshot for that and the write: run the statement outside a transaction block, or in a REPEATABLE READ transaction."),
                ))
            }
        };
        let step = match self
            .answered_in(&mut written, candidates, &Bound::default(), 0)
            .await?
        {
            Err(Unanswered::Told) => Step::Failed,
            Err(Unanswered::Outside) => self.error(&refusal),
            Ok(()) => match plan(&written, &self.placement, &Params::default()) {
                // A subquery left that names the statement: the refusal as it was.
                Plan::Reject(e) if answered_first(&written, &e) => self.error(&refusal),
                planned => {
                    self.rewritten = true;
                    let step = self.run_plan(planned, &written.to_string()).await;
                    self.rewritten = false;
                    step?
                }
            },
        };
        // A failure is ended by the caller, as any failed statement's transaction is.
        self.end_own_implicit(own && step == Step::Done, step).await
    }
}
