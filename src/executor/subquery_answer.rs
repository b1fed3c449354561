//! A subquery's answer, read the way a client's SELECT would be and held in the proxy instead
//! of sent: its rows as text, its columns' types named as every shard can read them back, and
//! the collations its text columns carried. `subqueries_first` writes such answers back into
//! the statement that needed them; `insert_select` and the two-part reads use them too.
//!
//! Invariants: an answer never holds more than `SUBQUERY_BYTES`; a column whose text would
//! not read back as the same value on another shard (floats below `extra_float_digits` 1, a
//! collation the proxy cannot name) is refused rather than written back.

use super::merge::collation::{self, Use};
use super::merge::scatter_request;
use super::rebind::rebind;
use super::session::{Exec, Step, R};
use super::subqueries_first::{Bound, Unanswered, DEPTH, SUBQUERY_BYTES};
use super::value;
use crate::backend::catalog::type_oids::is_user;
use crate::error::{sqlstate, PgError};
use crate::placement::HOME;
use crate::protocol::inspect;
use crate::protocol::inspect::FieldDesc;
use crate::router::plan::Plan;
use crate::router::uncorrelated::{self, unmatched, Answer};
use sqlparser::ast::{Query, Statement};

/// Types whose text writes floats, exact only with `extra_float_digits` of 1 or more: float4,
/// float8, their arrays, and the geometric types (point, lseg, path, box, polygon, line,
/// circle) with theirs.
const FLOAT_TEXT: [u32; 18] = [
    700, 701, 1021, 1022, 600, 601, 602, 603, 604, 628, 718, 1017, 1018, 1019, 1020, 1027, 629, 719,
];

