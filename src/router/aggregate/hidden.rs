//! Aggregates that HAVING or ORDER BY read and the select list leaves out, carried as hidden
//! columns after the client's: each planned as a selected one is, so that the merge combines
//! it the same way. Every function returns the column HAVING or ORDER BY then reads.
//!
//! Invariant: `spec.columns` and the hidden items grow together, one column per item, so a
//! column's number is the count of visible items plus its place among the hidden ones.

use super::kinds::{aggregate_kind, combined_kind, distinct_argument, not_combinable};
use super::{float_sum_of, rename_function, unsupported, AggColumn, AggSpec};
use crate::error::PgError;
use sqlparser::ast::{Expr, Ident, Query, SelectItem};

/// Adds `expr` as the next hidden item, merged as `column`; returns its column.
fn push(
    expr: Expr,
    column: AggColumn,
    visible: usize,
    (spec, hidden): (&mut AggSpec, &mut Vec<SelectItem>),
) -> usize {
    let alias = format!("__shardgate_extra_{}", hidden.len());
    push_as(expr, &alias, column, visible, (spec, hidden))
}

fn push_as(
    expr: Expr,
    alias: &str,
    column: AggColumn,
    visible: usize,
    (spec, hidden): (&mut AggSpec, &mut Vec<SelectItem>),
) -> usize {
    hidden.push(SelectItem::ExprWithAlias {
        expr,
        alias: Ident::new(alias),
    });
    spec.columns.push(column);
    visible + hidden.len() - 1
}

/// The hidden count (and float sum) an `avg` whose sum is column `sum` divides by, named
/// after `tag`; makes that column the Avg reading them. Selected or hidden, every avg takes
/// its companions so.
pub(super) fn avg_companions(
    avg: &Expr,
    sum: usize,
    tag: usize,
    visible: usize,
    (spec, hidden): (&mut AggSpec, &mut Vec<SelectItem>),
) {
    let count = push_as(
        rename_function(avg, "count"),
        &format!("__shardgate_count_{tag}"),
        AggColumn::AvgCount,
        visible,
        (spec, hidden),
    );
    let float_sum = float_sum_of(avg).map(|f| {
        let alias = format!("__shardgate_fsum_{tag}");
        push_as(f, &alias, AggColumn::AvgFloatSum, visible, (spec, hidden))
    });
    spec.columns[sum] = AggColumn::Avg { count, float_sum };
}

/// The hidden values a `count(DISTINCT ...)` at column `count` counts, named after `tag`;
/// makes that column read them. The caller adds `values` to the shards' GROUP BY.
pub(super) fn distinct_values(
    values: Expr,
    count: usize,
    tag: usize,
    visible: usize,
    (spec, hidden): (&mut AggSpec, &mut Vec<SelectItem>),
) {
    let column = push_as(
        values,
        &format!("__shardgate_distinct_{tag}"),
        AggColumn::DistinctValue { with_null: false },
        visible,
        (spec, hidden),
    );
    spec.columns[count] = AggColumn::CountDistinct { values: column };
}

/// `avg(x)`: its sum, with the count (and the float sum) beside it.
pub(super) fn avg(
    e: &Expr,
    visible: usize,
    (spec, hidden): (&mut AggSpec, &mut Vec<SelectItem>),
) -> usize {
    let at = push(
        rename_function(e, "sum"),
        AggColumn::Sum,
        visible,
        (spec, hidden),
    );
    avg_companions(e, at, at, visible, (spec, hidden));
    at
}

/// `count(DISTINCT x)`: x beside it, counted by the merge; also returns x, which must join
/// the shards' GROUP BY.
pub(super) fn distinct_count(
    e: &Expr,
    visible: usize,
    (spec, hidden): (&mut AggSpec, &mut Vec<SelectItem>),
) -> Result<(usize, Expr), PgError> {
    let Some(values) = distinct_argument(e) else {
        return Err(unsupported(not_combinable(e)));
    };
    let at = push(e.clone(), AggColumn::Count, visible, (spec, hidden));
    distinct_values(values.clone(), at, at, visible, (spec, hidden));
    Ok((at, values))
}

