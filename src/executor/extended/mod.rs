//! The extended query protocol on several shards.
//!
//! Messages are collected up to Sync (or Flush) and then routed: a Bind is planned with its
//! bound values, so `WHERE id = $1` goes to the shard owning the value. When every message of a
//! batch goes to one shard (the common case: Parse/Bind/Describe/Execute/Sync of a point query),
//! the batch is sent there in one write, preceded by the Parse of any statement that shard has
//! not prepared yet (whose ParseComplete the client must not see), and answered in one round
//! trip. Other batches run message by message, with a Flush after each so answers come back in
//! order. Statements are parsed (and planned from their AST) once per Parse, as PostgreSQL does.
//!
//! Statements the proxy carries out itself (transaction control, SET, DDL, refusals) and scatter
//! reads are "local" portals: their Bind is answered by the proxy and their Execute runs through
//! the same executor as the simple protocol; a scattered read re-binds the statement on every
//! shard (Parse+Bind+Describe+Execute+Sync) and merges like a simple one.
//!
//! This file holds the session's statements and portals and the batch loop (collect, route, run,
//! Sync); `statement` is a prepared statement as the session keeps it, `routing` decides where
//! a batch goes, `one_shard` is the fast path, `portal` the message-by-message path (Bind,
//! Describe, Close) and `execute` its Execute, `local_portal` the portals the proxy carries
//! out, `rebind` builds the requests for statements run on several shards, `fixed_result`
//! keeps a statement's result columns as PostgreSQL does, `shard_set` the small per-batch
//! sets of shards, `portals` the portals by name, `parse_checked` the refusals a Parse gets
//! whatever its values.

mod binary_rows;
mod execute;
mod fixed_result;
mod local_portal;
use local_portal::LocalPortal;
mod one_shard;
mod parse_checked;
use parse_checked::ParseChecked;
mod portal;
mod portals;
pub(crate) mod route_cache;
mod routing;
mod shard_set;
mod statement;
use shard_set::ShardSet;
use statement::Statement;

use super::link::row_types::RowTypes;
use super::session::{Exec, Step, R};
use crate::error::PgError;
use crate::protocol::message::{Bind, ClientMessage, DecodeError, Kind, Parse};
use crate::protocol::{build, Frame};
use crate::router::cursor::CursorCmd;
use crate::router::params::Params;
use crate::router::plan::{plan, plan_unparsed, Plan, TxnCmd, HOME};
use crate::txn::state::{Isolation, TxnState};
use bytes::{Bytes, BytesMut};
use foldhash::HashMap;

/// Pending messages (without a Sync or Flush) that make the session run them instead of
/// collecting more: PostgreSQL keeps no such backlog, so neither may the proxy.
const PENDING_LIMIT_BYTES: usize = 1 << 20;
const PENDING_LIMIT_MESSAGES: usize = 1024;

enum Portal {
    /// Bound on this shard under the client's name, with what its binary rows need renumbered
    /// (see `binary_rows`) once a batch has worked it out.
    Shard(usize, Option<RowTypes>),
    /// Carried out by the proxy (boxed: it is large and rarer than `Shard`).
    Local(Box<LocalPortal>),
}

/// Moves the gauge of bytes sessions hold for clients. The handle is looked up once per
/// process, not once per move; sessions start after the recorder is installed, so the first
/// lookup finds it.
fn buffered(delta: i64) {
    static GAUGE: std::sync::OnceLock<metrics::Gauge> = std::sync::OnceLock::new();
    let g = GAUGE.get_or_init(|| metrics::gauge!(crate::metrics::SESSION_BUFFERED_BYTES));
    if delta >= 0 {
        g.increment(delta as f64);
    } else {
        g.decrement(-delta as f64);
    }
}

