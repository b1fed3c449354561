//! Calls of the shards' own functions whose definitions name a sharded table.
//!
//! Such a function runs on the shard the statement runs on and reads that shard's rows only:
//! `SELECT account_count()` would count one shard's accounts, and `owner_of(7)` called on
//! another shard than 7's would find nothing. The proxy cannot plan the query inside the
//! function, so any statement that calls one is refused, as is one that calls a function that
//! calls one; the definitions' words come from the shards' catalogs
//! (`Placement::function_words`).

use super::{last_ident, refuse, Plan};
use crate::placement::{Placement, TableRule};
use sqlparser::ast::{Expr, ObjectName, Statement, TableFactor};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

/// The refusal of `stmt` if it calls such a function.
pub(super) fn refusal(stmt: &Statement, placement: &Placement) -> Option<Plan> {
    if placement.function_words.is_empty() || !runs_calls(stmt) {
        return None;
    }
    let reads = |name: &ObjectName| -> Option<(String, String)> {
        let function = last_ident(name).to_lowercase();
        // Most calls are of PostgreSQL's own functions: the table names only for the others.
        if !placement.function_words.contains_key(&function) {
            return None;
        }
        let sharded: Vec<String> = placement
            .tables
            .iter()
            .filter(|(_, rule)| matches!(rule, TableRule::Sharded { .. }))
            .map(|(name, _)| name.rsplit('.').next().unwrap_or(name).to_lowercase())
            .collect();
        let table = table_read(&function, &sharded, &placement.function_words)?;
        Some((function, table))
    };
    let mut calls = Calls {
        reads: &reads,
        found: None,
    };
    let _ = sqlparser::ast::Visit::visit(stmt, &mut calls);
    let (function, table) = calls.found?;
    Some(refuse(
        format!(
            "function {function} reads sharded table {table}: on each shard it would read only that shard's rows"
        ),
        "Run the query the function runs as a statement of its own, which the proxy plans over every shard.",
    ))
}

/// Whether `stmt` is a statement whose function calls run where it runs: a query or a write
/// (DDL only names functions, and DO and CALL run on every shard).
pub(super) fn runs_calls(stmt: &Statement) -> bool {
    matches!(
        stmt,
        Statement::Query(_) | Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_)
    )
}

/// A sharded table `function` names, itself or through the functions it names (a function
/// calling one that reads a sharded table reads it too).
fn table_read(
    function: &str,
    sharded: &[String],
    words: &BTreeMap<String, BTreeSet<String>>,
) -> Option<String> {
    through_calls(function, words, |_, named| {
        sharded.iter().find(|t| named.contains(*t)).cloned()
    })
}

/// What `find` says first of `function` or of a function it names, at any depth, given each
/// one's name and the words of its definition.
pub(super) fn through_calls<T>(
    function: &str,
    words: &BTreeMap<String, BTreeSet<String>>,
    find: impl Fn(&str, &BTreeSet<String>) -> Option<T>,
) -> Option<T> {
    let mut seen = BTreeSet::from([function.to_string()]);
    let mut next = vec![function.to_string()];
    while let Some(f) = next.pop() {
        let Some(named) = words.get(&f) else { continue };
        if let Some(found) = find(&f, named) {
            return Some(found);
        }
        for w in named {
            if words.contains_key(w) && seen.insert(w.clone()) {
                next.push(w.clone());
            }
        }
    }
    None
}

/// A visitor for the first call (in an expression or in FROM) of which `reads` says something.
pub(super) struct Calls<'a> {
    pub reads: &'a dyn Fn(&ObjectName) -> Option<(String, String)>,
    pub found: Option<(String, String)>,
}

impl sqlparser::ast::Visitor for Calls<'_> {
    type Break = ();

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = e {
            self.found = (self.reads)(&f.name);
        }
        match self.found {
            Some(_) => ControlFlow::Break(()),
            None => ControlFlow::Continue(()),
        }
    }

    fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
        match t {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            }
            | TableFactor::Function { name, .. } => self.found = (self.reads)(name),
            _ => {}
        }
        match self.found {
            Some(_) => ControlFlow::Break(()),
            None => ControlFlow::Continue(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::placement;
    use super::*;
    use std::sync::Arc;

    fn planned(sql: &str, placement: &Placement) -> Plan {
        let stmt =
            sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, sql)
                .unwrap()
                .remove(0);
        super::super::plan(&stmt, placement, &Default::default())
    }

    #[test]
    fn calls_of_functions_naming_a_sharded_table_are_refused() {
        let mut p = placement();
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect();
        p.function_words = Arc::new(
            [
                (
                    "acc_count".to_string(),
                    words(&["select", "count", "from", "accounts"]),
                ),
                (
                    "country_of".to_string(),
                    words(&["select", "name", "from", "countries"]),
                ),
                (
                    "via".to_string(),
                    words(&["select", "indirect", "countries"]),
                ),
                (
                    "indirect".to_string(),
                    words(&["select", "acc_count", "indirect"]),
                ),
            ]
            .into_iter()
            .collect(),
        );
        for sql in [
            "select acc_count()",
            "select id, public.ACC_COUNT() from accounts where id = 1",
            "select * from acc_count()",
            "update accounts set id = 1 where acc_count() > 0",
            "select via()",
        ] {
            assert!(matches!(planned(sql, &p), Plan::Reject(_)), "{sql}");
        }
        for sql in ["select country_of('x')", "select count(*) from accounts"] {
            assert!(!matches!(planned(sql, &p), Plan::Reject(_)), "{sql}");
        }
    }
}
