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

use super::session::{Exec, Step, R};
use super::txn::TxnState;
use crate::error::{sqlstate, PgError};
use crate::protocol::message::{Bind, ClientMessage, Execute, Kind, Parse, Target, TargetKind};
use crate::protocol::{build, Frame};
use crate::router::params::Params;
use crate::router::plan::{plan, plan_unparsed, Plan, HOME};
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::{BTreeSet, HashMap};

/// Pending messages (without a Sync or Flush) that make the session run them instead of
/// collecting more: PostgreSQL keeps no such backlog, so neither may the proxy.
const PENDING_LIMIT_BYTES: usize = 1 << 20;
const PENDING_LIMIT_MESSAGES: usize = 1024;

struct Statement {
    /// The client's Parse message, replayed on shards that have not prepared it.
    parse: Bytes,
    sql: String,
    /// Parameter types the client declared in its Parse.
    param_types: Vec<u32>,
    ast: Option<Ast>,
    /// Shards where it is prepared under the client's name.
    on: BTreeSet<usize>,
}

enum Portal {
    /// Bound on this shard under the client's name.
    Shard(usize),
    /// Carried out by the proxy (boxed: it is large and rarer than `Shard`).
    Local(Box<LocalPortal>),
}

struct LocalPortal {
    plan: Plan,
    sql: String,
    params: Params,
    /// The client's declared parameter types (values were encoded for them).
    param_types: Vec<u32>,
    result_formats: Vec<i16>,
    /// A merged result materialized for Execute with a row limit: rows, then the CommandComplete.
    pending: Option<std::collections::VecDeque<Frame>>,
    /// Bytes of `pending` counted in the buffered-bytes gauge.
    held: usize,
}

impl Drop for LocalPortal {
    fn drop(&mut self) {
        buffered(-(self.held as i64));
    }
}

/// Moves the gauge of bytes sessions hold for clients.
fn buffered(delta: i64) {
    let g = metrics::gauge!(crate::metrics::SESSION_BUFFERED_BYTES);
    if delta >= 0 {
        g.increment(delta as f64);
    } else {
        g.decrement(-delta as f64);
    }
}

impl Statement {
    fn new(exec: &Exec<'_>, m: &ClientMessage, p: &Parse, on: BTreeSet<usize>) -> Statement {
        Statement {
            parse: m.frame.bytes.clone(),
            sql: p.sql.clone(),
            param_types: p.param_types.clone(),
            ast: parse_ast_for(exec, &p.sql),
            on,
        }
    }
}

impl LocalPortal {
    /// For a scattered read: its shards, merge spec, and the re-bind to send each shard
    /// (Parse+Bind+Describe, plus Execute+Sync when `execute`).
    fn scatter(
        &self,
        execute: bool,
    ) -> Option<(Vec<usize>, crate::router::plan::MergeSpec, Bytes)> {
        let (shards, sql, merge) = match &self.plan {
            Plan::Scatter { shards, sql, merge } => (shards.clone(), sql, merge.clone()),
            // Describing a write: every part returns the same columns.
            Plan::Write { parts, .. } if !execute => {
                (vec![parts[0].0], &parts[0].1, Default::default())
            }
            _ => return None,
        };
        let request = rebind(
            sql,
            &self.params,
            &self.param_types,
            &self.result_formats,
            true,
            execute,
        );
        Some((shards, merge, request))
    }
}

#[derive(Default)]
pub struct Extended {
    statements: HashMap<String, Statement>,
    portals: HashMap<String, Portal>,
    batch: Vec<ClientMessage>,
    /// Bytes held in `batch`.
    batch_bytes: usize,
    /// An error happened in this batch: discard messages until Sync.
    failed: bool,
    /// Shards that received messages since the last Sync.
    touched: BTreeSet<usize>,
}

impl Drop for Extended {
    fn drop(&mut self) {
        // A session that ends before its Sync still gives its pending bytes back to the gauge.
        buffered(-(self.batch_bytes as i64));
    }
}