#[derive(Default)]
pub struct Extended {
    statements: HashMap<String, Statement>,
    portals: portals::Portals,
    batch: Vec<ClientMessage>,
    /// Bytes held in `batch`.
    batch_bytes: usize,
    /// The part of `batch_bytes` the gauge of held bytes counts (see `show_buffered`).
    shown_bytes: usize,
    /// An error happened in this batch: discard messages until Sync.
    failed: bool,
    /// Shards that received messages since the last Sync.
    touched: ShardSet,
    /// The result columns of the last statement Describe relayed (see `relay_one`).
    described: Option<Frame>,
    /// Its ParameterDescription, as the client was shown it.
    described_params: Option<Frame>,
    /// Where Binds of each statement text go, as their first planning showed.
    routes: route_cache::Routes,
    /// The last Parse text found valid (see `ParseChecked`).
    parse_checked: ParseChecked,
    /// The fast path's write buffer, kept for the next batch (see `keep_out`).
    out: BytesMut,
}

impl Drop for Extended {
    fn drop(&mut self) {
        // A session that ends before its Sync still gives its pending bytes back to the gauge.
        buffered(-(self.shown_bytes as i64));
    }
}

impl Extended {
    /// Adds a client message to the batch, decoded and made what the shards must see
    /// (`Exec::for_shards`) where it lies in the batch rather than on the way there; true when
    /// the batch must run now (`run_joined`). Most messages only join: nothing is sent or
    /// answered until the Sync.
    pub fn join(&mut self, exec: &mut Exec<'_>, frame: Frame) -> Result<bool, DecodeError> {
        self.forget_deallocated(exec);
        let mut msg = ClientMessage::decode(frame)?;
        exec.for_shards(&mut msg);
        // By the statement's name as renamed for the shards, as the session keeps it.
        if let Kind::Bind(b) = &mut msg.kind {
            b.params.types = self.declared_types(&b.statement);
        }
        self.batch.push(msg);
        let Some(msg) = self.batch.last_mut() else {
            return Ok(false);
        };
        let (tag, size) = (msg.tag(), msg.size());
        if let Kind::Bind(b) = &msg.kind {
            if !exec.pool.inlined.is_empty() {
                let name = b.statement.clone();
                if let Some((client, text)) = exec.inlined_went_stale(&name) {
                    if let Some(st) = self
                        .statements
                        .get_mut(name.as_str())
                        .filter(|st| st.sql == text)
                    {
                        st.executes_again(exec, &name, client);
                    }
                }
            }
        }
        self.batch_bytes += size;
        // A client that sends messages without ever syncing is served the way PostgreSQL
        // serves it, message by message, instead of being buffered without bound.
        Ok(matches!(tag, b'S' | b'H')
            || self.batch_bytes > PENDING_LIMIT_BYTES
            || self.batch.len() > PENDING_LIMIT_MESSAGES)
    }

    /// The named portal a simple FETCH, MOVE or CLOSE text names, if the client bound one of
    /// that name: with its shard, or None when the proxy carries it out.
    pub fn portal_named_by(&self, sql: &str) -> Option<(String, Option<usize>)> {
        if !self.portals.any_named() {
            return None;
        }
        let name = match crate::router::cursor::plan_words(sql)? {
            Plan::Cursor(CursorCmd::Fetch(f)) => f.name,
            Plan::Cursor(CursorCmd::Close(Some(name))) => name,
            _ => return None,
        };
        let at = match self.portals.get(&name)? {
            Portal::Shard(s, _) => Some(*s),
            Portal::Local(_) => None,
        };
        Some((name, at))
    }

    /// The parameter types declared for the statement a Bind names: by its Parse earlier in
    /// the batch, or by the one that prepared it, completed by the types a shard described.
    fn declared_types(&self, statement: &str) -> smallvec::SmallVec<[u32; 2]> {
        let in_batch = self.batch.iter().rev().find_map(|m| match &m.kind {
            Kind::Parse(p) if p.name == statement => Some(&p.param_types),
            _ => None,
        });
        // A Parse in the batch replaces the statement, and was not described yet.
        match in_batch {
            Some(types) => types.iter().copied().collect(),
            None => self
                .statements
                .get(statement)
                .map(|st| st.known_types().collect())
                .unwrap_or_default(),
        }
    }

