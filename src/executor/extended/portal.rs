//! The slow path, message by message: Bind plans with the bound values and makes a portal on one
//! shard or a local one the proxy carries out; Describe, Execute (in `execute`) and Close act
//! on either kind. Each message sent to a shard is followed by a Flush so answers come back in
//! order.

use super::{plan_sql, plan_stmt, snapshot_without, Extended, LocalPortal, Portal};
use crate::error::{sqlstate, PgError};
use crate::executor::insert_select::{on_every_copy, Rewrite};
use crate::executor::session::state::CursorPortal;
use crate::executor::session::{Exec, Step, R};
use crate::executor::subqueries_first::Bound;
use crate::executor::write_subqueries;
use crate::protocol::message::{Bind, Target, TargetKind};
use crate::protocol::{build, Frame};
use crate::router::cursor::CursorCmd;
use crate::router::params::Params;
use crate::router::plan::{keep_used_params, Plan, PreparedCmd, HOME};
use crate::router::uncorrelated::answered_in_parts;
use crate::txn::state::TxnState;
use bytes::{Bytes, BytesMut};

impl Extended {
    /// Sends `frames` to a shard (enlisting it, and with a Flush) and relays the answer to the
    /// message of type `tag`, after swallowing `swallow` injected ParseCompletes.
    pub(super) async fn send_and_relay(
        &mut self,
        exec: &mut Exec<'_>,
        shard: usize,
        frames: &[Bytes],
        tag: u8,
        swallow: usize,
    ) -> R<Step> {
        if self.reach(exec, shard, tag).await? == Step::Failed {
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

    /// Readies `shard` for a message of type `tag`: enlisted in the transaction, or, for a
    /// message that reads no rows, marked to be synced.
    pub(super) async fn reach(&mut self, exec: &mut Exec<'_>, shard: usize, tag: u8) -> R<Step> {
        // Parse and Describe read no rows: a snapshot transaction does not pull a shard into its
        // cut for them (they run in the shard's own implicit transaction, ended by Sync).
        let outside_cut = matches!(tag, b'P' | b'D') && snapshot_without(exec, shard);
        // In a transaction, a shard that so far got only such messages is touched but not in
        // it: what reads or writes rows there joins it first (enlist syncs the implicit one).
        // Outside one, what the batch sent runs in the shard's implicit transaction, whose
        // unnamed portal a Sync would end between a Bind and its Execute.
        let joined = match &exec.txn {
            TxnState::Open(t) => t.enlisted.contains(&shard),
            _ => self.touched.contains(&shard),
        };
        if !outside_cut && !joined && exec.enlist(shard).await? == Step::Failed {
            return Ok(Step::Failed);
        }
        let enlisted = matches!(&exec.txn, TxnState::Open(t) | TxnState::Failed(t) if t.enlisted.contains(&shard));
        if matches!(tag, b'P' | b'D') && !enlisted {
            exec.unsynced.insert(shard);
        }
        Ok(Step::Done)
    }

    /// Relays (or, `quiet`, swallows unless it is an error) the answer to one message. The
    /// columns a statement Describe answers with are kept in `described`.
    pub(super) async fn relay_one(
        &mut self,
        exec: &mut Exec<'_>,
        shard: usize,
        tag: u8,
        quiet: bool,
    ) -> R<Step> {
        let mut of_statement = false;
        loop {
            let Some(f) = exec.relay_recv(shard).await? else {
                continue; // a large row, already passed on
            };
            of_statement |= tag == b'D' && f.tag == b't';
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
                if tag == b'D' && !of_statement {
                    exec.learn_row_types(shard, &f).await;
                }
                let f = exec.for_client(shard, f).await;
                if done && of_statement {
                    self.described = Some(f.clone());
                }
                if tag == b'D' && f.tag == b't' {
                    self.described_params = Some(f.clone());
                }
                exec.pass(&f).await?;
            }
            exec.maybe_flush().await?;
            if done {
                return Ok(Step::Done);
            }
        }
    }

    pub(super) async fn bind(&mut self, exec: &mut Exec<'_>, f: &Frame, b: &Bind) -> R<Step> {
        let (portal, stmt, params) = (b.portal.clone(), b.statement.as_str(), b.params.clone());
        let Some(st) = self.statements.get(stmt) else {
            return Ok(exec.error(&PgError::error(
                "26000",
                format!(
                    "prepared statement \"{}\" does not exist",
                    crate::pool::names::client_part(stmt)
                ),
            )));
        };
        // The types the values are of, a shard's description completing the client's: what
        // the proxy's own statements over them (see `LocalPortal`) must declare, since the
        // server could infer another type where a parameter stands elsewhere.
        let declared: Vec<u32> = st.known_types().collect();
        let (ast, source) = (st.ast.clone(), st.sql.clone());
        let mut plan = plan_sql(exec, &st.sql, &ast, &params);
        // What an INSERT must do on every shard first (see `given_values`), held by the portal.
        let mut given = None;
        if let Plan::Prepared(PreparedCmd::Execute { name, args }) = &plan {
            plan = match executed(exec, name, args, &params).await? {
                Ok(plan) => plan,
                Err(step) => return Ok(step),
            };
            given = exec.given.take();
        }
        // An INSERT the shards run rewritten (see `insert_select`): this execution runs the
        // proxy's text, which no shard prepared, as a statement of the proxy's.
        let rewrite = match &ast {
            Some(stmt) => exec.rewrite_insert(stmt, &params, &declared).await?,
            None => Rewrite::AsWritten,
        };
        let given = exec.given.take().or(given);
        match rewrite {
            Rewrite::AsWritten => {}
            Rewrite::Rewritten(mut rewritten) => {
                // A source's rows replace its parameters with literals: then the shards get no
                // parameter at all. Keys filled in keep every parameter of the client's.
                let used = keep_used_params(&mut rewritten, params.values.len());
                let none = match &used {
                    None => false,
                    Some(p) if p.is_empty() => true,
                    Some(_) => {
                        return Ok(exec.error(&PgError::error(
                            sqlstate::FEATURE_NOT_SUPPORTED,
                            "INSERT ... SELECT with parameters outside its SELECT is not supported where the proxy reads the SELECT first",
                        ).with_hint("Put the values in the SELECT, or send literals.")))
                    }
                };
                let bound = if none {
                    Params::default()
                } else {
                    params.clone()
                };
                let text = rewritten.to_string();
                plan = match plan_stmt(exec, &rewritten, &bound) {
                    Plan::Shard { shard, .. } => Plan::Write {
                        parts: vec![(shard, text)],
                        sum: true,
                        picks: if none { vec![Vec::new()] } else { Vec::new() },
                        serialize: None,
                        row_order: Vec::new(),
                    },
                    Plan::Write {
                        parts,
                        sum,
                        picks,
                        serialize,
                        row_order,
                    } => Plan::Write {
                        picks: if none {
                            vec![Vec::new(); parts.len()]
                        } else {
                            picks
                        },
                        parts,
                        sum,
                        serialize,
                        row_order,
                    },
                    other => other,
                };
            }
            Rewrite::OnShard(shard) => plan = Plan::Shard { shard, write: true },
            Rewrite::OnEveryCopy(table) => {
                plan = on_every_copy(&source, table, exec.links.len());
            }
            Rewrite::Failed => return Ok(Step::Failed),
        }
        // Subqueries no shard answers alone, answered now (see `subqueries_first`): the
        // portal is the proxy's read of the rewritten statement, with the parameters it uses.
        let (plan, params, declared) = match (plan, ast.as_deref()) {
            // A write's subqueries, answered now; the portal carries out the write.
            (Plan::Reject(e), Some(write)) if write_subqueries::answered_first(write, &e) => {
                let bound = Bound {
                    params,
                    types: declared,
                };
                match exec.answered_write_portal(write, &bound, e).await? {
                    Ok(a) => (a.plan, a.bound.params, a.bound.types),
                    Err(step) => return Ok(step),
                }
            }
            (Plan::Reject(e), Some(query)) if answered_in_parts(&e) => {
                let bound = Bound {
                    params,
                    types: declared,
                };
                match exec.answered_portal(query, &bound, e).await? {
                    Ok(a) => (a.plan, a.bound.params, a.bound.types),
                    Err(step) => return Ok(step),
                }
            }
            (plan, _) => (plan, params, declared),
        };
        exec.routes.note(&plan);
        match plan {
            Plan::Shard { shard, write } => {
                if write {
                    exec.txn.note_write(shard);
                }
                // Joined to the transaction before looking whether the shard holds the
                // statement: the BEGIN that joins it drops an unnamed one parsed outside it.
                if self.reach(exec, shard, b'B').await? == Step::Failed {
                    return Ok(Step::Failed);
                }
                exec.links[shard].ensure().await?;
                let Some(st) = self.statements.get_mut(stmt) else {
                    unreachable!("looked up above")
                };
                let mut frames = Vec::new();
                let mut swallow = 0;
                let mut parse = !st.held_on(exec, shard);
                if parse && st.columns.is_some() {
                    // Prepared apart, its columns checked (see `fixed_result`).
                    if self.prepare_checked(exec, shard, stmt, b'B').await? == Step::Failed {
                        return Ok(Step::Failed);
                    }
                    parse = false;
                }
                let Some(st) = self.statements.get_mut(stmt) else {
                    unreachable!("looked up above")
                };
                if parse {
                    exec.links[shard].prepares.increment(1);
                    match st.parse_for(exec, shard).await {
                        Ok(parse) => frames.push(parse),
                        Err(e) => return Ok(exec.error(&e)),
                    }
                    swallow = 1;
                }
                frames.push(f.bytes.clone());
                self.portals.insert(&portal, Portal::Shard(shard, None));
                let step = self
                    .send_and_relay(exec, shard, &frames, b'B', swallow)
                    .await;
                if parse {
                    if let Some(st) = self.statements.get_mut(stmt) {
                        st.sent_to(exec, shard);
                    }
                }
                step
            }
            Plan::Reject(e) => Ok(exec.error(&e)),
            // The home shard parsed it (at Parse), so it is valid SQL the proxy cannot route.
            Plan::Unrecognised => Ok(exec.error(&crate::router::plan::unrecognised())),
            other => {
                // The client's text: when the shards run another, its error positions are not
                // the client's.
                let sql = st.sql.clone();
                let columns = st.columns.clone();
                self.portals.insert(
                    &portal,
                    Portal::Local(Box::new(LocalPortal {
                        plan: other,
                        sql,
                        params,
                        param_types: declared,
                        result_formats: b.result_formats.to_vec(),
                        pending: None,
                        held: 0,
                        columns,
                        given,
                    })),
                );
                build::empty(b'2', &mut exec.out);
                Ok(Step::Done)
            }
        }
    }

    pub(super) async fn describe(&mut self, exec: &mut Exec<'_>, f: &Frame, t: &Target) -> R<Step> {
        let name = &t.name;
        if t.kind == TargetKind::Statement {
            let Some(st) = self.statements.get_mut(name) else {
                return Ok(exec.error(&PgError::error(
                    "26000",
                    format!(
                        "prepared statement \"{}\" does not exist",
                        crate::pool::names::client_part(name)
                    ),
                )));
            };
            // Answered by the proxy: no parameters, and the columns it answers with (none
            // for transaction control).
            let plan = crate::router::plan::plan_unparsed(&st.sql);
            let columns = match &plan {
                Plan::Admin(cmd) => Some(cmd.columns()),
                Plan::Txn(_) => Some(None),
                _ => None,
            };
            if let Some(columns) = columns {
                exec.out.extend_from_slice(b"t\0\0\0\x06\0\0");
                match columns {
                    Some(names) => build::row_description_text(&names, &mut exec.out),
                    None => build::empty(b'n', &mut exec.out),
                }
                return Ok(Step::Done);
            }
            let held = st.held_shards(exec).next();
            let (shard, swallow, mut frames) = match held {
                Some(s) => (s, 0, vec![]),
                None => {
                    exec.links[HOME].ensure().await?;
                    let Some(st) = self.statements.get(name) else {
                        unreachable!("looked up above")
                    };
                    if st.held_on(exec, HOME) {
                        (HOME, 0, vec![])
                    } else if st.columns.is_some() {
                        // Prepared apart, its columns checked (see `fixed_result`).
                        if self.prepare_checked(exec, HOME, name, b'D').await? == Step::Failed {
                            return Ok(Step::Failed);
                        }
                        (HOME, 0, vec![])
                    } else {
                        (HOME, 1, vec![st.parse.clone()])
                    }
                }
            };
            frames.push(f.bytes.clone());
            self.described = None;
            self.described_params = None;
            let step = self
                .send_and_relay(exec, shard, &frames, b'D', swallow)
                .await;
            if let Some(st) = self.statements.get_mut(name) {
                if swallow == 1 {
                    st.sent_to(exec, HOME);
                }
                if let Some(columns) = self.described.take() {
                    st.columns = Some(columns);
                }
                if let Some(params) = self.described_params.take() {
                    st.keep_described_types(&params);
                }
            }
            return step;
        }
        match self.portals.get(name) {
            Some(Portal::Shard(s, _)) => {
                let s = *s;
                self.send_and_relay(exec, s, std::slice::from_ref(&f.bytes), b'D', 0)
                    .await
            }
            Some(Portal::Local(lp))
                if matches!(
                    lp.plan,
                    Plan::Scatter { .. }
                        | Plan::Write { .. }
                        | Plan::Session
                        | Plan::Broadcast { .. }
                ) =>
            {
                // The columns are the same on every shard: describe a re-bind on the first.
                let types = match lp.types_by_shard(exec).await {
                    Ok(t) => t,
                    Err(e) => return Ok(exec.error(&e)),
                };
                let (shards, merge, requests) =
                    lp.scatter(false, &types).expect("a scatter portal");
                let (shard, request) = (shards[0], &requests[0]);
                // As any Describe: outside a snapshot's cut it runs in the shard's own implicit
                // transaction, which must end before a cut there begins (see `reach`).
                if self.reach(exec, shard, b'D').await? == Step::Failed {
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
                // The description as the merge answers: without the hidden columns, an avg
                // typed as its result rather than as the sum the shards return.
                loop {
                    let f = exec.links[shard].recv().await?;
                    match f.tag {
                        b'T' => {
                            let f = exec.for_client(shard, f).await;
                            exec.out.extend_from_slice(
                                &crate::executor::merge::client_description(&f, &merge),
                            );
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
            Some(Portal::Local(lp)) => {
                // The proxy's own answers (SHOW shardgate.*); transaction control has no rows.
                match &lp.plan {
                    Plan::Admin(cmd) => match cmd.columns() {
                        Some(names) => build::row_description_text(&names, &mut exec.out),
                        None => build::empty(b'n', &mut exec.out),
                    },
                    Plan::Signal { column, .. } => crate::executor::signal::bool_description(
                        column,
                        lp.result_formats.first() == Some(&1),
                        &mut exec.out,
                    ),
                    Plan::Cursor(CursorCmd::Fetch(f)) if !f.is_move => {
                        match exec.cursor_description(&f.name) {
                            Some(d) => exec.out.extend_from_slice(&d.bytes),
                            None => build::empty(b'n', &mut exec.out),
                        }
                    }
                    _ => build::empty(b'n', &mut exec.out),
                }
                Ok(Step::Done)
            }
            // An SQL cursor is a portal too (psycopg describes its named cursors so).
            None => match exec.cursor_portal(name) {
                Some(CursorPortal::On(s)) => {
                    self.touched.insert(s);
                    self.send_and_relay(exec, s, std::slice::from_ref(&f.bytes), b'D', 0)
                        .await
                }
                Some(CursorPortal::Described(d)) => {
                    exec.out.extend_from_slice(&d.bytes);
                    Ok(Step::Done)
                }
                None => Ok(exec.error(&PgError::error(
                    "34000",
                    format!("portal \"{name}\" does not exist"),
                ))),
            },
        }
    }

    pub(super) async fn close(&mut self, exec: &mut Exec<'_>, f: &Frame, t: &Target) -> R<Step> {
        let name = &t.name;
        let shards: Vec<usize> = if t.kind == TargetKind::Statement {
            exec.pool.names.closed(name);
            self.statements
                .remove(name)
                .map(|s| s.held_shards(exec).collect())
                .unwrap_or_default()
        } else {
            match self.portals.remove(name) {
                Some(Portal::Shard(s, _)) => vec![s],
                Some(_) => vec![],
                // An SQL cursor is a portal too: closing it by protocol closes the cursor.
                None => match exec.close_cursor_portal(name).await? {
                    Some(Ok(s)) => vec![s],
                    Some(Err(step)) => return Ok(step),
                    None => vec![],
                },
            }
        };
        if shards.is_empty() {
            build::empty(b'3', &mut exec.out);
            return Ok(Step::Done);
        }
        for (i, &s) in shards.iter().enumerate() {
            let quiet = i > 0;
            let mut out = BytesMut::from(&f.bytes[..]);
            // Closing a statement is not part of any transaction: a shard the transaction has
            // not reached is not pulled in (in a REPEATABLE READ snapshot transaction that
            // would take the cut now, before the statement that should). It gets its own Sync.
            let outside = !self.touched.contains(&s)
                && matches!(&exec.txn, TxnState::Open(t) if !t.enlisted.contains(&s));
            if outside {
                out.extend_from_slice(b"S\0\0\0\x04");
                exec.links[s].send(&out).await?;
                let before = exec.out.len();
                let step = self.relay_one(exec, s, b'C', false).await?;
                if quiet {
                    exec.out.truncate(before);
                }
                if exec.quiet_until_ready(s).await?.is_some() || step == Step::Failed {
                    return Ok(Step::Failed);
                }
                continue;
            }
            if !self.touched.contains(&s) && exec.enlist(s).await? == Step::Failed {
                return Ok(Step::Failed);
            }
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
}

/// SQL `EXECUTE` bound through the protocol: the plan of the statement it stands for. One
/// shard's plan becomes a re-bound statement of the proxy's there, so Describe and the result
/// formats the client asked for work as for any portal the proxy carries out.
async fn executed(
    exec: &mut Exec<'_>,
    name: &str,
    args: &[String],
    params: &Params,
) -> R<Result<Plan, Step>> {
    let stmt = match exec.executed_statement(name, args).await? {
        Ok(stmt) => stmt,
        Err(step) => return Ok(Err(step)),
    };
    let text = stmt.to_string();
    Ok(Ok(match plan_stmt(exec, &stmt, params) {
        Plan::Shard { shard, write: true } => Plan::Write {
            parts: vec![(shard, text)],
            sum: true,
            picks: Vec::new(),
            serialize: None,
            row_order: Vec::new(),
        },
        Plan::Shard {
            shard,
            write: false,
        } => Plan::Scatter {
            shards: vec![shard],
            sql: text,
            merge: Default::default(),
        },
        other => other,
    }))
}
