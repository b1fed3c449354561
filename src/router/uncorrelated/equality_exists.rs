//! `[NOT] EXISTS (...)` over sharded tables correlated to the query around it by equalities
//! that are not a tie by the shard key: a foreign key that is not the child table's shard key
//! (`SELECT * FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.id
//! AND o.total > 100)` with `orders` placed by its own id), as Django's `Exists(OuterRef(...))`
//! and SQLAlchemy's `any()`/`has()` write it. Each shard would see only its own orders.
//!
//! Such an EXISTS is true exactly when the outer value equals one of the inner values of the
//! rows its other conditions keep, so it is written as `COALESCE((c.id) IN (SELECT DISTINCT
//! o.customer_id FROM orders o WHERE o.total > 100), false)` (under NOT for NOT EXISTS): the
//! subquery names nothing outside itself and is answered first, as any such IN is, and the
//! COALESCE turns the NULL an IN gives (a NULL outer value, or a NULL among the inner values
//! with no match) into the false EXISTS gives, so the replacement holds wherever the EXISTS
//! stood, under NOT too. Several equalities (a composite foreign key) compare a row with rows:
//! `(c.region, c.id) IN (SELECT DISTINCT o.region, o.customer_id ...)`, true exactly when one
//! inner row equals the outer one in every column, as the EXISTS's AND of equalities is.
//!
//! Only this shape: a plain SELECT of constants, columns or `*` (no aggregate, grouping,
//! DISTINCT, window, OFFSET or nested subquery; a LIMIT of a positive constant, which an EXISTS
//! does not notice, is dropped), whose WHERE is an AND of conditions of which each that names
//! the outer query is `inner = outer`, the outer side reading the outer query's qualified
//! columns alone (through operators, casts and functions of their arguments alone, as Django's
//! `OuterRef("data__key")` writes `("t"."data" -> 'key')`). What is left must name nothing
//! outside (`self_contained`), or the EXISTS stays as it was and the statement keeps its
//! refusal.

use super::{folded, parse_expr, self_contained, tied};
use crate::placement::Placement;
use sqlparser::ast::{
    BinaryOperator, Distinct, Expr, Query, SelectItem, SetExpr, Statement, TableFactor, Visit,
    VisitMut, Visitor, VisitorMut,
};
use std::collections::HashSet;
use std::ops::ControlFlow;

/// `q` with each EXISTS of the shape above written as an IN answered first; None when there is
/// none.
pub fn decorrelated(q: &Query, placement: &Placement) -> Option<Query> {
    let mut out = q.clone();
    rewritten_in(&mut out, tied(q, placement), placement).then_some(out)
}

/// An UPDATE's or DELETE's EXISTS of the shape above written as an IN answered first; None
/// when there is none. One tied to the written table by the key would run on each shard as
/// written, but it is only there beside another read that needs answering first, and its IN
/// answers the same.
pub fn write_decorrelated(stmt: &Statement, placement: &Placement) -> Option<Statement> {
    let mut out = stmt.clone();
    rewritten_in(&mut out, Vec::new(), placement).then_some(out)
}

/// Whether `node` had an EXISTS of the shape above, not one of `kept`, written as an IN.
fn rewritten_in<V: VisitMut>(node: &mut V, kept: Vec<Expr>, placement: &Placement) -> bool {
    struct Rewrite<'a> {
        placement: &'a Placement,
        kept: Vec<Expr>,
        changed: bool,
    }
    impl VisitorMut for Rewrite<'_> {
        type Break = ();
        fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            if self.kept.contains(e) {
                return ControlFlow::Continue(());
            }
            let Expr::Exists { subquery, negated } = &*e else {
                return ControlFlow::Continue(());
            };
            if super::relations(subquery, self.placement)
                .sharded
                .is_empty()
                || self_contained(subquery)
            {
                return ControlFlow::Continue(());
            }
            if let Some(instead) = as_in(subquery, *negated) {
                *e = instead;
                self.changed = true;
            }
            ControlFlow::Continue(())
        }
    }
    let mut rewrite = Rewrite {
        placement,
        kept,
        changed: false,
    };
    let _ = VisitMut::visit(node, &mut rewrite);
    rewrite.changed
}

