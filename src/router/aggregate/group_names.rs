//! A bare GROUP BY name that is a select item's alias and perhaps a column too.
//!
//! PostgreSQL reads a bare GROUP BY name as a column of the FROM list when one has it, and as
//! the output column of that name only otherwise: `SELECT region AS qty, count(*) FROM t
//! GROUP BY qty, region` groups by the column `qty` when `t` has one. The planner has no
//! catalog; when the statement names such a column elsewhere it knows (see `names_column`),
//! and otherwise it refuses with `UNRESOLVED`. The executor then reads the FROM tables'
//! columns and `resolved` writes each such name so that it means one thing to both: the
//! column qualified by its table, or the item's position. The planner keeps such a qualified
//! group name qualified (`qualified::bare`), so it does not read as the alias again.

use super::names_column;
use crate::error::PgError;
use crate::router::subquery::unqualified::{plain_tables, stored};
use sqlparser::ast::{
    Expr, GroupByExpr, Ident, Query, Select, SelectItem, SetExpr, Value, VisitMut, VisitorMut,
};
use std::collections::HashMap;
use std::ops::ControlFlow;

/// The planner's refusal of a statement grouping by such a name; the executor's cue.
pub const UNRESOLVED: &str =
    "a GROUP BY name that is both a select item's alias and maybe a column over several shards is not supported";

/// The hint that goes with `UNRESOLVED` when it reaches a client.
pub const HINT: &str = "Write the item's expression, or its position, in GROUP BY; or the column qualified by its table.";

/// Whether the planner refused a statement for a GROUP BY name the catalog would settle.
pub fn unresolved(refusal: &PgError) -> bool {
    refusal.message == UNRESOLVED
}

/// Whether `g`, a GROUP BY expression of `select`, is a bare name that some item takes as its
/// alias while the statement names no column so elsewhere.
pub(crate) fn ambiguous(select: &Select, g: &Expr) -> bool {
    let Expr::Identifier(id) = g else {
        return false;
    };
    aliased(select, id) && !names_column(select, id)
}

/// Whether an item of `select` is named `id` by its alias.
pub(super) fn aliased(select: &Select, id: &Ident) -> bool {
    select.projection.iter().any(
        |i| matches!(i, SelectItem::ExprWithAlias { alias, .. } if stored(alias) == stored(id)),
    )
}

/// Whether `s` groups by a name `ambiguous` holds for.
fn has_ambiguous(s: &Select) -> bool {
    matches!(&s.group_by, GroupByExpr::Expressions(exprs, _) if exprs.iter().any(|g| ambiguous(s, g)))
}

/// Calls `f` on each SELECT of `q` at every depth (derived tables, CTEs, subqueries, the
/// branches of set operations): a GROUP BY name resolves in its own SELECT's FROM list.
fn each_select(q: &mut Query, f: &mut dyn FnMut(&mut Select)) {
    struct Walk<'f>(&'f mut dyn FnMut(&mut Select));
    fn body(e: &mut SetExpr, f: &mut dyn FnMut(&mut Select)) {
        match e {
            SetExpr::Select(s) => f(s),
            SetExpr::SetOperation { left, right, .. } => {
                body(left, f);
                body(right, f);
            }
            // A query in parentheses is visited as a query of its own.
            _ => {}
        }
    }
    impl VisitorMut for Walk<'_> {
        type Break = ();
        fn pre_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
            body(&mut q.body, self.0);
            ControlFlow::Continue(())
        }
    }
    let _ = q.visit(&mut Walk(f));
}

/// The tables (as written) whose columns `resolved` needs: those of each SELECT grouping by
/// such a name. None when none does, or one's FROM list holds something other than plain
/// tables (or one with renamed columns), whose columns the catalog does not list.
pub fn tables_to_read(q: &Query) -> Option<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    let mut plain = true;
    each_select(&mut q.clone(), &mut |s| {
        if !has_ambiguous(s) {
            return;
        }
        match plain_tables(s) {
            Some(tables) => names.extend(tables.into_iter().map(|(_, n)| n.to_string())),
            None => plain = false,
        }
    });
    if !plain || names.is_empty() {
        return None;
    }
    names.sort();
    names.dedup();
    Some(names)
}

/// `q` with each ambiguous GROUP BY name, at every depth, written as the column of the one
/// table of its SELECT that has it (`t.qty`), or as its item's position when none has; given
/// each table's columns by its name as `tables_to_read` wrote it. None when a name is several
/// tables' column (PostgreSQL refuses it as ambiguous), or names several items, or a table's
/// columns are missing.
pub fn resolved(q: &Query, columns: &HashMap<String, Vec<String>>) -> Option<Query> {
    let mut out = q.clone();
    let mut failed = false;
    let mut changed = false;
    each_select(&mut out, &mut |s| {
        if failed || !has_ambiguous(s) {
            return;
        }
        match resolved_select(s, columns) {
            Some(resolved) => {
                *s = resolved;
                changed = true;
            }
            None => failed = true,
        }
    });
    (changed && !failed).then_some(out)
}

