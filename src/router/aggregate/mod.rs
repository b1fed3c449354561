//! Planning aggregates over several shards: count, sum, min, max, avg, bool_and, bool_or and
//! every, with or without GROUP BY, HAVING, DISTINCT and ORDER BY on aggregates.
//!
//! Each shard aggregates its own rows; the proxy combines the partial results per group. avg(x)
//! becomes sum(x) plus a hidden count(x) on the shards and is divided in the proxy exactly as
//! PostgreSQL's numeric division would. count(DISTINCT x) adds x to the shards' GROUP BY and
//! returns it as a hidden column; the proxy counts the distinct values per group (every other
//! aggregate still combines, as its partials over the finer groups add up to the same result).
//! HAVING, ORDER BY, OFFSET and LIMIT are applied after the combination (a group can span
//! shards, so none of them can be pushed down). Group columns and sort values the client did
//! not select travel as hidden trailing columns. Variance and standard deviation are items
//! computed over sums (`router::variance`); ordered, DISTINCT, JSON, statistical and
//! ordered-set aggregates items computed over the gathered values (`router::gathered`). Any other aggregate or window call (PostgreSQL's
//! or one the shards define, see `plan::may_combine_rows`) is refused, never passed through.

mod kinds;
mod spec;

pub(super) use kinds::aggregate_kind;
use kinds::{
    combined_kind, counts_distinct, distinct_argument, has_count_distinct, is_constant, is_literal,
    not_combinable, zero_default,
};
pub mod group_names;
mod grouping_sets;
mod hidden;
mod qualified;
pub use spec::{AggColumn, AggSpec, Concatenation};

use super::plan::{MergeSpec, Plan, SortColumn, SortKey};
use crate::error::{sqlstate, PgError};
use sqlparser::ast::{
    Expr, GroupByExpr, Ident, OrderByKind, Query, Select, SelectItem, SetExpr, Value,
};

/// Whether `e` is a column qualified by a reference table of the FROM list (by name or alias).
fn of_reference_table(e: &Expr, select: &Select, placement: &crate::placement::Placement) -> bool {
    let Expr::CompoundIdentifier(parts) = e else {
        return false;
    };
    let Some(qualifier) = parts
        .len()
        .checked_sub(2)
        .map(|i| parts[i].value.to_lowercase())
    else {
        return false;
    };
    let mut found = false;
    for twj in &select.from {
        let factors = std::iter::once(&twj.relation).chain(twj.joins.iter().map(|j| &j.relation));
        for f in factors {
            if let sqlparser::ast::TableFactor::Table { name, alias, .. } = f {
                let named = alias.as_ref().map_or_else(
                    || super::plan::last_ident(name).to_lowercase(),
                    |a| a.name.value.to_lowercase(),
                );
                if named == qualifier {
                    found = matches!(
                        placement.rule(&name.to_string()),
                        Some(crate::placement::TableRule::Reference)
                    );
                }
            }
        }
    }
    found
}

/// Whether `select` names a column `id` (bare or through a table) in its select list, WHERE or
/// HAVING: then, outside a subquery, the FROM list has such a column. (One named only inside a
/// subquery is taken for one too: the item it would group by then reads a column neither grouped
/// nor aggregated, and is refused.)
fn names_column(select: &Select, id: &Ident) -> bool {
    let wanted = super::plan::column_name(id);
    let named = |e: &Expr| -> bool {
        crate::sql::first_expression(e, |x: &Expr| {
            let i = match x {
                Expr::Identifier(i) => i,
                Expr::CompoundIdentifier(parts) => parts.last()?,
                _ => return None,
            };
            (super::plan::column_name(i) == wanted).then_some(())
        })
        .is_some()
    };
    let items = select.projection.iter().filter_map(|i| match i {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => Some(e),
        _ => None,
    });
    items
        .chain(select.selection.iter())
        .chain(select.having.iter())
        .any(named)
}

