//! A SELECT whose subqueries over sharded tables no shard can answer alone, answered by
//! running each such subquery first (`router::uncorrelated` finds them and writes their answers
//! back), then the statement with the answers in their place.
//!
//! One PostgreSQL reads the subquery and the statement in one snapshot; here they are two
//! statements, so they must share the snapshot of each shard they read:
//!
//! - outside a transaction block the proxy opens a REPEATABLE READ transaction of its own for
//!   the two (one statement of READ COMMITTED reads one snapshot too, so the client sees the
//!   level it asked for), committed when the statement is done (at Sync in the extended
//!   protocol);
//! - in a REPEATABLE READ or SERIALIZABLE transaction the transaction's snapshot serves both;
//! - in a READ COMMITTED transaction block each statement takes a new snapshot, and the
//!   statement is refused with a hint.
//!
//! In `snapshot` consistency the same holds with one cut for the two. A subquery that fails
//! alone for a name it cannot find belonged to the outer query: the statement gets the
//! planner's refusal. The rows a subquery returns are held in the proxy while the statement
//! runs, at most `SUBQUERY_BYTES`.
//!
//! An EXISTS correlated to the outer query by equalities off the shard key is first written
//! as an IN whose subquery names nothing outside (`uncorrelated::equality_exists`), then
//! answered as any other.
//!
//! An outer join keeping a reference table's rows against a sharded table is read in two parts
//! the same way (`unmatched_first`), with or without subqueries of its own.
//!
//! In the extended protocol the subqueries are answered at Bind, with the parameters they use
//! (renumbered, see `keep_used_params`), and the portal runs the rewritten statement as a read
//! the proxy carries out, with the rest of the client's parameters.

use super::session::{Exec, Step, R};
use crate::error::{sqlstate, PgError};
use crate::router::aggregate::group_names;
use crate::router::params::Params;
use crate::router::plan::{keep_used_params, plan, Plan};
use crate::router::uncorrelated::{self, unmatched};
use crate::txn::state::TxnState;
use sqlparser::ast::{Query, Statement};

/// How much of the subqueries' answers one statement may hold in the proxy.
pub const SUBQUERY_BYTES: usize = 16 << 20;

/// Subqueries inside subqueries are answered from the inside out, this deep at most.
pub(super) const DEPTH: usize = 4;

/// Why a subquery could not be answered.
pub(super) enum Unanswered {
    /// The client has its error already.
    Told,
    /// It names something outside itself: the statement keeps the planner's refusal.
    Outside,
}

/// Parameters of the extended protocol and the types the statement declared for them (both
/// empty in the simple protocol).
#[derive(Clone, Default)]
pub struct Bound {
    pub params: Params,
    pub types: Vec<u32>,
}

impl Bound {
    /// Whether a parameter is of a user-defined type, whose OID may differ between the shards
    /// that would read the values.
    pub fn declares_user_types(&self) -> bool {
        self.types
            .iter()
            .any(|o| crate::backend::catalog::type_oids::is_user(*o))
    }

    /// The parameters `q` uses, `q` renumbered to them.
    pub(super) fn used_by<V>(&self, q: &mut V) -> Bound
    where
        V: sqlparser::ast::Visit + sqlparser::ast::VisitMut,
    {
        if self.params.values.is_empty() {
            return Bound::default();
        }
        match keep_used_params(q, self.params.values.len()) {
            None => self.clone(),
            Some(picks) => Bound {
                params: self.params.pick(&picks),
                types: picks
                    .iter()
                    .map(|&i| self.types.get(i).copied().unwrap_or(0))
                    .collect(),
            },
        }
    }
}

/// A statement with its subqueries answered, ready to run: its plan, its text, and the
/// parameters it still uses.
pub struct Answered {
    pub plan: Plan,
    pub sql: String,
    pub bound: Bound,
}