impl Extended {
    pub async fn handle(&mut self, exec: &mut Exec<'_>, msg: ClientMessage) -> R<()> {
        self.forget_deallocated(exec);
        let tag = msg.tag();
        self.batch_bytes += msg.size();
        buffered(msg.size() as i64);
        self.batch.push(msg);
        match tag {
            b'S' | b'H' => {
                let batch = self.take_batch();
                self.run_batch(exec, batch).await?;
                exec.flush().await
            }
            // A client that sends messages without ever syncing is served the way PostgreSQL
            // serves it, message by message, instead of being buffered without bound; the
            // messages up to its Sync stay one (distributed) transaction.
            _ if self.batch_bytes > PENDING_LIMIT_BYTES
                || self.batch.len() > PENDING_LIMIT_MESSAGES =>
            {
                self.run_pending(exec).await
            }
            _ => Ok(()),
        }
    }

    /// Runs the messages received since the last Sync or Flush now, one by one (a Query, or too
    /// much pending, arrived before the client synced).
    pub async fn run_pending(&mut self, exec: &mut Exec<'_>) -> R<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = self.take_batch();
        if exec.txn == TxnState::Idle && !self.failed {
            exec.txn = exec.new_txn("BEGIN".into(), true, true);
        }
        for msg in batch {
            self.run_message(exec, msg).await?;
        }
        Ok(())
    }

    /// After an error, PostgreSQL discards every message until Sync, a simple Query included.
    pub fn skipping_until_sync(&self) -> bool {
        self.failed
    }

    fn take_batch(&mut self) -> Vec<ClientMessage> {
        buffered(-(std::mem::take(&mut self.batch_bytes) as i64));
        std::mem::take(&mut self.batch)
    }

    async fn run_batch(&mut self, exec: &mut Exec<'_>, batch: Vec<ClientMessage>) -> R<()> {
        for m in &batch {
            if let Kind::Parse(p) = &m.kind {
                if let Some(stmt) = parse_ast(exec, &p.sql) {
                    exec.fetch_insert_columns(&stmt).await?;
                }
            }
        }
        if !self.failed {
            if let Some(shard) = self.single_destination(exec, &batch) {
                return self.run_on_one_shard(exec, shard, batch).await;
            }
        }
        // PostgreSQL runs the messages up to Sync as one implicit transaction; when they write
        // on several shards, so does the proxy, committing at Sync.
        if exec.txn == TxnState::Idle && self.writes_several_shards(exec, &batch) {
            exec.txn = exec.new_txn("BEGIN".into(), true, true);
        }
        // A snapshot transaction takes its cut on the shards the batch binds to, before any
        // message runs.
        if matches!(&exec.txn, TxnState::Open(t) if t.snapshot && t.cut.is_none()) {
            let shards = self.bound_shards(exec, &batch);
            if !shards.is_empty() && exec.ensure_cut(&shards).await? == Step::Failed {
                exec.txn.fail();
                return self.fail_rest(exec, batch).await;
            }
        }
        for frame in batch {
            self.run_message(exec, frame).await?;
        }
        Ok(())
    }

    /// The one shard every message of the batch goes to, if there is one and nothing in the
    /// batch needs the proxy.
    fn single_destination(&mut self, exec: &Exec<'_>, batch: &[ClientMessage]) -> Option<usize> {
        let mut parsed: HashMap<String, Option<usize>> = HashMap::new();
        let mut bound: HashMap<String, usize> = HashMap::new();
        let mut dest: Option<usize> = None;
        fn agree(dest: &mut Option<usize>, d: usize) -> bool {
            *dest.get_or_insert(d) == d
        }
        for m in batch {
            let ok = match &m.kind {
                Kind::Parse(p) => {
                    parsed.insert(p.name.clone(), None);
                    parse_error(exec, &p.sql).is_none()
                }
                Kind::Bind(b) => {
                    let plan = self.plan_for(exec, &b.statement, &Params::of(b), batch)?;
                    match plan {
                        Plan::Shard { shard, .. } => {
                            bound.insert(b.portal.clone(), shard);
                            parsed
                                .entry(b.statement.clone())
                                .and_modify(|d| *d = Some(shard));
                            agree(&mut dest, shard)
                        }
                        _ => false,
                    }
                }
                Kind::Execute(e) => {
                    match bound
                        .get(&e.portal)
                        .copied()
                        .or_else(|| self.portal_shard(&e.portal))
                    {
                        Some(s) => agree(&mut dest, s),
                        None => false,
                    }
                }
                Kind::Describe(Target { kind, name }) => {
                    let name = name.as_str();
                    let target = if *kind == TargetKind::Portal {
                        bound.get(name).copied().or_else(|| self.portal_shard(name))
                    } else {
                        match parsed.get(name) {
                            Some(Some(s)) => Some(*s),
                            Some(None) => dest.or(Some(HOME)),
                            None => self
                                .statements
                                .get(name)
                                .and_then(|s| s.on.iter().next().copied()),
                        }
                    };
                    match target {
                        Some(s) => agree(&mut dest, s),
                        None => false,
                    }
                }
                Kind::Sync | Kind::Flush => true,
                Kind::Close(_) => false,
            };
            if !ok {
                return None;
            }
        }
        // Parsed-but-unbound statements go to the batch's shard (or home).
        Some(dest.unwrap_or(HOME))
    }