/// Whether the FROM list reads tables alone (no derived table, function or VALUES), whose rows
/// come in no order anyone relies on.
fn reads_tables_only(select: &Select) -> bool {
    select.from.iter().all(|twj| {
        std::iter::once(&twj.relation)
            .chain(twj.joins.iter().map(|j| &j.relation))
            .all(|f| matches!(f, sqlparser::ast::TableFactor::Table { args: None, .. }))
    })
}

fn unsupported(message: String) -> PgError {
    PgError::error(sqlstate::FEATURE_NOT_SUPPORTED, message).with_hint(HINT)
}

fn refuse(message: impl Into<String>, hint: &str) -> Plan {
    Plan::Reject(PgError::error(sqlstate::FEATURE_NOT_SUPPORTED, message).with_hint(hint))
}

const HINT: &str = "Supported across shards: count, sum, min, max, avg, bool_and, bool_or, every, string_agg, array_agg, jsonb_agg, json_agg and the object aggregates (ORDER BY or DISTINCT inside too), the ordered-set and hypothetical-set aggregates, corr, covar and regr_*, and variance and stddev of integers and numerics, over plain GROUP BY expressions, HAVING over them, ORDER BY on output columns. Or add a shard-key condition so the query runs on one shard.";

/// Plans a scattered aggregate (or DISTINCT) query.
pub fn plan_aggregate(
    q: &Query,
    select: &Select,
    shards: Vec<usize>,
    limit: Option<u64>,
    offset: u64,
    params: &super::params::Params,
    placement: &crate::placement::Placement,
) -> Plan {
    // Its derived table is read first and the statement run on one shard over its rows, in
    // their order (`router::uncorrelated`), whatever else the statement holds.
    if crate::sql::row_order::fed_in_order(q).is_some() {
        return refuse(
            super::subquery::FED_IN_ORDER,
            "Put the order inside the call (json_agg(t ORDER BY id)), or add a shard-key condition so the query runs on one shard.",
        );
    }
    // Matched by their text below: `t.status` and `status` must read alike.
    if let Some(bare) = qualified::bare(q) {
        if let SetExpr::Select(s) = bare.body.as_ref() {
            return plan_aggregate(&bare, s, shards, limit, offset, params, placement);
        }
    }
    let (group_exprs, grouping) = match &select.group_by {
        GroupByExpr::Expressions(e, mods) if mods.is_empty() => match grouping_sets::flatten(e) {
            Ok(flat) => flat,
            Err(m) => return refuse(m, HINT),
        },
        _ => {
            return refuse(
                "GROUP BY ALL and WITH ROLLUP over several shards are not supported",
                HINT,
            )
        }
    };
    let distinct = match &select.distinct {
        None => false,
        Some(sqlparser::ast::Distinct::Distinct) => true,
        Some(_) => return refuse("DISTINCT ON over several shards is not supported", HINT),
    };
    if grouping.is_some() && distinct {
        return refuse(
            "SELECT DISTINCT with grouping sets over several shards is not supported",
            HINT,
        );
    }
    let mut items: Vec<(Expr, Option<Ident>)> = match select
        .projection
        .iter()
        .map(|i| match i {
            SelectItem::UnnamedExpr(e) => Ok((e.clone(), None)),
            SelectItem::ExprWithAlias { expr, alias } => Ok((expr.clone(), Some(alias.clone()))),
            _ => Err(()),
        })
        .collect::<Result<Vec<_>, ()>>()
    {
        Ok(v) => v,
        Err(()) => {
            return refuse(
                "SELECT * with GROUP BY or aggregates over several shards is not supported",
                HINT,
            )
        }
    };
    // A bare name that may be an alias or a column: the executor settles it from the catalog.
    if group_exprs
        .iter()
        .any(|g| group_names::ambiguous(select, g))
    {
        return refuse(group_names::UNRESOLVED, group_names::HINT);
    }
    // Group expressions named by position mean that select item.
    let resolve_group = |g: &Expr| -> String {
        if let Expr::Value(v) = g {
            if let Value::Number(n, _) = &v.value {
                if let Some(item) = n
                    .parse::<usize>()
                    .ok()
                    .and_then(|p| items.get(p.wrapping_sub(1)))
                {
                    return item.0.to_string();
                }
            }
        }
        // A bare name here is the FROM list's column, as PostgreSQL resolves GROUP BY (an
        // alias naming no known column was refused above).
        g.to_string()
    };
    let group_texts: Vec<String> = group_exprs.iter().map(resolve_group).collect();
    // The merge makes one row per group: DISTINCT leaves them as they are only when every
    // group expression is among them.
    if distinct && !group_exprs.is_empty() {
        let selected: Vec<String> = items.iter().map(|(e, _)| e.to_string()).collect();
        if let Some(g) = group_texts.iter().find(|g| !selected.contains(g)) {
            return refuse(
                format!("SELECT DISTINCT over groups that are not selected (GROUP BY {g}) over several shards is not supported"),
                "Select every GROUP BY expression, or drop DISTINCT and group by what is selected.",
            );
        }
    }

    // With count(DISTINCT) and no GROUP BY the merge makes the one answer row itself (see
    // below), from no shard's row: a literal beside it is evaluated after the merge, as an
    // item computed over no parts.
    let row_made = group_exprs.is_empty() && items.iter().any(|(e, _)| counts_distinct(e));
    // Items computed over merged aggregates: their parts follow the client's items.
    let client_visible = items.len();
    let mut computed = Vec::new();
    let mut parts = Vec::new();
    // Parts whose values an evaluation puts in its own order (see `router::gathered`).
    let mut reordered = Vec::new();
    for (i, (expr, alias)) in items.iter().enumerate() {
        let plain = group_texts.contains(&expr.to_string())
            || of_reference_table(expr, select, placement)
            || is_constant(expr);
        let computes = !grouping_sets::is_grouping_call(expr)
            && (matches!(combined_kind(expr), Ok(None)) || super::gathered::answers(expr))
            && !distinct
            && (super::plan::has_own_aggregate_or_window(expr, select, placement)
                || !plain
                || (row_made && is_literal(expr)));
        if computes {
            let first = client_visible + parts.len();
            // An aggregate the merge cannot combine is named as such, not taken for a
            // column missing from GROUP BY.
            let combined = |e: &Expr| match (aggregate_kind(e), e) {
                (Ok(None), Expr::Function(f)) if super::plan::may_combine_rows(f, placement) => {
                    Err(not_combinable(e))
                }
                (kind, _) => kind.map(|k| k.is_some()),
            };
            match super::computed::split(
                expr,
                alias.as_ref(),
                &group_texts,
                first,
                (q, params),
                &combined,
            ) {
                Ok(c) if c.parts.is_empty() && !(row_made && is_literal(expr)) => {
                    return refuse(
                        format!("column {expr} must appear in the GROUP BY clause or be used in an aggregate function"),
                        HINT,
                    )
                }
                Ok(c) => {
                    parts.extend(c.parts.iter().cloned());
                    reordered.extend(c.reordered.iter().map(|p| first + p));
                    computed.push((i, first, c));
                }
                Err(m) => return refuse(m, HINT),
            }
        }
    }
    for (k, part) in parts.into_iter().enumerate() {
        items.push((part, Some(Ident::new(format!("__shardgate_part_{k}")))));
    }

    let mut spec = AggSpec::default();
    let mut shard_items: Vec<SelectItem> = Vec::new();
    let mut hidden: Vec<SelectItem> = Vec::new();
    let mut avg_pending: Vec<(usize, Expr)> = Vec::new();
    let mut distinct_pending: Vec<(usize, Expr)> = Vec::new();
    // With count(DISTINCT) and no GROUP BY, the shards group by the distinct values and
    // return no rows when none match; the merge then makes the one answer row itself, which
    // holds no constant and no coalesced 0.
    if grouping.is_some() && has_count_distinct(&items) {
        return refuse(
            "count(DISTINCT ...) with grouping sets over several shards is not supported",
            HINT,
        );
    }
    let answer_row_made = group_exprs.is_empty() && has_count_distinct(&items);
    for (i, (expr, alias)) in items.iter().enumerate() {
        if let Some((_, first, c)) = computed.iter().find(|(at, _, _)| *at == i) {
            spec.columns.push(AggColumn::Computed {
                template: c.template.clone(),
                parts: (*first..first + c.parts.len()).collect(),
                params: c.params.clone(),
            });
            shard_items.push(SelectItem::ExprWithAlias {
                expr: c.stand_in.clone(),
                alias: c.name.clone(),
            });
            continue;
        }
        if answer_row_made && zero_default(expr).is_some() {
            return refuse(
                format!("{expr} beside count(DISTINCT ...) without GROUP BY over several shards is not supported"),
                HINT,
            );
        }
        let kind = match combined_kind(expr) {
            Ok(k) => k,
            Err(m) => return refuse(m, HINT),
        };
        let column = match kind {
            Some(_) if distinct => return refuse("SELECT DISTINCT with aggregates over several shards is not supported", HINT),
            Some(k) => match spec::partial(k) {
                Some(column) => column,
                // Their companions follow the client's items (see `hidden`).
                None if k == "count_distinct" => {
                    distinct_pending.extend(distinct_argument(expr).map(|a| (i, a)));
                    AggColumn::Count
                }
                None if matches!(k, "string_agg" | "array_agg" | "jsonb_agg") => {
                    // Rows fed from an ordered derived table are joined in its order by one
                    // server, as its documentation says usually works; the shards' partials
                    // would not keep it.
                    if !reads_tables_only(select) && !reordered.contains(&i) {
                        // A part is named by the client's item it serves.
                        let item = computed
                            .iter()
                            .find(|(_, first, c)| (*first..first + c.parts.len()).contains(&i))
                            .map_or(expr, |(at, _, _)| &items[*at].0);
                        return refuse(
                            format!("{item} over a derived table or function on several shards is not supported"),
                            "Put the order inside the call (string_agg(x, ',' ORDER BY y)), or add a shard-key condition so the query runs on one shard.",
                        );
                    }
                    AggColumn::Joined(match k {
                        "array_agg" => Concatenation::Arrays,
                        "jsonb_agg" => Concatenation::JsonbArrays,
                        _ => match kinds::separator(expr, params) {
                            Ok(separator) => Concatenation::Strings { separator },
                            Err(m) => return refuse(m, HINT),
                        },
                    })
                }
                None => {
                    avg_pending.push((i, expr.clone()));
                    AggColumn::Sum
                }
            },
            // Constant within each group of each set.
            None if grouping_sets::is_grouping_call(expr) => AggColumn::Group,
            // Before the group test: under DISTINCT every item groups, and an aggregate the
            // proxy cannot combine would be grouped by its partial values.
            None if super::plan::has_own_aggregate_or_window(
                expr, select, placement,
            ) =>
            {
                return refuse(not_combinable(expr), HINT)
            }
            None if distinct || group_texts.contains(&expr.to_string()) => AggColumn::Group,
            None if of_reference_table(expr, select, placement) => AggColumn::Carried,
            None if is_constant(expr) && !answer_row_made => AggColumn::Carried,
            None if is_constant(expr) => {
                return refuse(
                    format!("{expr} beside count(DISTINCT ...) without GROUP BY over several shards is not supported"),
                    HINT,
                )
            }
            None => {
                return refuse(
                    format!("column {expr} must appear in the GROUP BY clause or be used in an aggregate function"),
                    HINT,
                )
            }
        };
        let shard_expr = if kind == Some("avg") {
            rename_function(expr, "sum")
        } else {
            expr.clone()
        };
        // Keep the client's column name: avg(x) stays "avg" even though the shard runs sum(x).
        let name = alias
            .clone()
            .or_else(|| (kind == Some("avg")).then(|| Ident::new("avg")));
        shard_items.push(match name {
            Some(a) => SelectItem::ExprWithAlias {
                expr: shard_expr,
                alias: a,
            },
            None => SelectItem::UnnamedExpr(shard_expr),
        });
        spec.columns.push(column);
    }
    let visible = items.len();
    // Group expressions the client did not select still identify groups.
    for (g, text) in group_exprs.iter().zip(&group_texts) {
        if !items.iter().any(|(e, _)| &e.to_string() == text) {
            hidden.push(SelectItem::ExprWithAlias {
                expr: g.clone(),
                alias: Ident::new(format!("__shardgate_group_{}", hidden.len())),
            });
            spec.columns.push(AggColumn::Group);
        }
    }
    let has_sets = grouping.is_some();
    if let Some(g) = grouping {
        hidden.push(SelectItem::ExprWithAlias {
            expr: g,
            alias: Ident::new("__shardgate_grouping"),
        });
        spec.columns.push(AggColumn::Group);
    }
    for (i, expr) in avg_pending {
        hidden::avg_companions(&expr, i, i, visible, (&mut spec, &mut hidden));
    }
    let mut extra_groups = Vec::new();
    for (i, arg) in distinct_pending {
        hidden::distinct_values(arg.clone(), i, i, visible, (&mut spec, &mut hidden));
        extra_groups.push(arg);
    }
    // Where a hidden distinct count may join: under GROUP BY, or where the shards group by
    // the values a selected one counts already (without either, the merge would make an
    // answer row the items were not planned for). Never under grouping sets.
    let distinct_may_hide = (!group_exprs.is_empty() || !extra_groups.is_empty()) && !has_sets;
    // SELECT DISTINCT groups by every column: no rows make no groups, not one empty group.
    spec.single_group = group_exprs.is_empty() && !distinct;
    // Finds (or adds as hidden) the column computing `e`.
    // `sorting`: an ORDER BY key, where a bare name may be an output column's alias; HAVING
    // reads input columns only.
    let mut column_of = |e: &Expr,
                         sorting: bool,
                         spec: &mut AggSpec,
                         hidden: &mut Vec<SelectItem>|
     -> Result<usize, PgError> {
        if let Expr::Value(v) = e {
            if let Value::Number(n, _) = &v.value {
                return n
                    .parse::<usize>()
                    .ok()
                    .filter(|p| (1..=client_visible).contains(p))
                    .map(|p| p - 1)
                    .ok_or_else(|| {
                        PgError::error("42P10", format!("position {n} is not in select list"))
                    });
            }
        }
        if let Expr::Identifier(id) = e {
            if let Some(p) = items
                .iter()
                .position(|(_, a)| a.as_ref().is_some_and(|a| a.value == id.value))
                .filter(|_| sorting)
            {
                return Ok(p);
            }
        }
        let text = e.to_string();
        if let Some(p) = items.iter().position(|(x, _)| x.to_string() == text) {
            return Ok(p);
        }
        // Gathered and evaluated after the merge, as a selected one is.
        if super::gathered::answers(e) {
            return hidden::computed(
                e,
                (q, params, placement),
                &group_texts,
                visible,
                (spec, hidden),
                None,
            );
        }
        let kind = combined_kind(e).map_err(unsupported)?;
        let col = match kind.map(|k| (k, spec::partial(k))) {
            Some((_, Some(column))) => column,
            Some(("avg", _)) => return Ok(hidden::avg(e, visible, (spec, hidden))),
            Some(("count_distinct", _)) if distinct_may_hide => {
                let (at, values) = hidden::distinct_count(e, visible, (spec, hidden))?;
                extra_groups.push(values);
                return Ok(at);
            }
            Some(_) => {
                return Err(unsupported(format!(
                    "{e} is used but not selected; select it to sort or filter on it"
                )))
            }
            None if group_texts.contains(&text) => AggColumn::Group,
            // Constant within each group of each set, as when selected.
            None if grouping_sets::is_grouping_call(e) => AggColumn::Group,
            // Computed after the merge from hidden parts, as a selected item is, when
            // each part is a column of its own: a count, sum, min, max or group column.
            // A distinct count among its parts takes its values into the shards' GROUP BY,
            // as a distinct count alone does.
            None => {
                let distinct = distinct_may_hide.then_some(&mut extra_groups);
                return hidden::computed(
                    e,
                    (q, params, placement),
                    &group_texts,
                    visible,
                    (spec, hidden),
                    distinct,
                );
            }
        };
        hidden.push(SelectItem::ExprWithAlias {
            expr: e.clone(),
            alias: Ident::new(format!("__shardgate_extra_{}", hidden.len())),
        });
        spec.columns.push(col);
        Ok(visible + hidden.len() - 1)
    };
    // HAVING as one boolean column: an aggregate or group column itself, or the condition
    // computed after the merge from its parts as a selected item is, so that PostgreSQL
    // itself reads its constants and picks its operators' types.
    if let Some(h) = &select.having {
        // A bare number would be read as a position in the select list, which HAVING has not.
        if matches!(h, Expr::Value(_)) {
            return refuse(
                format!("HAVING {h} over several shards is not supported"),
                HINT,
            );
        }
        match column_of(h, false, &mut spec, &mut hidden) {
            Ok(c) => spec.having = Some(c),
            Err(e) => return Plan::Reject(e),
        }
    }
    let mut order = Vec::new();
    if let Some(ob) = &q.order_by {
        let OrderByKind::Expressions(exprs) = &ob.kind else {
            return refuse("ORDER BY ALL is not supported", HINT);
        };
        for oe in exprs {
            let (descending, nulls_first) = match super::plan::sort_direction(oe) {
                Ok(d) => d,
                Err(p) => return *p,
            };
            if super::plan::explicit_collation(&oe.expr) == Some(false) {
                return Plan::Reject(super::plan::other_collation(&oe.expr));
            }
            // A bare name an unaliased item was given is that item, as in PostgreSQL.
            let named = match &oe.expr {
                Expr::Identifier(id)
                    if !items[..client_visible]
                        .iter()
                        .any(|(_, a)| a.as_ref().is_some_and(|a| a.value == id.value)) =>
                {
                    super::plan::named_output(
                        id,
                        items[..client_visible].iter().map(|(e, a)| (e, a.as_ref())),
                    )
                }
                _ => None,
            };
            let column =
                match named.map_or_else(|| column_of(&oe.expr, true, &mut spec, &mut hidden), Ok) {
                    Ok(c) => c,
                    Err(e) => return Plan::Reject(e),
                };
            order.push(SortKey {
                column: SortColumn::Position(column + 1),
                descending,
                nulls_first,
                bytewise: super::plan::explicit_collation(&oe.expr) == Some(true),
            });
        }
    }
    let mut rewritten = q.clone();
    rewritten.order_by = None;
    rewritten.limit_clause = None;
    if let SetExpr::Select(sel) = rewritten.body.as_mut() {
        sel.projection = shard_items;
        sel.projection.extend(hidden.iter().cloned());
        sel.having = None;
        if let GroupByExpr::Expressions(e, _) = &mut sel.group_by {
            e.extend(extra_groups);
        }
    }
    let picks = super::plan::keep_used_params(&mut rewritten, params.values.len());
    let merge = MergeSpec {
        order,
        limit,
        offset,
        hidden: hidden.len() + visible - client_visible,
        aggregate: Some(spec),
        picks,
        ..Default::default()
    };
    Plan::Scatter {
        shards,
        sql: rewritten.to_string(),
        merge,
    }
}

/// `sum((x) * 1::float8)` for `avg(x)`: x in double precision, which for real is exact and is
/// what PostgreSQL's avg(real) accumulates; for integers and numeric the product is float8 too
/// (and unused: their avg stays exact numeric), and for interval it stays interval, which the
/// merge refuses with the avg itself. `None` when the argument is not one plain expression.
fn float_sum_of(avg: &Expr) -> Option<Expr> {
    use sqlparser::ast::{FunctionArg, FunctionArgExpr, FunctionArguments};
    let Expr::Function(f) = avg else {
        return None;
    };
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    let [FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))] = list.args.as_slice() else {
        return None;
    };
    if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
        return None;
    }
    let mut sum = crate::sql::expression(&format!("sum(({arg}) * 1::float8)")).ok()?;
    // Over the rows the avg itself reads.
    if let Expr::Function(g) = &mut sum {
        g.filter = f.filter.clone();
    }
    Some(sum)
}

fn rename_function(e: &Expr, to: &str) -> Expr {
    let mut e = e.clone();
    if let Expr::Function(f) = &mut e {
        f.name = sqlparser::ast::ObjectName::from(vec![Ident::new(to)]);
    }
    e
}