impl Exec<'_> {
    /// Whether the reference table whose rows a first read knows by their text (`columns`:
    /// its columns and no row) has only columns whose text every copy writes alike (see
    /// `unmatched`); Err once the client has been told, by `refused(column, oid)`, that not.
    pub(super) async fn rows_known_by_text(
        &mut self,
        columns: Query,
        bound: &Bound,
        depth: usize,
        refused: impl FnOnce(&str, u32) -> PgError,
    ) -> R<Result<(), Unanswered>> {
        let described = match Box::pin(self.answer_of(columns, bound, depth)).await? {
            Ok(answer) => answer,
            Err(e) => return Ok(Err(e)),
        };
        if let Some((name, oid, _)) = described
            .columns
            .iter()
            .find(|c| unmatched::text_differs_between_copies(c.1))
        {
            self.error(&refused(name, *oid));
            return Ok(Err(Unanswered::Told));
        }
        Ok(Ok(()))
    }

    /// The rows of `q` as the proxy answers it to a client, held instead of sent.
    pub(super) async fn answer_of(
        &mut self,
        mut q: Query,
        bound: &Bound,
        depth: usize,
    ) -> R<Result<Answer, Unanswered>> {
        let mut bound = bound.used_by(&mut q);
        let mut text = q.to_string();
        let mut planned = match self.planned(&q, &bound).await? {
            Ok(planned) => planned,
            Err(e) => return Ok(Err(e)),
        };
        if let Plan::Reject(e) = &planned {
            if uncorrelated::answered_first(e) && depth < DEPTH {
                let mut inner = match self.substituted(q, &bound, depth + 1).await? {
                    Ok(inner) => inner,
                    Err(e) => return Ok(Err(e)),
                };
                bound = bound.used_by(&mut inner);
                text = inner.to_string();
                planned = match self.planned(&inner, &bound).await? {
                    Ok(planned) => planned,
                    Err(e) => return Ok(Err(e)),
                };
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
        let step = self.held_read(planned, &text, &bound).await;
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
        Ok(self.read_answer(&captured, step))
    }

    /// Runs a read planned for `text`: as a Query without parameters, re-bound on its shards
    /// with them (the description asked for too).
    async fn held_read(&mut self, planned: Plan, text: &str, bound: &Bound) -> R<Step> {
        if bound.params.values.is_empty() {
            return self.run_plan(planned, text).await;
        }
        let (shards, sql, merge) = match planned {
            Plan::Scatter { shards, sql, merge } => (shards, sql, merge),
            Plan::Shard { shard, .. } => (vec![shard], text.to_string(), Default::default()),
            _ => unreachable!("only reads are run here"),
        };
        let requests: Vec<bytes::Bytes> = shards
            .iter()
            .map(|&s| {
                let sql = merge.text_for(s, &sql);
                match &merge.picks {
                    None => rebind(sql, &bound.params, &bound.types, &[], true, true),
                    Some(picks) => {
                        let types: Vec<u32> = picks
                            .iter()
                            .map(|&p| bound.types.get(p).copied().unwrap_or(0))
                            .collect();
                        rebind(sql, &bound.params.pick(picks), &types, &[], true, true)
                    }
                }
            })
            .collect();
        let computes = merge.aggregate.as_ref().is_some_and(|a| a.computes());
        self.bound = computes.then(|| (bound.params.clone(), bound.types.clone()));
        let step = scatter_request(self, &shards, &requests, &merge, true).await;
        self.bound = None;
        step
    }

    /// A held answer's columns and rows; its error passed on to the client (or, for a name
    /// the subquery could not find alone, left for the statement's refusal).
    fn read_answer(&mut self, captured: &[u8], step: Step) -> Result<Answer, Unanswered> {
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
                    let fields = inspect::row_description(body).unwrap_or_default();
                    answer.origins = fields.iter().map(|f| (f.table_oid, f.column)).collect();
                    answer.columns = fields
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
            None if step == Step::Done => Ok(answer),
            None => Err(Unanswered::Told),
            Some(frame) => {
                let code = inspect::error_field(&frame[5..], b'C').unwrap_or_default();
                if matches!(code, "42703" | "42P01") {
                    return Err(Unanswered::Outside);
                }
                // Its position is in a text the client did not send.
                let placed = inspect::map_error_position(frame, |_| None);
                self.out.extend_from_slice(&placed);
                Err(Unanswered::Told)
            }
        }
    }

    /// Names the answer's column types that `type_text` does not know (types created in the
    /// database, as the first shard, whose OIDs the columns carry, names them; built-in ones
    /// outside its table), so that its values can be written back as literals every shard
    /// reads as that type. A type not found stays unnamed: its column is refused.
    pub(super) async fn name_types(&mut self, answer: &mut Answer) {
        let Some(catalog) = self.catalog else {
            return;
        };
        for i in 0..answer.columns.len() {
            let oid = answer.columns[i].1;
            if oid == 0 || answer.column_type(i).is_some() {
                continue;
            }
            match catalog.cast_name(HOME, oid).await {
                Ok(Some(name)) => answer.named_types.push((oid, name)),
                Ok(None) => {}
                Err(e) => tracing::debug!("naming type {oid} of a subquery's answer: {e}"),
            }
        }
    }

    /// Text written back as literals compares under its type's collation (the database's
    /// default for text), where the statement would compare the subquery's values under the
    /// column's. A column straight from a table's column keeps that column's collation
    /// (`Answer::collations`); text computed from columns is refused when the subquery's
    /// tables hold any collation the default would not stand for, as text a merged item
    /// evaluates again is (see `merge::collation`).
    pub(super) async fn keep_collations(
        &mut self,
        answer: &mut Answer,
        q: &Query,
    ) -> Result<(), PgError> {
        let Some(catalog) = self.catalog else {
            return Ok(());
        };
        let scope = crate::router::plan::text_scope(
            &Statement::Query(Box::new(q.clone())),
            &self.placement,
        );
        for (i, (name, oid, typmod)) in answer.columns.iter().enumerate() {
            let text = value::is_text(*oid) || value::is_text_array(*oid);
            // Only these may have a collation of their own (a domain's is its type's).
            if !text && !is_user(*oid) {
                continue;
            }
            match answer.origins.get(i).copied().unwrap_or((0, 0)) {
                // A set operation's column combines its branches' collations; the description
                // names the first branch's column only.
                (table, column) if table != 0 && column > 0 && !scope.set_operation => {
                    let clause = collation::column_clause(catalog, (table, column), name).await?;
                    if let Some(clause) = clause {
                        answer.collations.push((i, clause));
                    }
                }
                _ if text => {
                    let field = FieldDesc {
                        name: name.clone(),
                        table_oid: 0,
                        column: 0,
                        type_oid: *oid,
                        typmod: *typmod,
                        format: 0,
                    };
                    if let Some(e) =
                        collation::problem(self, &[field], &[(0, Use::Evaluated)], &scope).await
                    {
                        return Err(e);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Whether a column's text may hold a float (one of `FLOAT_TEXT`, or a type created in
    /// the database other than an enum).
    pub(super) async fn may_hold_floats(&self, answer: &Answer) -> bool {
        for &(_, oid, _) in &answer.columns {
            let possible = match oid {
                _ if FLOAT_TEXT.contains(&oid) => true,
                _ if is_user(oid) => match self.catalog {
                    Some(catalog) => !catalog.is_enum(HOME, oid).await.unwrap_or(false),
                    None => true,
                },
                _ => false,
            };
            if possible {
                return true;
            }
        }
        false
    }

    /// Whether the session's float text reads back as the same value.
    pub(super) async fn floats_exact(&mut self) -> R<bool> {
        let (values, _) = self.query_values(HOME, "SHOW extra_float_digits").await?;
        Ok(values
            .first()
            .and_then(|v| v.trim().parse::<i32>().ok())
            .is_some_and(|d| d >= 1))
    }
}
