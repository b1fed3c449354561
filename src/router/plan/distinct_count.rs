//! Counting the distinct rows of columns over several shards, as Django counts a
//! `values("x", ...).distinct()` query: `SELECT count(*) FROM (SELECT DISTINCT x AS col1, ...
//! FROM t WHERE ...) subquery`.
//!
//! The same row can be on several shards, so each shard's distinct rows are not the answer's.
//! One column is counted as `SELECT count(DISTINCT x) FROM t WHERE ...`, whose merge collects
//! the values distinct across shards, except that a NULL counts too: SELECT DISTINCT keeps
//! one NULL row where count(DISTINCT x) skips it. Several columns are grouped by on each shard
//! (`GROUP BY x, y`, which keeps NULLs as SELECT DISTINCT does) and the merge counts the
//! groups distinct across shards.
//!
//! Django counts a grouped query the same way (`values("x").annotate(n=Count("id")).count()`,
//! a paginator over it): `SELECT count(*) FROM (SELECT x AS col1, count(id) AS n FROM t GROUP
//! BY 1) subquery`. Its count is the number of distinct groups, counted as above by their GROUP
//! BY expressions (positions resolved to the select items they name). The inner select items
//! go to each shard as hidden columns the merge ignores, written so that they are analysed but
//! never evaluated, as PostgreSQL treats the outputs of a subquery nobody reads: a column
//! neither grouped nor dependent is an error, a division by zero in an unread sum is not.
//!
//! With HAVING (`...annotate(n=Count("id")).filter(n__gt=1).count()`), the groups are merged
//! as for the grouped query itself, filtered by HAVING, and counted. An inner query with
//! grouping sets, its own ordering or limits, or whose rows the proxy would merge otherwise
//! than by putting them together, stays refused.

use super::*;
use crate::router::aggregate::AggColumn;
use sqlparser::ast::{
    Distinct, DuplicateTreatment, FunctionArg, FunctionArgExpr, FunctionArgumentList,
    FunctionArguments,
};

/// The plan of such a count; None when the statement is not one.
pub(super) fn plan_distinct_count(
    q: &Query,
    placement: &Placement,
    params: &Params,
) -> Option<Plan> {
    let (outer, inner) = shape(q)?;
    let (inner_query, inner_select) = inner;
    if inner_select.distinct.is_none() {
        // Items carried as one column each: a wildcard's columns are not known here.
        let named = inner_select.projection.iter().all(|i| {
            matches!(
                i,
                SelectItem::UnnamedExpr(_) | SelectItem::ExprWithAlias { .. }
            )
        });
        if !named {
            return None;
        }
        let groups = group_exprs(inner_select, placement)?;
        let shape = (outer, inner_query, inner_select);
        if inner_select.having.is_some() {
            return Some(count_kept_groups(q, shape, &groups, placement, params));
        }
        return Some(count_groups(q, shape, &groups, placement, params));
    }
    let values = inner_select
        .projection
        .iter()
        .map(|item| match item {
            SelectItem::UnnamedExpr(value) | SelectItem::ExprWithAlias { expr: value, .. } => {
                (!has_aggregate_or_window(value, placement)).then_some(value)
            }
            _ => None,
        })
        .collect::<Option<Vec<&Expr>>>()?;
    let value = match values.as_slice() {
        // SELECT DISTINCT of no columns: one row or none, which no shard's count tells.
        [] => return None,
        [one] => *one,
        _ => {
            let shape = (outer, inner_query, inner_select);
            return Some(count_groups(q, shape, &values, placement, params));
        }
    };
    // count(DISTINCT value) over the inner query's FROM and WHERE, named as the outer count.
    let mut counted = inner_query.clone();
    let SetExpr::Select(select) = counted.body.as_mut() else {
        return None;
    };
    select.distinct = None;
    let mut count = outer.clone();
    if let SelectItem::UnnamedExpr(Expr::Function(f))
    | SelectItem::ExprWithAlias {
        expr: Expr::Function(f),
        ..
    } = &mut count
    {
        f.args = FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: Some(DuplicateTreatment::Distinct),
            args: vec![FunctionArg::Unnamed(FunctionArgExpr::Expr(value.clone()))],
            clauses: Vec::new(),
        });
    }
    select.projection = vec![count];
    Some(match plan_query(&counted, placement, params) {
        // One shard holds every row: it answers the statement as written.
        Plan::Shard { shard, write } => Plan::Shard { shard, write },
        Plan::Scatter {
            shards,
            sql,
            mut merge,
        } => {
            let spec = merge.aggregate.as_mut()?;
            for c in &mut spec.columns {
                if let AggColumn::DistinctValue { with_null } = c {
                    *with_null = true;
                }
            }
            Plan::Scatter { shards, sql, merge }
        }
        other => other,
    })
}

