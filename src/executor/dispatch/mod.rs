//! The dispatch of a simple Query and of a plan: each statement of the Query is parsed (or
//! routed by its learned shape), planned, and handed to the part of the executor that carries
//! that kind of plan out (`merge` for a scatter, `write` for several shards' writes, `cursor`,
//! `copy`, `sql_prepare` ...); `transaction` carries out transaction control. It sits above
//! everything else in the executor, and nothing below it depends on it.

use super::insert_select::{on_every_copy, Rewrite};
use super::session::{too_large_to_analyse, Exec, Step, R};
use super::write_subqueries;
use crate::error::PgError;
use crate::protocol::build;
use crate::router::copy::CopyPlan;
use crate::router::params::Params;
use crate::router::plan::{calls_writing_function, plan, plan_unparsed, Plan, TxnCmd};
use crate::router::uncorrelated::answered_in_parts;
use crate::txn::state::TxnState;
use bytes::BytesMut;

mod transaction;

impl Exec<'_> {
    /// A simple-protocol Query: every statement in it, then one ReadyForQuery.
    pub async fn simple_query(&mut self, text: &str) -> R<()> {
        if maybe_empty(text) && text.trim().trim_matches(';').trim().is_empty() {
            build::empty(b'I', &mut self.out);
            self.ready_for_query();
            return self.flush().await;
        }
        if let Some(err) = too_large_to_analyse(text) {
            self.error(&err);
            self.after_error().await?;
            self.ready_for_query();
            return self.flush().await;
        }
        // Where a statement ends is PostgreSQL's scanner's to say, and sqlparser's can part
        // from it (a bit string holding a backslash, say). A text the scanner reads as several
        // statements is therefore never paired with sqlparser's reading of the whole: each
        // statement is read on its own, so that none is routed by another's reading.
        let several = crate::sql::several_statements(text);
        // A text of a shape whose route was learned runs without being parsed or planned (see
        // `shape_route`). The shape is worked out once, for the parse cache too.
        let shaped = several.is_none() && self.simple_shape(text);
        if shaped {
            if let Some(plan) = self.shape_routes.plan(&self.shape, &self.placement) {
                return self.simple_planned(plan, text).await;
            }
        }
        // Not learned yet: this shape goes on to the parse cache, and the next query's is
        // worked out afresh.
        let shape = shaped.then(|| std::mem::take(&mut self.shape));
        let mut learn = shape
            .as_ref()
            .filter(|s| !self.shape_routes.knows(s, &self.placement))
            .cloned();
        // Each statement, with the characters of the Query before it (for error positions).
        type Ast = std::sync::Arc<sqlparser::ast::Statement>;
        let read_alone = |piece: &str| -> (Option<Ast>, String, u64) {
            let ahead = ahead_of(text, piece);
            match self.parse(piece) {
                Some(v) if v.len() == 1 => (Some(v[0].clone()), piece.to_string(), ahead),
                _ => (None, piece.to_string(), ahead),
            }
        };
        let statements: Vec<(Option<Ast>, String, u64)> = match several {
            Some(pieces) => pieces.into_iter().map(read_alone).collect(),
            None => match self.parse_shaped(text, shape) {
                Some(v) if v.len() == 1 => vec![(Some(v[0].clone()), text.to_string(), 0)],
                // sqlparser could not read the text, or read other than one statement where
                // the scanner finds one (or none): the statement is analysed unparsed.
                _ => crate::sql::split_statements(text)
                    .into_iter()
                    .map(|piece| (None, piece.to_string(), ahead_of(text, piece)))
                    .collect(),
            },
        };
        if statements.is_empty() {
            // Only comments: PostgreSQL answers as for an empty Query.
            build::empty(b'I', &mut self.out);
            self.ready_for_query();
            return self.flush().await;
        }
        // PostgreSQL parses the whole Query before running any of it: a syntax error anywhere
        // means nothing runs.
        if statements.len() > 1 {
            for (stmt, sql, ahead) in &statements {
                if stmt.is_none() && plan_unparsed(sql) == Plan::Unrecognised {
                    if let Some(e) = self.syntax_error(sql).await? {
                        self.ahead = *ahead;
                        self.shard_error(&e);
                        self.ahead = 0;
                        self.txn.fail();
                        if self.txn.failed_implicit() {
                            self.txn = TxnState::Idle;
                        }
                        self.ready_for_query();
                        return self.flush().await;
                    }
                }
            }
        }
        // PostgreSQL runs a multi-statement Query as one implicit transaction.
        if statements.len() > 1 && self.txn == TxnState::Idle {
            self.txn = self.new_txn("BEGIN".into(), true);
            self.take_all_for_transaction().await?;
        }
        for (stmt, mut sql, ahead) in statements {
            let mut filled = false;
            let mut stmt = stmt;
            let mut forced = None;
            if let Some(s) = &stmt {
                self.fetch_insert_columns(s).await?;
                // An INSERT the shards run rewritten: the rows of its source as VALUES, keys
                // from a sequence filled in (see `insert_select`, `key_sequence`).
                match self.rewrite_insert(s, &Params::default(), &[]).await? {
                    Rewrite::AsWritten => {}
                    Rewrite::Rewritten(rewritten) => {
                        sql = rewritten.to_string();
                        stmt = Some(std::sync::Arc::new(*rewritten));
                        filled = true;
                    }
                    Rewrite::OnShard(shard) => forced = Some(Plan::Shard { shard, write: true }),
                    Rewrite::OnEveryCopy(table) => {
                        forced = Some(on_every_copy(&sql, table, self.links.len()))
                    }
                    Rewrite::Failed => {
                        self.after_error().await?;
                        break;
                    }
                }
            }
            let stmt = stmt.map(|s| self.with_insert_columns(&s));
            // A call moving a sequence may be looked at every time (see `sequence_moves`,
            // `inline_nextval`), never routed by shape.
            let as_written = forced.is_none()
                && !filled
                && stmt.as_deref().is_some_and(|s| {
                    !super::sequence_moves::looked_at_each_time(s, &self.placement)
                        && !super::inline_nextval::looked_at(&sql, s, &self.placement)
                });
            let plan = match (&stmt, forced) {
                (_, Some(p)) => p,
                (Some(s), None) => plan(s, &self.placement, &Params::default()),
                (None, None) => plan_unparsed(&sql),
            };
            if let Some(s) = learn.take() {
                let template = as_written.then(|| self.shape_template(&s.key)).flatten();
                let template = template.as_deref().map_or(&[][..], Vec::as_slice);
                self.shape_routes
                    .learn(&s, template, &plan, &self.placement);
            }
            self.ahead = ahead;
            self.rewritten = filled;
            let step = match (plan, stmt.as_deref()) {
                // Subqueries no shard answers alone, answered first (see `subqueries_first`).
                // A write's subqueries no shard answers alone (see `write_subqueries`).
                (Plan::Reject(refusal), Some(s))
                    if write_subqueries::answered_first(s, &refusal) =>
                {
                    self.write_subqueries_first(s, refusal).await
                }
                (Plan::Reject(refusal), Some(s)) if answered_in_parts(&refusal) => {
                    self.subqueries_first(s, &sql, refusal).await
                }
                // A read of several shards (a COPY of a query's rows too) whose function writes
                // on them: one transaction of the proxy's, as PostgreSQL runs a statement
                // (`txn::commit` finds the writes).
                (plan, Some(s))
                    if self.txn == TxnState::Idle
                        && !plan.read_shards().is_empty()
                        && calls_writing_function(s, &self.placement) =>
                {
                    let own = self.own_implicit();
                    match self.run_plan(plan, &sql).await {
                        Ok(step) => self.end_own_implicit(own, step).await,
                        Err(stop) => Err(stop),
                    }
                }
                (plan, _) => self.run_plan(plan, &sql).await,
            };
            self.rewritten = false;
            self.ahead = 0;
            if step? == Step::Failed {
                self.after_error().await?;
                break;
            }
        }
        if matches!(&self.txn, TxnState::Open(t) if t.implicit) {
            self.commit(false).await?;
        }
        self.ready_for_query();
        self.flush().await
    }

    /// A Query of one statement, planned already: run as the statement loop of `simple_query`
    /// runs a statement that is not an INSERT.
    async fn simple_planned(&mut self, plan: Plan, text: &str) -> R<()> {
        if self.run_plan(plan, text).await? == Step::Failed {
            self.after_error().await?;
        }
        if matches!(&self.txn, TxnState::Open(t) if t.implicit) {
            self.commit(false).await?;
        }
        self.ready_for_query();
        self.flush().await
    }

    pub async fn run_plan(&mut self, plan: Plan, sql: &str) -> R<Step> {
        let plan = self.resolve_cursor(plan);
        if let TxnState::Failed(_) = self.txn {
            if !matches!(
                plan,
                Plan::Txn(TxnCmd::Commit | TxnCmd::Rollback | TxnCmd::RollbackTo(_))
            ) {
                return Ok(self.error(&PgError::error(
                    "25P02",
                    "current transaction is aborted, commands ignored until end of transaction block",
                )));
            }
        }
        self.routes.note(&plan);
        // An autocommit read of several shards in snapshot consistency: its own cut.
        if let Plan::Scatter { shards, sql, merge } = &plan {
            if shards.len() > 1
                && self.consistency == crate::txn::snapshot::Consistency::Snapshot
                && self.txn == TxnState::Idle
            {
                let requests = super::merge::queries(shards, sql, merge);
                return self
                    .autocommit_snapshot_read(shards, &requests, merge, true)
                    .await;
            }
        }
        let touches_shards = matches!(
            plan,
            Plan::Shard { .. }
                | Plan::Scatter { .. }
                | Plan::Write { .. }
                | Plan::Broadcast { .. }
                | Plan::Session
                | Plan::Procedural
                | Plan::Copy(_)
                | Plan::Cursor(_)
        );
        if touches_shards && matches!(&self.txn, TxnState::Open(t) if t.snapshot) {
            // A read or a one-shard statement rides in the same round trip as its cut.
            let deferred = matches!(plan, Plan::Scatter { .. } | Plan::Shard { .. });
            if self.ensure_cut_then(deferred).await? == Step::Failed {
                return Ok(Step::Failed);
            }
        }
        let step = self.run_planned(plan, sql).await?;
        // A deferred cut is read by the statement that rode with it; should that statement
        // have ended before reading it, its answers must not be left for the next request.
        if let Some(err) = self.finish_cut().await? {
            self.out.extend_from_slice(&err.bytes);
            return Ok(Step::Failed);
        }
        Ok(step)
    }

    async fn run_planned(&mut self, plan: Plan, sql: &str) -> R<Step> {
        // An INSERT that must look on every shard first runs as a write of the proxy's, in a
        // transaction over every shard (see `given_values`).
        let plan = match plan {
            Plan::Shard { shard, write: true } if self.given.is_some() => Plan::Write {
                parts: vec![(shard, sql.to_string())],
                sum: true,
                picks: Vec::new(),
                serialize: None,
                row_order: Vec::new(),
            },
            plan @ Plan::Write { .. } => plan,
            plan => {
                self.given = None;
                plan
            }
        };
        match plan {
            Plan::Reject(e) => Ok(self.reject(&e)),
            Plan::Unrecognised => self.unrecognised(sql).await,
            Plan::Procedural => {
                let step = self.procedural(sql).await;
                // It may have changed schema objects, as DDL does.
                if let Some(catalog) = self.catalog {
                    catalog.forget();
                }
                if let Some(keys) = self.key_blocks {
                    keys.forget();
                }
                step
            }
            Plan::Admin(cmd) => Ok(self.admin(cmd).await),
            Plan::Signal { kind, pid, column } => self.signal(kind, pid, &column).await,
            Plan::Txn(cmd) => self.txn_command(cmd).await,
            Plan::Shard { shard, write } => self.single(shard, write, sql).await,
            Plan::Scatter {
                shards,
                sql: text,
                merge,
            } => {
                self.rewritten = text != sql;
                let step = super::merge::scatter(self, &shards, &text, &merge).await;
                self.rewritten = false;
                step
            }
            Plan::Write {
                parts,
                sum,
                serialize,
                row_order,
                ..
            } => {
                let own = self.own_implicit();
                let mut requests = Vec::with_capacity(parts.len());
                self.rewritten = parts.iter().any(|(_, text)| text != sql);
                for (shard, text) in parts {
                    let mut q = BytesMut::new();
                    build::query(&text, &mut q);
                    requests.push((shard, q.freeze()));
                }
                let step = super::write::run(
                    self,
                    &requests,
                    sum,
                    true,
                    serialize.as_deref(),
                    &row_order,
                    vec![],
                )
                .await;
                self.rewritten = false;
                self.end_own_implicit(own, step?).await
            }
            Plan::Broadcast { transactional } => {
                // A restart of a cluster sequence below its values in use is refused first.
                if self.restart_checked(sql).await? == Step::Failed {
                    return Ok(Step::Failed);
                }
                let step = self.broadcast(sql, transactional).await?;
                // Types may have been dropped and made again under new OIDs, and columns moved
                // (an INSERT without a column list finds its key by them).
                self.forget_columns();
                if let Some(catalog) = self.catalog {
                    catalog.forget();
                }
                if let Some(keys) = self.key_blocks {
                    keys.forget();
                }
                if step == Step::Done {
                    self.note_own_types(sql).await?;
                }
                Ok(step)
            }
            Plan::Session => self.session_statement(sql).await,
            Plan::Prepared(cmd) => self.sql_prepared(cmd, sql).await,
            Plan::Cursor(cmd) => self.cursor(cmd, sql).await,
            Plan::Copy(CopyPlan::Out {
                shards,
                sql: text,
                format,
            }) => self.copy_out(&shards, &text, &format).await,
            Plan::Copy(CopyPlan::In(copy)) => self.copy_in(copy, sql).await,
        }
    }
}

