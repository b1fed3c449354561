//! Subqueries over sharded tables that every shard can answer alone.
//!
//! A subquery in WHERE is local to each shard when it is tied to a sharded table of the outer
//! query by the shard key, since rows with equal keys of co-located tables live on one shard:
//!
//! - `EXISTS (SELECT ... FROM items i WHERE i.account_id = a.id AND ...)`, and NOT EXISTS;
//! - `a.id IN (SELECT i.account_id FROM items i WHERE ...)` (without LIMIT/OFFSET).
//!
//! A derived table in FROM whose rows are simply each shard's rows (no ORDER BY, LIMIT,
//! DISTINCT or aggregate inside) is local too: the outer query then merges like a query of a
//! sharded table (`SELECT count(*) FROM (SELECT ...) s`, as SQLAlchemy's `count()` sends).
//!
//! A scalar subquery in WHERE, the select list or ORDER BY tied the same way (`(SELECT
//! count(*) FROM items i WHERE i.account_id = a.id)`) reads only its outer row's shard too.
//!
//! A LATERAL subquery in FROM tied the same way reads only its outer row's shard too (see
//! `lateral`).
//!
//! `NOT IN` not tied by the key is refused: one NULL key in the subquery's rows makes it false
//! for every row of every shard, and that NULL lives on one shard only. Subqueries elsewhere
//! (FROM, GROUP BY, HAVING) or not tied by the key stay refused by the planner.

pub mod derived_rows;
mod lateral;
pub mod unqualified;

pub(crate) use lateral::tied_laterals;

use super::params::Params;
use super::plan::{is_column, last_ident, plan_query, relations, Plan, Relations};
use crate::error::{sqlstate, PgError};
use crate::placement::{KeyType, Placement, TableRule};
use sqlparser::ast::{
    BinaryOperator, Expr, JoinOperator, OrderByKind, Query, Select, SelectItem, SetExpr,
    TableFactor,
};
use std::ops::ControlFlow;

/// The refusal of a subquery over sharded tables that no shard answers alone.
pub const UNTIED: &str = "a sharded table inside a subquery is not supported here";
/// The planner's answer to an aggregate reading an ordered derived table's rows in their
/// order, which the executor answers by reading that table first (`router::uncorrelated`, see `sql::row_order`).
pub const FED_IN_ORDER: &str =
    "aggregating the rows of an ordered derived table in their order over several shards is not supported";
/// The planner's answer to windows over one sharded table's rows that the shards cannot
/// compute alone, which the executor answers by reading those rows first (see
/// `sql::window_rows`).
pub const WINDOW_ROWS: &str =
    "window functions over several shards not partitioned by the shard key are answered over the table's rows read first, which is not done here";
/// The refusal of NOT IN over a sharded table not tied by the key.
pub const UNTIED_NOT_IN: &str =
    "NOT IN (subquery over a sharded table) is not supported on several shards";

/// A sharded table of a query's own FROM: the names it goes by, its key type and key column.
pub type TopTable = (Vec<String>, KeyType, String);

/// Sharded tables of `select`'s own FROM (not of its subqueries).
pub(crate) fn top_tables(select: &Select, placement: &Placement) -> Vec<TopTable> {
    let mut top = Vec::new();
    for twj in &select.from {
        for factor in std::iter::once(&twj.relation).chain(twj.joins.iter().map(|j| &j.relation)) {
            top.extend(sharded_table(factor, placement));
        }
    }
    top
}

/// The sharded tables of `select`'s own FROM whose columns no outer join can make NULL.
///
/// A row an outer join extends with NULLs stands for no row of that table, on every shard
/// that has such a row: its NULL key says nothing about where it lives. So rows grouped by
/// such a key are not whole on one shard, as rows grouped by a preserved table's key are.
pub(crate) fn preserved_top_tables(select: &Select, placement: &Placement) -> Vec<TopTable> {
    let mut top = Vec::new();
    for twj in &select.from {
        let factors: Vec<&TableFactor> = std::iter::once(&twj.relation)
            .chain(twj.joins.iter().map(|j| &j.relation))
            .collect();
        let mut nullable = vec![false; factors.len()];
        for (i, join) in twj.joins.iter().enumerate() {
            let right = i + 1;
            let (left_side, right_side) = match join.join_operator {
                JoinOperator::Left(_) | JoinOperator::LeftOuter(_) | JoinOperator::OuterApply => {
                    (false, true)
                }
                JoinOperator::Right(_) | JoinOperator::RightOuter(_) => (true, false),
                JoinOperator::FullOuter(_) => (true, true),
                _ => (false, false),
            };
            if left_side {
                nullable[..right].iter_mut().for_each(|n| *n = true);
            }
            nullable[right] |= right_side;
        }
        for (factor, nullable) in factors.into_iter().zip(nullable) {
            if !nullable {
                top.extend(sharded_table(factor, placement));
            }
        }
    }
    top
}