    /// The shards the batch's Binds run on.
    fn bound_shards(&self, exec: &Exec<'_>, batch: &[ClientMessage]) -> Vec<usize> {
        let mut shards = BTreeSet::new();
        for b in binds(batch) {
            match self.plan_for(exec, &b.statement, &Params::of(b), batch) {
                Some(Plan::Shard { shard, .. }) => {
                    shards.insert(shard);
                }
                Some(Plan::Scatter { shards: s, .. }) => shards.extend(s),
                Some(Plan::Write { parts, .. }) => shards.extend(parts.iter().map(|p| p.0)),
                _ => {}
            }
        }
        shards.into_iter().collect()
    }

    /// Whether the batch's Binds write on more than one shard.
    fn writes_several_shards(&self, exec: &Exec<'_>, batch: &[ClientMessage]) -> bool {
        let mut written = BTreeSet::new();
        for b in binds(batch) {
            match self.plan_for(exec, &b.statement, &Params::of(b), batch) {
                Some(Plan::Shard { shard, write: true }) => {
                    written.insert(shard);
                }
                Some(Plan::Write { parts, .. }) => written.extend(parts.iter().map(|p| p.0)),
                _ => {}
            }
        }
        written.len() > 1
    }

    /// DEALLOCATE / DISCARD ALL ran on the shards: their prepared statements are gone.
    fn forget_deallocated(&mut self, exec: &mut Exec<'_>) {
        for name in std::mem::take(&mut exec.deallocated) {
            match name {
                None => self.statements.clear(),
                Some(n) => {
                    self.statements.remove(&n);
                }
            }
        }
    }

    fn portal_shard(&self, name: &str) -> Option<usize> {
        match self.portals.get(name) {
            Some(Portal::Shard(s)) => Some(*s),
            _ => None,
        }
    }

    /// The plan of statement `stmt` with these parameters; a statement parsed earlier in this
    /// batch is looked up there.
    fn plan_for(
        &self,
        exec: &Exec<'_>,
        stmt: &str,
        params: &Params,
        batch: &[ClientMessage],
    ) -> Option<Plan> {
        if let Some(p) = parses(batch).rev().find(|p| p.name == stmt) {
            return Some(plan_sql(exec, &p.sql, &parse_ast_for(exec, &p.sql), params));
        }
        let s = self.statements.get(stmt)?;
        Some(plan_sql(exec, &s.sql, &s.ast, params))
    }