/// Characters of `text` before `piece`, a slice of it.
fn ahead_of(text: &str, piece: &str) -> u64 {
    let at = (piece.as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
    text.get(..at).map_or(0, |t| t.chars().count() as u64)
}

/// False when `text` certainly holds more than whitespace and semicolons: its first byte past
/// ASCII whitespace is another ASCII character (the case of nearly every Query, told without
/// the Unicode-aware trims).
fn maybe_empty(text: &str) -> bool {
    match text.bytes().find(|c| !c.is_ascii_whitespace()) {
        Some(c) => c == b';' || !c.is_ascii(),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::maybe_empty;

    #[test]
    fn only_texts_that_may_be_empty_take_the_full_check() {
        let empty = |t: &str| t.trim().trim_matches(';').trim().is_empty();
        for text in [
            "",
            "  ",
            ";",
            " ; ",
            "\n;\t",
            "; ;",
            "\u{a0}",
            "\u{2003};",
            "select 1",
            "  SELECT 1;",
            "\tx",
            "-- c\n",
            "ä",
        ] {
            // Never false for a text the full check finds empty.
            assert!(maybe_empty(text) || !empty(text), "{text:?}");
        }
        assert!(!maybe_empty(
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1;"
        ));
        assert!(!maybe_empty("\n  begin"));
        assert!(maybe_empty(" ;"));
    }
}
