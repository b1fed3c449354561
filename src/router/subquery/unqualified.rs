//! Outer columns a subquery names without their table: `EXISTS (SELECT 1 FROM orders o WHERE
//! o.account_id = id)`, written inside a query of `accounts`.
//!
//! PostgreSQL looks an unqualified name up in the subquery's own FROM first, then outward. The
//! planner cannot tell which without the tables' columns, so it takes such a subquery for one
//! that is not tied by the key and refuses it. Given the columns (read from the catalog in the
//! client's own transaction, by the executor), a name that no table of the subquery has and
//! exactly one table of the outer query has is that table's: it is written qualified, which
//! changes nothing PostgreSQL would do and lets the planner see the tie. A bare name exactly one
//! table of the subquery has is written qualified by it too, so that an aggregate over it
//! (`(SELECT sum(amount) FROM orders ...)`) is known to be the subquery's own; a subquery that
//! names no outer column is left as written.
//!
//! Only the subquery's WHERE, select list and HAVING are rewritten, and its GROUP BY for its
//! own columns (its ORDER BY, and a GROUP BY name no table has, may name its output columns), only subqueries directly in the outer query's WHERE,
//! select list or ORDER BY
//! (one nested deeper has more scopes between), and only where every table in both FROM lists
//! is a plain table without a column list on its alias. Names that are keywords where
//! unquoted (`user`, `current_user`, ...) are left alone.

use super::{per_row_exprs, visit_outside_subqueries, visit_outside_subqueries_mut};
use sqlparser::ast::{
    Expr, Ident, ObjectName, ObjectNamePart, Query, Select, SetExpr, TableFactor, VisitMut,
};
use std::collections::HashMap;
use std::ops::ControlFlow;

/// Unquoted names PostgreSQL reads as functions, never as columns.
const KEYWORDS: &[&str] = &[
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "localtime",
    "localtimestamp",
    "session_user",
    "system_user",
    "user",
];

/// The tables (as written) whose columns `qualified` needs for `q`: those of the outer FROM
/// and of its subqueries whose WHERE names a column without its table. Empty when there is
/// nothing to qualify or a FROM list holds something other than plain tables.
pub fn tables_to_read(q: &Query) -> Vec<String> {
    let SetExpr::Select(s) = q.body.as_ref() else {
        return Vec::new();
    };
    let Some(outer) = plain_tables(s) else {
        return Vec::new();
    };
    let mut names: Vec<String> = Vec::new();
    for sub in &direct_subqueries(q, s) {
        let SetExpr::Select(inner) = sub.body.as_ref() else {
            continue;
        };
        let Some(tables) = plain_tables(inner) else {
            continue;
        };
        if rewritten_parts(inner).any(names_bare_column) {
            names.extend(tables.into_iter().map(|(_, name)| name.to_string()));
        }
    }
    if names.is_empty() {
        return names;
    }
    names.extend(outer.into_iter().map(|(_, name)| name.to_string()));
    names.sort();
    names.dedup();
    names
}

/// `q` with the outer columns its subqueries name bare written qualified, given each table's
/// columns (by its name as `tables_to_read` wrote it); None when nothing changed.
pub fn qualified(q: &Query, columns: &HashMap<String, Vec<String>>) -> Option<Query> {
    let mut q = q.clone();
    let SetExpr::Select(s) = q.body.as_ref() else {
        return None;
    };
    let outer: Vec<(Ident, Vec<String>)> = plain_tables(s)?
        .into_iter()
        .map(|(qualifier, name)| Some((qualifier, columns.get(&name.to_string())?.clone())))
        .collect::<Option<_>>()?;
    let mut walk = Outermost {
        outer: &outer,
        columns,
        changed: false,
    };
    // The same places `per_row_exprs` reads: WHERE, the select list, ORDER BY.
    let SetExpr::Select(s) = q.body.as_mut() else {
        return None;
    };
    walk.visit(&mut s.selection);
    walk.visit(&mut s.projection);
    walk.visit(&mut q.order_by);
    walk.changed.then_some(q)
}

/// The subqueries (EXISTS, IN, scalar) directly in `s`'s WHERE, select list and ORDER BY.
fn direct_subqueries(q: &Query, s: &Select) -> Vec<Query> {
    per_row_exprs(q, s)
        .flat_map(|(e, _)| super::outermost_subqueries(e))
        .filter_map(|e| match e {
            Expr::Exists { subquery, .. }
            | Expr::InSubquery { subquery, .. }
            | Expr::Subquery(subquery) => Some(*subquery),
            _ => None,
        })
        .collect()
}