    /// Runs the batch `join` said must run: to its Sync or Flush, or (too much pending) the
    /// messages so far one by one, which stay one (distributed) transaction up to the Sync.
    pub async fn run_joined(&mut self, exec: &mut Exec<'_>) -> R<()> {
        if self
            .batch
            .last()
            .is_some_and(|m| matches!(m.tag(), b'S' | b'H'))
        {
            let mut batch = self.take_batch();
            let ran = self.run_batch(exec, &mut batch).await;
            self.reuse(batch);
            ran?;
            exec.flush().await
        } else {
            self.run_pending(exec).await
        }
    }

    /// Runs the messages received since the last Sync or Flush now, one by one (a Query, or too
    /// much pending, arrived before the client synced).
    pub async fn run_pending(&mut self, exec: &mut Exec<'_>) -> R<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = self.take_batch();
        fetch_insert_columns(exec, &batch).await?;
        if exec.txn == TxnState::Idle && !self.failed {
            exec.txn = exec.new_txn("BEGIN".into(), true);
        }
        for msg in batch {
            self.run_message(exec, msg).await?;
        }
        Ok(())
    }

    /// In a failed transaction block PostgreSQL refuses to parse or bind anything but COMMIT,
    /// ROLLBACK and ROLLBACK TO (25P02), before any shard is asked: a shard the transaction
    /// never reached would otherwise run the statement outside it.
    fn aborted(&self, exec: &Exec<'_>, m: &ClientMessage) -> Option<PgError> {
        if !matches!(&exec.txn, TxnState::Failed(t) if !t.implicit) {
            return None;
        }
        let sql = match &m.kind {
            Kind::Parse(p) => p.sql.as_str(),
            Kind::Bind(b) => self.statements.get(b.statement.as_str())?.sql.as_str(),
            _ => return None,
        };
        let exits = matches!(
            plan_unparsed(sql),
            Plan::Txn(TxnCmd::Commit | TxnCmd::Rollback | TxnCmd::RollbackTo(_))
        );
        (!exits).then(|| {
            PgError::error(
                "25P02",
                "current transaction is aborted, commands ignored until end of transaction block",
            )
        })
    }

    /// Counts the pending batch in the gauge of bytes held for clients. Called when the batch
    /// is about to wait (for the client's next message, or for connections): a batch that runs
    /// as soon as its packet is read never shows there, and its messages move no gauge.
    pub fn show_buffered(&mut self) {
        if self.batch_bytes != self.shown_bytes {
            buffered(self.batch_bytes as i64 - self.shown_bytes as i64);
            self.shown_bytes = self.batch_bytes;
        }
    }

    /// Messages received since the last Sync or Flush that have not run yet.
    pub fn has_pending(&self) -> bool {
        !self.batch.is_empty()
    }

    /// Runs the pending messages as a batch, as if the client had sent Flush (it went quiet
    /// before its Sync): the same routing and transaction rules as a synced batch.
    pub async fn run_unsynced(&mut self, exec: &mut Exec<'_>) -> R<()> {
        let mut batch = self.take_batch();
        let ran = self.run_batch(exec, &mut batch).await;
        self.reuse(batch);
        ran
    }

    /// After an error, PostgreSQL discards every message until Sync, a simple Query included.
    pub fn skipping_until_sync(&self) -> bool {
        self.failed
    }

    fn take_batch(&mut self) -> Vec<ClientMessage> {
        self.batch_bytes = 0;
        if self.shown_bytes > 0 {
            buffered(-(std::mem::take(&mut self.shown_bytes) as i64));
        }
        std::mem::take(&mut self.batch)
    }

    /// Keeps the fast path's sent buffer for the next batch, unless a large batch grew it.
    fn keep_out(&mut self, mut out: BytesMut) {
        const KEPT_BYTES: usize = 16 * 1024;
        if out.capacity() <= KEPT_BYTES {
            out.clear();
            self.out = out;
        }
    }

    /// Gives a run batch's allocation back for the next one: most batches are a handful of
    /// messages, and growing a new vector for each took two allocations and their copies. One
    /// that grew large (a long pipeline) is let go rather than held for the session's life.
    fn reuse(&mut self, mut batch: Vec<ClientMessage>) {
        const KEPT_CAPACITY: usize = 16;
        batch.clear();
        if self.batch.capacity() == 0 && batch.capacity() <= KEPT_CAPACITY {
            self.batch = batch;
        }
    }

