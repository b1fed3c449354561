//! Columns named through the one table of the FROM list, written bare for the merge.
//!
//! ORMs qualify some references and not others: Sequelize groups by `"status"` and orders by
//! `"Order"."status"`. Over one table both name the same column, as PostgreSQL resolves them,
//! but the merge matches expressions by their text, so `"Order"."status"` read as a column
//! neither grouped nor aggregated. Each reference qualified by the table's alias (or, without
//! one, its name) is written bare in the select list, GROUP BY and HAVING, where a bare name
//! means the table's column (in GROUP BY unless an alias takes the name and the statement
//! names no such column elsewhere: the planner would not know it for one), and in ORDER BY
//! unless a select item other than that column is named alike (a bare ORDER BY name means the
//! output column first). Subqueries keep their names: theirs may be another table's.

use sqlparser::ast::{
    Expr, Ident, ObjectNamePart, OrderByKind, Query, Select, SelectItem, SetExpr, TableFactor,
    VisitMut,
};

/// `q` with its references to the one table's columns written bare, or None when its FROM
/// list is not one table or nothing is qualified.
pub(super) fn bare(q: &Query) -> Option<Query> {
    let SetExpr::Select(s) = q.body.as_ref() else {
        return None;
    };
    let qualifier = qualifier(s)?;
    let mut out = q.clone();
    let SetExpr::Select(select) = out.body.as_mut() else {
        return None;
    };
    let mut changed = false;
    for item in &mut select.projection {
        match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                changed |= strip(e, &qualifier, &[]);
            }
            _ => return None,
        }
    }
    // A GROUP BY name an alias takes stays qualified unless the statement names the column
    // elsewhere: bare, it could read as the alias (`group_names`).
    let aliases: Vec<String> = s
        .projection
        .iter()
        .filter_map(|i| match i {
            SelectItem::ExprWithAlias { alias, .. } if !super::names_column(s, alias) => {
                Some(folded(alias))
            }
            _ => None,
        })
        .collect();
    changed |= strip(&mut select.group_by, &qualifier, &aliases);
    changed |= strip(&mut select.having, &qualifier, &[]);
    // Output names a bare ORDER BY name would mean instead of the table's column.
    let mut named = Vec::new();
    for item in &s.projection {
        let name = match item {
            SelectItem::ExprWithAlias { alias, .. } => Some((folded(alias), None)),
            SelectItem::UnnamedExpr(e) => match crate::router::computed::output_name(e) {
                Some(n) => Some((n, column_of(e, &qualifier))),
                None => return Some(out).filter(|_| changed),
            },
            _ => None,
        };
        named.extend(name);
    }
    let keep: Vec<String> = named
        .into_iter()
        .filter(|(_, column)| column.is_none())
        .map(|(n, _)| n)
        .collect();
    if let Some(ob) = &mut out.order_by {
        if let OrderByKind::Expressions(exprs) = &mut ob.kind {
            for o in exprs {
                changed |= strip(&mut o.expr, &qualifier, &keep);
            }
        }
    }
    changed.then_some(out)
}

/// Writes bare, outside subqueries, each column of `node` named through `qualifier`, but those
/// named in `keep`; whether any was.
fn strip<V: VisitMut>(node: &mut V, qualifier: &str, keep: &[String]) -> bool {
    let mut changed = false;
    crate::router::subquery::visit_outside_subqueries_mut(node, |e| {
        if let Expr::CompoundIdentifier(parts) = e {
            if let [q, c] = parts.as_slice() {
                if folded(q) == qualifier && !keep.contains(&folded(c)) {
                    *e = Expr::Identifier(c.clone());
                    changed = true;
                }
            }
        }
    });
    changed
}

/// The name qualifying the FROM list's one table: its alias, or its own last name.
fn qualifier(s: &Select) -> Option<String> {
    let [only] = s.from.as_slice() else {
        return None;
    };
    if !only.joins.is_empty() {
        return None;
    }
    match &only.relation {
        TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } => Some(match alias {
            Some(a) => folded(&a.name),
            None => match name.0.last()? {
                ObjectNamePart::Identifier(i) => folded(i),
                _ => return None,
            },
        }),
        _ => None,
    }
}

/// The column `e` names through `qualifier`, bare or qualified.
fn column_of(e: &Expr, qualifier: &str) -> Option<String> {
    match e {
        Expr::Identifier(i) => Some(folded(i)),
        Expr::CompoundIdentifier(parts) => match parts.as_slice() {
            [q, c] if folded(q) == qualifier => Some(folded(c)),
            _ => None,
        },
        _ => None,
    }
}

/// An identifier as PostgreSQL reads it: unquoted ones fold to lower case.
fn folded(i: &Ident) -> String {
    match i.quote_style {
        None => i.value.to_lowercase(),
        Some(_) => i.value.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn bare_text(sql: &str) -> Option<String> {
        let q = match Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .pop()
            .unwrap()
        {
            sqlparser::ast::Statement::Query(q) => *q,
            other => panic!("{other}"),
        };
        bare(&q).map(|q| q.to_string())
    }

    #[test]
    fn the_tables_columns_are_written_bare() {
        assert_eq!(
            bare_text(r#"SELECT "status", count("id") AS "n" FROM "seq_orders" AS "Order" GROUP BY "status" ORDER BY "Order"."status" ASC"#).as_deref(),
            Some(r#"SELECT "status", count("id") AS "n" FROM "seq_orders" AS "Order" GROUP BY "status" ORDER BY "status" ASC"#)
        );
        assert_eq!(
            bare_text("select orders.status, count(*) from orders group by orders.status having max(orders.total) > 1").as_deref(),
            Some("SELECT status, count(*) FROM orders GROUP BY status HAVING max(total) > 1")
        );
    }

    #[test]
    fn other_names_stay_as_written() {
        // Without the alias the table's own name is no qualifier; joins name two tables.
        assert_eq!(
            bare_text(
                "select o.x, count(*) from orders o join items i on i.id = o.id group by o.x"
            ),
            None
        );
        assert_eq!(bare_text("select s.orders.x from s.orders"), None);
        assert_eq!(
            bare_text("select o.x, (select max(o.y) from other o) from orders o").as_deref(),
            Some("SELECT x, (SELECT max(o.y) FROM other o) FROM orders o")
        );
        // Bare, the group name would read as the alias.
        assert_eq!(
            bare_text("select o.r as q, count(*) from orders o group by o.q, o.r").as_deref(),
            Some("SELECT r AS q, count(*) FROM orders o GROUP BY o.q, r")
        );
        // A bare ORDER BY name would mean the output column `x`, which is another value.
        assert_eq!(
            bare_text("select upper(o.x) as x, count(*) from orders o group by o.x order by o.x")
                .as_deref(),
            Some("SELECT upper(x) AS x, count(*) FROM orders o GROUP BY x ORDER BY o.x")
        );
        assert_eq!(
            bare_text("select o.x::text, count(*) from orders o group by o.x order by o.x")
                .as_deref(),
            Some("SELECT x::TEXT, count(*) FROM orders o GROUP BY x ORDER BY o.x")
        );
    }
}
