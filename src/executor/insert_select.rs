//! INSERT ... SELECT into a sharded table from a source that one shard answers: functions
//! (`generate_series`, `unnest` as Django's `bulk_create` sends), a VALUES list (SQLAlchemy's
//! multi-row inserts, `SELECT ... FROM (VALUES ...) ORDER BY sen_counter`), reference tables;
//! or from a source over several shards whose rows need no merging (no ORDER BY, LIMIT,
//! DISTINCT or aggregate across shards), read from each shard in turn. A source the merge
//! answers (groups, an order and a limit, DISTINCT, subqueries answered first) is read once
//! as a client's SELECT would be (`subqueries_first::answer_of`), into a sharded or a
//! reference table alike.
//!
//! The proxy runs the source on its shards (inside the session's transaction, with the
//! client's bound values), reads its rows as text, and rewrites the statement as INSERT ...
//! VALUES of those rows as literals, in the source's order. The rewritten INSERT is planned like
//! any other: rows are split by key (keys from a sequence filled in first), written in one
//! distributed transaction, and RETURNING comes back in row order. PostgreSQL coerces each
//! literal to its column's type as it would the source's value. The source's rows are held in
//! memory for the statement, as the statement's own VALUES would be, at most `SOURCE_BYTES`
//! (beyond that the statement fails with 54000 and nothing is written).
//!
//! An INSERT ... SELECT into a reference table is read the same way, from the one shard its
//! source reads, when the copies would each read it their own way (see `copies_source`).
//! A source found without rows becomes one of none (`router::plan::no_rows`): no shard reads
//! it again, where a row committed since would be written whatever its key.
//!
//! An INSERT ... SELECT the planner already places (a co-located table's own keys on one shard)
//! is left to it; so is a source over several shards in `snapshot` consistency (its reads would
//! need a cut), which the planner refuses.

use super::given_lookup::GivenValues;
use super::sequence_moves::SequenceRoute;
use super::session::{Exec, Step, R};
use crate::error::PgError;
use crate::placement::TableRule;
use crate::protocol::{build, inspect};
use crate::router::params::Params;
use crate::router::plan::{keep_used_params, no_rows, plan, Plan};
use bytes::BytesMut;
use sqlparser::ast::{Expr, Parens, SetExpr, Statement, TableObject, Value, Values};

/// How much of a source's rows an INSERT ... SELECT may hold in the proxy.
pub const SOURCE_BYTES: usize = 64 << 20;

/// What the proxy makes of an INSERT before planning it.
pub enum Rewrite {
    /// Plan the statement as written.
    AsWritten,
    /// Plan and run this statement instead: the source's rows as VALUES, keys from a sequence
    /// filled in.
    Rewritten(Box<Statement>),
    /// Run it as written on this shard: a sequence call, or a `setval` over the rows of tables
    /// living there (see `sequence_moves`).
    OnShard(usize),
    /// Run it as written on every shard, as a write of this reference table (a `setval` or
    /// `nextval` of a sequence each copy of the table has, see `sequence_moves`).
    OnEveryCopy(String),
    /// The source failed; its error is written for the client.
    Failed,
}

/// `sql` on each of `shards` as a write of reference table `table` (see `Rewrite::OnEveryCopy`):
/// the client gets one copy's answer.
pub fn on_every_copy(sql: &str, table: String, shards: usize) -> Plan {
    Plan::Write {
        parts: (0..shards).map(|s| (s, sql.to_string())).collect(),
        sum: false,
        picks: Vec::new(),
        serialize: Some(table),
        row_order: Vec::new(),
    }
}