    /// Fast path: the whole batch to one shard, one round trip.
    async fn run_on_one_shard(
        &mut self,
        exec: &mut Exec<'_>,
        shard: usize,
        batch: Vec<ClientMessage>,
    ) -> R<()> {
        // Writes and transactions: check and enlist before anything is sent.
        let mut writes = false;
        for b in binds(&batch) {
            if let Some(plan) = self.plan_for(exec, &b.statement, &Params::of(b), &batch) {
                exec.routes.note(&plan);
                writes |= matches!(plan, Plan::Shard { write: true, .. });
            }
        }
        if writes {
            exec.txn.note_write(shard);
        }
        let any_bind = binds(&batch).next().is_some();
        let skip = !any_bind
            && batch.last().is_some_and(|m| m.tag() == b'S')
            && snapshot_without(exec, shard);
        if !skip && exec.enlist(shard).await? == Step::Failed {
            exec.txn.fail();
            return self.fail_rest(exec, batch).await;
        }
        let mut out = BytesMut::new();
        let mut swallow = 0usize;
        let mut ends_with_sync = false;
        for m in &batch {
            match &m.kind {
                Kind::Parse(p) => {
                    let st = Statement::new(exec, m, p, BTreeSet::from([shard]));
                    self.statements.insert(p.name.clone(), st);
                }
                Kind::Bind(b) => {
                    if let Some(st) = self.statements.get_mut(&b.statement) {
                        if !st.on.contains(&shard) {
                            out.extend_from_slice(&st.parse);
                            st.on.insert(shard);
                            swallow += 1;
                        }
                    }
                    self.portals.insert(b.portal.clone(), Portal::Shard(shard));
                }
                Kind::Sync => ends_with_sync = true,
                _ => {}
            }
            out.extend_from_slice(&m.frame.bytes);
        }
        exec.links[shard].send(&out).await?;
        self.touched.insert(shard);
        let mut errored = false;
        if ends_with_sync {
            loop {
                let f = exec.links[shard].recv().await?;
                match f.tag {
                    b'Z' => break,
                    b'1' if swallow > 0 => swallow -= 1,
                    b'E' => {
                        errored = true;
                        swallow = 0;
                        exec.out.extend_from_slice(&f.bytes);
                    }
                    _ => exec.pass(&f).await?,
                }
                exec.maybe_flush().await?;
            }
            if errored {
                exec.txn.fail();
            }
            self.end_of_sync(exec);
            build::ready_for_query(exec.txn.status(), &mut exec.out);
        } else {
            // Flush: read what the batch's messages produce.
            for m in &batch {
                if errored {
                    break;
                }
                if m.tag() == b'H' {
                    // Flush has no answer of its own.
                    continue;
                }
                if m.tag() == b'B' && swallow > 0 {
                    // The injected Parse answers first.
                    if self.relay_one(exec, shard, b'P', true).await? == Step::Failed {
                        errored = true;
                        break;
                    }
                    swallow -= 1;
                }
                if self.relay_one(exec, shard, m.tag(), false).await? == Step::Failed {
                    errored = true;
                }
            }
            if errored {
                self.failed = true;
                exec.txn.fail();
            }
        }
        Ok(())
    }