impl Exec<'_> {
    /// Runs `stmt`, which the planner refused with `refusal` (see
    /// `router::uncorrelated::answered_first`), with its subqueries answered first; `sql` is
    /// the client's text.
    pub async fn subqueries_first(
        &mut self,
        stmt: &Statement,
        sql: &str,
        refusal: PgError,
    ) -> R<Step> {
        if matches!(self.txn, TxnState::Failed(_)) {
            return self.run_plan(Plan::Reject(refusal), sql).await;
        }
        let (own, answered) = match self
            .answer_subqueries(stmt, &Bound::default(), refusal)
            .await?
        {
            Ok(a) => a,
            Err(step) => return Ok(step),
        };
        let step = match answered.plan {
            plan @ Plan::Scatter { .. } => {
                // A scatter drops error positions when its text is not the client's.
                self.run_plan(plan, sql).await?
            }
            plan => {
                self.rewritten = true;
                let step = self.run_plan(plan, &answered.sql).await;
                self.rewritten = false;
                step?
            }
        };
        self.end_own_implicit(own && step == Step::Done, step).await
    }

    /// For a Bind of `stmt` (refused by the planner with `refusal`) with `bound`: the read the
    /// portal carries out, its subqueries answered now. A transaction of the proxy's own that
    /// this opens ends at Sync. Err: the step, the client told why.
    pub async fn answered_portal(
        &mut self,
        stmt: &Statement,
        bound: &Bound,
        refusal: PgError,
    ) -> R<Result<Answered, Step>> {
        if bound.declares_user_types() {
            return Ok(Err(self.error(&refusal)));
        }
        let answered = match self.answer_subqueries(stmt, bound, refusal).await? {
            Ok((_, a)) => a,
            Err(step) => return Ok(Err(step)),
        };
        Ok(Ok(match answered.plan {
            // Run as a read the proxy carries out: no shard prepared this text.
            Plan::Shard {
                shard,
                write: false,
            } => Answered {
                plan: Plan::Scatter {
                    shards: vec![shard],
                    sql: answered.sql.clone(),
                    merge: Default::default(),
                },
                ..answered
            },
            Plan::Scatter { .. } => answered,
            Plan::Reject(e) => return Ok(Err(self.error(&e))),
            _ => {
                return Ok(Err(self.error(&PgError::error(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "a statement whose subqueries the proxy answers first must be a read",
                ))))
            }
        }))
    }

    /// `stmt` with its subqueries answered (see the module's notes), planned; with whether a
    /// transaction of the proxy's own was opened for it. Err: the client has been told.
    async fn answer_subqueries(
        &mut self,
        stmt: &Statement,
        bound: &Bound,
        refusal: PgError,
    ) -> R<Result<(bool, Answered), Step>> {
        let Statement::Query(q) = stmt else {
            return Ok(Err(self.error(&refusal)));
        };
        if !q.locks.is_empty() || matches!(self.txn, TxnState::Failed(_)) {
            return Ok(Err(self.error(&refusal)));
        }
        let (mut q, mut refusal) = (q.clone(), refusal);
        // A GROUP BY name that is an alias and maybe a column, settled from the catalog: the
        // planner's refusal, or that of a derived table or subquery read first holding one.
        if group_names::unresolved(&refusal) || group_names::tables_to_read(&q).is_some() {
            let resolved = match self.group_names_resolved(&q).await? {
                Err(step) => return Ok(Err(step)),
                Ok(None) => return Ok(Err(self.error(&refusal))),
                Ok(Some(resolved)) => resolved,
            };
            let mut renumbered = resolved.clone();
            let used = bound.used_by(&mut renumbered);
            match plan(
                &Statement::Query(Box::new(renumbered.clone())),
                &self.placement,
                &used.params,
            ) {
                Plan::Reject(e) if uncorrelated::answered_in_parts(&e) => {
                    (q, refusal) = (Box::new(resolved), e);
                }
                plan => {
                    let sql = renumbered.to_string();
                    return Ok(Ok((
                        false,
                        Answered {
                            plan,
                            sql,
                            bound: used,
                        },
                    )));
                }
            }
        }
        // Subqueries naming outer columns bare may be tied after all: written qualified, the
        // statement may plan as it stands, or have fewer parts to answer first.
        if uncorrelated::answered_first(&refusal) {
            match self.outer_columns_qualified(&q).await? {
                Err(step) => return Ok(Err(step)),
                Ok(None) => {}
                Ok(Some(mut qualified)) => {
                    let bound = bound.used_by(&mut qualified);
                    let sql = qualified.to_string();
                    match plan(
                        &Statement::Query(Box::new(qualified.clone())),
                        &self.placement,
                        &bound.params,
                    ) {
                        Plan::Reject(e) if uncorrelated::answered_in_parts(&e) => {
                            (q, refusal) = (Box::new(qualified), e);
                        }
                        plan => return Ok(Ok((false, Answered { plan, sql, bound }))),
                    }
                }
            }
        }
        // An outer join of another shape than the one read in two parts keeps its refusal,
        // whatever the transaction.
        if unmatched::refused_for_kept_rows(&refusal)
            && unmatched::kept_join(&uncorrelated::ctes_inlined((*q).clone()), &self.placement)
                .is_none()
        {
            return Ok(Err(self.error(&refusal)));
        }
        // An EXISTS correlated by equalities off the shard key reads as an IN answered first.
        if uncorrelated::answered_first(&refusal) {
            if let Some(d) = uncorrelated::equality_exists::decorrelated(&q, &self.placement) {
                *q = d;
            }
        }
        let own = match self.one_snapshot_for_two_reads().await? {
            Ok(own) => own,
            // One read after all: no snapshot to share.
            Err(()) if uncorrelated::one_read_when_answered_first(&q, &self.placement) => false,
            Err(()) => {
                return Ok(Err(self.error(&self.two_reads_refused(
                    &refusal,
                    "part of this statement (a subquery over several shards, or which reference rows of an outer join some shard matches)",
                ))))
            }
        };
        let mut query = match self.substituted((*q).clone(), bound, 0).await? {
            Ok(query) => query,
            Err(Unanswered::Told) => return Ok(Err(Step::Failed)),
            Err(Unanswered::Outside) => return Ok(Err(self.error(&refusal))),
        };
        if uncorrelated::answered_first(&refusal) {
            metrics::counter!(crate::metrics::SUBQUERIES_ANSWERED_FIRST).increment(1);
        }
        crate::failpoint::hit(crate::failpoint::SUBQUERY_BEFORE_STATEMENT).await;
        let bound = bound.used_by(&mut query);
        let sql = query.to_string();
        let plan = match self.planned(&query, &bound).await? {
            Ok(plan) => plan,
            Err(Unanswered::Told) => return Ok(Err(Step::Failed)),
            Err(Unanswered::Outside) => return Ok(Err(self.error(&refusal))),
        };
        Ok(Ok((own, Answered { plan, sql, bound })))
    }

    /// The plan of `query`, its subqueries answered already; an outer join that keeps a
    /// reference table's rows read in two parts (`kept_rows_plan`).
    pub(super) async fn planned(
        &mut self,
        query: &Query,
        bound: &Bound,
    ) -> R<Result<Plan, Unanswered>> {
        match plan(
            &Statement::Query(Box::new(query.clone())),
            &self.placement,
            &bound.params,
        ) {
            Plan::Reject(e) if unmatched::refused_for_kept_rows(&e) => {
                self.kept_rows_plan(query, bound, e).await
            }
            other => Ok(Ok(other)),
        }
    }

    /// `q` with its subqueries that no shard answers alone replaced by their answers.
    pub(super) async fn substituted(
        &mut self,
        q: Query,
        bound: &Bound,
        depth: usize,
    ) -> R<Result<Query, Unanswered>> {
        let mut q = uncorrelated::ctes_inlined(q);
        let candidates = uncorrelated::candidates(&q, &self.placement);
        Ok(self
            .answered_in(&mut q, candidates, bound, depth)
            .await?
            .map(|()| q))
    }

    /// `node` with each of `candidates` replaced by its answer.
    pub(super) async fn answered_in<N: sqlparser::ast::VisitMut + Send>(
        &mut self,
        node: &mut N,
        candidates: Vec<uncorrelated::Candidate>,
        bound: &Bound,
        depth: usize,
    ) -> R<Result<(), Unanswered>> {
        let mut found = Vec::new();
        for c in candidates {
            if matches!(
                c.kind,
                uncorrelated::Kind::SemiJoin { .. } | uncorrelated::Kind::FirstOfRow
            ) {
                let Some(columns) = uncorrelated::semi_join::columns(&c.query) else {
                    return Ok(Err(Unanswered::Outside));
                };
                let refused = |name: &str, oid: u32| {
                    PgError::error(
                        sqlstate::FEATURE_NOT_SUPPORTED,
                        format!("a subquery over a sharded table correlated to a reference table whose column {name} is of a type (OID {oid}) whose text can differ between its copies is not supported"),
                    )
                    .with_hint("Join the tables on the condition instead, or read the two tables apart.")
                };
                if let Err(e) = self
                    .rows_known_by_text(columns, bound, depth, refused)
                    .await?
                {
                    return Ok(Err(e));
                }
            }
            let mut answer = match Box::pin(self.answer_of(c.query.clone(), bound, depth)).await? {
                Ok(a) => a,
                Err(e) => return Ok(Err(e)),
            };
            // Answers of whole rows' texts: no value of theirs is written back.
            let exists = matches!(
                c.kind,
                uncorrelated::Kind::Exists { .. } | uncorrelated::Kind::SemiJoin { .. }
            );
            if !exists {
                self.name_types(&mut answer).await;
                if let Err(e) = self.keep_collations(&mut answer, &c.query).await {
                    self.error(&e);
                    return Ok(Err(Unanswered::Told));
                }
            }
            if !exists && self.may_hold_floats(&answer).await && !self.floats_exact().await? {
                self.error(
                    &PgError::error(
                        sqlstate::FEATURE_NOT_SUPPORTED,
                        "a float answer of a subquery over several shards needs extra_float_digits of 1 or more",
                    )
                    .with_hint("SET extra_float_digits = 1 (the default)."),
                );
                return Ok(Err(Unanswered::Told));
            }
            match uncorrelated::replacement(&c, &answer) {
                Ok(r) => {
                    let name = uncorrelated::item_name(&c, &answer);
                    found.push((c.site, r, name));
                }
                Err(e) => {
                    self.error(&e);
                    return Ok(Err(Unanswered::Told));
                }
            }
        }
        uncorrelated::replace(node, &found);
        Ok(Ok(()))
    }
}