/// `SELECT count(*) FROM (SELECT DISTINCT x FROM ...) alias`, or of `(SELECT ... GROUP BY
/// ...)`, and nothing more: the outer count item, and the inner query with its SELECT.
fn shape(q: &Query) -> Option<(&SelectItem, (&Query, &Select))> {
    if !bare(q) {
        return None;
    }
    let SetExpr::Select(outer) = q.body.as_ref() else {
        return None;
    };
    let subquery = crate::router::subquery::sole_derived(outer)?;
    let [item] = outer.projection.as_slice() else {
        return None;
    };
    let f = super::item_call(item)?;
    let count_star = f.name.to_string().eq_ignore_ascii_case("count")
        && matches!(&f.args, FunctionArguments::List(l)
            if l.duplicate_treatment.is_none() && l.clauses.is_empty()
                && matches!(l.args.as_slice(), [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)]))
        && f.filter.is_none()
        && f.over.is_none()
        && f.within_group.is_empty();
    if !count_star
        || outer.selection.is_some()
        || outer.distinct.is_some()
        || !ungrouped(outer)
        || !bare(subquery)
    {
        return None;
    }
    let SetExpr::Select(inner) = subquery.body.as_ref() else {
        return None;
    };
    let plain = matches!(inner.distinct, Some(Distinct::Distinct)) && ungrouped(inner);
    let grouped = inner.distinct.is_none() && !ungrouped(inner);
    (plain || grouped).then_some((item, (subquery, inner.as_ref())))
}

/// The expressions a grouped inner query groups by, a position (`GROUP BY 1`, as Django
/// writes it) read as the select item it names; None for grouping sets, GROUP BY ALL, an
/// aggregate among them, or a name an alias takes that may be a column too.
fn group_exprs<'a>(inner: &'a Select, placement: &Placement) -> Option<Vec<&'a Expr>> {
    let sqlparser::ast::GroupByExpr::Expressions(exprs, modifiers) = &inner.group_by else {
        return None;
    };
    // HAVING without GROUP BY makes one group or none, which is not a count of groups.
    if !modifiers.is_empty() || exprs.is_empty() {
        return None;
    }
    exprs
        .iter()
        .map(|e| {
            let e = match e {
                Expr::Value(v) => {
                    let sqlparser::ast::Value::Number(n, _) = &v.value else {
                        return None;
                    };
                    let at: usize = n.parse().ok()?;
                    match inner.projection.get(at.checked_sub(1)?)? {
                        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
                        _ => return None,
                    }
                }
                Expr::GroupingSets(_) | Expr::Cube(_) | Expr::Rollup(_) | Expr::Tuple(_) => {
                    return None
                }
                // An alias and maybe a column: settled first (`aggregate::group_names`).
                other if crate::router::aggregate::group_names::ambiguous(inner, other) => {
                    return None
                }
                other => other,
            };
            (!has_aggregate_or_window(e, placement)).then_some(e)
        })
        .collect()
}