impl Exec<'_> {
    /// The INSERT as the shards should run it (see `Rewrite`); `params` and `types` are the
    /// client's bound values and declared types (extended protocol). An UPDATE is read here
    /// too, for the values it sets that the cluster must look for, and a call moving a
    /// sequence.
    pub async fn rewrite_insert(
        &mut self,
        stmt: &Statement,
        params: &Params,
        types: &[u32],
    ) -> R<Rewrite> {
        // A failed transaction refuses the statement anyway; nothing is read or drawn for it.
        if let crate::txn::state::TxnState::Failed(_) = self.txn {
            return Ok(Rewrite::AsWritten);
        }
        if !self.upsert_arbiters_kept(stmt).await? {
            return Ok(Rewrite::Failed);
        }
        // A setval over a table's rows runs as the call alone, its aggregates read first (see
        // `sequence_reset`).
        match self.setval_from_rows(stmt, params, types).await? {
            Ok(None) => {}
            Ok(Some((alone, from))) => {
                return self.reset_from_rows(alone, from, params, types).await;
            }
            Err(()) => return Ok(Rewrite::Failed),
        }
        // A call moving a sequence runs where its tables draw from it (see `sequence_moves`).
        match self.sequence_call_checked(stmt, params, types).await? {
            Ok(SequenceRoute::Home) => {}
            Ok(SequenceRoute::Copies(table)) => return Ok(Rewrite::OnEveryCopy(table)),
            Ok(SequenceRoute::Shard(shard)) => return Ok(Rewrite::OnShard(shard)),
            Err(()) => return Ok(Rewrite::Failed),
        }
        // nextval() in an INSERT's rows, drawn from the cluster's sequence; refused elsewhere
        // in a statement on a sharded table (see `inline_nextval`).
        let drawn = match self.nextval_drawn(stmt, params, types).await? {
            Ok(drawn) => drawn,
            Err(()) => return Ok(Rewrite::Failed),
        };
        let stmt = drawn.as_ref().unwrap_or(stmt);
        // An UPDATE setting a value the cluster must look for (see `given_update`) runs as the
        // proxy's write, as such an INSERT does, and its route is never learned by shape.
        if let Statement::Update(_) = stmt {
            return Ok(match self.given_update(stmt, params).await? {
                Ok(None) => Rewrite::AsWritten,
                Ok(given) => {
                    self.given = given;
                    Rewrite::Rewritten(Box::new(stmt.clone()))
                }
                Err(()) => Rewrite::Failed,
            });
        }
        let materialized = match self.materialize_insert(stmt, params, types).await? {
            Rewrite::AsWritten => None,
            Rewrite::Rewritten(values) => Some(*values),
            other => return Ok(other),
        };
        let current = materialized.as_ref().unwrap_or(stmt);
        // Judged on the values as the client gave them, before the sequence fills the rest;
        // the statement then runs as the proxy's, a write that looks on every shard first.
        let given = match self.given_values(current, params, types).await? {
            Ok(given) => given,
            Err(()) => return Ok(Rewrite::Failed),
        };
        // An upsert's DO UPDATE may set such a column too: looked for after the write.
        let given = match self.given_update(current, params).await? {
            Ok(set) => GivenValues::joined(given, set),
            Err(()) => return Ok(Rewrite::Failed),
        };
        let looks = given.is_some();
        self.given = given;
        Ok(match self.fill_keys(current).await? {
            Some(with_keys) => Rewrite::Rewritten(Box::new(with_keys)),
            None if looks || drawn.is_some() => Rewrite::Rewritten(Box::new(current.clone())),
            None => materialized.map_or(Rewrite::AsWritten, |m| Rewrite::Rewritten(Box::new(m))),
        })
    }

    /// Where a setval over tables' rows runs, as the call alone (see `sequence_reset`). Where
    /// the rows it reads are whole (every copy of reference tables, the one shard of tables
    /// living there), the client's text runs as written.
    async fn reset_from_rows(
        &mut self,
        alone: Statement,
        from: Vec<TableRule>,
        params: &Params,
        types: &[u32],
    ) -> R<Rewrite> {
        let route = self.sequence_call_checked(&alone, params, types).await?;
        let whole_on = |shard: Option<usize>| {
            from.iter().all(|r| {
                *r == TableRule::Reference
                    || shard.is_some_and(|shard| *r == TableRule::Pinned { shard })
            })
        };
        Ok(match route {
            Err(()) => Rewrite::Failed,
            Ok(SequenceRoute::Home) => Rewrite::Rewritten(Box::new(alone)),
            Ok(SequenceRoute::Copies(table)) if whole_on(None) => Rewrite::OnEveryCopy(table),
            Ok(SequenceRoute::Shard(shard)) if whole_on(Some(shard)) => Rewrite::OnShard(shard),
            Ok(_) => {
                self.error(
                    &PgError::error(
                        crate::error::sqlstate::FEATURE_NOT_SUPPORTED,
                        "setval from the rows of a table placed apart from the tables its sequence fills is not supported",
                    )
                    .with_hint("Read the value first, then move the sequence to it: SELECT setval('a_sequence', <value>)."),
                );
                Rewrite::Failed
            }
        })
    }

    async fn materialize_insert(
        &mut self,
        stmt: &Statement,
        params: &Params,
        types: &[u32],
    ) -> R<Rewrite> {
        let Statement::Insert(ins) = stmt else {
            return Ok(Rewrite::AsWritten);
        };
        let TableObject::TableName(name) = &ins.table else {
            return Ok(Rewrite::AsWritten);
        };
        let table = name.to_string();
        let Some(source) = ins.source.as_deref() else {
            return Ok(Rewrite::AsWritten);
        };
        if matches!(source.body.as_ref(), SetExpr::Values(_)) {
            return Ok(Rewrite::AsWritten);
        }
        let copies = self.placement.rule(&table) == Some(&TableRule::Reference);
        // In snapshot consistency a read of several shards needs a cut, which these reads do
        // not take: left to the planner, which refuses it.
        let cut_free = self.consistency != crate::txn::snapshot::Consistency::Snapshot
            && !matches!(&self.txn, crate::txn::state::TxnState::Open(t) if t.snapshot);
        let source_plan = || {
            plan(
                &Statement::Query(Box::new(source.clone())),
                &self.placement,
                params,
            )
        };
        let (shards, text) = if copies {
            // Read once only where the copies would each read it their own way.
            match self.copies_read_once(ins, &table, source, params).await? {
                Some(shard) => (vec![shard], source.to_string()),
                // Over sharded tables every copy would read its own shard's rows alone: read
                // once, through the merge (or on the one shard a key names).
                None if cut_free
                    && (!crate::router::plan::relations(source, &self.placement)
                        .sharded
                        .is_empty()) =>
                {
                    return self.merged_source(ins, &table, source, params, types).await
                }
                None => return Ok(Rewrite::AsWritten),
            }
        } else if matches!(self.placement.rule(&table), Some(TableRule::Sharded { .. }))
            && !matches!(plan(stmt, &self.placement, params), Plan::Shard { .. })
        {
            match source_plan() {
                Plan::Shard { shard, .. } => (vec![shard], source.to_string()),
                Plan::Scatter { shards, sql, merge } if merge == Default::default() && cut_free => {
                    (shards, sql)
                }
                // Rows the merge makes (groups, an order and a limit, DISTINCT), or a source
                // whose subqueries are answered first: read through the proxy.
                planned if cut_free && merged_read(&planned) => {
                    return self.merged_source(ins, &table, source, params, types).await
                }
                _ => return Ok(Rewrite::AsWritten),
            }
        } else {
            return Ok(Rewrite::AsWritten);
        };
        let Some(Statement::Query(per_shard)) =
            sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, &text)
                .ok()
                .and_then(|mut v| v.pop())
        else {
            return Ok(Rewrite::AsWritten);
        };
        let (mut rows, mut held) = (Vec::new(), 0usize);
        for &shard in &shards {
            let source = (*per_shard).clone();
            match self
                .read_source(shard, source, params, types, &mut rows, &mut held)
                .await?
            {
                Ok(()) => {}
                Err(Some(e)) => {
                    self.shard_error(&e);
                    return Ok(Rewrite::Failed);
                }
                Err(None) => return Ok(Rewrite::Failed),
            }
            if held > SOURCE_BYTES {
                self.error(&PgError::error(
                    crate::error::sqlstate::PROGRAM_LIMIT_EXCEEDED,
                    format!("INSERT ... SELECT holds more than {} MiB of source rows in the proxy", SOURCE_BYTES >> 20),
                ).with_hint("Insert in batches (a key range or LIMIT per statement), or run it where source and target rows share a shard."));
                return Ok(Rewrite::Failed);
            }
        }
        self.values_insert(ins, &table, source, rows, shards[0])
            .await
    }

    /// The source of `ins` read as a client's SELECT would be (merged across shards, its
    /// subqueries answered first), in the session's transaction, and the statement written as
    /// INSERT ... VALUES of its rows.
    async fn merged_source(
        &mut self,
        ins: &sqlparser::ast::Insert,
        table: &str,
        source: &sqlparser::ast::Query,
        params: &Params,
        types: &[u32],
    ) -> R<Rewrite> {
        let bound = super::subqueries_first::Bound {
            params: params.clone(),
            types: types.to_vec(),
        };
        let answer = match Box::pin(self.answer_of(source.clone(), &bound, 0)).await? {
            Ok(answer) => answer,
            Err(super::subqueries_first::Unanswered::Told) => return Ok(Rewrite::Failed),
            // Not a read the proxy answers: the planner's refusal stands.
            Err(super::subqueries_first::Unanswered::Outside) => return Ok(Rewrite::AsWritten),
        };
        let rows = answer
            .rows
            .into_iter()
            .map(|row| row.into_iter().map(literal).collect())
            .collect();
        self.values_insert(ins, table, source, rows, crate::placement::HOME)
            .await
    }

    /// `ins` with `rows` (the source's, as literals) for its source; a source of no row when
    /// there are none, run on `fallback` if that cannot be written.
    async fn values_insert(
        &mut self,
        ins: &sqlparser::ast::Insert,
        table: &str,
        source: &sqlparser::ast::Query,
        rows: Vec<Vec<Expr>>,
        fallback: usize,
    ) -> R<Rewrite> {
        if rows.is_empty() {
            // Nothing is inserted, whatever a shard's own reading would find now (in READ
            // COMMITTED a row committed since, written as it stands on whichever shard ran
            // it): a source of no row, without the client's parameters (the extended protocol
            // binds none to a statement the proxy rewrote), and no conflict to handle.
            let columns = if ins.columns.is_empty() {
                self.table_columns(table).await?.len()
            } else {
                ins.columns.len()
            };
            let mut nothing = ins.clone();
            nothing.on = None;
            nothing.source = match no_rows(columns) {
                Some(q) => Some(Box::new(q)),
                None => return Ok(Rewrite::OnShard(fallback)),
            };
            return Ok(Rewrite::Rewritten(Box::new(Statement::Insert(nothing))));
        }
        let columns = if ins.columns.is_empty() {
            self.table_columns(table).await?.len()
        } else {
            ins.columns.len()
        };
        if rows[0].len() > columns {
            self.error(&PgError::error(
                "42601",
                "INSERT has more expressions than target columns",
            ));
            return Ok(Rewrite::Failed);
        }
        let mut values = ins.clone();
        let mut body = source.clone();
        body.body = Box::new(SetExpr::Values(Values {
            explicit_row: false,
            value_keyword: false,
            rows: rows.into_iter().map(Parens::with_empty_span).collect(),
        }));
        body.order_by = None;
        body.limit_clause = None;
        body.fetch = None;
        body.locks.clear();
        body.with = None;
        values.source = Some(Box::new(body));
        Ok(Rewrite::Rewritten(Box::new(Statement::Insert(values))))
    }

    /// Runs the source `query` on one shard (in the session's transaction) and appends its
    /// rows as literals; `held` grows by their size (rows past `SOURCE_BYTES` are only
    /// counted). Err: the shard's error, or None when the client has been told already.
    async fn read_source(
        &mut self,
        shard: usize,
        mut query: sqlparser::ast::Query,
        params: &Params,
        types: &[u32],
        rows: &mut Vec<Vec<Expr>>,
        held: &mut usize,
    ) -> R<Result<(), Option<crate::protocol::Frame>>> {
        if let crate::txn::state::TxnState::Open(_) = self.txn {
            if self.enlist(shard).await? == Step::Failed {
                return Ok(Err(None));
            }
        }
        // Only the parameters the source uses are bound to it.
        let request = if params.values.is_empty() {
            let mut q = BytesMut::new();
            build::query(&query.to_string(), &mut q);
            q.freeze()
        } else {
            let picks = keep_used_params(&mut query, params.values.len());
            let (params, types) = match &picks {
                Some(p) => (
                    params.pick(p),
                    p.iter()
                        .map(|&i| types.get(i).copied().unwrap_or(0))
                        .collect(),
                ),
                None => (params.clone(), types.to_vec()),
            };
            super::rebind::rebind(&query.to_string(), &params, &types, &[], false, true)
        };
        self.links[shard].send(&request).await?;
        let mut failure = None;
        loop {
            let f = self.links[shard].recv().await?;
            match f.tag {
                b'D' if failure.is_none() => {
                    *held += f.bytes.len();
                    if *held <= SOURCE_BYTES {
                        rows.push(literal_row(f.body()));
                    }
                }
                b'E' => {
                    failure.get_or_insert(f);
                }
                b'N' => self.out.extend_from_slice(&f.bytes),
                b'Z' => break,
                _ => {}
            }
        }
        Ok(failure.map_or(Ok(()), |f| Err(Some(f))))
    }
}