/// An item HAVING or ORDER BY reads that computes over aggregates and is not selected
/// (`HAVING sum(x) / count(*) > 2`): a hidden column the merge fills as it fills a selected
/// computed item, its parts hidden after it (an average's count, and the values a distinct
/// count counts, after every part). A distinct count is taken only where `distinct_groups`
/// can take its values into the shards' GROUP BY; values gathered in no order of the
/// evaluation's own (an unordered json_agg), whose FROM list is not judged here, are refused.
/// Returns the item's column.
pub(super) fn computed(
    e: &Expr,
    (q, params, placement): (
        &Query,
        &crate::router::params::Params,
        &crate::placement::Placement,
    ),
    group_texts: &[String],
    visible: usize,
    (spec, hidden): (&mut AggSpec, &mut Vec<SelectItem>),
    mut distinct_groups: Option<&mut Vec<Expr>>,
) -> Result<usize, PgError> {
    let cannot = || {
        unsupported(format!(
            "{e} cannot be computed after merging groups from several shards"
        ))
    };
    let at = visible + hidden.len();
    // The name `push` gives it, which the template's own name must be.
    let name = Ident::new(format!("__shardgate_extra_{}", hidden.len()));
    // An aggregate the merge cannot combine is named as such (as for a selected item).
    let combined = |x: &Expr| match (aggregate_kind(x), x) {
        (Ok(None), Expr::Function(f)) if crate::router::plan::may_combine_rows(f, placement) => {
            Err(not_combinable(x))
        }
        (kind, _) => kind.map(|k| k.is_some()),
    };
    let c =
        crate::router::computed::split(e, Some(&name), group_texts, at + 1, (q, params), &combined)
            .map_err(unsupported)?;
    let mut columns = Vec::with_capacity(c.parts.len());
    for (i, part) in c.parts.iter().enumerate() {
        columns.push(match combined_kind(part) {
            // Values the evaluation orders itself (`router::gathered`): whatever the FROM
            // list, the order they are gathered in does not matter.
            Ok(Some("array_agg")) if c.reordered.contains(&i) => {
                AggColumn::Joined(super::Concatenation::Arrays)
            }
            // Its sum here; the count (and float sum) after every part, since the template
            // reads the parts from consecutive columns.
            Ok(Some("avg")) => AggColumn::Sum,
            // Its count here; the values it counts after every part.
            Ok(Some("count_distinct")) if distinct_groups.is_some() => AggColumn::Count,
            Ok(Some(kind)) => match super::spec::partial(kind) {
                Some(column) => column,
                None => return Err(cannot()),
            },
            Ok(None) if group_texts.contains(&part.to_string()) => AggColumn::Group,
            _ => return Err(cannot()),
        });
    }
    if columns.is_empty() {
        return Err(cannot());
    }
    let template = AggColumn::Computed {
        template: c.template,
        parts: (at + 1..at + 1 + columns.len()).collect(),
        params: c.params,
    };
    push(c.stand_in, template, visible, (spec, hidden));
    let (mut averages, mut distinct_counts) = (Vec::new(), Vec::new());
    for (part, column) in c.parts.into_iter().zip(columns) {
        let kind = combined_kind(&part);
        let average = matches!(kind, Ok(Some("avg")));
        let expr = if average {
            rename_function(&part, "sum")
        } else {
            part.clone()
        };
        let at = push(expr, column, visible, (spec, hidden));
        if average {
            averages.push((at, part));
        } else if matches!(kind, Ok(Some("count_distinct"))) {
            distinct_counts.push((at, part));
        }
    }
    for (sum, avg) in averages {
        avg_companions(&avg, sum, sum, visible, (spec, hidden));
    }
    for (count, part) in distinct_counts {
        let (Some(values), Some(groups)) = (distinct_argument(&part), distinct_groups.as_mut())
        else {
            return Err(unsupported(not_combinable(&part)));
        };
        distinct_values(values.clone(), count, count, visible, (spec, hidden));
        groups.push(values);
    }
    Ok(at)
}