    async fn fail_rest(&mut self, exec: &mut Exec<'_>, batch: Vec<ClientMessage>) -> R<()> {
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
        let step = match &m.kind {
            Kind::Parse(p) => {
                if let Some(err) = parse_error(exec, &p.sql) {
                    metrics::counter!(crate::metrics::STATEMENTS_REJECTED).increment(1);
                    self.statements.remove(&p.name);
                    return {
                        exec.error(&err);
                        self.failed = true;
                        exec.txn.fail();
                        Ok(())
                    };
                }
                let st = Statement::new(exec, &m, p, BTreeSet::new());
                self.statements.insert(p.name.clone(), st);
                let step = self
                    .send_and_relay(exec, HOME, std::slice::from_ref(&m.frame.bytes), b'P', 0)
                    .await?;
                match self.statements.get_mut(&p.name) {
                    // The home shard now has it: a Bind routed there must not parse it again.
                    Some(st) if step == Step::Done => {
                        st.on.insert(HOME);
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
            Kind::Execute(e) => self.execute(exec, &m.frame, e).await?,
            Kind::Close(t) => self.close(exec, &m.frame, t).await?,
            Kind::Flush | Kind::Sync => Step::Done,
        };
        if step == Step::Failed {
            self.failed = true;
            exec.txn.fail();
        }
        Ok(())
    }

    /// Sends `frames` to a shard (enlisting it, and with a Flush) and relays the answer to the
    /// message of type `tag`, after swallowing `swallow` injected ParseCompletes.
    async fn send_and_relay(
        &mut self,
        exec: &mut Exec<'_>,
        shard: usize,
        frames: &[Bytes],
        tag: u8,
        swallow: usize,
    ) -> R<Step> {
        // Parse and Describe read no rows: a snapshot transaction does not pull a shard into its
        // cut for them (they run in the shard's own implicit transaction, ended by Sync).
        let outside_cut = matches!(tag, b'P' | b'D') && snapshot_without(exec, shard);
        if !outside_cut
            && !self.touched.contains(&shard)
            && exec.enlist(shard).await? == Step::Failed
        {
            return Ok(Step::Failed);
        }
        let mut out = BytesMut::new();
        for b in frames {
            out.extend_from_slice(b);
        }
        out.extend_from_slice(b"H\0\0\0\x04");
        exec.links[shard].send(&out).await?;
        self.touched.insert(shard);
        for _ in 0..swallow {
            if self.relay_one(exec, shard, b'P', true).await? == Step::Failed {
                return Ok(Step::Failed);
            }
        }
        self.relay_one(exec, shard, tag, false).await
    }

    /// Relays (or, `quiet`, swallows unless it is an error) the answer to one message.
    async fn relay_one(
        &mut self,
        exec: &mut Exec<'_>,
        shard: usize,
        tag: u8,
        quiet: bool,
    ) -> R<Step> {
        loop {
            let f = exec.links[shard].recv().await?;
            let done = match (tag, f.tag) {
                (_, b'E') => {
                    exec.out.extend_from_slice(&f.bytes);
                    return Ok(Step::Failed);
                }
                (_, b'N') | (_, b'A') | (_, b'S') => {
                    exec.out.extend_from_slice(&f.bytes);
                    false
                }
                (b'P', b'1') | (b'B', b'2') | (b'C', b'3') => true,
                (b'D', b'T') | (b'D', b'n') => true,
                (b'D', b't') => false,
                (b'E', b'C') | (b'E', b's') | (b'E', b'I') => true,
                (b'E', b'G') | (b'E', b'H') => {
                    exec.error(&PgError::error(
                        sqlstate::FEATURE_NOT_SUPPORTED,
                        "COPY through the extended protocol is not supported on several shards",
                    ));
                    return Ok(Step::Failed);
                }
                _ => false,
            };
            // Quiet: the terminal answer belongs to a message the client did not send.
            if !(matches!(f.tag, b'N' | b'A' | b'S') || quiet && done) {
                exec.pass(&f).await?;
            }
            exec.maybe_flush().await?;
            if done {
                return Ok(Step::Done);
            }
        }
    }

    async fn bind(&mut self, exec: &mut Exec<'_>, f: &Frame, b: &Bind) -> R<Step> {
        let (portal, stmt, params) = (b.portal.clone(), &b.statement, Params::of(b));
        let Some(st) = self.statements.get(stmt) else {
            return Ok(exec.error(&PgError::error(
                "26000",
                format!("prepared statement \"{stmt}\" does not exist"),
            )));
        };
        let plan = plan_sql(exec, &st.sql, &st.ast, &params);
        exec.routes.note(&plan);
        match plan {
            Plan::Shard { shard, write } => {
                if write {
                    exec.txn.note_write(shard);
                }
                let Some(st) = self.statements.get_mut(stmt) else {
                    unreachable!("looked up above")
                };
                let mut frames = Vec::new();
                let mut swallow = 0;
                if !st.on.contains(&shard) {
                    frames.push(st.parse.clone());
                    st.on.insert(shard);
                    swallow = 1;
                }
                frames.push(f.bytes.clone());
                self.portals.insert(portal, Portal::Shard(shard));
                self.send_and_relay(exec, shard, &frames, b'B', swallow)
                    .await
            }
            Plan::Reject(e) => Ok(exec.error(&e)),
            other => {
                let sql = st.sql.clone();
                let param_types = st.param_types.clone();
                self.portals.insert(
                    portal,
                    Portal::Local(Box::new(LocalPortal {
                        plan: other,
                        sql,
                        params,
                        param_types,
                        result_formats: b.result_formats.clone(),
                        pending: None,
                        held: 0,
                    })),
                );
                build::empty(b'2', &mut exec.out);
                Ok(Step::Done)
            }
        }
    }

    async fn describe(&mut self, exec: &mut Exec<'_>, f: &Frame, t: &Target) -> R<Step> {
        let name = &t.name;
        if t.kind == TargetKind::Statement {
            let Some(st) = self.statements.get_mut(name) else {
                return Ok(exec.error(&PgError::error(
                    "26000",
                    format!("prepared statement \"{name}\" does not exist"),
                )));
            };
            let (shard, swallow, mut frames) = match st.on.iter().next() {
                Some(&s) => (s, 0, vec![]),
                None => {
                    st.on.insert(HOME);
                    (HOME, 1, vec![st.parse.clone()])
                }
            };
            frames.push(f.bytes.clone());
            return self
                .send_and_relay(exec, shard, &frames, b'D', swallow)
                .await;
        }
        match self.portals.get(name) {
            Some(Portal::Shard(s)) => {
                let s = *s;
                self.send_and_relay(exec, s, std::slice::from_ref(&f.bytes), b'D', 0)
                    .await
            }
            Some(Portal::Local(lp))
                if matches!(lp.plan, Plan::Scatter { .. } | Plan::Write { .. }) =>
            {
                // The columns are the same on every shard: describe a re-bind on the first.
                let (shards, merge, request) = lp.scatter(false).expect("a scatter portal");
                let shard = shards[0];
                let hidden = merge.hidden;
                if !self.touched.contains(&shard) && exec.enlist(shard).await? == Step::Failed {
                    return Ok(Step::Failed);
                }
                let mut out = BytesMut::from(&request[..]);
                out.extend_from_slice(b"H\0\0\0\x04");
                exec.links[shard].send(&out).await?;
                self.touched.insert(shard);
                for tag in [b'P', b'B'] {
                    if self.relay_one(exec, shard, tag, true).await? == Step::Failed {
                        return Ok(Step::Failed);
                    }
                }
                // The description without the hidden sort columns.
                loop {
                    let f = exec.links[shard].recv().await?;
                    match f.tag {
                        b'T' => {
                            exec.out
                                .extend_from_slice(&super::merge::strip_columns(&f, hidden));
                            return Ok(Step::Done);
                        }
                        b'n' => {
                            exec.out.extend_from_slice(&f.bytes);
                            return Ok(Step::Done);
                        }
                        b'E' => {
                            exec.out.extend_from_slice(&f.bytes);
                            return Ok(Step::Failed);
                        }
                        _ => {}
                    }
                }
            }
            Some(Portal::Local(_)) => {
                build::empty(b'n', &mut exec.out);
                Ok(Step::Done)
            }
            None => Ok(exec.error(&PgError::error(
                "34000",
                format!("portal \"{name}\" does not exist"),
            ))),
        }
    }

    async fn execute(&mut self, exec: &mut Exec<'_>, f: &Frame, e: &Execute) -> R<Step> {
        let (name, max_rows) = (e.portal.as_str(), e.max_rows);
        match self.portals.get(name) {
            Some(Portal::Shard(s)) => {
                let s = *s;
                self.send_and_relay(exec, s, std::slice::from_ref(&f.bytes), b'E', 0)
                    .await
            }
            Some(Portal::Local(lp))
                if matches!(&lp.plan, Plan::Scatter { shards, .. } if shards.len() > 1)
                    && exec.consistency == crate::snapshot::Consistency::Snapshot
                    && exec.txn == TxnState::Idle
                    && max_rows <= 0
                    && lp.pending.is_none() =>
            {
                // An autocommit read of several shards: its own snapshot transaction.
                let (shards, merge, request) = lp.scatter(true).expect("a scatter portal");
                exec.autocommit_snapshot_read(&shards, &request, &merge, false)
                    .await
            }
            Some(Portal::Local(lp)) if matches!(lp.plan, Plan::Scatter { .. }) => {
                let (shards, merge, request) = lp.scatter(true).expect("a scatter portal");
                if max_rows <= 0 && lp.pending.is_none() {
                    return super::merge::scatter_request(exec, &shards, &request, &merge, false)
                        .await;
                }
                if lp.pending.is_none() {
                    // A row-limited Execute: materialize the merged result, hand it out in parts.
                    let start = exec.out.len();
                    exec.hold_output = true;
                    let step =
                        super::merge::scatter_request(exec, &shards, &request, &merge, false).await;
                    exec.hold_output = false;
                    if step? == Step::Failed {
                        return Ok(Step::Failed);
                    }
                    let produced = exec.out.split_off(start);
                    let held = produced.len();
                    let frames = split_frames(produced.freeze());
                    if let Some(Portal::Local(lp)) = self.portals.get_mut(name) {
                        lp.pending = Some(frames);
                        lp.held = held;
                        buffered(held as i64);
                    }
                }
                let Some(Portal::Local(lp)) = self.portals.get_mut(name) else {
                    unreachable!("portal looked up above")
                };
                let pending = lp.pending.as_mut().expect("materialized above");
                let mut sent = 0i64;
                while pending.front().is_some_and(|f| f.tag == b'D')
                    && (max_rows <= 0 || sent < max_rows as i64)
                {
                    let row = pending.pop_front().expect("front checked");
                    exec.out.extend_from_slice(&row.bytes);
                    sent += 1;
                }
                if pending.front().is_some_and(|f| f.tag == b'D') {
                    build::empty(b's', &mut exec.out);
                } else {
                    // Done: this Execute's row count, as PostgreSQL reports it.
                    pending.clear();
                    buffered(-(lp.held as i64));
                    lp.held = 0;
                    build::command_complete(&format!("SELECT {sent}"), &mut exec.out);
                }
                Ok(Step::Done)
            }
            Some(Portal::Local(lp)) if matches!(lp.plan, Plan::Write { .. }) => {
                let Plan::Write { parts, sum } = &lp.plan else {
                    unreachable!("matched above")
                };
                let requests: Vec<(usize, Bytes)> = parts
                    .iter()
                    .map(|(shard, sql)| {
                        let r = rebind(
                            sql,
                            &lp.params,
                            &lp.param_types,
                            &lp.result_formats,
                            false,
                            true,
                        );
                        (*shard, r)
                    })
                    .collect();
                let sum = *sum;
                let own = exec.own_implicit();
                let step = super::write::run(exec, &requests, sum, false).await?;
                exec.end_own_implicit(own, step).await
            }
            Some(Portal::Local(lp))
                if matches!(lp.plan, Plan::Session | Plan::Broadcast { .. })
                    && !lp.params.values.is_empty() =>
            {
                // With bound values it must run as the client sent it, on every shard.
                let request = rebind(
                    &lp.sql,
                    &lp.params,
                    &lp.param_types,
                    &lp.result_formats,
                    false,
                    true,
                );
                self.everywhere_bound(exec, &request).await
            }
            Some(Portal::Local(lp)) => {
                let (plan, sql) = (lp.plan.clone(), lp.sql.clone());
                exec.run_plan(plan, &sql).await
            }
            None => Ok(exec.error(&PgError::error(
                "34000",
                format!("portal \"{name}\" does not exist"),
            ))),
        }
    }

    /// Runs a re-bound statement (Parse..Execute+Sync) on every shard; the client sees the home
    /// shard's rows and the first error.
    async fn everywhere_bound(&mut self, exec: &mut Exec<'_>, request: &[u8]) -> R<Step> {
        let all: Vec<usize> = (0..exec.links.len()).collect();
        for &s in &all {
            if exec.enlist(s).await? == Step::Failed {
                return Ok(Step::Failed);
            }
            exec.links[s].send(request).await?;
        }
        let mut step = Step::Done;
        for &s in &all {
            loop {
                let f = exec.links[s].recv().await?;
                match f.tag {
                    b'Z' => break,
                    b'1' | b'2' => {}
                    b'E' => {
                        if step == Step::Done {
                            exec.out.extend_from_slice(&f.bytes);
                        }
                        step = Step::Failed;
                    }
                    _ if s == HOME => exec.out.extend_from_slice(&f.bytes),
                    _ => {}
                }
            }
        }
        Ok(step)
    }

    async fn close(&mut self, exec: &mut Exec<'_>, f: &Frame, t: &Target) -> R<Step> {
        let name = &t.name;
        let shards: Vec<usize> = if t.kind == TargetKind::Statement {
            self.statements
                .remove(name)
                .map(|s| s.on.into_iter().collect())
                .unwrap_or_default()
        } else {
            match self.portals.remove(name) {
                Some(Portal::Shard(s)) => vec![s],
                _ => vec![],
            }
        };
        if shards.is_empty() {
            build::empty(b'3', &mut exec.out);
            return Ok(Step::Done);
        }
        for (i, &s) in shards.iter().enumerate() {
            let quiet = i > 0;
            if !self.touched.contains(&s) && exec.enlist(s).await? == Step::Failed {
                return Ok(Step::Failed);
            }
            let mut out = BytesMut::from(&f.bytes[..]);
            out.extend_from_slice(b"H\0\0\0\x04");
            exec.links[s].send(&out).await?;
            self.touched.insert(s);
            if quiet {
                let before = exec.out.len();
                let step = self.relay_one(exec, s, b'C', false).await?;
                exec.out.truncate(before);
                if step == Step::Failed {
                    return Ok(Step::Failed);
                }
            } else if self.relay_one(exec, s, b'C', false).await? == Step::Failed {
                return Ok(Step::Failed);
            }
        }
        Ok(Step::Done)
    }

    /// Sync: every touched shard syncs; one ReadyForQuery with the session's status.
    async fn sync(&mut self, exec: &mut Exec<'_>) -> R<()> {
        for s in std::mem::take(&mut self.touched) {
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
        build::ready_for_query(exec.txn.status(), &mut exec.out);
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

/// A snapshot transaction that has not enlisted `shard` (it may not have a cut yet).
fn snapshot_without(exec: &Exec<'_>, shard: usize) -> bool {
    matches!(&exec.txn, TxnState::Open(t) if t.snapshot && !t.enlisted.contains(&shard))
}

/// A refusal that does not depend on parameters (see `check_at_parse`).
fn parse_error(exec: &Exec<'_>, sql: &str) -> Option<PgError> {
    if let Some(err) = super::session::too_large_to_analyse(sql) {
        return Some(err);
    }
    if crate::sql::split_statements(sql).len() > 1 {
        return Some(PgError::error(
            "42601",
            "cannot insert multiple commands into a prepared statement",
        ));
    }
    parse_ast(exec, sql).and_then(|stmt| crate::router::plan::check_at_parse(&stmt, exec.placement))
}

/// Whole messages of a buffer the proxy produced itself.
fn split_frames(mut b: Bytes) -> std::collections::VecDeque<Frame> {
    let mut out = std::collections::VecDeque::new();
    while b.len() >= 5 {
        let len = i32::from_be_bytes(b[1..5].try_into().expect("4 bytes")) as usize + 1;
        let tag = b[0];
        out.push_back(Frame {
            tag,
            bytes: b.split_to(len),
        });
    }
    out
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

fn plan_sql(exec: &Exec<'_>, sql: &str, ast: &Option<Ast>, params: &Params) -> Plan {
    match ast {
        Some(stmt) => plan(stmt, exec.placement, params),
        None if sql.trim().is_empty() => Plan::Shard {
            shard: HOME,
            write: false,
        },
        None => plan_unparsed(sql),
    }
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

/// Parse + Bind (+ Describe portal) (+ Execute + Sync) of `sql` on the unnamed statement and
/// portal, for running a scattered read on each shard.
fn rebind(
    sql: &str,
    params: &Params,
    param_types: &[u32],
    result_formats: &[i16],
    describe: bool,
    execute: bool,
) -> Bytes {
    let mut b = BytesMut::new();
    Parse {
        name: String::new(),
        sql: sql.to_string(),
        param_types: param_types.to_vec(),
    }
    .encode(&mut b);
    Bind {
        portal: String::new(),
        statement: String::new(),
        param_formats: params.formats.clone(),
        values: params.values.clone(),
        result_formats: result_formats.to_vec(),
    }
    .encode(&mut b);
    if describe {
        Target {
            kind: TargetKind::Portal,
            name: String::new(),
        }
        .encode(b'D', &mut b);
    }
    if execute {
        Execute {
            portal: String::new(),
            max_rows: 0,
        }
        .encode(&mut b);
        b.put_slice(b"S\0\0\0\x04");
    }
    b.freeze()
}