/// Several columns, or a grouped inner query's GROUP BY: each shard groups its rows by them and
/// counts per group; the merge counts the groups distinct across the shards the inner rows are
/// on.
fn count_groups(
    q: &Query,
    (outer, inner, inner_select): (&SelectItem, &Query, &Select),
    values: &[&Expr],
    placement: &Placement,
    params: &Params,
) -> Plan {
    let grouped = inner_select.distinct.is_none();
    let mut select = inner_select.clone();
    select.distinct = None;
    // The rows being grouped, to learn which shards hold them: the group values, ungrouped.
    select.group_by = sqlparser::ast::GroupByExpr::Expressions(Vec::new(), Vec::new());
    select.projection = values
        .iter()
        .map(|v| SelectItem::UnnamedExpr((*v).clone()))
        .collect();
    let mut rows = inner.clone();
    *rows.body = SetExpr::Select(Box::new(select.clone()));
    let shards = match plan_query(&rows, placement, params) {
        // One shard holds every row: it answers the statement as written.
        Plan::Shard { shard, .. } => {
            return Plan::Shard {
                shard,
                write: false,
            }
        }
        Plan::Scatter { shards, merge, .. } if merge == MergeSpec::default() => shards,
        Plan::Reject(e) => return Plan::Reject(e),
        _ => {
            return refuse(
                format!(
                "{q} over several shards is not supported: its inner rows are merged across shards"
            ),
                "Count the distinct rows of one shard at a time, or of one column.",
            )
        }
    };
    // A grouped inner query's own items go too, hidden and carried, as PostgreSQL treats the
    // outputs a count does not read: analysed (a column neither grouped nor aggregated is an
    // error) but never evaluated (a division by zero in one is not).
    let carried: Vec<SelectItem> = if grouped {
        inner_select
            .projection
            .iter()
            .filter_map(|i| match i {
                SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => Some(
                    SelectItem::UnnamedExpr(crate::router::computed::never_evaluated(e)),
                ),
                _ => None,
            })
            .collect()
    } else {
        Vec::new()
    };
    select.projection = counted_values(outer, values)
        .chain(carried.iter().cloned())
        .collect();
    select.group_by = sqlparser::ast::GroupByExpr::Expressions(
        values.iter().map(|v| (*v).clone()).collect(),
        Vec::new(),
    );
    *rows.body = SetExpr::Select(Box::new(select));
    let mut columns = vec![AggColumn::Count];
    columns.extend(values.iter().map(|_| AggColumn::Group));
    columns.extend(carried.iter().map(|_| AggColumn::Carried));
    Plan::Scatter {
        shards,
        sql: rows.to_string(),
        merge: MergeSpec {
            hidden: values.len() + carried.len(),
            aggregate: Some(crate::router::aggregate::AggSpec {
                columns,
                count_groups: true,
                ..Default::default()
            }),
            ..MergeSpec::default()
        },
    }
}

/// A grouped inner query with HAVING: each shard returns its partial groups with the inner
/// items and what HAVING compares, as for the grouped query itself; the merge combines them,
/// filters them by HAVING, and counts those it keeps. The inner items are evaluated here (the
/// merge needs the aggregates HAVING reads, and plans them all alike), so one that fails on a
/// row fails the count, where PostgreSQL, which leaves unread outputs alone, might answer.
fn count_kept_groups(
    q: &Query,
    (outer, inner, inner_select): (&SelectItem, &Query, &Select),
    values: &[&Expr],
    placement: &Placement,
    params: &Params,
) -> Plan {
    let mut select = inner_select.clone();
    select.projection = counted_values(outer, values)
        .chain(inner_select.projection.iter().cloned())
        .collect();
    // Positions are resolved: the count in front would move them.
    select.group_by = sqlparser::ast::GroupByExpr::Expressions(
        values.iter().map(|v| (*v).clone()).collect(),
        Vec::new(),
    );
    let mut rows = inner.clone();
    *rows.body = SetExpr::Select(Box::new(select));
    let refused = || {
        refuse(
            format!("{q} over several shards is not supported: its groups cannot be merged"),
            "Count the groups of one shard at a time, or leave HAVING out.",
        )
    };
    match plan_query(&rows, placement, params) {
        // One shard holds every row: it answers the statement as written.
        Plan::Shard { shard, .. } => Plan::Shard {
            shard,
            write: false,
        },
        Plan::Scatter {
            shards,
            sql,
            mut merge,
        } => {
            // A bound HAVING value left out of the shards' text (`picks`) is the merge's to
            // apply, as in the grouped query itself.
            let plain = merge.order.is_empty()
                && merge.limit.is_none()
                && merge.offset == 0
                && merge.distinct_on == 0;
            let Some(spec) = merge
                .aggregate
                .as_mut()
                .filter(|s| plain && !s.single_group && !s.count_groups && s.having.is_some())
            else {
                return refused();
            };
            spec.count_groups = true;
            merge.hidden = spec.columns.len() - 1;
            Plan::Scatter { shards, sql, merge }
        }
        Plan::Reject(e) => Plan::Reject(e),
        _ => refused(),
    }
}

/// The count the client asked for, then the values counted by, named for the merge.
fn counted_values<'a>(
    outer: &'a SelectItem,
    values: &'a [&Expr],
) -> impl Iterator<Item = SelectItem> + 'a {
    std::iter::once(outer.clone()).chain(values.iter().enumerate().map(|(i, v)| {
        SelectItem::ExprWithAlias {
            expr: (*v).clone(),
            alias: Ident::new(format!("__shardgate_distinct_{i}")),
        }
    }))
}
