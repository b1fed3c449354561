//! Routes of statement texts, learned once and reused for every later Bind.
//!
//! The first planning of a text in a session is recorded (`params::recording`) and kept as a
//! `Route` when it holds for every later Bind (see `router::learned_route`). Keyed by text, the
//! route serves named statements and the unnamed one parsed again for every query alike. An
//! INSERT without a column list is never learned: its key's position comes from the table's
//! current columns, which DDL may change.
//!
//! The questions that keep a Bind off the one-shard fast path (sequences, upserts, values
//! given for sequence columns, `nextval()`) are asked of every Bind of an INSERT or UPDATE,
//! whose answers move with what the proxy has learnt of the tables' sequences. For any other
//! statement they depend only on its text and the placement, so a "no" is kept with the route
//! learned under that placement and not asked again.

use super::{plan_sql, Ast};
use crate::executor::session::Exec;
use crate::router::learned_route::Route;
use crate::router::params::{recording, Params};
use crate::router::plan::{plan, Plan};
use foldhash::HashMap;

/// Texts whose route a session keeps; past this the map starts again (a session of generated
/// texts must not grow without bound).
const MAX_TEXTS: usize = 1024;

/// A session's learned routes by statement text (`None`: planned every time).
#[derive(Debug, Default)]
pub(super) struct Routes {
    by_text: HashMap<String, Option<Route>>,
}

impl Routes {
    /// The plan of a Bind of `sql` with these values, or None when `looked_at` says the
    /// statement must leave the fast path (it is asked unless an earlier no still holds).
    pub(super) fn plan(
        &mut self,
        exec: &Exec<'_>,
        sql: &str,
        ast: &Option<Ast>,
        params: &Params,
        looked_at: impl FnOnce(&sqlparser::ast::Statement) -> bool,
    ) -> Option<Plan> {
        let Some(stmt) = ast else {
            return Some(plan_sql(exec, sql, ast, params));
        };
        let known = self.by_text.get(sql);
        let valid = known.and_then(|r| r.as_ref().filter(|r| r.learned_with(&exec.placement)));
        // A route is learned only after the questions said no (below), which for a statement
        // other than an INSERT or UPDATE holds while the route does.
        let answered = valid.is_some()
            && !matches!(
                **stmt,
                sqlparser::ast::Statement::Insert(_) | sqlparser::ast::Statement::Update(_)
            );
        if !answered && looked_at(stmt) {
            return None;
        }
        match (known, valid) {
            (_, Some(route)) => {
                if let Some(plan) = route.plan(params) {
                    return Some(plan);
                }
                return Some(exec.resolve_cursor(plan(stmt, &exec.placement, params)));
            }
            (Some(None), _) => {
                return Some(exec.resolve_cursor(plan(stmt, &exec.placement, params)))
            }
            _ => {}
        }
        let (planned, reads) = recording(|| plan(stmt, &exec.placement, params));
        let route = if insert_without_columns(exec, sql) {
            None
        } else {
            Route::learn(&planned, &reads, params, &exec.placement)
        };
        if self.by_text.len() >= MAX_TEXTS {
            self.by_text.clear();
        }
        self.by_text.insert(sql.to_string(), route);
        // A cursor's plan depends on the session's cursors; it is never a Shard plan, so never
        // learned.
        Some(exec.resolve_cursor(planned))
    }
}

/// Whether `sql` is an INSERT that names no columns (its AST was given the table's).
fn insert_without_columns(exec: &Exec<'_>, sql: &str) -> bool {
    exec.parse(sql).is_some_and(|v| {
        v.iter()
            .any(|s| matches!(&**s, sqlparser::ast::Statement::Insert(i) if i.columns.is_empty()))
    })
}
