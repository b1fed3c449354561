//! The executor session: one client over several shard links, request by request.
//!
//! Unlike the single-shard relay, this session reads whole client messages and answers each
//! request itself: it plans the statement, runs it on one shard or several, merges, and writes
//! one ReadyForQuery whose status is the session's (`TxnState`), not any one shard's.
//!
//! This file holds the session's state (`Exec`) and the dispatch of a simple Query and of a
//! plan; `output` is what goes to the client, `on_shards` runs text on shards, `transaction`
//! carries out transaction control, `statements` the statements handled apart from routing.

use super::insert_select::Rewrite;
use super::link::{Incoming, LinkLost, ShardLink};
use super::txn::TxnState;
use crate::client::tls::ClientWriter;
use crate::error::PgError;
use crate::placement::Placement;
use crate::protocol::{build, Frame};
use crate::router::copy::CopyPlan;
use crate::router::params::Params;
use crate::router::plan::{plan, plan_unparsed, AdminCmd, Plan, TxnCmd, HOME};
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

mod on_shards;
mod output;
mod statements;
mod transaction;

const FLUSH_AT: usize = 64 * 1024;

/// DataRows and CopyData larger than this are streamed to the client as they arrive on relay
/// paths, never held whole.
const STREAM_AT: usize = 1 << 20;

/// The most a session holds of a merged result that an Execute with a row limit hands out in
/// parts (it is materialized, since the shards' rows must be merged before the first part).
pub const MAX_HELD_BYTES: usize = 64 << 20;

/// Why a session cannot go on.
#[derive(Debug)]
pub enum Stop {
    Shard(String),
    Client,
    /// A per-session memory limit was reached; the session ends with 54000.
    Limit(String),
    /// No connection to a shard could be had (the pool's checkout timeout, a failed login):
    /// the session ends with this error.
    Refused(Box<PgError>),
}

impl From<LinkLost> for Stop {
    fn from(l: LinkLost) -> Stop {
        match l.error {
            Some(e) => Stop::Refused(e),
            None => Stop::Shard(l.shard),
        }
    }
}

pub type R<T> = Result<T, Stop>;

/// Whether a step succeeded or wrote an error for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Done,
    Failed,
}

pub struct Exec<'a> {
    /// Tables as of the last time the session was outside a transaction (see `reload`).
    pub placement: std::sync::Arc<Placement>,
    pub txn_ctx: &'a crate::txn::TxnContext,
    pub links: Vec<ShardLink>,
    client: ClientWriter,
    pub out: BytesMut,
    pub txn: TxnState,
    /// Shards sort text bytewise (C collation), so merged text order is PostgreSQL's.
    pub text_order_c: bool,
    /// Keep output in `out` (a result being materialized for a row-limited Execute).
    pub hold_output: bool,
    /// Prepared statements deallocated on the shards since the extended-protocol state last
    /// looked (None: all of them).
    pub deallocated: Vec<Option<String>>,
    /// Column order of sharded tables, read from the first shard's catalog, for INSERTs that
    /// give no column list.
    columns: std::collections::HashMap<String, Vec<String>>,
    /// Parsed statements by text and by shape (see `parse_cache`).
    parsed: std::sync::Mutex<ParseCache>,
    /// Routes learned per shape for simple-protocol texts (see `shape_route`).
    shape_routes: super::shape_route::ShapeRoutes,
    pub routes: crate::router::route_metrics::RouteMetrics,
    /// `SET shardgate.consistency`.
    pub consistency: crate::txn::snapshot::Consistency,
    /// The shards' `default_transaction_isolation`, once read (see `snapshot_level`); None
    /// after anything that may have changed it.
    pub default_isolation: Option<super::txn::Isolation>,
    /// The snapshot timestamp of the last cut taken (`SHOW shardgate.snapshot_ts`).
    pub snapshot_ts: Option<u64>,
    /// A cut sent ahead of a scattered read, whose answers the scatter reads first.
    pub pending_cut: Option<super::snapshot_read::PendingCut>,
    /// The shards are running a text the proxy rewrote (a scatter's pushed-down LIMIT, one
    /// shard's rows of an INSERT): positions in their errors point into that text, not the
    /// client's, and are dropped (see `shard_error`).
    pub rewritten: bool,
    /// The result columns the client was shown for the prepared statement a scattered read
    /// runs: the shards' must still match them (see `extended::fixed_result`).
    pub fixed_columns: Option<Frame>,
    /// Characters of the client's Query before the statement running now (one of several in
    /// a simple Query): shards see the statement alone, so their error positions move by this.
    pub ahead: u64,
    /// Whether the proxy's own row answers start with a RowDescription (not for an
    /// extended-protocol Execute, whose description was the Describe's).
    pub describe_rows: bool,
    /// Catalog facts about the shards (see `backend::catalog`).
    pub catalog: Option<&'a crate::backend::catalog::Catalog>,
    /// Shards that parsed or described something for the extended protocol outside the
    /// session's transaction, not yet followed by Sync: they are inside an implicit
    /// transaction of their own, which may hold a snapshot (see `settle`).
    pub unsynced: std::collections::BTreeSet<usize>,
    /// Statements prepared with SQL PREPARE, by name (see `sql_prepare`).
    pub sql_statements: std::collections::HashMap<String, super::sql_prepare::SqlPrepared>,
    /// A COPY FROM STDIN took the client's data since the extended batch began (see
    /// `Extended::run_batch`).
    pub copied_in: bool,
    /// Result formats of the extended-protocol Execute running now (empty: text, or the
    /// simple protocol).
    pub result_formats: Vec<i16>,
    /// Values and declared types bound by the extended-protocol Execute running now, for
    /// statements the proxy sends on with them (a DECLARE).
    pub bound: Option<(Params, Vec<u32>)>,
    /// Cursors this session declared, and where (see `cursor`).
    pub cursors: std::collections::HashMap<String, super::cursor::CursorAt>,
    /// Key values drawn from sequences, shared by the proxy's sessions (see `key_sequence`).
    pub key_blocks: Option<&'a super::key_sequence::KeyBlocks>,
    /// The client's input, lent by the client loop while a message runs (see `client_input`).
    pub input: Option<super::client_input::ClientInput>,
    /// Pooling: settings, statement names, pinning (see `pooling`).
    pub pool: super::pooling::SessionPool,
}