/// The parts of a subquery where a bare name cannot be one of its output columns.
fn rewritten_parts(s: &Select) -> impl Iterator<Item = &Expr> {
    let items = s.projection.iter().filter_map(|i| match i {
        sqlparser::ast::SelectItem::UnnamedExpr(e)
        | sqlparser::ast::SelectItem::ExprWithAlias { expr: e, .. } => Some(e),
        _ => None,
    });
    s.selection.iter().chain(items).chain(s.having.iter())
}

/// The plain tables of `s`'s FROM list, with the name each goes by in the query (its alias,
/// or the last part of its name) and its name as written; None when something else is there.
pub(crate) fn plain_tables(s: &Select) -> Option<Vec<(Ident, &ObjectName)>> {
    let mut out = Vec::new();
    for twj in &s.from {
        for factor in std::iter::once(&twj.relation).chain(twj.joins.iter().map(|j| &j.relation)) {
            let TableFactor::Table {
                name,
                alias,
                args: None,
                ..
            } = factor
            else {
                return None;
            };
            let qualifier = match alias {
                Some(a) if a.columns.is_empty() => a.name.clone(),
                Some(_) => return None,
                None => match name.0.last() {
                    Some(ObjectNamePart::Identifier(i)) => i.clone(),
                    _ => return None,
                },
            };
            out.push((qualifier, name));
        }
    }
    Some(out)
}

/// Whether `e` names a column without its table (outside subqueries of its own).
fn names_bare_column(e: &Expr) -> bool {
    visit_outside_subqueries(e, |e| match e {
        Expr::Identifier(i) if !keyword(i) => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

fn keyword(i: &Ident) -> bool {
    i.quote_style.is_none() && KEYWORDS.contains(&i.value.to_ascii_lowercase().as_str())
}

/// A column's name as the catalog stores it.
pub(crate) fn stored(i: &Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_lowercase()
    }
}

/// Qualifies the bare columns of each subquery met outside other subqueries.
struct Outermost<'a> {
    outer: &'a [(Ident, Vec<String>)],
    columns: &'a HashMap<String, Vec<String>>,
    changed: bool,
}

impl Outermost<'_> {
    fn visit<V: VisitMut>(&mut self, node: &mut V) {
        visit_outside_subqueries_mut(node, |e| {
            if let Expr::Exists { subquery, .. }
            | Expr::InSubquery { subquery, .. }
            | Expr::Subquery(subquery) = e
            {
                self.changed |= self.qualify(subquery);
            }
        });
    }

    /// Qualifies the bare columns of `sub`'s WHERE, select list and HAVING; whether any was.
    fn qualify(&self, sub: &mut Query) -> bool {
        let SetExpr::Select(s) = sub.body.as_mut() else {
            return false;
        };
        let Some(tables) = plain_tables(s) else {
            return false;
        };
        let mut own: Vec<(Ident, Vec<String>)> = Vec::new();
        for (qualifier, name) in tables {
            match self.columns.get(&name.to_string()) {
                Some(cols) => own.push((qualifier, cols.clone())),
                // A table whose columns are unknown could hold any name.
                None => return false,
            }
        }
        // Rewritten apart, and kept only when an outer column was found: a subquery that
        // names nothing outside stays as written.
        let mut written = s.clone();
        let mut outer_found = false;
        let mut rewrite = |e: &mut Expr| outer_found |= place(e, &own, self.outer);
        visit_outside_subqueries_mut(&mut written.selection, &mut rewrite);
        for item in written.projection.iter_mut() {
            if let sqlparser::ast::SelectItem::UnnamedExpr(e)
            | sqlparser::ast::SelectItem::ExprWithAlias { expr: e, .. } = item
            {
                visit_outside_subqueries_mut(e, &mut rewrite);
            }
        }
        visit_outside_subqueries_mut(&mut written.having, &mut rewrite);
        if !outer_found {
            return false;
        }
        // GROUP BY reads a bare name as an input column before an output one: the subquery's
        // own columns are written as in the select list, so that the two still match.
        if let sqlparser::ast::GroupByExpr::Expressions(exprs, _) = &mut written.group_by {
            visit_outside_subqueries_mut(exprs, |e| {
                place(e, &own, &[]);
            });
        }
        *s = written;
        true
    }
}