    /// Runs `batch` (what it leaves in it is spent: see `reuse`).
    async fn run_batch(&mut self, exec: &mut Exec<'_>, batch: &mut Vec<ClientMessage>) -> R<()> {
        fetch_insert_columns(exec, batch).await?;
        // A batch run before its Sync (the client paused, or flushed) that may write opens the
        // transaction first: what follows it up to the Sync is not known yet.
        let synced = batch.last().is_some_and(|m| m.tag() == b'S');
        if !synced {
            self.open_one_transaction(exec, batch).await?;
        }
        // In a failed transaction every Parse and Bind is checked (see `aborted`); the proxy's
        // own implicit transaction ends at the Sync, which the message-by-message path does.
        if !self.failed
            && !matches!(exec.txn, TxnState::Failed(_))
            && !matches!(&exec.txn, TxnState::Open(t) if t.implicit && synced)
        {
            if let Some(one) = self.single_destination(exec, batch) {
                return self.run_on_one_shard(exec, one, batch).await;
            }
        }
        if synced {
            self.open_one_transaction(exec, batch).await?;
        }
        // A snapshot transaction takes its cut on the shards the batch binds to, before any
        // message runs.
        if matches!(&exec.txn, TxnState::Open(t) if t.snapshot && t.cut.is_none()) {
            let shards = self.bound_shards(exec, batch);
            if !shards.is_empty() && exec.ensure_cut().await? == Step::Failed {
                exec.txn.fail();
                return self.fail_rest(exec, batch).await;
            }
        }
        exec.copied_in = false;
        for frame in batch.drain(..) {
            // PostgreSQL ignores a Sync that reaches it during COPY FROM STDIN, and one sent
            // with the Execute that began the COPY did; the Sync after the data ends it.
            if frame.tag() == b'S' && std::mem::take(&mut exec.copied_in) {
                continue;
            }
            self.run_message(exec, frame).await?;
        }
        exec.copied_in = false;
        Ok(())
    }

    /// PostgreSQL runs the messages up to Sync as one implicit transaction; so does the proxy,
    /// with a transaction of its own committed at Sync, where a shard's own would not do (see
    /// `runs_as_one_transaction`).
    async fn open_one_transaction(&self, exec: &mut Exec<'_>, batch: &[ClientMessage]) -> R<()> {
        if exec.txn != TxnState::Idle || self.failed || !self.runs_as_one_transaction(exec, batch) {
            return Ok(());
        }
        // A first statement read in two parts needs one snapshot for both: the batch's Parses
        // take theirs on the shards already, so the transaction has it from BEGIN.
        let begin = if self.first_bind_reads_in_two_parts(exec, batch)
            && exec.txn_isolation().await? == Isolation::ReadCommitted
        {
            "BEGIN ISOLATION LEVEL REPEATABLE READ"
        } else {
            "BEGIN"
        };
        exec.txn = exec.new_txn(begin.into(), true);
        Ok(())
    }

    /// The statement a Parse makes, replacing any of its name. Drivers parse the unnamed
    /// statement again with the same message for every query; that one is renewed in place
    /// rather than built again.
    fn parsed(&mut self, exec: &Exec<'_>, m: &ClientMessage, p: &Parse) -> &mut Statement {
        use std::collections::hash_map::Entry;
        match self.statements.entry(p.name.clone()) {
            Entry::Occupied(o) if p.name.is_empty() && o.get().parse == m.frame.bytes => {
                let st = o.into_mut();
                st.renew(exec);
                st
            }
            Entry::Occupied(mut o) => {
                o.insert(Statement::new(exec, m, p));
                o.into_mut()
            }
            Entry::Vacant(v) => v.insert(Statement::new(exec, m, p)),
        }
    }

