//! `row_number()`, `rank()` and `dense_rank()` over the whole ordered result, with no
//! partition: `SELECT id, row_number() OVER (ORDER BY balance DESC) FROM accounts`.
//!
//! Each shard would number its own rows. But the merge reads every row in the window's order
//! when the query is sorted by it, so it numbers them itself: the shards return a NULL bigint
//! in the item's place, and the merge writes each row's number as the row passes, before
//! OFFSET and LIMIT (which PostgreSQL also applies after the window). The query must be ordered
//! by the window's ORDER BY, or by it followed by more keys (ties in the window's order are
//! numbered in an order PostgreSQL leaves open too); without an ORDER BY it is given the
//! window's. rank and dense_rank compare each row with the one before on the window's keys.
//!
//! Refused: a partition, a frame or a named window, windows ordered differently, a query
//! ordered otherwise or by the numbered item itself, and an item after a `*`.

use super::*;
use sqlparser::ast::{FunctionArguments, OrderBy, OrderByExpr, WindowType};

/// Which number a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberKind {
    RowNumber,
    Rank,
    DenseRank,
}

/// A numbered column of the client's: its place from the first column, what it holds, and how
/// many of the merge's leading sort keys are the window's (the peers of rank and dense_rank).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numbering {
    pub column: usize,
    pub kind: NumberKind,
    pub window_keys: usize,
}

/// The query the shards run in place of the client's, and the columns the merge numbers.
type Numbered = (Query, Vec<Numbering>);

/// The query the shards run in place of `q` and its numbered columns; None when its select
/// list numbers nothing; Err: the refusal.
pub(super) fn numbered(q: &Query, select: &Select) -> Option<Result<Numbered, Box<Plan>>> {
    let found: Vec<(usize, NumberKind, &Vec<OrderByExpr>)> = select
        .projection
        .iter()
        .enumerate()
        .filter_map(|(i, item)| numbering(item).map(|(kind, order)| (i, kind, order)))
        .collect();
    let (_, _, window) = found.first()?;
    Some(rewrite(q, select, &found, window))
}

fn rewrite(
    q: &Query,
    select: &Select,
    found: &[(usize, NumberKind, &Vec<OrderByExpr>)],
    window: &[OrderByExpr],
) -> Result<Numbered, Box<Plan>> {
    let texts = |o: &[OrderByExpr]| o.iter().map(|e| e.to_string()).collect::<Vec<_>>();
    let hint = "Order the query by the window's ORDER BY (then by anything else), or add a shard-key condition so the query runs on one shard.";
    if found.iter().any(|(_, _, o)| texts(o) != texts(window)) {
        return Err(Box::new(refuse(
            "numbering windows ordered differently over several shards are not supported",
            hint,
        )));
    }
    // PostgreSQL numbers the rows before DISTINCT and after grouping; the merge numbers what
    // the shards return, which is neither when they group or deduplicate.
    let grouped = select.distinct.is_some()
        || select.having.is_some()
        || !matches!(&select.group_by, sqlparser::ast::GroupByExpr::Expressions(e, _) if e.is_empty());
    if grouped {
        return Err(Box::new(refuse(
            "row_number(), rank() or dense_rank() over grouped or DISTINCT rows over several shards is not supported",
            "Add a shard-key condition so the query runs on one shard.",
        )));
    }
    let wildcard_before = |i: usize| {
        select.projection[..i].iter().any(|item| {
            matches!(
                item,
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
            )
        })
    };
    if found.iter().any(|(i, _, _)| wildcard_before(*i)) {
        return Err(Box::new(refuse(
            "row_number(), rank() or dense_rank() after a * over several shards is not supported",
            "Put the numbered item before every * in the select list.",
        )));
    }
    let mut rewritten = q.clone();
    match &q.order_by {
        None => {
            rewritten.order_by = Some(OrderBy {
                kind: OrderByKind::Expressions(window.to_vec()),
                interpolate: None,
            })
        }
        Some(ob) => {
            let OrderByKind::Expressions(order) = &ob.kind else {
                return Err(Box::new(refuse(
                    "ORDER BY ALL is not supported",
                    "List the sort columns.",
                )));
            };
            let names: Vec<String> = found
                .iter()
                .map(|(i, kind, _)| item_name(&select.projection[*i], *kind))
                .collect();
            let names_item = |e: &Expr| match e {
                Expr::Identifier(id) => names.iter().any(|n| id.value.eq_ignore_ascii_case(n)),
                Expr::Value(v) => matches!(&v.value, sqlparser::ast::Value::Number(n, _)
                    if found.iter().any(|(i, _, _)| n.parse::<usize>().ok() == Some(i + 1))),
                _ => false,
            };
            let leads =
                order.len() >= window.len() && texts(&order[..window.len()]) == texts(window);
            if !leads || order.iter().any(|oe| names_item(&oe.expr)) {
                return Err(Box::new(refuse(
                    "row_number(), rank() or dense_rank() over several shards needs the query ordered by the window's ORDER BY",
                    hint,
                )));
            }
        }
    }
    let SetExpr::Select(s) = rewritten.body.as_mut() else {
        return Err(Box::new(refuse(
            "numbering windows here are not supported",
            hint,
        )));
    };
    let mut numbers = Vec::new();
    for &(i, kind, _) in found {
        let name = Ident::with_quote('"', item_name(&s.projection[i], kind));
        let stand_in = crate::sql::expression("CAST(NULL AS BIGINT)").expect("a constant parses");
        s.projection[i] = SelectItem::ExprWithAlias {
            expr: stand_in,
            alias: name,
        };
        numbers.push(Numbering {
            column: i,
            kind,
            window_keys: window.len(),
        });
    }
    Ok((rewritten, numbers))
}

