//! The executor session: one client over several shard links, request by request.
//!
//! Unlike the single-shard relay, this session reads whole client messages and answers each
//! request itself: it plans the statement, runs it on one shard or several, merges, and writes
//! one ReadyForQuery whose status is the session's (`TxnState`), not any one shard's.

use super::insert_select::Rewrite;
use super::link::{Incoming, LinkLost, ShardLink};
use super::txn::TxnState;
use crate::error::PgError;
use crate::frontend::tls::ClientWriter;
use crate::placement::Placement;
use crate::protocol::{build, Frame};
use crate::router::copy::CopyPlan;
use crate::router::params::Params;
use crate::router::plan::{plan, plan_unparsed, AdminCmd, Plan, TxnCmd, HOME};
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

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
}

impl From<LinkLost> for Stop {
    fn from(l: LinkLost) -> Stop {
        Stop::Shard(l.shard)
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
    pub routes: crate::metrics::RouteMetrics,
    /// `SET shardgate.consistency`.
    pub consistency: crate::snapshot::Consistency,
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
    ) -> Exec<'a> {
        let routes = crate::metrics::RouteMetrics::new(&placement.shard_names);
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
            routes,
            consistency: txn_ctx.default_consistency,
            default_isolation: None,
            snapshot_ts: None,
            pending_cut: None,
            rewritten: false,
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

    /// The end of a request: notifications that arrived with its answers, as PostgreSQL sends
    /// them (just before ReadyForQuery), then ReadyForQuery with the session's status.
    pub fn ready_for_query(&mut self) {
        self.pass_notifications();
        build::ready_for_query(self.txn.status(), &mut self.out);
    }

    fn pass_notifications(&mut self) {
        for link in &mut self.links {
            for n in link.notifications.drain(..) {
                self.out.extend_from_slice(&n.bytes);
            }
        }
    }

    pub async fn flush(&mut self) -> R<()> {
        if !self.out.is_empty() {
            self.client
                .write_all(&self.out)
                .await
                .map_err(|_| Stop::Client)?;
            // Over TLS, written bytes can wait in the TLS layer until a flush.
            self.client.flush().await.map_err(|_| Stop::Client)?;
            self.out.clear();
            // A burst (a materialized result) must not stay allocated for the session's life.
            if self.out.capacity() > 16 * FLUSH_AT {
                self.out = BytesMut::with_capacity(FLUSH_AT);
            }
        }
        Ok(())
    }

    /// A RowDescription or ParameterDescription from `shard`, numbered as the first shard
    /// numbers things: user-defined type OIDs, and each column's table OID and attribute
    /// number (the ones a client can look up in the catalog it queries). Any other message is
    /// returned as it is. What cannot be translated is described as 0 (unknown), never as a
    /// number that may name something else on the first shard.
    pub async fn for_client(&self, shard: usize, f: Frame) -> Frame {
        use crate::backend::type_oids::is_user;
        if shard == HOME || !matches!(f.tag, b'T' | b't') {
            return f;
        }
        let Some(catalog) = self.catalog else {
            return f;
        };
        let Some(positions) = crate::protocol::inspect::type_oid_positions(&f.bytes) else {
            return f;
        };
        // In a RowDescription the table OID and attribute number come just before the type.
        let origin = |at: usize| -> (u32, i16) {
            if f.tag != b'T' {
                return (0, 0);
            }
            let b = &f.bytes;
            (
                u32::from_be_bytes([b[at - 6], b[at - 5], b[at - 4], b[at - 3]]),
                i16::from_be_bytes([b[at - 2], b[at - 1]]),
            )
        };
        if !positions
            .iter()
            .any(|&(at, oid)| is_user(oid) || origin(at).0 != 0)
        {
            return f;
        }
        let mut bytes = BytesMut::from(&f.bytes[..]);
        for (at, oid) in positions {
            let home = match self.own_type(shard, HOME, oid) {
                Some(home) => Ok(home),
                None => catalog.translate_type(shard, HOME, oid).await,
            };
            let home = home.unwrap_or_else(|e| {
                tracing::warn!("describing a column of user-defined type as unknown: {e}");
                0
            });
            bytes[at..at + 4].copy_from_slice(&home.to_be_bytes());
            let (table, column) = origin(at);
            if table != 0 {
                let (table, column) = catalog
                    .home_column(shard, table, column)
                    .await
                    .unwrap_or_else(|e| {
                        tracing::debug!("describing a column's origin as unknown: {e}");
                        (0, 0)
                    });
                bytes[at - 6..at - 2].copy_from_slice(&table.to_be_bytes());
                bytes[at - 2..at].copy_from_slice(&column.to_be_bytes());
            }
        }
        Frame {
            tag: f.tag,
            bytes: bytes.freeze(),
        }
    }