    /// DEALLOCATE / DISCARD ALL ran on the shards: their prepared statements are gone.
    fn forget_deallocated(&mut self, exec: &mut Exec<'_>) {
        if exec.deallocated.is_empty() {
            return;
        }
        for name in std::mem::take(&mut exec.deallocated) {
            match name {
                None => {
                    self.statements.clear();
                    exec.pool.inlined.clear();
                }
                Some(n) => {
                    self.statements.remove(&n);
                    exec.pool.inlined.remove(&n);
                }
            }
        }
    }

    async fn fail_rest(&mut self, exec: &mut Exec<'_>, batch: &[ClientMessage]) -> R<()> {
        self.failed = true;
        if batch.last().is_some_and(|m| m.tag() == b'S') {
            self.sync(exec).await?;
        }
        Ok(())
    }

    /// Slow path: one message at a time.
    async fn run_message(&mut self, exec: &mut Exec<'_>, m: ClientMessage) -> R<()> {
        if m.tag() == b'S' {
            return self.sync(exec).await;
        }
        if self.failed {
            return Ok(());
        }
        if let Some(err) = self.aborted(exec, &m) {
            exec.error(&err);
            self.failed = true;
            return Ok(());
        }
        let step = match &m.kind {
            Kind::Parse(p) if !p.name.is_empty() && self.statements.contains_key(&p.name) => {
                // PostgreSQL refuses to prepare a live name again; the statement stays.
                let shown = crate::pool::names::client_part(&p.name);
                exec.error(&PgError::error(
                    "42P05",
                    format!("prepared statement \"{shown}\" already exists"),
                ));
                self.failed = true;
                exec.txn.fail();
                return Ok(());
            }
            Kind::Parse(p) => {
                if let Some(err) = self.parse_checked.error(exec, &p.sql) {
                    metrics::counter!(crate::metrics::STATEMENTS_REJECTED).increment(1);
                    self.statements.remove(&p.name);
                    return {
                        exec.error(&err);
                        self.failed = true;
                        exec.txn.fail();
                        Ok(())
                    };
                }
                self.parsed(exec, &m, p);
                if answered_by_proxy(&p.sql) {
                    // Nothing to prepare on a shard (see `answered_by_proxy`).
                    build::empty(b'1', &mut exec.out);
                    return Ok(());
                }
                let step = self
                    .send_and_relay(exec, HOME, std::slice::from_ref(&m.frame.bytes), b'P', 0)
                    .await?;
                match self.statements.get_mut(&p.name) {
                    // The home shard now has it: a Bind routed there must not parse it again.
                    Some(st) if step == Step::Done => {
                        st.sent_to(exec, HOME);
                    }
                    // The shard refused it: there is no such statement to bind later.
                    _ => {
                        self.statements.remove(&p.name);
                    }
                }
                step
            }
            Kind::Bind(b) => self.bind(exec, &m.frame, b).await?,
            Kind::Describe(t) => self.describe(exec, &m.frame, t).await?,
            Kind::Execute(e) => {
                let step = self.execute(exec, &m.frame, e).await;
                exec.rewritten = false;
                step?
            }
            Kind::Close(t) => self.close(exec, &m.frame, t).await?,
            Kind::Flush | Kind::Sync => Step::Done,
        };
        if step == Step::Failed {
            self.failed = true;
            exec.txn.fail();
        }
        Ok(())
    }

    /// Sync: every touched shard syncs; one ReadyForQuery with the session's status.
    async fn sync(&mut self, exec: &mut Exec<'_>) -> R<()> {
        let touched = std::mem::take(&mut self.touched);
        for s in touched.iter() {
            exec.unsynced.remove(&s);
            exec.links[s].send(b"S\0\0\0\x04").await?;
            loop {
                let f = exec.links[s].recv().await?;
                match f.tag {
                    b'Z' => break,
                    b'E' if !self.failed => {
                        self.failed = true;
                        exec.out.extend_from_slice(&f.bytes);
                        exec.txn.fail();
                    }
                    b'N' => exec.out.extend_from_slice(&f.bytes),
                    _ => {}
                }
            }
        }
        if self.failed || exec.txn.failed_implicit() {
            if exec.txn.failed_implicit() || matches!(&exec.txn, TxnState::Open(t) if t.implicit) {
                exec.after_error().await?;
            }
        } else if matches!(&exec.txn, TxnState::Open(t) if t.implicit) {
            exec.commit(false).await?;
        }
        self.end_of_sync(exec);
        exec.ready_for_query();
        Ok(())
    }

