//! A SELECT whose subqueries over sharded tables no shard can answer alone, answered by
//! running each such subquery first (`router::uncorrelated` finds them and writes their answers
//! back), then the statement with the answers in their place.
//!
//! One PostgreSQL reads the subquery and the statement in one snapshot; here they are two
//! statements, so they must share the snapshot of each shard they read:
//!
//! - outside a transaction block the proxy opens a REPEATABLE READ transaction of its own for
//!   the two (one statement of READ COMMITTED reads one snapshot too, so the client sees the
//!   level it asked for), committed when the statement is done;
//! - in a REPEATABLE READ or SERIALIZABLE transaction the transaction's snapshot serves both;
//! - in a READ COMMITTED transaction block each statement takes a new snapshot, and the
//!   statement is refused with a hint.
//!
//! In `snapshot` consistency the same holds with one cut for the two. A subquery that fails
//! alone for a name it cannot find belonged to the outer query: the statement gets the
//! planner's refusal. The rows a subquery returns are held in the proxy while the statement
//! runs, at most `SUBQUERY_BYTES`. Simple protocol only: a statement of the extended protocol
//! is described before any of it runs, and stays refused.

use super::session::{Exec, Step, R};
use crate::error::{sqlstate, PgError};
use crate::placement::HOME;
use crate::protocol::inspect;
use crate::router::params::Params;
use crate::router::plan::{plan, Plan};
use crate::router::uncorrelated::{self, Answer};
use crate::txn::state::{Isolation, TxnState};
use sqlparser::ast::{Query, Statement};

/// How much of the subqueries' answers one statement may hold in the proxy.
pub const SUBQUERY_BYTES: usize = 16 << 20;

/// Subqueries inside subqueries are answered from the inside out, this deep at most.
const DEPTH: usize = 4;

/// Float types, whose text is exact only with `extra_float_digits` of 1 or more.
const FLOAT4: u32 = 700;
const FLOAT8: u32 = 701;