/// A FROM item that is a sharded table, named as such: the names it goes by (its own and its
/// alias), its key type and key column.
pub(crate) fn sharded_table(factor: &TableFactor, placement: &Placement) -> Option<TopTable> {
    let TableFactor::Table {
        name,
        alias,
        args: None,
        ..
    } = factor
    else {
        return None;
    };
    let Some(TableRule::Sharded {
        key_column,
        key_type,
    }) = placement.rule(&name.to_string())
    else {
        return None;
    };
    let mut names = vec![last_ident(name)];
    names.extend(alias.iter().map(|a| a.name.value.clone()));
    Some((names, *key_type, key_column.clone()))
}

/// An expression evaluated for one row, and whether it is a WHERE condition, where a false
/// and a NULL answer alike leave the row out.
pub(crate) type PerRow<'e> = (&'e Expr, bool);

/// The expressions of `select` (with `q`'s ORDER BY) whose subqueries each shard runs as
/// written when they are tied by the key: WHERE, the select list and ORDER BY. Each of them is
/// evaluated for one row of the outer query, which lives on one shard.
pub(crate) fn per_row_exprs<'q>(
    q: &'q Query,
    select: &'q Select,
) -> impl Iterator<Item = PerRow<'q>> {
    let filter = select.selection.iter().map(|e| (e, true));
    filter.chain(output_exprs(q, select).map(|e| (e, false)))
}

/// The select list's and ORDER BY's expressions: where an aggregate or window call of the
/// query's own level can be (WHERE cannot hold one, so an aggregate there is a subquery's).
pub(crate) fn output_exprs<'q>(q: &'q Query, select: &'q Select) -> impl Iterator<Item = &'q Expr> {
    let items = select.projection.iter().filter_map(|i| match i {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => Some(e),
        _ => None,
    });
    let order = q.order_by.iter().flat_map(|ob| match &ob.kind {
        OrderByKind::Expressions(exprs) => exprs.iter().map(|oe| &oe.expr).collect(),
        OrderByKind::All(_) => Vec::new(),
    });
    items.chain(order)
}

/// How many sharded tables the subqueries of `exprs` read, when each of them is tied to
/// `outer` by the shard key (`usize::MAX` when one is not); a refusal for NOT IN over a
/// sharded table that is not.
pub(crate) fn tied_in<'e>(
    exprs: impl IntoIterator<Item = PerRow<'e>>,
    outer: &[TopTable],
    placement: &Placement,
) -> Result<usize, Box<Plan>> {
    let mut tables = 0;
    for e in exprs {
        for (_, read) in tied_subqueries(e, outer, placement) {
            match read? {
                Some(n) => tables += n,
                None => return Ok(usize::MAX),
            }
        }
    }
    Ok(tables)
}

/// What a subquery reads, as `tied_subqueries` finds: the number of sharded tables when it is
/// tied by the shard key, None when it is not, a refusal for NOT IN that is not.
pub(crate) type Tie = Result<Option<usize>, Box<Plan>>;