/// `resolved` for one SELECT.
fn resolved_select(s: &Select, columns: &HashMap<String, Vec<String>>) -> Option<Select> {
    let tables: Vec<(Ident, &Vec<String>)> = plain_tables(s)?
        .into_iter()
        .map(|(qualifier, name)| Some((qualifier, columns.get(&name.to_string())?)))
        .collect::<Option<_>>()?;
    let mut out = s.clone();
    let GroupByExpr::Expressions(exprs, _) = &mut out.group_by else {
        return None;
    };
    for g in exprs.iter_mut() {
        if !ambiguous(s, g) {
            continue;
        }
        let Expr::Identifier(id) = &*g else {
            continue;
        };
        let name = stored(id);
        let owners: Vec<&Ident> = tables
            .iter()
            .filter(|(_, cols)| cols.contains(&name))
            .map(|(qualifier, _)| qualifier)
            .collect();
        *g = match owners.as_slice() {
            [] => {
                let mut at = s.projection.iter().enumerate().filter(|(_, i)| {
                    matches!(i, SelectItem::ExprWithAlias { alias, .. } if stored(alias) == name)
                });
                let (position, _) = at.next()?;
                if at.next().is_some() {
                    return None;
                }
                Expr::value(Value::Number((position + 1).to_string(), false))
            }
            [table] => Expr::CompoundIdentifier(vec![(*table).clone(), id.clone()]),
            _ => return None,
        };
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn query(sql: &str) -> Query {
        match Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .pop()
            .unwrap()
        {
            sqlparser::ast::Statement::Query(q) => *q,
            other => panic!("{other}"),
        }
    }

    fn resolved_text(sql: &str, tables: &[(&str, &[&str])]) -> Option<String> {
        let columns = tables
            .iter()
            .map(|(t, cols)| (t.to_string(), cols.iter().map(|c| c.to_string()).collect()))
            .collect();
        resolved(&query(sql), &columns).map(|q| q.to_string())
    }

    #[test]
    fn a_name_a_table_has_is_its_column_and_one_none_has_is_the_item() {
        assert_eq!(
            resolved_text(
                "SELECT region AS qty, count(*) FROM t GROUP BY qty, region",
                &[("t", &["id", "region", "qty"])]
            )
            .as_deref(),
            Some("SELECT region AS qty, count(*) FROM t GROUP BY t.qty, region")
        );
        assert_eq!(
            resolved_text(
                "SELECT count(*), date_trunc('day', at) AS day FROM t AS x GROUP BY day",
                &[("t", &["id", "at"])]
            )
            .as_deref(),
            Some("SELECT count(*), date_trunc('day', at) AS day FROM t AS x GROUP BY 2")
        );
        // Quoted names keep their case; the join's second table has the column.
        assert_eq!(
            resolved_text(
                r#"SELECT a.k AS "Qty", count(*) FROM a JOIN b ON a.k = b.k GROUP BY "Qty""#,
                &[("a", &["k"]), ("b", &["k", "Qty"])]
            )
            .as_deref(),
            Some(r#"SELECT a.k AS "Qty", count(*) FROM a JOIN b ON a.k = b.k GROUP BY b."Qty""#)
        );
    }

    #[test]
    fn names_are_settled_in_their_own_select_at_every_depth() {
        let sql =
            "SELECT r, n FROM (SELECT upper(region) AS r, count(*) AS n FROM t GROUP BY r) s \
                   WHERE n IN (SELECT k AS qty FROM u GROUP BY qty) ORDER BY 1";
        assert_eq!(
            tables_to_read(&query(sql)),
            Some(vec!["t".to_string(), "u".to_string()])
        );
        assert_eq!(
            resolved_text(sql, &[("t", &["region"]), ("u", &["k", "qty"])]).as_deref(),
            Some("SELECT r, n FROM (SELECT upper(region) AS r, count(*) AS n FROM t GROUP BY 1) s WHERE n IN (SELECT k AS qty FROM u GROUP BY u.qty) ORDER BY 1")
        );
        let union = "SELECT a AS b FROM t GROUP BY b UNION SELECT c AS b FROM u GROUP BY b";
        assert_eq!(
            resolved_text(union, &[("t", &["a", "b"]), ("u", &["c"])]).as_deref(),
            Some("SELECT a AS b FROM t GROUP BY t.b UNION SELECT c AS b FROM u GROUP BY 1")
        );
    }

    #[test]
    fn what_postgresql_would_refuse_or_settle_alone_is_left() {
        // Two tables have the column: ambiguous in PostgreSQL too.
        assert_eq!(
            resolved_text(
                "SELECT a.k AS q, count(*) FROM a JOIN b ON a.k = b.k GROUP BY q",
                &[("a", &["k", "q"]), ("b", &["k", "q"])]
            ),
            None
        );
        // Named as a column elsewhere: the planner knows it is one.
        assert_eq!(
            resolved_text(
                "SELECT upper(r) AS r, count(*) FROM t GROUP BY r",
                &[("t", &["r"])]
            ),
            None
        );
        // A derived table's columns are not the catalog's.
        assert_eq!(
            tables_to_read(&query(
                "SELECT x AS y, count(*) FROM (SELECT 1 AS x) d GROUP BY y"
            )),
            None
        );
        // Nothing to settle.
        assert_eq!(
            tables_to_read(&query("SELECT x, count(*) FROM t GROUP BY x")),
            None
        );
        assert_eq!(
            tables_to_read(&query("SELECT x AS y, count(*) FROM s.t, u GROUP BY y")),
            Some(vec!["s.t".to_string(), "u".to_string()])
        );
    }
}
