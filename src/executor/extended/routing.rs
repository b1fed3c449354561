//! Where a batch goes: the one shard every message of it can run on (the fast path), the shards
//! its Binds touch, and whether it writes on several shards (which makes it a distributed
//! transaction). Pure analysis of the batch and the session's statements; nothing is sent.

use super::{parse_ast_for, parses, plan_sql, Ast, Extended, Portal, Statement};
use crate::executor::session::Exec;
use crate::executor::write_subqueries;
use crate::protocol::message::{ClientMessage, Kind, Target, TargetKind};
use crate::router::params::Params;
use crate::router::plan::{calls_writing_function, Plan, HOME};
use crate::router::uncorrelated::answered_in_parts;
use foldhash::HashMap;
use smallvec::SmallVec;
use std::collections::BTreeSet;

/// A batch every message of which runs on one shard.
pub(super) struct OneShard {
    pub shard: usize,
    /// How many Binds it has, each planned to `shard`.
    pub binds: usize,
    /// Whether any of them writes.
    pub writes: bool,
}

impl Extended {
    /// The one shard every message of the batch goes to, if there is one and nothing in the
    /// batch needs the proxy; with what its Binds' plans said, which the fast path uses rather
    /// than plan them again.
    pub(super) fn single_destination(
        &mut self,
        exec: &Exec<'_>,
        batch: &[ClientMessage],
    ) -> Option<OneShard> {
        let (mut binds, mut writes) = (0, false);
        // Statements parsed and portals bound in this batch (a few at most: searched, not
        // hashed, and held inline: this runs for every batch), with the shard each went to; a
        // later entry of a name overrides.
        let mut parsed: SmallVec<[(&str, Option<usize>); 4]> = SmallVec::new();
        let mut bound: SmallVec<[(&str, usize); 4]> = SmallVec::new();
        fn last<T: Copy>(entries: &[(&str, T)], name: &str) -> Option<T> {
            entries
                .iter()
                .rev()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| *v)
        }
        let mut dest: Option<usize> = None;
        fn agree(dest: &mut Option<usize>, d: usize) -> bool {
            *dest.get_or_insert(d) == d
        }
        for (i, m) in batch.iter().enumerate() {
            let ok = match &m.kind {
                Kind::Parse(p) => {
                    parsed.push((&p.name, None));
                    // A Parse of a live name is refused (see `run_message`).
                    (p.name.is_empty() || !self.statements.contains_key(&p.name))
                        && self.parse_checked.error(exec, &p.sql).is_none()
                        && !self.parse_checked.answered_by_proxy(&p.sql)
                        && !p
                            .param_types
                            .iter()
                            .any(|o| crate::backend::catalog::type_oids::is_user(*o))
                }
                Kind::Bind(b) => {
                    // An INSERT whose sequence columns the proxy fills runs rewritten, not as
                    // the shard prepared it (see `key_sequence`); an upsert whose arbiters
                    // the catalog tells is judged first (see `upsert_arbiters`); values given
                    // or set for such columns are looked for (`given_values`, `given_update`),
                    // a call moving a sequence (`sequence_moves`), and nextval() inside a
                    // statement on a sharded table (`inline_nextval`). The route cache keeps a
                    // no where it cannot change (see `route_cache`).
                    let (sql, ast) = source_for(&self.statements, exec, &b.statement, &batch[..i])?;
                    let plan = self.routes.plan(exec, sql, &ast, &b.params, |a| {
                        exec.may_need_values(a)
                            || exec.needs_arbiter_look(a)
                            || exec.gives_sequence_value(a)
                            || exec.may_set_sequence_value(a)
                            || crate::executor::sequence_moves::looked_at_each_time(
                                a,
                                &exec.placement,
                            )
                            || crate::executor::inline_nextval::looked_at(sql, a, &exec.placement)
                    })?;
                    match plan {
                        // A statement prepared elsewhere with user-defined parameter
                        // types needs them translated for this shard: the slow path does it.
                        Plan::Shard { shard, .. }
                            if self.statements.get(b.statement.as_str()).is_some_and(|st| {
                                shard != HOME
                                    && !st.held_on(exec, shard)
                                    && st.declares_user_types()
                            }) =>
                        {
                            false
                        }
                        Plan::Shard { shard, write } => {
                            bound.push((&b.portal, shard));
                            if let Some(d) =
                                parsed.iter_mut().rev().find(|(n, _)| *n == b.statement)
                            {
                                d.1 = Some(shard);
                            }
                            binds += 1;
                            writes |= write;
                            agree(&mut dest, shard)
                        }
                        _ => false,
                    }
                }
                Kind::Execute(e) => {
                    match last(&bound, &e.portal).or_else(|| self.portal_shard(&e.portal)) {
                        Some(s) => agree(&mut dest, s),
                        None => false,
                    }
                }
                Kind::Describe(Target { kind, name }) => {
                    let name = name.as_str();
                    let target = if *kind == TargetKind::Portal {
                        last(&bound, name).or_else(|| self.portal_shard(name))
                    } else {
                        match last(&parsed, name) {
                            Some(Some(s)) => Some(s),
                            Some(None) => dest.or(Some(HOME)),
                            None => self
                                .statements
                                .get(name)
                                .and_then(|st| st.held_shards(exec).next()),
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
        Some(OneShard {
            shard: dest.unwrap_or(HOME),
            binds,
            writes,
        })
    }

    /// The shards the batch's Binds run on.
    pub(super) fn bound_shards(&self, exec: &Exec<'_>, batch: &[ClientMessage]) -> Vec<usize> {
        let mut shards = BTreeSet::new();
        for (b, before) in binds_in_place(batch) {
            match self.plan_for(exec, &b.statement, &b.params, before) {
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

    /// Whether the batch, run message by message, needs a transaction of the proxy's own to
    /// be the one implicit transaction PostgreSQL makes of it up to its Sync: its Binds write
    /// on more than one shard, or one of them may write (a write on one shard, one the proxy
    /// carries out in parts, DDL, a call) and another statement, in the batch or after it
    /// before the Sync, may fail (a shard's error, or the proxy's refusal) and must undo it.
    /// Without one, each shard, or the proxy's own transaction for one statement, would
    /// commit its part on its own.
    pub(super) fn runs_as_one_transaction(&self, exec: &Exec<'_>, batch: &[ClientMessage]) -> bool {
        let executes = batch.iter().filter(|m| m.tag() == b'E').count();
        let (mut written, mut may_write) = (BTreeSet::new(), false);
        for (b, before) in binds_in_place(batch) {
            let Some((sql, ast)) = source_for(&self.statements, exec, &b.statement, before) else {
                continue;
            };
            let plan = plan_sql(exec, sql, &ast, &b.params);
            match &plan {
                Plan::Shard { shard, write: true } => {
                    written.insert(*shard);
                }
                Plan::Write { parts, .. } => written.extend(parts.iter().map(|p| p.0)),
                // A read of several shards whose function writes on each.
                p if !p.read_shards().is_empty()
                    && ast
                        .as_deref()
                        .is_some_and(|s| calls_writing_function(s, &exec.placement)) =>
                {
                    written.extend(p.read_shards().iter().copied());
                }
                _ => {}
            }
            may_write |= !matches!(
                plan,
                Plan::Shard { write: false, .. }
                    | Plan::Scatter { .. }
                    | Plan::Session
                    | Plan::Txn(_)
                    | Plan::Admin(_)
            );
        }
        let synced = batch.last().is_some_and(|m| m.tag() == b'S');
        written.len() > 1 || (may_write && (executes > 1 || !synced))
    }

    /// Whether the batch's first Bind is of a statement the proxy reads in two parts (a
    /// subquery answered first, then the statement): an implicit transaction the batch opens
    /// must then read one snapshot from its start (see `Exec::one_snapshot_for_two_reads`).
    pub(super) fn first_bind_reads_in_two_parts(
        &self,
        exec: &Exec<'_>,
        batch: &[ClientMessage],
    ) -> bool {
        let Some((b, before)) = binds_in_place(batch).next() else {
            return false;
        };
        let Some((sql, ast)) = source_for(&self.statements, exec, &b.statement, before) else {
            return false;
        };
        match (plan_sql(exec, sql, &ast, &b.params), ast.as_deref()) {
            (Plan::Reject(e), Some(stmt)) => {
                answered_in_parts(&e) || write_subqueries::answered_first(stmt, &e)
            }
            _ => false,
        }
    }

    pub(super) fn portal_shard(&self, name: &str) -> Option<usize> {
        match self.portals.get(name) {
            Some(Portal::Shard(s, _)) => Some(*s),
            _ => None,
        }
    }

    /// The plan of statement `stmt` with these parameters, bound after the messages `before`
    /// of the batch (a statement parsed there is looked up there).
    pub(super) fn plan_for(
        &self,
        exec: &Exec<'_>,
        stmt: &str,
        params: &Params,
        before: &[ClientMessage],
    ) -> Option<Plan> {
        let (sql, ast) = source_for(&self.statements, exec, stmt, before)?;
        Some(plan_sql(exec, sql, &ast, params))
    }
}

/// The Binds of a batch, each with the messages before it.
fn binds_in_place(
    batch: &[ClientMessage],
) -> impl Iterator<Item = (&crate::protocol::message::Bind, &[ClientMessage])> {
    batch.iter().enumerate().filter_map(|(i, m)| match &m.kind {
        Kind::Bind(b) => Some((b, &batch[..i])),
        _ => None,
    })
}

/// The text and syntax tree of the statement a Bind names: the last Parse of that name among
/// the messages of the batch `before` it, or the one the session holds. Not a later Parse: a
/// driver's pipeline parses the unnamed statement again for each of its queries.
fn source_for<'s>(
    statements: &'s HashMap<String, Statement>,
    exec: &Exec<'_>,
    stmt: &str,
    before: &'s [ClientMessage],
) -> Option<(&'s str, Option<Ast>)> {
    if let Some(p) = parses(before).rev().find(|p| p.name == stmt) {
        // Drivers parse the same text again for every query: the tree the session holds for
        // it serves, but for an INSERT's (filled with the table's columns as known now).
        let same = statements
            .get(stmt)
            .filter(|s| s.sql.as_str() == p.sql.as_str() && !s.tree_has_columns());
        if let Some(s) = same {
            return Some((&p.sql, s.ast.clone()));
        }
        return Some((&p.sql, parse_ast_for(exec, &p.sql)));
    }
    let s = statements.get(stmt)?;
    Some((&s.sql, s.ast.clone()))
}