/// The column name PostgreSQL gives the item: its alias, or the function's name.
fn item_name(item: &SelectItem, kind: NumberKind) -> String {
    match item {
        SelectItem::ExprWithAlias { alias, .. } if alias.quote_style.is_some() => {
            alias.value.clone()
        }
        SelectItem::ExprWithAlias { alias, .. } => alias.value.to_ascii_lowercase(),
        _ => match kind {
            NumberKind::RowNumber => "row_number",
            NumberKind::Rank => "rank",
            NumberKind::DenseRank => "dense_rank",
        }
        .to_string(),
    }
}

/// A select item that numbers the whole result: `row_number()`, `rank()` or `dense_rank()`
/// over an unnamed window with an ORDER BY and nothing else.
fn numbering(item: &SelectItem) -> Option<(NumberKind, &Vec<OrderByExpr>)> {
    let f = item_call(item)?;
    let kind = match f.name.0.as_slice() {
        [sqlparser::ast::ObjectNamePart::Identifier(n)] if n.quote_style.is_none() => {
            match n.value.to_ascii_lowercase().as_str() {
                "row_number" => NumberKind::RowNumber,
                "rank" => NumberKind::Rank,
                "dense_rank" => NumberKind::DenseRank,
                _ => return None,
            }
        }
        _ => return None,
    };
    let no_args = match &f.args {
        FunctionArguments::List(l) => {
            l.args.is_empty() && l.duplicate_treatment.is_none() && l.clauses.is_empty()
        }
        FunctionArguments::None => true,
        _ => false,
    };
    let Some(WindowType::WindowSpec(w)) = &f.over else {
        return None;
    };
    let whole = w.window_name.is_none()
        && w.partition_by.is_empty()
        && w.window_frame.is_none()
        && !w.order_by.is_empty();
    (no_args && whole && f.filter.is_none() && f.within_group.is_empty())
        .then_some((kind, &w.order_by))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::plan::tests::{placement, plan_sql};

    #[test]
    fn the_shards_return_a_stand_in_and_the_merge_numbers_in_the_windows_order() {
        let Plan::Scatter { sql, merge, .. } = plan_sql(
            "select id, row_number() over (order by x desc), rank() over (order by x desc) as r from accounts limit 5",
        ) else {
            panic!()
        };
        assert_eq!(
            sql,
            "SELECT id, CAST(NULL AS BIGINT) AS \"row_number\", CAST(NULL AS BIGINT) AS \"r\", x AS __shardgate_sort_0 FROM accounts ORDER BY x DESC LIMIT 5"
        );
        assert_eq!(
            merge.numbers,
            [
                Numbering {
                    column: 1,
                    kind: NumberKind::RowNumber,
                    window_keys: 1
                },
                Numbering {
                    column: 2,
                    kind: NumberKind::Rank,
                    window_keys: 1
                },
            ]
        );
        assert_eq!((merge.limit, merge.hidden), (Some(5), 1));
        let _ = placement();
    }

    #[test]
    fn other_windows_and_orders_are_refused() {
        for sql in [
            "select id, row_number() over (partition by v order by x) from accounts",
            "select id, row_number() over (order by x), rank() over (order by v) from accounts",
            "select id, row_number() over (order by x) from accounts order by v",
            "select id, row_number() over (order by x) rn from accounts order by x, rn",
            "select id, row_number() over (order by x) from accounts order by x, 2",
            "select *, row_number() over (order by x) from accounts",
            "select id, row_number() over (order by x rows between 1 preceding and current row) from accounts",
            "select id, row_number() over () from accounts",
            "select distinct id, row_number() over (order by x) from accounts",
            "select id, row_number() over (order by id) from accounts group by id",
            "select count(*), row_number() over (order by count(*)) from accounts",
        ] {
            assert!(matches!(plan_sql(sql), Plan::Reject(_)), "{sql}");
        }
        assert!(matches!(
            plan_sql("select id, dense_rank() over (order by x) from accounts order by x, id"),
            Plan::Scatter { .. }
        ));
    }
}