/// The outermost subqueries of `e` over sharded tables, in order, each with its `Tie`.
pub(crate) fn tied_subqueries(
    (e, filter): PerRow<'_>,
    outer: &[TopTable],
    placement: &Placement,
) -> Vec<(Expr, Tie)> {
    let found = outermost_subqueries(e);
    let mut filtering = Vec::new();
    if filter {
        conditions_of(e, &mut filtering);
    }
    // A key among keys answers false on a shard where one PostgreSQL answers NULL (a NULL key
    // of the subquery's rows lives on one shard): alike only where both leave the row out.
    let only_filters = |sub: &Expr| {
        found.iter().filter(|f| *f == sub).count()
            == filtering.iter().filter(|f| **f == sub).count()
    };
    let mut tied_ones = Vec::new();
    for e in &found {
        let (subquery, tied) = match e {
            // A scalar subquery tied by the key reads only rows of its outer row's shard,
            // whatever it computes over them (Django's Subquery, SQLAlchemy's
            // scalar_subquery() counting a row's children).
            Expr::Exists { subquery, .. } | Expr::Subquery(subquery) => {
                (subquery, correlated(subquery, outer, placement))
            }
            Expr::InSubquery {
                expr,
                subquery,
                negated,
            } => {
                if relations(subquery.as_ref(), placement).sharded.is_empty() {
                    continue;
                }
                // Tied by the key, the NULLs it could meet are on this row's shard too.
                if correlated(subquery, outer, placement) {
                    (subquery, true)
                } else if *negated {
                    tied_ones.push((e.clone(), Err(Box::new(Plan::Reject(
                        PgError::error(
                            sqlstate::FEATURE_NOT_SUPPORTED,
                            UNTIED_NOT_IN,
                        )
                        .with_hint("One NULL among the subquery's keys would make it false everywhere, and only one shard holds that NULL: use NOT EXISTS with the key equality instead."),
                    )))));
                    continue;
                } else {
                    let keys = key_in_keys(expr, subquery, outer, placement);
                    (subquery, keys && only_filters(e))
                }
            }
            _ => continue,
        };
        let inner = relations(subquery.as_ref(), placement).sharded.len();
        if inner == 0 {
            continue;
        }
        tied_ones.push((e.clone(), Ok(tied.then_some(inner))));
    }
    tied_ones
}

/// The parts of a condition that decide alone whether a row is kept: `e` itself, and what
/// AND and OR join in it (a row both leave out for false leaves out for NULL too).
fn conditions_of<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
    match e {
        Expr::Nested(inner) => conditions_of(inner, out),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And | BinaryOperator::Or,
            right,
        } => {
            conditions_of(left, out);
            conditions_of(right, out);
        }
        other => out.push(other),
    }
}

/// The subquery expressions of `e` (EXISTS, IN, scalar), not those nested inside them.
pub(crate) fn outermost_subqueries(e: &Expr) -> Vec<Expr> {
    let mut found = Vec::new();
    let _ = visit_outside_subqueries(e, |e| {
        if matches!(
            e,
            Expr::Exists { .. } | Expr::InSubquery { .. } | Expr::Subquery(_)
        ) {
            found.push(e.clone());
        }
        ControlFlow::Continue(())
    });
    found
}

/// Calls `f` on each expression of `node` that is outside the subqueries it holds (a subquery
/// expression itself is outside; what is inside its query is not), until `f` breaks.
pub(crate) fn visit_outside_subqueries<V: sqlparser::ast::Visit>(
    node: &V,
    f: impl FnMut(&Expr) -> ControlFlow<()>,
) -> ControlFlow<()> {
    struct Walk<F> {
        /// Queries entered.
        depth: usize,
        f: F,
    }
    impl<F: FnMut(&Expr) -> ControlFlow<()>> sqlparser::ast::Visitor for Walk<F> {
        type Break = ();
        fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.depth += 1;
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.depth -= 1;
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if self.depth == 0 {
                return (self.f)(e);
            }
            ControlFlow::Continue(())
        }
    }
    node.visit(&mut Walk { depth: 0, f })
}

/// As `visit_outside_subqueries`, changing them: `f` sees each expression before what is
/// inside it.
pub(crate) fn visit_outside_subqueries_mut<V: sqlparser::ast::VisitMut>(
    node: &mut V,
    f: impl FnMut(&mut Expr),
) {
    struct Walk<F> {
        depth: usize,
        f: F,
    }
    impl<F: FnMut(&mut Expr)> sqlparser::ast::VisitorMut for Walk<F> {
        type Break = ();
        fn pre_visit_query(&mut self, _: &mut Query) -> ControlFlow<()> {
            self.depth += 1;
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _: &mut Query) -> ControlFlow<()> {
            self.depth -= 1;
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            if self.depth == 0 {
                (self.f)(e);
            }
            ControlFlow::Continue(())
        }
    }
    let _ = node.visit(&mut Walk { depth: 0, f });
}