/// The IN standing for `[NOT] EXISTS (sub)`, when `sub` is of the shape handled.
fn as_in(sub: &Query, negated: bool) -> Option<Expr> {
    if sub.with.is_some() || sub.fetch.is_some() || !sub.locks.is_empty() || sub.order_by.is_some()
    {
        return None;
    }
    if !super::no_limit_but_a_positive_one(sub) {
        return None;
    }
    let SetExpr::Select(s) = sub.body.as_ref() else {
        return None;
    };
    let plain = s.distinct.is_none()
        && s.top.is_none()
        && s.into.is_none()
        && s.having.is_none()
        && s.qualify.is_none()
        && s.named_window.is_empty()
        && matches!(&s.group_by, sqlparser::ast::GroupByExpr::Expressions(g, m) if g.is_empty() && m.is_empty())
        && s.projection.iter().all(|i| match i {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                matches!(
                    e,
                    Expr::Value(_) | Expr::Identifier(_) | Expr::CompoundIdentifier(_)
                )
            }
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => true,
            _ => false,
        });
    if !plain || has_subquery(sub) {
        return None;
    }
    let inside = defined(sub);
    let outside = |e: &Expr| names_outside(e, &inside);
    let conditions = conjuncts(s.selection.as_ref()?);
    // Each condition naming the outer query is one `inner = outer`; the others stay inside.
    let mut pairs: Vec<(&Expr, &Expr)> = Vec::new();
    let mut rest: Vec<String> = Vec::new();
    for c in &conditions {
        if !outside(c) {
            rest.push(format!("({c})"));
            continue;
        }
        let Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } = c
        else {
            return None;
        };
        if only_outer(right, &inside) && !outside(left) {
            pairs.push((left, right));
        } else if only_outer(left, &inside) && !outside(right) {
            pairs.push((right, left));
        } else {
            return None;
        }
    }
    if pairs.is_empty() {
        return None;
    }
    let mut reads = sub.clone();
    reads.limit_clause = None;
    let SetExpr::Select(r) = reads.body.as_mut() else {
        return None;
    };
    r.distinct = Some(Distinct::Distinct);
    r.projection = pairs
        .iter()
        .map(|(inner, _)| SelectItem::UnnamedExpr((*inner).clone()))
        .collect();
    r.selection = match rest.is_empty() {
        true => None,
        false => Some(parse_expr(&rest.join(" AND ")).ok()?),
    };
    if !self_contained(&reads) {
        return None;
    }
    let outer: Vec<String> = pairs.iter().map(|(_, outer)| outer.to_string()).collect();
    let text = format!("COALESCE(({}) IN ({reads}), false)", outer.join(", "));
    let test = parse_expr(&text).ok()?;
    Some(if negated {
        parse_expr(&format!("NOT {text}")).ok()?
    } else {
        test
    })
}

/// The conditions an AND joins (parentheses looked through).
fn conjuncts(e: &Expr) -> Vec<&Expr> {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            let mut all = conjuncts(left);
            all.extend(conjuncts(right));
            all
        }
        Expr::Nested(inner) => match inner.as_ref() {
            Expr::BinaryOp {
                op: BinaryOperator::And,
                ..
            } => conjuncts(inner),
            _ => vec![e],
        },
        _ => vec![e],
    }
}

/// The names `q`'s FROM gives its tables: their aliases, or their names when unaliased.
fn defined(q: &Query) -> HashSet<String> {
    struct Names(HashSet<String>);
    impl Visitor for Names {
        type Break = ();
        fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
            match t {
                TableFactor::Table { alias: Some(a), .. }
                | TableFactor::Derived { alias: Some(a), .. }
                | TableFactor::Function { alias: Some(a), .. }
                | TableFactor::UNNEST { alias: Some(a), .. } => {
                    self.0.insert(folded(&a.name));
                }
                TableFactor::Table { name, .. } => {
                    if let Some(sqlparser::ast::ObjectNamePart::Identifier(last)) = name.0.last() {
                        self.0.insert(folded(last));
                    }
                }
                _ => {}
            }
            ControlFlow::Continue(())
        }
    }
    let mut names = Names(HashSet::new());
    let _ = q.visit(&mut names);
    names.0
}

/// Whether `e` names a column of a table that `inside` does not hold.
fn names_outside(e: &Expr, inside: &HashSet<String>) -> bool {
    crate::sql::first_expression(e, |x| match x {
        Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
            (!inside.contains(&folded(&parts[parts.len() - 2]))).then_some(())
        }
        _ => None,
    })
    .is_some()
}

/// Whether `e` reads the outer query's qualified columns and nothing of the subquery's: no
/// bare name (it could be an inner column), no subquery, no function but those of their
/// arguments alone (moved out of the subquery, it is evaluated once per outer row instead of
/// once per inner row).
fn only_outer(e: &Expr, inside: &HashSet<String>) -> bool {
    let foreign = crate::sql::first_expression(e, |x| match x {
        Expr::Identifier(_) => Some(()),
        Expr::CompoundIdentifier(parts) if parts.len() >= 2 => inside
            .contains(&folded(&parts[parts.len() - 2]))
            .then_some(()),
        Expr::CompoundIdentifier(_)
        | Expr::Subquery(_)
        | Expr::Exists { .. }
        | Expr::InSubquery { .. } => Some(()),
        Expr::Function(f) => (!crate::sql::pure_functions::is_pure(&f.name)).then_some(()),
        _ => None,
    });
    foreign.is_none() && names_outside(e, inside)
}