/// Writes `e`, when it is a bare name, qualified by the one table of `own` (the subquery's)
/// that has it, or when none has it, by the one `outer` table that has it; whether it was an
/// outer table's.
fn place(e: &mut Expr, own: &[(Ident, Vec<String>)], outer: &[(Ident, Vec<String>)]) -> bool {
    let Expr::Identifier(i) = e else {
        return false;
    };
    if keyword(i) {
        return false;
    }
    let name = stored(i);
    let inner = own.iter().any(|(_, cols)| cols.contains(&name));
    let scope = if inner { own } else { outer };
    let mut having = scope.iter().filter(|(_, cols)| cols.contains(&name));
    if let (Some((qualifier, _)), None) = (having.next(), having.next()) {
        *e = Expr::CompoundIdentifier(vec![qualifier.clone(), i.clone()]);
        return !inner;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::plan::tests::query;

    fn columns() -> HashMap<String, Vec<String>> {
        let cols = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        HashMap::from([
            (
                "accounts".to_string(),
                cols(&["id", "owner", "balance", "Note"]),
            ),
            (
                "orders".to_string(),
                cols(&["account_id", "order_no", "amount", "owner"]),
            ),
            (
                "public.orders".to_string(),
                cols(&["account_id", "order_no", "amount", "owner"]),
            ),
        ])
    }

    fn rewritten(sql: &str) -> Option<String> {
        qualified(&query(sql), &columns()).map(|q| q.to_string())
    }

    #[test]
    fn a_bare_name_only_the_outer_table_has_is_written_qualified() {
        let sql = "select id from accounts where exists (select 1 from orders o2 where o2.account_id = id and o2.order_no = 0)";
        assert_eq!(tables_to_read(&query(sql)), vec!["accounts", "orders"]);
        assert_eq!(
            rewritten(sql).unwrap(),
            "SELECT id FROM accounts WHERE EXISTS (SELECT 1 FROM orders o2 WHERE o2.account_id = accounts.id AND o2.order_no = 0)"
        );
        // `owner` is a column of orders too: PostgreSQL reads the inner one; GROUP BY's own
        // columns are written as the select list's.
        assert_eq!(
            rewritten("select id from accounts where 2 < (select count(*) from orders o where o.account_id = id and owner = 'x' group by owner)").unwrap(),
            "SELECT id FROM accounts WHERE 2 < (SELECT count(*) FROM orders o WHERE o.account_id = accounts.id AND o.owner = 'x' GROUP BY o.owner)"
        );
        // By the outer alias, in the select list and ORDER BY too, quoted names by their case;
        // the subquery's own names by its table, so its aggregates are known to be its own.
        assert_eq!(
            rewritten("select (select count(*) from public.orders where account_id = a.id and amount > balance and \"Note\" is null) from accounts a order by (select max(amount) from orders where account_id = id)").unwrap(),
            "SELECT (SELECT count(*) FROM public.orders WHERE orders.account_id = a.id AND orders.amount > a.balance AND a.\"Note\" IS NULL) FROM accounts a ORDER BY (SELECT max(orders.amount) FROM orders WHERE orders.account_id = a.id)"
        );
    }

    #[test]
    fn names_the_subquery_has_or_cannot_place_are_left_alone() {
        for sql in [
            // Naming no outer column bare, a subquery stays as written.
            "select id from accounts where exists (select 1 from orders o where o.account_id = accounts.id and owner = 'x')",
            "select id from accounts where balance in (select amount from orders group by amount having count(*) > 2)",
            // Keywords, and names no table has.
            "select id from accounts where exists (select 1 from orders o where o.owner = user and nothing = 1)",
            // A table whose columns are unknown, a derived table, a nested subquery.
            "select id from accounts where exists (select 1 from ledger l where l.account_id = id)",
            "select id from accounts where exists (select 1 from (select * from orders) o where o.account_id = id)",
            "select id from accounts where exists (select 1 from orders o where o.account_id in (select 1 from orders p where p.order_no = id))",
            // The subquery's own ORDER BY may name its output.
            "select (select o.amount as id from orders o where o.account_id = accounts.id order by id limit 1) from accounts",
        ] {
            assert_eq!(rewritten(sql), None, "{sql}");
        }
        assert!(tables_to_read(&query("select id from accounts where exists (select 1 from orders o where o.account_id = accounts.id)")).is_empty());
        assert!(tables_to_read(&query("select id from (select * from accounts) a where exists (select 1 from orders o where o.account_id = id)")).is_empty());
    }
}