    fn end_of_sync(&mut self, exec: &mut Exec<'_>) {
        self.failed = false;
        self.touched.clear();
        // The unnamed portal and the portals of an ended transaction are gone on the shards.
        if exec.txn.status() == b'I' {
            self.portals.clear();
        } else {
            self.portals.remove("");
        }
    }
}

/// `SHOW shardgate.*` and `SET shardgate.*`, which no shard knows, and transaction control,
/// which the proxy carries out itself: their Parse and Describe are answered by the proxy.
/// Sending them to a shard the transaction has not reached would pull it in (a second shard
/// of a SERIALIZABLE transaction is refused) for a statement that reads nothing.
pub(super) fn answered_by_proxy(sql: &str) -> bool {
    matches!(plan_unparsed(sql), Plan::Admin(_) | Plan::Txn(_))
}

/// A snapshot transaction that has not enlisted `shard` (it may not have a cut yet).
fn snapshot_without(exec: &Exec<'_>, shard: usize) -> bool {
    matches!(&exec.txn, TxnState::Open(t) if t.snapshot && !t.enlisted.contains(&shard))
}

/// A parsed statement shared with the session's parse cache.
type Ast = std::sync::Arc<sqlparser::ast::Statement>;

/// The statement's AST as planning needs it (an INSERT without a column list gets its table's).
fn parse_ast_for(exec: &Exec<'_>, sql: &str) -> Option<Ast> {
    parse_ast(exec, sql).map(|a| exec.with_insert_columns(&a))
}

/// The one statement of an extended-protocol Parse (from the session's parse cache).
fn parse_ast(exec: &Exec<'_>, sql: &str) -> Option<Ast> {
    match exec.parse(sql) {
        Some(v) if v.len() == 1 => Some(v[0].clone()),
        _ => None,
    }
}

/// Plans a statement the proxy made (not the client's text), as `plan_sql` does.
fn plan_stmt(exec: &Exec<'_>, stmt: &sqlparser::ast::Statement, params: &Params) -> Plan {
    exec.resolve_cursor(plan(stmt, &exec.placement, params))
}

fn plan_sql(exec: &Exec<'_>, sql: &str, ast: &Option<Ast>, params: &Params) -> Plan {
    let planned = match ast {
        Some(stmt) => plan(stmt, &exec.placement, params),
        None if sql.trim().is_empty() => Plan::Shard {
            shard: HOME,
            write: false,
        },
        None => plan_unparsed(sql),
    };
    // A cursor on one shard is read there, like any statement for that shard.
    exec.resolve_cursor(planned)
}

/// Reads the column order of the tables that the batch's INSERTs without a column list write,
/// before any of them is planned (placement needs to know which value is the key).
async fn fetch_insert_columns(exec: &mut Exec<'_>, batch: &[ClientMessage]) -> R<()> {
    // Only a text whose first word is INSERT parses as one: the others are not looked up in
    // the parse cache (a hash of the whole text) for nothing.
    for p in parses(batch).filter(|p| crate::sql::first_word_is(&p.sql, "insert")) {
        if let Some(stmt) = parse_ast(exec, &p.sql) {
            exec.fetch_insert_columns(&stmt).await?;
        }
    }
    Ok(())
}

/// The Binds of a batch.
fn binds(batch: &[ClientMessage]) -> impl Iterator<Item = &Bind> {
    batch.iter().filter_map(|m| match &m.kind {
        Kind::Bind(b) => Some(b),
        _ => None,
    })
}

/// The Parses of a batch.
fn parses(batch: &[ClientMessage]) -> impl DoubleEndedIterator<Item = &Parse> {
    batch.iter().filter_map(|m| match &m.kind {
        Kind::Parse(p) => Some(p),
        _ => None,
    })
}