fn has_subquery(q: &Query) -> bool {
    let SetExpr::Select(s) = q.body.as_ref() else {
        return true;
    };
    let mut found = false;
    let _ = sqlparser::ast::visit_expressions(&s.selection, |e: &Expr| {
        found |= matches!(
            e,
            Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. }
        );
        ControlFlow::<()>::Continue(())
    });
    found
        || s.from.iter().any(|f| {
            std::iter::once(&f.relation)
                .chain(f.joins.iter().map(|j| &j.relation))
                .any(|t| !matches!(t, TableFactor::Table { args: None, .. }))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Orders placed by their own id, not by their customer.
    fn placement() -> Placement {
        let text = "[[users]]\nname=\"a\"\nauth=\"trust\"\n\
             [[shards]]\nname=\"s0\"\nurl=\"postgres://u@h/db\"\n\
             [[shards]]\nname=\"s1\"\nurl=\"postgres://u@h/db\"\n\
             [tables.customers]\nshard_key=\"id\"\nkey_type=\"bigint\"\n\
             [tables.orders]\nshard_key=\"id\"\nkey_type=\"bigint\"\n\
             [tables.items]\nshard_key=\"id\"\nkey_type=\"bigint\"\n";
        crate::config::Config::from_toml(text)
            .unwrap()
            .placement()
            .unwrap()
    }

    fn rewritten(sql: &str) -> Option<String> {
        let q = super::super::parse_query(sql).unwrap();
        decorrelated(&q, &placement()).map(|q| q.to_string())
    }

    #[test]
    fn one_equality_becomes_an_in_answered_first() {
        assert_eq!(
            rewritten("SELECT * FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.id AND o.total > 100 LIMIT 1)").as_deref(),
            Some("SELECT * FROM customers c WHERE COALESCE((c.id) IN (SELECT DISTINCT o.customer_id FROM orders o WHERE (o.total > 100)), false)")
        );
        assert_eq!(
            rewritten("SELECT customers.id, NOT EXISTS (SELECT * FROM orders WHERE (customers.id) = orders.customer_id) AS none FROM customers").as_deref(),
            Some("SELECT customers.id, NOT COALESCE(((customers.id)) IN (SELECT DISTINCT orders.customer_id FROM orders), false) AS none FROM customers")
        );
    }

    #[test]
    fn the_outer_side_may_be_an_expression_of_outer_columns() {
        assert_eq!(
            rewritten("SELECT id FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.note = (c.data -> 'k') ->> 0 AND o.total > 1)").as_deref(),
            Some("SELECT id FROM customers c WHERE COALESCE(((c.data -> 'k') ->> 0) IN (SELECT DISTINCT o.note FROM orders o WHERE (o.total > 1)), false)")
        );
        assert_eq!(
            rewritten("SELECT id FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.note = lower(c.name))").as_deref(),
            Some("SELECT id FROM customers c WHERE COALESCE((lower(c.name)) IN (SELECT DISTINCT o.note FROM orders o), false)")
        );
        for sql in [
            "SELECT id FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.total = c.id + random())",
            "SELECT id FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.total = c.id + total)",
            "SELECT id FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.total = c.id + o.id)",
        ] {
            assert_eq!(rewritten(sql), None, "{sql}");
        }
    }

    #[test]
    fn several_equalities_compare_a_row_with_rows() {
        assert_eq!(
            rewritten("SELECT * FROM customers c WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.id AND c.region = o.region AND o.total > 1)").as_deref(),
            Some("SELECT * FROM customers c WHERE NOT COALESCE((c.id, c.region) IN (SELECT DISTINCT o.customer_id, o.region FROM orders o WHERE (o.total > 1)), false)")
        );
    }

    #[test]
    fn other_shapes_stay() {
        for sql in [
            // A correlation other than an equality, an outer value that may be inner, an
            // aggregate, grouping, an OFFSET, a correlation outside WHERE, a tie by the key.
            "SELECT * FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.id AND o.region <> c.region)",
            "SELECT * FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = id)",
            "SELECT * FROM customers c WHERE EXISTS (SELECT count(*) FROM orders o WHERE o.customer_id = c.id)",
            "SELECT * FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.id GROUP BY o.region)",
            "SELECT * FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.id OFFSET 1)",
            "SELECT * FROM customers c WHERE EXISTS (SELECT 1 FROM orders o JOIN items i ON i.note = c.name WHERE o.customer_id = c.id)",
            "SELECT * FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.customer_id > c.id)",
            "SELECT * FROM customers c WHERE EXISTS (SELECT 1 FROM customers d WHERE d.id = c.id)",
        ] {
            assert_eq!(rewritten(sql), None, "{sql}");
        }
    }
}