/// Why a subquery could not be answered.
enum Unanswered {
    /// The client has its error already.
    Told,
    /// It names something outside itself: the statement keeps the planner's refusal.
    Outside,
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
        let Statement::Query(q) = stmt else {
            return Ok(self.error(&refusal));
        };
        if matches!(self.txn, TxnState::Failed(_)) || !q.locks.is_empty() {
            return self.run_plan(Plan::Reject(refusal), sql).await;
        }
        let own = match self.txn {
            TxnState::Idle => {
                let begin = match self.txn_isolation().await? {
                    Isolation::ReadCommitted => "BEGIN ISOLATION LEVEL REPEATABLE READ",
                    _ => "BEGIN",
                };
                self.txn = self.new_txn(begin.into(), true);
                true
            }
            _ => {
                if self.txn_isolation().await? == Isolation::ReadCommitted {
                    return Ok(self.error(
                        &PgError::error(
                            sqlstate::FEATURE_NOT_SUPPORTED,
                            format!("{}, in a READ COMMITTED transaction block", refusal.message),
                        )
                        .with_hint("The proxy answers such a subquery first, which needs one snapshot for it and the statement: run the statement outside a transaction block, or in a REPEATABLE READ transaction."),
                    ));
                }
                false
            }
        };
        let query = match self.substituted((**q).clone(), 0).await? {
            Ok(query) => query,
            Err(Unanswered::Told) => return Ok(Step::Failed),
            Err(Unanswered::Outside) => return Ok(self.error(&refusal)),
        };
        metrics::counter!(crate::metrics::SUBQUERIES_ANSWERED_FIRST).increment(1);
        crate::failpoint::hit(crate::failpoint::SUBQUERY_BEFORE_STATEMENT).await;
        let text = query.to_string();
        let step = match plan(
            &Statement::Query(Box::new(query)),
            &self.placement,
            &Params::default(),
        ) {
            plan @ Plan::Scatter { .. } => {
                // A scatter drops error positions when its text is not the client's.
                self.run_plan(plan, sql).await?
            }
            plan => {
                self.rewritten = true;
                let step = self.run_plan(plan, &text).await;
                self.rewritten = false;
                step?
            }
        };
        self.end_own_implicit(own && step == Step::Done, step).await
    }

    /// `q` with its subqueries that no shard answers alone replaced by their answers.
    async fn substituted(&mut self, mut q: Query, depth: usize) -> R<Result<Query, Unanswered>> {
        let mut found = Vec::new();
        for c in uncorrelated::candidates(&q, &self.placement) {
            let answer = match Box::pin(self.answer_of(c.query.clone(), depth)).await? {
                Ok(a) => a,
                Err(e) => return Ok(Err(e)),
            };
            if answer
                .columns
                .iter()
                .any(|c| matches!(c.1, FLOAT4 | FLOAT8))
                && !matches!(c.kind, uncorrelated::Kind::Exists { .. })
                && !self.floats_exact().await?
            {
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
        uncorrelated::replace(&mut q, &found);
        Ok(Ok(q))
    }

    /// The rows of `q` as the proxy answers it to a client, held instead of sent.
    async fn answer_of(&mut self, q: Query, depth: usize) -> R<Result<Answer, Unanswered>> {
        let stmt = Statement::Query(Box::new(q));
        let mut planned = plan(&stmt, &self.placement, &Params::default());
        let mut text = stmt.to_string();
        if let Plan::Reject(e) = &planned {
            if uncorrelated::answered_first(e) && depth < DEPTH {
                let Statement::Query(q) = stmt else {
                    unreachable!("built as a query above")
                };
                let inner = match self.substituted(*q, depth + 1).await? {
                    Ok(inner) => inner,
                    Err(e) => return Ok(Err(e)),
                };
                text = inner.to_string();
                planned = plan(
                    &Statement::Query(Box::new(inner)),
                    &self.placement,
                    &Params::default(),
                );
            }
        }
        match planned {
            Plan::Shard { write: false, .. } | Plan::Scatter { .. } => {}
            Plan::Reject(e) if uncorrelated::answered_first(&e) => {
                return Ok(Err(Unanswered::Outside))
            }
            Plan::Reject(e) => {
                self.error(&e);
                return Ok(Err(Unanswered::Told));
            }
            _ => return Ok(Err(Unanswered::Outside)),
        }
        let mark = self.out.len();
        let held = std::mem::replace(&mut self.hold_output, true);
        let step = self.run_plan(planned, &text).await;
        self.hold_output = held;
        let step = step?;
        let captured = self.out.split_off(mark);
        if captured.len() > SUBQUERY_BYTES {
            self.error(&PgError::error(
                sqlstate::PROGRAM_LIMIT_EXCEEDED,
                format!("a subquery over several shards returned more than {} MiB, which the proxy holds while the statement runs", SUBQUERY_BYTES >> 20),
            ).with_hint("Narrow the subquery, or join co-located tables on their shard keys instead."));
            return Ok(Err(Unanswered::Told));
        }
        let mut answer = Answer::default();
        let mut failure = None;
        let mut at = 0;
        while let Some(head) = captured.get(at..at + 5) {
            let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
            let Some(frame) = captured.get(at..at + 1 + len) else {
                break;
            };
            let body = &frame[5..];
            match head[0] {
                b'T' => {
                    answer.columns = inspect::row_description(body)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|f| (f.name, f.type_oid, f.typmod))
                        .collect();
                }
                b'D' => {
                    let n = answer.columns.len();
                    answer.rows.push(
                        (0..n)
                            .map(|i| {
                                inspect::data_row_column(body, i)
                                    .flatten()
                                    .map(|v| String::from_utf8_lossy(v).into_owned())
                            })
                            .collect(),
                    );
                }
                b'E' => failure = Some(frame),
                // Notices and warnings are the client's, as they would be of its statement.
                b'N' => self.out.extend_from_slice(frame),
                _ => {}
            }
            at += 1 + len;
        }
        match failure {
            None if step == Step::Done => Ok(Ok(answer)),
            None => Ok(Err(Unanswered::Told)),
            Some(frame) => {
                let code = inspect::error_field(&frame[5..], b'C').unwrap_or_default();
                if matches!(code, "42703" | "42P01") {
                    return Ok(Err(Unanswered::Outside));
                }
                // Its position is in a text the client did not send.
                let placed = inspect::map_error_position(frame, |_| None);
                self.out.extend_from_slice(&placed);
                Ok(Err(Unanswered::Told))
            }
        }
    }

    /// Whether the session's float text reads back as the same value.
    async fn floats_exact(&mut self) -> R<bool> {
        let (values, _) = self.query_values(HOME, "SHOW extra_float_digits").await?;
        Ok(values
            .first()
            .and_then(|v| v.trim().parse::<i32>().ok())
            .is_some_and(|d| d >= 1))
    }
}
