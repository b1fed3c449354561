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
use crate::protocol::{build, inspect, Frame};
use crate::router::params::Params;
use crate::router::plan::{plan, plan_unparsed, Plan, HOME};
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::{BTreeSet, HashMap};

struct Statement {
    /// The client's Parse message, replayed on shards that have not prepared it.
    parse: Bytes,
    sql: String,
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
    batch: Vec<Frame>,
    /// An error happened in this batch: discard messages until Sync.
    failed: bool,
    /// Shards that received messages since the last Sync.
    touched: BTreeSet<usize>,
}

impl Extended {
    pub async fn handle(&mut self, exec: &mut Exec<'_>, frame: Frame) -> R<()> {
        self.forget_deallocated(exec);
        let tag = frame.tag;
        self.batch.push(frame);
        match tag {
            b'S' | b'H' => {
                let batch = std::mem::take(&mut self.batch);
                self.run_batch(exec, batch).await?;
                exec.flush().await
            }
            _ => Ok(()),
        }
    }

    async fn run_batch(&mut self, exec: &mut Exec<'_>, batch: Vec<Frame>) -> R<()> {
        for f in batch.iter().filter(|f| f.tag == b'P') {
            if let Some(stmt) =
                inspect::parse_text(f.body()).and_then(|(_, sql)| parse_ast(exec, sql))
            {
                exec.fetch_insert_columns(&stmt).await?;
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
    fn single_destination(&mut self, exec: &Exec<'_>, batch: &[Frame]) -> Option<usize> {
        let mut parsed: HashMap<String, Option<usize>> = HashMap::new();
        let mut bound: HashMap<String, usize> = HashMap::new();
        let mut dest: Option<usize> = None;
        fn agree(dest: &mut Option<usize>, d: usize) -> bool {
            *dest.get_or_insert(d) == d
        }
        for f in batch {
            let ok = match f.tag {
                b'P' => {
                    let (name, sql) = inspect::parse_text(f.body())?;
                    parsed.insert(name.to_string(), None);
                    parse_error(exec, sql).is_none()
                }
                b'B' => {
                    let (portal, stmt, params) = bind_fields(f.body())?;
                    let plan = self.plan_for(exec, &stmt, &params, batch)?;
                    match plan {
                        Plan::Shard { shard, .. } => {
                            bound.insert(portal, shard);
                            parsed.entry(stmt).and_modify(|d| *d = Some(shard));
                            agree(&mut dest, shard)
                        }
                        _ => false,
                    }
                }
                b'E' => {
                    let (portal, _) = inspect::cstr(f.body())?;
                    match bound
                        .get(portal)
                        .copied()
                        .or_else(|| self.portal_shard(portal))
                    {
                        Some(s) => agree(&mut dest, s),
                        None => false,
                    }
                }
                b'D' => {
                    let kind = *f.body().first()?;
                    let (name, _) = inspect::cstr(&f.body()[1..])?;
                    let target = if kind == b'P' {
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
                b'S' | b'H' => true,
                _ => false,
            };
            if !ok {
                return None;
            }
        }
        // Parsed-but-unbound statements go to the batch's shard (or home).
        Some(dest.unwrap_or(HOME))
    }

    /// The shards the batch's Binds run on.
    fn bound_shards(&self, exec: &Exec<'_>, batch: &[Frame]) -> Vec<usize> {
        let mut shards = BTreeSet::new();
        for f in batch.iter().filter(|f| f.tag == b'B') {
            let Some((_, stmt, params)) = bind_fields(f.body()) else {
                continue;
            };
            match self.plan_for(exec, &stmt, &params, batch) {
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
    fn writes_several_shards(&self, exec: &Exec<'_>, batch: &[Frame]) -> bool {
        let mut written = BTreeSet::new();
        for f in batch.iter().filter(|f| f.tag == b'B') {
            let Some((_, stmt, params)) = bind_fields(f.body()) else {
                continue;
            };
            match self.plan_for(exec, &stmt, &params, batch) {
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
        batch: &[Frame],
    ) -> Option<Plan> {
        if let Some(p) = batch.iter().rev().find(|f| {
            f.tag == b'P' && inspect::parse_text(f.body()).is_some_and(|(n, _)| n == stmt)
        }) {
            let (_, sql) = inspect::parse_text(p.body())?;
            return Some(plan_sql(exec, sql, &parse_ast_for(exec, sql), params));
        }
        let s = self.statements.get(stmt)?;
        Some(plan_sql(exec, &s.sql, &s.ast, params))
    }

    /// Fast path: the whole batch to one shard, one round trip.
    async fn run_on_one_shard(
        &mut self,
        exec: &mut Exec<'_>,
        shard: usize,
        batch: Vec<Frame>,
    ) -> R<()> {
        // Writes and transactions: check and enlist before anything is sent.
        let mut writes = false;
        for f in &batch {
            if f.tag == b'B' {
                if let Some((_, stmt, params)) = bind_fields(f.body()) {
                    if let Some(plan) = self.plan_for(exec, &stmt, &params, &batch) {
                        exec.routes.note(&plan);
                        writes |= matches!(plan, Plan::Shard { write: true, .. });
                    }
                }
            }
        }
        if writes {
            exec.txn.note_write(shard);
        }
        let binds = batch.iter().any(|f| f.tag == b'B');
        let skip =
            !binds && batch.last().is_some_and(|f| f.tag == b'S') && snapshot_without(exec, shard);
        if !skip && exec.enlist(shard).await? == Step::Failed {
            exec.txn.fail();
            return self.fail_rest(exec, batch).await;
        }
        let mut out = BytesMut::new();
        let mut swallow = 0usize;
        let mut ends_with_sync = false;
        for f in &batch {
            match f.tag {
                b'P' => {
                    let (name, sql) = inspect::parse_text(f.body()).expect("checked in routing");
                    let st = Statement {
                        parse: f.bytes.clone(),
                        sql: sql.to_string(),
                        ast: parse_ast_for(exec, sql),
                        on: BTreeSet::from([shard]),
                    };
                    self.statements.insert(name.to_string(), st);
                    out.extend_from_slice(&f.bytes);
                }
                b'B' => {
                    let (portal, stmt, _) = bind_fields(f.body()).expect("checked in routing");
                    if let Some(st) = self.statements.get_mut(&stmt) {
                        if !st.on.contains(&shard) {
                            out.extend_from_slice(&st.parse);
                            st.on.insert(shard);
                            swallow += 1;
                        }
                    }
                    self.portals.insert(portal, Portal::Shard(shard));
                    out.extend_from_slice(&f.bytes);
                }
                b'S' => {
                    ends_with_sync = true;
                    out.extend_from_slice(&f.bytes);
                }
                _ => out.extend_from_slice(&f.bytes),
            }
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
                    _ => exec.out.extend_from_slice(&f.bytes),
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
            for f in &batch {
                if errored {
                    break;
                }
                if f.tag == b'H' {
                    // Flush has no answer of its own.
                    continue;
                }
                if f.tag == b'B' && swallow > 0 {
                    // The injected Parse answers first.
                    if self.relay_one(exec, shard, b'P', true).await? == Step::Failed {
                        errored = true;
                        break;
                    }
                    swallow -= 1;
                }
                if self.relay_one(exec, shard, f.tag, false).await? == Step::Failed {
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

    async fn fail_rest(&mut self, exec: &mut Exec<'_>, batch: Vec<Frame>) -> R<()> {
        self.failed = true;
        if batch.last().is_some_and(|f| f.tag == b'S') {
            self.sync(exec).await?;
        }
        Ok(())
    }

    /// Slow path: one message at a time.
    async fn run_message(&mut self, exec: &mut Exec<'_>, f: Frame) -> R<()> {
        if f.tag == b'S' {
            return self.sync(exec).await;
        }
        if self.failed {
            return Ok(());
        }
        let step = match f.tag {
            b'P' => {
                let (name, sql) = match inspect::parse_text(f.body()) {
                    Some(v) => v,
                    None => return Err(super::session::Stop::Client),
                };
                if let Some(err) = parse_error(exec, sql) {
                    metrics::counter!(crate::metrics::STATEMENTS_REJECTED).increment(1);
                    self.statements.remove(name);
                    return {
                        exec.error(&err);
                        self.failed = true;
                        exec.txn.fail();
                        Ok(())
                    };
                }
                let st = Statement {
                    parse: f.bytes.clone(),
                    sql: sql.to_string(),
                    ast: parse_ast_for(exec, sql),
                    on: BTreeSet::new(),
                };
                self.statements.insert(name.to_string(), st);
                self.send_and_relay(exec, HOME, std::slice::from_ref(&f.bytes), b'P', 0)
                    .await?
            }
            b'B' => self.bind(exec, f).await?,
            b'D' => self.describe(exec, f).await?,
            b'E' => self.execute(exec, f).await?,
            b'C' => self.close(exec, f).await?,
            b'H' => Step::Done,
            _ => Step::Done,
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
                exec.out.extend_from_slice(&f.bytes);
            }
            exec.maybe_flush().await?;
            if done {
                return Ok(Step::Done);
            }
        }
    }

    async fn bind(&mut self, exec: &mut Exec<'_>, f: Frame) -> R<Step> {
        let Some((portal, stmt, params)) = bind_fields(f.body()) else {
            return Ok(exec.error(&PgError::error(
                sqlstate::PROTOCOL_VIOLATION,
                "malformed Bind message",
            )));
        };
        let Some(st) = self.statements.get(&stmt) else {
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
                let st = self.statements.get_mut(&stmt).expect("looked up above");
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
                let param_types = parse_param_types(&st.parse[5..]);
                self.portals.insert(
                    portal,
                    Portal::Local(Box::new(LocalPortal {
                        plan: other,
                        sql,
                        params,
                        param_types,
                        result_formats: result_formats(f.body()),
                        pending: None,
                    })),
                );
                build::empty(b'2', &mut exec.out);
                Ok(Step::Done)
            }
        }
    }

    async fn describe(&mut self, exec: &mut Exec<'_>, f: Frame) -> R<Step> {
        let kind = f.body().first().copied().unwrap_or(0);
        let name = inspect::cstr(&f.body()[1..])
            .map(|(n, _)| n.to_string())
            .unwrap_or_default();
        if kind == b'S' {
            let Some(st) = self.statements.get_mut(&name) else {
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
        match self.portals.get(&name) {
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

    async fn execute(&mut self, exec: &mut Exec<'_>, f: Frame) -> R<Step> {
        let Some((name, rest)) = inspect::cstr(f.body()) else {
            return Ok(exec.error(&PgError::error(
                sqlstate::PROTOCOL_VIOLATION,
                "malformed Execute message",
            )));
        };
        let max_rows = rest
            .get(..4)
            .map(|b| i32::from_be_bytes(b.try_into().expect("4 bytes")))
            .unwrap_or(0);
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
                    let frames = split_frames(produced.freeze());
                    if let Some(Portal::Local(lp)) = self.portals.get_mut(name) {
                        lp.pending = Some(frames);
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

    async fn close(&mut self, exec: &mut Exec<'_>, f: Frame) -> R<Step> {
        let kind = f.body().first().copied().unwrap_or(0);
        let name = inspect::cstr(&f.body()[1..])
            .map(|(n, _)| n.to_string())
            .unwrap_or_default();
        let shards: Vec<usize> = if kind == b'S' {
            self.statements
                .remove(&name)
                .map(|s| s.on.into_iter().collect())
                .unwrap_or_default()
        } else {
            match self.portals.remove(&name) {
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

/// Portal name, statement name and parameters of a Bind body.
fn bind_fields(body: &[u8]) -> Option<(String, String, Params)> {
    let (portal, rest) = inspect::cstr(body)?;
    let (stmt, rest) = inspect::cstr(rest)?;
    let i16_at = |b: &[u8], at: usize| -> Option<i16> {
        Some(i16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
    };
    let nfmt = i16_at(rest, 0)? as usize;
    let mut at = 2;
    let mut formats = Vec::with_capacity(nfmt);
    for _ in 0..nfmt {
        formats.push(i16_at(rest, at)?);
        at += 2;
    }
    let nvals = i16_at(rest, at)? as usize;
    at += 2;
    let mut values = Vec::with_capacity(nvals);
    for _ in 0..nvals {
        let len = i32::from_be_bytes(rest.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        if len < 0 {
            values.push(None);
        } else {
            let len = len as usize;
            values.push(Some(Bytes::copy_from_slice(rest.get(at..at + len)?)));
            at += len;
        }
    }
    Some((
        portal.to_string(),
        stmt.to_string(),
        Params { values, formats },
    ))
}

/// Parameter type OIDs declared in a Parse body.
fn parse_param_types(body: &[u8]) -> Vec<u32> {
    let Some((_, rest)) = inspect::cstr(body) else {
        return vec![];
    };
    let Some((_, rest)) = inspect::cstr(rest) else {
        return vec![];
    };
    let Some(n) = rest
        .get(..2)
        .map(|b| i16::from_be_bytes([b[0], b[1]]).max(0) as usize)
    else {
        return vec![];
    };
    (0..n)
        .filter_map(|i| {
            rest.get(2 + 4 * i..6 + 4 * i)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        })
        .collect()
}

/// Result-column format codes of a Bind body.
fn result_formats(body: &[u8]) -> Vec<i16> {
    let Some((_, _, params)) = bind_fields(body) else {
        return vec![];
    };
    // Skip to after the parameter values: recompute the offset.
    let (_, rest) = inspect::cstr(body).expect("checked");
    let (_, rest) = inspect::cstr(rest).expect("checked");
    let mut at = 2 + 2 * params.formats.len() + 2;
    for v in &params.values {
        at += 4 + v.as_ref().map(|b| b.len()).unwrap_or(0);
    }
    let Some(n) = rest
        .get(at..at + 2)
        .map(|b| i16::from_be_bytes([b[0], b[1]]) as usize)
    else {
        return vec![];
    };
    (0..n)
        .filter_map(|i| {
            rest.get(at + 2 + 2 * i..at + 4 + 2 * i)
                .map(|b| i16::from_be_bytes([b[0], b[1]]))
        })
        .collect()
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
    let msg = |b: &mut BytesMut, tag: u8, body: &[u8]| {
        b.put_u8(tag);
        b.put_i32(body.len() as i32 + 4);
        b.put_slice(body);
    };
    let mut body = BytesMut::new();
    body.put_u8(0);
    body.put_slice(sql.as_bytes());
    body.put_u8(0);
    body.put_i16(param_types.len() as i16);
    for t in param_types {
        body.put_u32(*t);
    }
    msg(&mut b, b'P', &body);
    body.clear();
    body.put_u8(0);
    body.put_u8(0);
    body.put_i16(params.formats.len() as i16);
    for f in &params.formats {
        body.put_i16(*f);
    }
    body.put_i16(params.values.len() as i16);
    for v in &params.values {
        match v {
            None => body.put_i32(-1),
            Some(bytes) => {
                body.put_i32(bytes.len() as i32);
                body.put_slice(bytes);
            }
        }
    }
    body.put_i16(result_formats.len() as i16);
    for f in result_formats {
        body.put_i16(*f);
    }
    msg(&mut b, b'B', &body);
    if describe {
        msg(&mut b, b'D', b"P\0");
    }
    if execute {
        msg(&mut b, b'E', b"\0\0\0\0\0");
        msg(&mut b, b'S', b"");
    }
    b.freeze()
}