/// The subquery's plain SELECT and its sharded tables, when they are all in its own FROM.
fn inner_select<'q>(q: &'q Query, placement: &Placement) -> Option<(&'q Select, Vec<TopTable>)> {
    if q.with.is_some() {
        return None;
    }
    let SetExpr::Select(s) = q.body.as_ref() else {
        return None;
    };
    let top = top_tables(s, placement);
    (top.len() == relations(q, placement).sharded.len()).then_some((s, top))
}

/// EXISTS: the subquery's WHERE holds `inner.key = outer.key` as one of its AND-ed conditions,
/// the outer side named by its table or alias.
fn correlated(q: &Query, outer: &[TopTable], placement: &Placement) -> bool {
    inner_select(q, placement).is_some_and(|(s, inner)| key_tied(s, &inner, outer))
}

/// `s`'s WHERE holds `inner.key = outer.key` among its AND-ed conditions, for one of `inner`
/// (sharded tables of `s`'s FROM) and one of `outer`, the outer side named by a qualifier no
/// inner table goes by; and every inner table is the tied one or joined to it on the key.
fn key_tied(s: &Select, inner: &[TopTable], outer: &[TopTable]) -> bool {
    let Some(w) = &s.selection else {
        return false;
    };
    if !same_key_types(inner, outer) {
        return false;
    }
    let mut conjuncts = Vec::new();
    super::plan::collect_and(w, &mut conjuncts);
    // Django writes the outer reference in parentheses: `U0."item_id" = ("shop_item"."id")`.
    let qualified_outer = |e: &Expr| match unnested(e) {
        Expr::CompoundIdentifier(parts) => {
            // A qualifier an inner table goes by names that table, not the outer one. An
            // aliased table goes by its alias only (the last of its names).
            let qualifier = &parts[..parts.len().saturating_sub(1)];
            let inner_name = qualifier.last().is_some_and(|q| {
                inner.iter().any(|(names, _, _)| {
                    names
                        .last()
                        .is_some_and(|n| n.eq_ignore_ascii_case(&q.value))
                })
            });
            !inner_name
                && outer
                    .iter()
                    .any(|(names, _, key)| is_column(unnested(e), names, key))
        }
        _ => false,
    };
    let inner_key = |e: &Expr| {
        inner
            .iter()
            .any(|(names, _, key)| is_column(unnested(e), names, key))
    };
    let tied = conjuncts.iter().any(|c| match c {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } => {
            (inner_key(left) && qualified_outer(right))
                || (inner_key(right) && qualified_outer(left))
        }
        _ => false,
    });
    // Every sharded table of the subquery is the tied one, or joined to it on the key.
    tied && (inner.len() == 1 || super::plan::colocation_problem(s, inner).is_none())
}

fn unnested(mut e: &Expr) -> &Expr {
    while let Expr::Nested(inner) = e {
        e = inner;
    }
    e
}

/// IN: `outer.key IN (SELECT inner.key FROM ...)` with no LIMIT or OFFSET.
fn key_in_keys(expr: &Expr, q: &Query, outer: &[TopTable], placement: &Placement) -> bool {
    if q.limit_clause.is_some() || q.fetch.is_some() {
        return false;
    }
    let Some((s, inner)) = inner_select(q, placement) else {
        return false;
    };
    if !same_key_types(&inner, outer)
        || !outer
            .iter()
            .any(|(names, _, key)| is_column(expr, names, key))
    {
        return false;
    }
    let [SelectItem::UnnamedExpr(item) | SelectItem::ExprWithAlias { expr: item, .. }] =
        s.projection.as_slice()
    else {
        return false;
    };
    inner
        .iter()
        .any(|(names, _, key)| is_column(item, names, key))
        && (inner.len() == 1 || super::plan::colocation_problem(s, &inner).is_none())
}

fn same_key_types(inner: &[TopTable], outer: &[TopTable]) -> bool {
    outer
        .first()
        .is_some_and(|(_, ty, _)| inner.iter().all(|t| t.1 == *ty))
}