    /// The type OIDs a client declared (the first shard's), as `shard` knows the same types.
    pub async fn types_for(&self, shard: usize, declared: &[u32]) -> Result<Vec<u32>, PgError> {
        let mut out = Vec::with_capacity(declared.len());
        for &oid in declared {
            if let Some(own) = self.own_type(HOME, shard, oid) {
                out.push(own);
                continue;
            }
            out.push(match self.catalog {
                Some(catalog) => catalog
                    .translate_type(HOME, shard, oid)
                    .await
                    .map_err(|e| {
                        PgError::error("42704", e).with_hint(
                            "Create types through the proxy so that every shard has them.",
                        )
                    })?,
                None => oid,
            });
        }
        Ok(out)
    }

    /// Waits, between requests, until a shard sends something unprompted; returns which.
    pub async fn idle_input(&mut self) -> (usize, Result<(), LinkLost>) {
        let waits = self.links.iter_mut().map(|l| Box::pin(l.idle_input()));
        let (result, i, _) = futures_util::future::select_all(waits).await;
        (i, result)
    }

    /// Passes on what shard `i` sent while the session was idle: notifications, notices, and
    /// (from the first shard) parameter changes. A FATAL ends the session with the shard's own
    /// words (see `ShardLink::fatal`).
    pub async fn on_idle_input(&mut self, i: usize, read: Result<(), LinkLost>) -> R<()> {
        let frames = self.links[i].buffered()?;
        for f in frames {
            match f.tag {
                b'N' => self.out.extend_from_slice(&f.bytes),
                b'S' if i == HOME => self.out.extend_from_slice(&f.bytes),
                b'S' => {}
                // An error outside a request is the FATAL before the shard closes.
                _ => return Err(Stop::Shard(self.links[i].name.clone())),
            }
        }
        read?;
        self.pass_notifications();
        self.flush().await
    }

    /// The next message from `shard` on a path that relays its answer to the client. A DataRow or
    /// CopyData over `STREAM_AT` is not returned: it is passed to the client piece by piece as it
    /// arrives (`None`), so a large value is never held whole. While output is being held (a
    /// result materialized for a row-limited Execute), every message is returned whole.
    pub async fn relay_recv(&mut self, shard: usize) -> R<Option<Frame>> {
        if self.hold_output {
            return Ok(Some(self.links[shard].recv().await?));
        }
        match self.links[shard].recv_or_large(STREAM_AT).await? {
            Incoming::Whole(f) => Ok(Some(f)),
            Incoming::Large {
                head,
                mut remaining,
            } => {
                self.flush().await?;
                self.write_client(&head).await?;
                while remaining > 0 {
                    let piece = self.links[shard].piece(remaining).await?;
                    remaining -= piece.len();
                    self.write_client(&piece).await?;
                }
                Ok(None)
            }
        }
    }

    async fn write_client(&mut self, bytes: &[u8]) -> R<()> {
        self.client
            .write_all(bytes)
            .await
            .map_err(|_| Stop::Client)?;
        self.client.flush().await.map_err(|_| Stop::Client)
    }

    /// Sends a shard's message on to the client. A large one (a big value) is written straight
    /// from the frame after what is queued, instead of being copied into the output buffer, so
    /// it is held once, not twice, and the buffer does not keep its size afterwards.
    pub async fn pass(&mut self, f: &Frame) -> R<()> {
        if f.bytes.len() >= FLUSH_AT && !self.hold_output {
            self.flush().await?;
            return self.write_client(&f.bytes).await;
        }
        self.out.extend_from_slice(&f.bytes);
        self.maybe_flush().await
    }

    pub async fn maybe_flush(&mut self) -> R<()> {
        if self.hold_output && self.out.len() > MAX_HELD_BYTES {
            return Err(Stop::Limit(format!(
                "a result handed out in parts (Execute with a row limit) over several shards exceeded {MAX_HELD_BYTES} bytes"
            )));
        }
        if self.out.len() >= FLUSH_AT && !self.hold_output {
            self.flush().await?;
        }
        Ok(())
    }

    /// Passes a shard's ErrorResponse to the client; its position is dropped when the shard ran
    /// a rewritten text.
    pub fn shard_error(&mut self, f: &Frame) {
        self.shard_error_after(f, 0);
    }

