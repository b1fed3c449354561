//! WITH queries over sharded tables, planned as the derived tables they stand for.
//!
//! PostgreSQL itself inlines a CTE that is a plain SELECT referenced once: `WITH big AS
//! (SELECT ... FROM accounts WHERE ...) SELECT count(*) FROM big` means `SELECT count(*) FROM
//! (SELECT ... FROM accounts WHERE ...) big`, which the planner knows how to spread or refuse.
//! Only that case is rewritten. A CTE referenced twice (each shard would join its own part
//! of one side with its own part of the other), a recursive one, one that writes, and a
//! query whose subqueries bring WITH lists of their own (whose names could hide these) are
//! left to the caller, which refuses them. An unreferenced CTE is dropped, as PostgreSQL
//! never runs a SELECT nobody reads.

use super::*;
use sqlparser::ast::{Cte, TableAlias, VisitMut, VisitorMut};

/// The statement with its CTEs inlined, or None when it cannot be.
pub(crate) fn inlined(q: &Query) -> Option<Query> {
    let with = q.with.as_ref()?;
    if with.recursive {
        return None;
    }
    for cte in &with.cte_tables {
        let writes = matches!(
            cte.query.body.as_ref(),
            SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_)
        );
        if writes || !cte.query.locks.is_empty() || nested_with(&cte.query) {
            return None;
        }
    }
    let mut rewritten = q.clone();
    rewritten.with = None;
    if nested_with(&rewritten) {
        return None;
    }
    // A CTE can read the ones before it (a name there that no earlier CTE defines is a
    // table): each is put in place in the later CTEs and the statement, first to last, so
    // that a later one carries the earlier ones it reads when its turn comes.
    let mut ctes: Vec<Cte> = with.cte_tables.clone();
    for i in 0..ctes.len() {
        let (done, later) = ctes.split_at_mut(i + 1);
        let mut replace = Replace {
            cte: &done[i],
            uses: 0,
        };
        for cte in later.iter_mut() {
            let _ = cte.query.visit(&mut replace);
        }
        let _ = rewritten.visit(&mut replace);
        if replace.uses > 1 {
            return None;
        }
    }
    Some(rewritten)
}

/// Whether a WITH list is anywhere in `q`, itself included.
fn nested_with(q: &Query) -> bool {
    struct Find;
    impl sqlparser::ast::Visitor for Find {
        type Break = ();
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            if q.with.is_some() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
    }
    sqlparser::ast::Visit::visit(q, &mut Find).is_break()
}

/// Puts one CTE's query in place of every table reference to its name, counting them.
struct Replace<'a> {
    cte: &'a Cte,
    uses: usize,
}

impl VisitorMut for Replace<'_> {
    type Break = ();

    // After the factor's own children: the query put in place is not visited again, where
    // its names are tables (`WITH accounts AS (SELECT ... FROM accounts)`).
    fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        let TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } = factor
        else {
            return ControlFlow::Continue(());
        };
        // A CTE is named by one unqualified name; `public.big` is a table.
        let [ObjectNamePart::Identifier(id)] = name.0.as_slice() else {
            return ControlFlow::Continue(());
        };
        let defined = &self.cte.alias.name;
        let same = if id.quote_style.is_some() || defined.quote_style.is_some() {
            id.value == defined.value
        } else {
            id.value.eq_ignore_ascii_case(&defined.value)
        };
        if !same {
            return ControlFlow::Continue(());
        }
        self.uses += 1;
        // Named as the reference names it, with the CTE's column names.
        let alias = TableAlias {
            explicit: true,
            name: alias
                .as_ref()
                .map_or_else(|| id.clone(), |a| a.name.clone()),
            columns: alias
                .as_ref()
                .filter(|a| !a.columns.is_empty())
                .map_or_else(|| self.cte.alias.columns.clone(), |a| a.columns.clone()),
            at: None,
        };
        *factor = TableFactor::Derived {
            lateral: false,
            subquery: self.cte.query.clone(),
            alias: Some(alias),
            sample: None,
        };
        ControlFlow::Continue(())
    }
}