/// The shards of `SELECT ... FROM (subquery) alias` when the subquery's rows are each shard's
/// own rows and it holds every sharded table of the statement; None otherwise.
pub(crate) fn derived_shards(
    select: &Select,
    rels: &Relations,
    placement: &Placement,
    params: &Params,
) -> Option<Vec<usize>> {
    let subquery = sole_derived(select)?;
    if relations(subquery, placement).sharded.len() != rels.sharded.len() {
        return None;
    }
    match plan_query(subquery, placement, params) {
        Plan::Scatter { shards, merge, .. } if merge == Default::default() => Some(shards),
        // DISTINCT or GROUP BY over a shard key: equal keys share a shard, so each shard's
        // rows or groups are already the whole answer's (Django's `.distinct().count()`).
        Plan::Scatter { shards, merge, .. }
            if merge.order.is_empty()
                && merge.limit.is_none()
                && merge.offset == 0
                && grouped_by_key(subquery, placement) =>
        {
            Some(shards)
        }
        Plan::Shard { shard, .. } => Some(vec![shard]),
        _ => None,
    }
}

/// The query of a FROM list that is one derived table and nothing else: `FROM (SELECT ...) s`.
pub(crate) fn sole_derived(select: &Select) -> Option<&Query> {
    let [from] = select.from.as_slice() else {
        return None;
    };
    match &from.relation {
        TableFactor::Derived {
            lateral: false,
            subquery,
            ..
        } if from.joins.is_empty() => Some(subquery),
        _ => None,
    }
}

/// `SELECT DISTINCT` whose columns include a shard key of its FROM, or GROUP BY one (without
/// DISTINCT: rows of groups on two shards may be alike once the key is left out, and DISTINCT
/// would have to remove one of them). The key must be of a table no outer join extends with
/// NULLs (see `preserved_top_tables`).
pub(crate) fn grouped_by_key(q: &Query, placement: &Placement) -> bool {
    let SetExpr::Select(s) = q.body.as_ref() else {
        return false;
    };
    let top = preserved_top_tables(s, placement);
    let is_key = |e: &Expr| top.iter().any(|(names, _, key)| is_column(e, names, key));
    let distinct_key = matches!(s.distinct, Some(sqlparser::ast::Distinct::Distinct))
        && s.projection.iter().any(|item| match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => is_key(e),
            _ => false,
        });
    let grouped_key = matches!(&s.group_by,
        sqlparser::ast::GroupByExpr::Expressions(exprs, mods)
            if mods.is_empty() && exprs.iter().any(is_key));
    if matches!(s.distinct, Some(sqlparser::ast::Distinct::Distinct)) {
        return distinct_key;
    }
    grouped_key
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names of the tables of `sql`'s FROM that keep their rows' keys.
    fn preserved(sql: &str) -> Vec<String> {
        let p = crate::router::plan::tests::placement();
        preserved_top_tables(&crate::router::plan::tests::select(sql), &p)
            .into_iter()
            .map(|(names, _, _)| names.last().cloned().unwrap_or_default())
            .collect()
    }

    #[test]
    fn an_outer_join_leaves_out_the_tables_it_extends_with_nulls() {
        let on = "on l.account_id = a.id";
        assert_eq!(
            preserved(&format!("select 1 from accounts a join ledger l {on}")),
            ["a", "l"]
        );
        assert_eq!(
            preserved(&format!("select 1 from accounts a left join ledger l {on}")),
            ["a"]
        );
        assert_eq!(
            preserved(&format!(
                "select 1 from accounts a right join ledger l {on}"
            )),
            ["l"]
        );
        assert!(preserved(&format!("select 1 from accounts a full join ledger l {on}")).is_empty());
        // A RIGHT JOIN later in the chain extends every table before it.
        assert_eq!(
            preserved(&format!(
                "select 1 from accounts a join ledger l {on} right join countries c on c.code = a.code"
            )),
            Vec::<String>::new()
        );
        // Each item of a FROM list is joined on its own.
        assert_eq!(
            preserved(&format!(
                "select 1 from users u, accounts a left join ledger l {on}"
            )),
            ["u", "a"]
        );
    }

    #[test]
    fn a_key_an_outer_join_can_make_null_does_not_hold_groups_whole() {
        let grouped = |sql: &str| {
            grouped_by_key(
                &crate::router::plan::tests::query(sql),
                &crate::router::plan::tests::placement(),
            )
        };
        let from = "from accounts a left join ledger l on l.account_id = a.id";
        assert!(grouped(&format!(
            "select a.id, count(*) {from} group by a.id"
        )));
        assert!(!grouped(&format!(
            "select l.account_id, count(*) {from} group by l.account_id"
        )));
        assert!(!grouped(&format!("select distinct l.account_id {from}")));
        assert!(grouped(&format!(
            "select distinct a.id, l.account_id {from}"
        )));
    }
}