/// Whether the proxy answers a source planned so by reading it as a client's SELECT: a
/// scatter (merged or not), or a refusal the executor answers in parts.
fn merged_read(planned: &Plan) -> bool {
    match planned {
        Plan::Scatter { .. } => true,
        Plan::Reject(e) => crate::router::uncorrelated::answered_in_parts(e),
        _ => false,
    }
}

/// A DataRow's text values as SQL literals (NULL stays NULL).
fn literal_row(body: &[u8]) -> Vec<Expr> {
    let n = body
        .get(..2)
        .map_or(0, |b| i16::from_be_bytes([b[0], b[1]]).max(0) as usize);
    (0..n)
        .map(|i| {
            literal(
                inspect::data_row_column(body, i)
                    .flatten()
                    .map(|v| String::from_utf8_lossy(v).into_owned()),
            )
        })
        .collect()
}

/// A value as text, as an SQL literal (NULL stays NULL).
fn literal(v: Option<String>) -> Expr {
    match v {
        Some(v) => Expr::value(Value::SingleQuotedString(v)),
        None => Expr::value(Value::Null),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_rows_become_literals() {
        let mut body = 3i16.to_be_bytes().to_vec();
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(b"7");
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&4i32.to_be_bytes());
        body.extend_from_slice(b"it's");
        let row = literal_row(&body);
        let text: Vec<String> = row.iter().map(|e| e.to_string()).collect();
        assert_eq!(text, vec!["'7'", "NULL", "'it''s'"]);
    }
}