    /// As `shard_error`, for a statement that ran with `prefix` characters of the proxy's own
    /// in front of it.
    pub fn shard_error_after(&mut self, f: &Frame, prefix: u64) {
        if !self.rewritten && prefix == 0 && self.ahead == 0 {
            self.out.extend_from_slice(&f.bytes);
            return;
        }
        let (rewritten, ahead) = (self.rewritten, self.ahead);
        let placed = crate::protocol::inspect::map_error_position(&f.bytes, |p| {
            let own = p.checked_sub(prefix).filter(|&p| p > 0);
            own.filter(|_| !rewritten).map(|p| p + ahead)
        });
        self.out.extend_from_slice(&placed);
    }

    pub fn error(&mut self, err: &PgError) -> Step {
        build::error(err, &mut self.out);
        Step::Failed
    }

    pub fn into_client(self) -> ClientWriter {
        self.client
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
        // Each statement, with the characters of the Query before it (for error positions).
        type Ast = std::sync::Arc<sqlparser::ast::Statement>;
        let statements: Vec<(Option<Ast>, String, u64)> = match self.parse(text) {
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
        // PostgreSQL runs a multi-statement Query as one implicit transaction.
        if statements.len() > 1 && self.txn == TxnState::Idle {
            self.txn = self.new_txn("BEGIN".into(), true);
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
            let plan = match (&stmt, forced) {
                (_, Some(p)) => p,
                (Some(s), None) => plan(s, &self.placement, &Params::default()),
                (None, None) => plan_unparsed(&sql),
            };
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

    /// After a failed statement: an implicit transaction rolls back now, an explicit one waits
    /// for the client's ROLLBACK.
    pub async fn after_error(&mut self) -> R<()> {
        self.txn.fail();
        if self.txn.failed_implicit() {
            self.rollback_enlisted().await?;
            self.txn = TxnState::Idle;
        }
        Ok(())
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
                && self.consistency == crate::snapshot::Consistency::Snapshot
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
                // Types may have been dropped and made again under new OIDs.
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

    /// A session statement (SET, RESET, DISCARD, DEALLOCATE ...): on every shard.
    pub async fn session_statement(&mut self, sql: &str) -> R<Step> {
        self.note_deallocate(sql);
        self.session_setting_ran();
        self.everywhere(sql).await
    }

    /// A statement the proxy cannot read. The home shard parses it (without running it, and
    /// without analysis for utility statements), so a syntax error gets PostgreSQL's own 42601,
    /// message and position; valid SQL is refused as unroutable.
    async fn unrecognised(&mut self, sql: &str) -> R<Step> {
        metrics::counter!(crate::metrics::STATEMENTS_REJECTED).increment(1);
        match self.syntax_error(sql).await? {
            Some(e) => {
                self.shard_error(&e);
                Ok(Step::Failed)
            }
            None => Ok(self.error(&crate::router::plan::unrecognised())),
        }
    }

    /// The home shard's answer to parsing `sql` (never running it): its error, if any.
    async fn syntax_error(&mut self, sql: &str) -> R<Option<Frame>> {
        let mut q = BytesMut::new();
        crate::protocol::message::Parse {
            name: String::new(),
            sql: sql.to_string(),
            param_types: Vec::new(),
        }
        .encode(&mut q);
        q.extend_from_slice(&[b'S', 0, 0, 0, 4]);
        self.links[HOME].send(&q).await?;
        let mut error = None;
        loop {
            let f = self.links[HOME].recv().await?;
            match f.tag {
                b'E' if error.is_none() => error = Some(f),
                b'Z' => break,
                _ => {}
            }
        }
        Ok(error)
    }

    /// The statements of `sql` (None when sqlparser cannot parse them, or for `SHOW shardgate.*`,
    /// which the proxy answers), from the per-session cache.
    pub fn parse(&self, sql: &str) -> Option<Parsed> {
        if sql.len() > MAX_ANALYSED_BYTES {
            return None;
        }
        if crate::router::plan::is_admin(sql) {
            return None;
        }
        self.parsed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sql)
    }

    /// Reads (once per session and table) the column order of the table an INSERT without a
    /// column list targets, when that table is sharded: placement needs to know which value is
    /// the key.
    pub async fn fetch_insert_columns(&mut self, stmt: &sqlparser::ast::Statement) -> R<()> {
        if let Some(table) = insert_without_columns(stmt, &self.placement) {
            self.table_columns(&table).await?;
        }
        Ok(())
    }

    /// A table's columns in order, if this session has read them.
    pub fn known_columns(&self, table: &str) -> Option<Vec<String>> {
        self.columns.get(table).cloned()
    }

    /// A table's columns in order, read once per session from the home shard's catalog
    /// (empty when it has no such table).
    pub async fn table_columns(&mut self, table: &str) -> R<Vec<String>> {
        if let Some(names) = self.columns.get(table) {
            return Ok(names.clone());
        }
        let sql = format!(
            "select attname from pg_attribute where attrelid = to_regclass('{}') and attnum > 0 and not attisdropped order by attnum",
            table.replace('\'', "''")
        );
        let (names, _) = self.query_values(HOME, &sql).await?;
        if !names.is_empty() {
            self.columns.insert(table.to_string(), names.clone());
        }
        Ok(names)
    }

    /// The statement as planning needs it: an INSERT without a column list gets its table's
    /// columns (the shard still receives the client's text). Other statements are shared as is.
    pub fn with_insert_columns(
        &self,
        stmt: &std::sync::Arc<sqlparser::ast::Statement>,
    ) -> std::sync::Arc<sqlparser::ast::Statement> {
        let Some(table) = insert_without_columns(stmt, &self.placement) else {
            return stmt.clone();
        };
        let Some(cols) = self.columns.get(&table) else {
            return stmt.clone();
        };
        let mut filled = (**stmt).clone();
        if let sqlparser::ast::Statement::Insert(ins) = &mut filled {
            ins.columns = cols
                .iter()
                .map(|c| sqlparser::ast::ObjectName::from(vec![sqlparser::ast::Ident::new(c)]))
                .collect();
        }
        std::sync::Arc::new(filled)
    }

    /// DEALLOCATE name | DEALLOCATE ALL | DISCARD ALL drop statements the shards had prepared.
    fn note_deallocate(&mut self, sql: &str) {
        let words: Vec<String> = sql
            .split_whitespace()
            .map(|w| w.trim_end_matches(';').to_string())
            .collect();
        let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
        match lower
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["deallocate", "all"] | ["deallocate", "prepare", "all"] | ["discard", "all"] => {
                self.sql_statements.clear();
                self.deallocated.push(None)
            }
            ["deallocate", name] | ["deallocate", "prepare", name] => {
                let original = &words[words.len() - 1];
                let _ = name;
                self.deallocated
                    .push(Some(original.trim_matches('"').to_string()));
            }
            _ => {}
        }
    }

    /// Runs `sql` on one shard; returns the first column of every row and the first error.
    pub async fn query_values(
        &mut self,
        shard: usize,
        sql: &str,
    ) -> R<(Vec<String>, Option<Frame>)> {
        let mut q = BytesMut::new();
        build::query(sql, &mut q);
        self.links[shard].send(&q).await?;
        let (mut values, mut error) = (Vec::new(), None);
        loop {
            let f = self.links[shard].recv().await?;
            match f.tag {
                b'D' => {
                    if let Some(Some(v)) = crate::protocol::inspect::data_row_column(f.body(), 0) {
                        values.push(String::from_utf8_lossy(v).into_owned());
                    }
                }
                b'E' if error.is_none() => error = Some(f),
                b'N' => self.out.extend_from_slice(&f.bytes),
                b'Z' => return Ok((values, error)),
                _ => {}
            }
        }
    }

    async fn single(&mut self, shard: usize, write: bool, sql: &str) -> R<Step> {
        if write {
            self.txn.note_write(shard);
        }
        // A shard joining the transaction gets its BEGIN in the same message as the statement.
        let opening = self.opening(shard);
        if opening.is_some() {
            self.settle(shard).await?;
        }
        let mut q = BytesMut::new();
        match &opening {
            Some(o) => build::query(&format!("{};\n{sql}", o.sql), &mut q),
            None => build::query(sql, &mut q),
        }
        self.links[shard].send(&q).await?;
        // A cut sent just before this statement answers first.
        if let Some(err) = self.finish_cut().await? {
            self.quiet_until_ready(shard).await?;
            self.out.extend_from_slice(&err.bytes);
            return Ok(Step::Failed);
        }
        let mut prefix = 0;
        if let Some(o) = opening {
            if self.read_opening(shard, &o).await? == Step::Failed {
                return Ok(Step::Failed);
            }
            prefix = o.sql.chars().count() as u64 + 2;
        }
        self.relay_until_ready_after(shard, prefix).await
    }

    /// Forwards everything up to (not including) ReadyForQuery.
    pub async fn relay_until_ready(&mut self, shard: usize) -> R<Step> {
        self.relay_until_ready_after(shard, 0).await
    }

    /// As `relay_until_ready`, for a statement that ran with `prefix` characters of the
    /// proxy's own in front of it: error positions are moved back to the client's text.
    async fn relay_until_ready_after(&mut self, shard: usize, prefix: u64) -> R<Step> {
        let mut step = Step::Done;
        loop {
            let Some(f) = self.relay_recv(shard).await? else {
                continue; // a large row, already passed on
            };
            match f.tag {
                b'Z' => return Ok(step),
                b'E' => {
                    step = Step::Failed;
                    self.shard_error_after(&f, prefix);
                }
                b'T' if shard != HOME => {
                    let f = self.for_client(shard, f).await;
                    self.pass(&f).await?;
                }
                b'G' => {
                    // COPY FROM STDIN is refused by the planner on several shards; end it.
                    let mut fail = BytesMut::new();
                    fail.extend_from_slice(b"f\0\0\0\x1acopy not supported here\0");
                    self.links[shard].send(&fail).await?;
                }
                _ => self.pass(&f).await?,
            }
            self.maybe_flush().await?;
        }
    }

    /// Reads up to ReadyForQuery, forwarding only notices; returns the first error.
    pub async fn quiet_until_ready(&mut self, shard: usize) -> R<Option<Frame>> {
        self.quiet_until_ready_from(shard, None).await
    }

    /// As `quiet_until_ready`, for a statement every shard ran alike: a notice already queued
    /// for the client since `since` (the same one from another shard, say "table does not exist,
    /// skipping") is not passed on again.
    async fn quiet_until_ready_once(&mut self, shard: usize, since: usize) -> R<Option<Frame>> {
        self.quiet_until_ready_from(shard, Some(since)).await
    }

    async fn quiet_until_ready_from(
        &mut self,
        shard: usize,
        dedup_since: Option<usize>,
    ) -> R<Option<Frame>> {
        let mut first_error = None;
        loop {
            let f = self.links[shard].recv().await?;
            match f.tag {
                b'Z' => return Ok(first_error),
                b'E' if first_error.is_none() => first_error = Some(f),
                b'N' => {
                    let repeated = dedup_since.is_some_and(|since| {
                        let queued = &self.out[since.min(self.out.len())..];
                        queued.windows(f.bytes.len()).any(|w| w == &f.bytes[..])
                    });
                    if !repeated {
                        self.out.extend_from_slice(&f.bytes);
                    }
                }
                _ => {}
            }
        }
    }

    /// Runs `sql` on one shard without forwarding its results; returns its error, if any.
    pub async fn run_quiet(&mut self, shard: usize, sql: &str) -> R<Option<Frame>> {
        let mut q = BytesMut::new();
        build::query(sql, &mut q);
        self.links[shard].send(&q).await?;
        self.quiet_until_ready(shard).await
    }

    /// Session commands: every shard runs them; the client sees the home shard's answer.
    async fn everywhere(&mut self, sql: &str) -> R<Step> {
        let all: Vec<usize> = (0..self.links.len()).collect();
        if let TxnState::Open(_) = self.txn {
            for &s in &all {
                if self.enlist(s).await? == Step::Failed {
                    return Ok(Step::Failed);
                }
            }
        }
        self.on_all(sql, &all).await
    }

    pub(super) async fn on_all(&mut self, sql: &str, shards: &[usize]) -> R<Step> {
        let mut q = BytesMut::new();
        build::query(sql, &mut q);
        for &s in shards {
            self.links[s].send(&q).await?;
        }
        let mut step = Step::Done;
        let start = self.out.len();
        for &s in shards {
            if s == HOME {
                if self.relay_until_ready(s).await? == Step::Failed {
                    step = Step::Failed;
                }
            } else if let Some(err) = self.quiet_until_ready_once(s, start).await? {
                if step == Step::Done {
                    self.out.extend_from_slice(&err.bytes);
                }
                step = Step::Failed;
            }
        }
        Ok(step)
    }

    /// DDL on every shard. Outside a transaction it runs in one transaction per shard, committed
    /// only when every shard succeeded.
    async fn broadcast(&mut self, sql: &str, transactional: bool) -> R<Step> {
        let all: Vec<usize> = (0..self.links.len()).collect();
        match &self.txn {
            TxnState::Open(t) if !transactional && !t.implicit => Ok(self.error(&PgError::error(
                "25001",
                format!(
                    "{} cannot run inside a transaction block",
                    sql.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
                ),
            ))),
            _ if !transactional => {
                for &s in &all {
                    let step = if s == HOME {
                        let mut q = BytesMut::new();
                        build::query(sql, &mut q);
                        self.links[s].send(&q).await?;
                        self.relay_until_ready(s).await?
                    } else {
                        match self.run_quiet(s, sql).await? {
                            None => Step::Done,
                            Some(e) => {
                                self.out.extend_from_slice(&e.bytes);
                                Step::Failed
                            }
                        }
                    };
                    if step == Step::Failed {
                        return Ok(Step::Failed);
                    }
                }
                Ok(Step::Done)
            }
            _ => {
                // One distributed transaction (the client's, or its own), so the schema changes
                // on every shard or none.
                let own = self.own_implicit();
                let step = self.everywhere(sql).await?;
                if step == Step::Done {
                    for s in all {
                        self.txn.note_write(s);
                    }
                }
                self.end_own_implicit(own, step).await
            }
        }
    }

    /// Opens an implicit transaction for one statement that writes on several shards, when no
    /// transaction is open; returns whether it did (the caller then ends it).
    pub fn own_implicit(&mut self) -> bool {
        let own = self.txn == TxnState::Idle;
        if own {
            self.txn = self.new_txn("BEGIN".into(), true);
        }
        own
    }

    /// Ends a transaction opened by `own_implicit`: commit (two-phase when needed) on success.
    pub async fn end_own_implicit(&mut self, own: bool, step: Step) -> R<Step> {
        if !own {
            return Ok(step);
        }
        if step == Step::Failed {
            self.after_error().await?;
            return Ok(Step::Failed);
        }
        self.commit(false).await
    }

    async fn txn_command(&mut self, cmd: TxnCmd) -> R<Step> {
        match cmd {
            TxnCmd::Begin(text) => {
                let tag = if text.trim_start().to_ascii_lowercase().starts_with("start") {
                    "START TRANSACTION"
                } else {
                    "BEGIN"
                };
                match &mut self.txn {
                    TxnState::Idle => self.txn = self.new_txn(text, false),
                    TxnState::Open(t) if t.implicit => {
                        t.implicit = false;
                        t.begin = text;
                    }
                    _ => build::warning(
                        "25001",
                        "there is already a transaction in progress",
                        &mut self.out,
                    ),
                }
                build::command_complete(tag, &mut self.out);
                Ok(Step::Done)
            }
            TxnCmd::Commit => match &self.txn {
                TxnState::Idle => {
                    build::warning(
                        "25P01",
                        "there is no transaction in progress",
                        &mut self.out,
                    );
                    build::command_complete("COMMIT", &mut self.out);
                    Ok(Step::Done)
                }
                TxnState::Failed(_) => {
                    self.rollback_enlisted().await?;
                    self.txn = TxnState::Idle;
                    build::command_complete("ROLLBACK", &mut self.out);
                    Ok(Step::Done)
                }
                TxnState::Open(_) => self.commit(true).await,
            },
            TxnCmd::Savepoint(name) => {
                let TxnState::Open(t) = &self.txn else {
                    return Ok(self.no_block("SAVEPOINT"));
                };
                if t.implicit {
                    return Ok(self.no_block("SAVEPOINT"));
                }
                let step = self.on_enlisted(&format!("SAVEPOINT {name}")).await?;
                if let (Step::Done, TxnState::Open(t)) = (step, &mut self.txn) {
                    t.savepoint(&name);
                    build::command_complete("SAVEPOINT", &mut self.out);
                }
                Ok(step)
            }
            TxnCmd::SetTransaction(sql) => self.set_transaction(sql).await,
            TxnCmd::Release(name) => self.unwind(&name, true).await,
            TxnCmd::RollbackTo(name) => self.unwind(&name, false).await,
            TxnCmd::Rollback => {
                if self.txn == TxnState::Idle {
                    build::warning(
                        "25P01",
                        "there is no transaction in progress",
                        &mut self.out,
                    );
                }
                self.rollback_enlisted().await?;
                self.txn = TxnState::Idle;
                build::command_complete("ROLLBACK", &mut self.out);
                Ok(Step::Done)
            }
        }
    }

    /// SET TRANSACTION. Before the transaction has touched a shard it is only recorded, and
    /// every shard runs it right after BEGIN, before anything else, as PostgreSQL requires.
    /// Shards already enlisted run it now and answer as PostgreSQL would (25001 for an isolation
    /// level once a query has run).
    async fn set_transaction(&mut self, sql: String) -> R<Step> {
        let TxnState::Open(t) = &self.txn else {
            build::warning(
                "25P01",
                "SET TRANSACTION can only be used in transaction blocks",
                &mut self.out,
            );
            build::command_complete("SET", &mut self.out);
            return Ok(Step::Done);
        };
        // PostgreSQL refuses a different level inside a savepoint; with a shard enlisted,
        // the shards say so themselves.
        let asked = super::txn::Isolation::named_in(&sql);
        let in_savepoint = t.enlisted.is_empty() && !t.savepoints.is_empty() && asked.is_some();
        if in_savepoint && asked != Some(self.txn_isolation().await?) {
            return Ok(self.error(&PgError::error(
                "25001",
                "SET TRANSACTION ISOLATION LEVEL must not be called in a subtransaction",
            )));
        }
        let TxnState::Open(t) = &self.txn else {
            return Ok(Step::Done);
        };
        if !t.enlisted.is_empty() && self.on_enlisted(&sql).await? == Step::Failed {
            return Ok(Step::Failed);
        }
        if let TxnState::Open(t) = &mut self.txn {
            t.characteristics.push(sql);
        }
        build::command_complete("SET", &mut self.out);
        Ok(Step::Done)
    }

    /// RELEASE (`release`) or ROLLBACK TO a savepoint on every enlisted shard.
    async fn unwind(&mut self, name: &str, release: bool) -> R<Step> {
        let verb = if release { "RELEASE" } else { "ROLLBACK" };
        let (TxnState::Open(t) | TxnState::Failed(t)) = &mut self.txn else {
            return Ok(self.no_block(verb));
        };
        if t.implicit {
            return Ok(self.no_block(verb));
        }
        let mut unwound = t.clone();
        let found = if release {
            unwound.release(name)
        } else {
            unwound.rollback_to(name)
        };
        if let Err(missing) = found {
            return Ok(self.error(&PgError::error(
                "3B001",
                format!("savepoint \"{}\" does not exist", missing.0),
            )));
        }
        let sql = if release {
            format!("RELEASE SAVEPOINT {name}")
        } else {
            format!("ROLLBACK TO SAVEPOINT {name}")
        };
        let step = self.on_enlisted(&sql).await?;
        if step == Step::Done {
            // ROLLBACK TO leaves the transaction usable again, as in PostgreSQL.
            self.txn = TxnState::Open(unwound);
            build::command_complete(verb, &mut self.out);
        }
        Ok(step)
    }

    /// A savepoint command outside a transaction block (25P01, as PostgreSQL answers).
    fn no_block(&mut self, verb: &str) -> Step {
        let what = if verb == "ROLLBACK" {
            "ROLLBACK TO SAVEPOINT"
        } else {
            verb
        };
        self.error(&PgError::error(
            "25P01",
            format!("{what} can only be used in transaction blocks"),
        ))
    }

    /// Runs `sql` on every enlisted shard at once; the first error goes to the client.
    async fn on_enlisted(&mut self, sql: &str) -> R<Step> {
        let shards: Vec<usize> = self.txn.enlisted().into_iter().collect();
        let mut q = BytesMut::new();
        build::query(sql, &mut q);
        for &s in &shards {
            self.links[s].send(&q).await?;
        }
        let mut step = Step::Done;
        for &s in &shards {
            if let Some(err) = self.quiet_until_ready(s).await? {
                if step == Step::Done {
                    self.out.extend_from_slice(&err.bytes);
                }
                step = Step::Failed;
            }
        }
        Ok(step)
    }

    /// Commits the open transaction. One written shard commits first and plainly (its commit is
    /// the decision; read-only shards follow); two or more go through two-phase commit.
    pub async fn commit(&mut self, tag: bool) -> R<Step> {
        let TxnState::Open(t) = std::mem::replace(&mut self.txn, TxnState::Idle) else {
            return Ok(Step::Done);
        };
        if t.written.len() >= 2 {
            let readers = t.enlisted.difference(&t.written).copied().collect();
            let step = super::two_phase::commit(self, &t.written, &readers).await?;
            if step == Step::Done && tag {
                build::command_complete("COMMIT", &mut self.out);
            }
            return Ok(step);
        }
        if !t.written.is_empty() {
            metrics::counter!(crate::metrics::COMMITS, "kind" => "one_phase").increment(1);
        }
        let order = t.commit_order();
        // The written shard (if any) commits first: its commit is the decision.
        let readers = if t.written.is_empty() {
            &order[..]
        } else {
            let s = order[0];
            let result = match self.run_quiet(s, "COMMIT").await {
                Err(Stop::Shard(name)) => {
                    // The written shard may have committed before the connection broke.
                    return Ok(self.error(
                        &PgError::error(
                            "08007",
                            format!("connection to shard {name} was lost while committing; the transaction's outcome is unknown"),
                        )
                        .with_hint("Check whether its changes are present before retrying."),
                    ));
                }
                other => other?,
            };
            if let Some(err) = result {
                self.out.extend_from_slice(&err.bytes);
                self.on_each(&order[1..], "ROLLBACK").await?;
                return Ok(Step::Failed);
            }
            &order[1..]
        };
        // Read-only participants change nothing by committing: all at once.
        if let Some(err) = self.on_each(readers, "COMMIT").await? {
            if t.written.is_empty() {
                self.out.extend_from_slice(&err.bytes);
                return Ok(Step::Failed);
            }
            tracing::warn!("commit of a read-only participant failed after the decision");
        }
        if tag {
            build::command_complete("COMMIT", &mut self.out);
        }
        Ok(Step::Done)
    }

    /// Runs `sql` on each of `shards` in one round trip; returns the first error.
    async fn on_each(&mut self, shards: &[usize], sql: &str) -> R<Option<Frame>> {
        let mut q = BytesMut::new();
        build::query(sql, &mut q);
        for &s in shards {
            self.links[s].send(&q).await?;
        }
        let mut first = None;
        for &s in shards {
            if let Some(e) = self.quiet_until_ready(s).await? {
                first.get_or_insert(e);
            }
        }
        Ok(first)
    }

    pub async fn rollback_enlisted(&mut self) -> R<()> {
        if let TxnState::Open(t) | TxnState::Failed(t) = &self.txn {
            if t.changed_session {
                // A SET in the transaction is undone.
                self.default_isolation = None;
            }
            if t.written.len() >= 2 {
                metrics::counter!(crate::metrics::ABORTS, "reason" => "rollback").increment(1);
            }
        }
        let shards: Vec<usize> = self.txn.enlisted().into_iter().collect();
        self.on_each(&shards, "ROLLBACK").await?;
        Ok(())
    }

    async fn admin(&mut self, cmd: AdminCmd) -> Step {
        match cmd {
            AdminCmd::Set { name, value } => self.set_variable(&name, &value),
            AdminCmd::Show { name } => self.show_variable(&name),
            AdminCmd::Recover => {
                let report =
                    crate::txn::recovery::run(&self.txn_ctx.shards, &self.txn_ctx.recovery).await;
                if self.describe_rows {
                    build::row_description_text(&["gid", "shard", "outcome"], &mut self.out);
                }
                for r in &report.resolved {
                    build::data_row_text(
                        &[Some(&r.gid), Some(&r.shard), Some(r.outcome)],
                        &mut self.out,
                    );
                }
                for g in &report.skipped {
                    build::data_row_text(&[Some(g), None, Some("left for later")], &mut self.out);
                }
                for e in &report.errors {
                    build::warning("01000", e, &mut self.out);
                }
                let n = report.resolved.len() + report.skipped.len();
                build::command_complete(&format!("SHOW {n}"), &mut self.out);
                Step::Done
            }
            AdminCmd::Route { table, key } => match self.placement.route_text(&table, &key) {
                Ok((slot, shard)) => {
                    if self.describe_rows {
                        build::row_description_text(
                            &["table", "key", "slot", "shard"],
                            &mut self.out,
                        );
                    }
                    let slot = slot.to_string();
                    build::data_row_text(
                        &[Some(&table), Some(&key), Some(&slot), Some(&shard)],
                        &mut self.out,
                    );
                    build::command_complete("SHOW", &mut self.out);
                    Step::Done
                }
                Err(e) => self.error(&PgError::error("42P01", e)),
            },
        }
    }
}

/// Characters of `text` before `piece`, a slice of it.
fn ahead_of(text: &str, piece: &str) -> u64 {
    let at = (piece.as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
    text.get(..at).map_or(0, |t| t.chars().count() as u64)
}

/// The table of an INSERT ... VALUES without a column list into a sharded table.
fn insert_without_columns(
    stmt: &sqlparser::ast::Statement,
    placement: &Placement,
) -> Option<String> {
    let sqlparser::ast::Statement::Insert(ins) = stmt else {
        return None;
    };
    let sqlparser::ast::TableObject::TableName(name) = &ins.table else {
        return None;
    };
    if !ins.columns.is_empty() {
        return None;
    }
    match placement.rule(&name.to_string()) {
        Some(crate::placement::TableRule::Sharded { .. }) => Some(name.to_string()),
        _ => None,
    }
}