/// The longest statement text analysed on several shards. Its syntax tree takes about a hundred
/// times the text's size and is built on the session's thread, so without a limit one 20 MB
/// IN-list would take gigabytes and stall every other client on that thread.
pub const MAX_ANALYSED_BYTES: usize = 2 << 20;

/// The refusal of a statement over `MAX_ANALYSED_BYTES`.
pub fn too_large_to_analyse(sql: &str) -> Option<PgError> {
    (sql.len() > MAX_ANALYSED_BYTES).then(|| {
        PgError::error(
            crate::error::sqlstate::PROGRAM_LIMIT_EXCEEDED,
            format!(
                "statement of {} bytes is too long to route across shards (the limit is {} bytes)",
                sql.len(),
                MAX_ANALYSED_BYTES
            ),
        )
        .with_hint("Send long lists as a bound array parameter (= ANY($1)) or split the statement.")
    })
}

use super::parse_cache::ParseCache;
pub use super::parse_cache::Parsed;
impl<'a> Exec<'a> {
    pub fn new(
        placement: std::sync::Arc<Placement>,
        txn_ctx: &'a crate::txn::TxnContext,
        links: Vec<ShardLink>,
        client: ClientWriter,
        text_order_c: bool,
        pool: super::pooling::SessionPool,
    ) -> Exec<'a> {
        let routes = crate::router::route_metrics::RouteMetrics::new(&placement.shard_names);
        Exec {
            placement,
            txn_ctx,
            links,
            client,
            out: BytesMut::with_capacity(FLUSH_AT),
            txn: TxnState::Idle,
            text_order_c,
            hold_output: false,
            deallocated: Vec::new(),
            columns: std::collections::HashMap::new(),
            parsed: std::sync::Mutex::new(ParseCache::default()),
            shape_routes: Default::default(),
            routes,
            consistency: txn_ctx.default_consistency,
            default_isolation: None,
            snapshot_ts: None,
            pending_cut: None,
            rewritten: false,
            fixed_columns: None,
            ahead: 0,
            describe_rows: true,
            catalog: None,
            unsynced: std::collections::BTreeSet::new(),
            sql_statements: std::collections::HashMap::new(),
            input: None,
            key_blocks: None,
            cursors: std::collections::HashMap::new(),
            copied_in: false,
            result_formats: Vec::new(),
            bound: None,
            pool,
        }
    }

    /// A session statement ran (SET, RESET, DISCARD ...): it may have changed
    /// default_transaction_isolation, now or, inside a transaction, at its rollback.
    pub fn session_setting_ran(&mut self) {
        self.default_isolation = None;
        if let TxnState::Open(t) = &mut self.txn {
            t.changed_session = true;
        }
    }

    /// Ends the implicit transaction a Parse or Describe left open on `shard` (see
    /// `unsynced`) before a Query opens a transaction there: BEGIN would otherwise adopt it,
    /// snapshot and all, and a REPEATABLE READ opening would fail with 25001.
    pub async fn settle(&mut self, shard: usize) -> R<()> {
        if self.unsynced.remove(&shard) {
            self.links[shard].send(b"S\0\0\0\x04").await?;
            if let Some(e) = self.quiet_until_ready(shard).await? {
                tracing::debug!(shard, "a Sync ending an outside Parse answered {:?}", e.tag);
            }
        }
        Ok(())
    }

    /// A simple-protocol Query: every statement in it, then one ReadyForQuery.
    pub async fn simple_query(&mut self, text: &str) -> R<()> {
        if text.trim().trim_matches(';').trim().is_empty() {
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
        // A text of a shape whose route was learned runs without being parsed or planned (see
        // `shape_route`). The shape is worked out once, for the parse cache too.
        let shape = self.simple_shape(text);
        if let Some(plan) = shape
            .as_ref()
            .and_then(|s| self.shape_routes.plan(s, &self.placement))
        {
            return self.simple_planned(plan, text).await;
        }
        let mut learn = shape
            .as_ref()
            .filter(|s| !self.shape_routes.knows(s, &self.placement))
            .cloned();
        // Each statement, with the characters of the Query before it (for error positions).
        type Ast = std::sync::Arc<sqlparser::ast::Statement>;
        let statements: Vec<(Option<Ast>, String, u64)> = match self.parse_shaped(text, shape) {
            Some(v) if v.len() == 1 => vec![(Some(v[0].clone()), text.to_string(), 0)],
            // Several statements: each runs as the client wrote it when the split lines up
            // with sqlparser's (it does unless a statement is empty).
            Some(v) => {
                let pieces = crate::sql::split_statements(text);
                if pieces.len() == v.len() {
                    v.iter()
                        .zip(pieces)
                        .map(|(s, piece)| {
                            (Some(s.clone()), piece.to_string(), ahead_of(text, piece))
                        })
                        .collect()
                } else {
                    v.iter()
                        .map(|s| (Some(s.clone()), s.to_string(), 0))
                        .collect()
                }
            }
            // sqlparser could not read the whole text: split it and analyse each statement
            // on its own, so that no statement is routed by another one's keywords.
            None => crate::sql::split_statements(text)
                .into_iter()
                .map(|piece| {
                    let ahead = ahead_of(text, piece);
                    match self.parse(piece) {
                        Some(v) if v.len() == 1 => (Some(v[0].clone()), piece.to_string(), ahead),
                        _ => (None, piece.to_string(), ahead),
                    }
                })
                .collect(),
        };
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
        if statements.len() > 1 {
            // Only a text of one statement is routed by its shape.
            if let Some(s) = learn.take() {
                self.shape_routes
                    .learn(&s, &[], &Plan::Unrecognised, &self.placement);
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
                    Rewrite::Failed => {
                        self.after_error().await?;
                        break;
                    }
                }
            }
            let stmt = stmt.map(|s| self.with_insert_columns(&s));
            let as_written = forced.is_none() && !filled && stmt.is_some();
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
            let step = self.run_plan(plan, &sql).await;
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
                let mut q = BytesMut::new();
                build::query(sql, &mut q);
                return self
                    .autocommit_snapshot_read(shards, &[q.freeze()], merge, true)
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
        match plan {
            Plan::Reject(e) => {
                metrics::counter!(crate::metrics::STATEMENTS_REJECTED).increment(1);
                Ok(self.error(&e))
            }
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
                let step =
                    super::write::run(self, &requests, sum, true, serialize.as_deref(), &row_order)
                        .await;
                self.rewritten = false;
                self.end_own_implicit(own, step?).await
            }
            Plan::Broadcast { transactional } => {
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
