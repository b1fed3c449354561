//! Window functions over several shards: `row_number() OVER (PARTITION BY account_id ORDER BY
//! created_at)`, and the top rows per key read through a derived table (`SELECT * FROM (SELECT
//! ..., row_number() OVER (PARTITION BY key ...) rn FROM t) s WHERE rn <= 3`).
//!
//! A window partitioned by the shard key sees the rows of one key, and every row of a key lives
//! on its key's shard (a NULL key's rows all on the home shard): each shard computes every
//! such window over whole partitions, so its rows come back final and the query is merged as
//! plain rows (ORDER BY, LIMIT). The key must be of the first table of the FROM list, which no
//! join makes NULL.
//!
//! A select item `count(*) OVER ()` (or `count(x)`, with or without FILTER), the total that
//! paginated listings send beside each page's rows, counts every row of the result before
//! LIMIT: each shard counts its own, and the merge writes the sum of the shards' counts in
//! every row (see `MergeSpec::totals`); `sum(x) OVER ()` of integers or numerics adds up so
//! too. `row_number()`, `rank()` and `dense_rank()` over the
//! whole ordered result are numbered by the merge (see `numbering`). Refused: any other window
//! (each shard would number its own rows), a named window, such a count inside an expression or
//! in ORDER BY, and windows over grouped or DISTINCT rows, unless the query reads one sharded
//! table alone: then the executor reads its rows first and one server computes the windows
//! (`read_first`, `sql::window_rows`).

use super::*;
use sqlparser::ast::{Function, FunctionArguments, JoinOperator, WindowType};

/// The refusal of a query's window calls (in its select list and ORDER BY) that the shards
/// cannot each compute whole; None when every one is partitioned by the shard key.
pub(super) fn refusal(q: &Query, select: &Select, placement: &Placement) -> Option<Plan> {
    let grouped = select.distinct.is_some()
        || !matches!(&select.group_by, sqlparser::ast::GroupByExpr::Expressions(e, _) if e.is_empty())
        || select.having.is_some()
        || plain_aggregate(select, q, placement);
    if grouped {
        // Groups made of several shards' rows: one server groups the rows read first.
        return Some(read_first(q, placement).unwrap_or_else(|| {
            refuse(
                "window functions over grouped or DISTINCT rows over several shards are not supported",
                "Add a shard-key condition so the query runs on one shard.",
            )
        }));
    }
    let key = first_table_key(select, placement);
    let partitioned = |spec: &WindowType| match (spec, &key) {
        (WindowType::WindowSpec(w), Some((names, column, _))) => {
            w.window_name.is_none() && w.partition_by.iter().any(|e| is_column(e, names, column))
        }
        _ => false,
    };
    let mut every = true;
    for item in &select.projection {
        if whole_count_item(item) {
            continue;
        }
        each_window(item, &mut |spec| every &= partitioned(spec));
    }
    if let Some(ob) = &q.order_by {
        each_window(&ob.kind, &mut |spec| every &= partitioned(spec));
    }
    if every {
        return None;
    }
    Some(read_first(q, placement).unwrap_or_else(|| {
        refuse(
            "window functions over several shards must be partitioned by the shard key of the first table",
            "PARTITION BY the shard key (each shard then holds whole partitions), or add a shard-key condition so the query runs on one shard.",
        )
    }))
}

/// The executor's cue to read the table's rows first, when `q`'s windows are over one sharded
/// table's rows that can be (see `sql::window_rows`).
pub(super) fn read_first(q: &Query, placement: &Placement) -> Option<Plan> {
    let sharded = |n: &ObjectName| {
        matches!(
            placement.rule(&n.to_string()),
            Some(TableRule::Sharded { .. })
        )
    };
    crate::sql::window_rows::read_first(q, &sharded).map(|_| {
        refuse(
            crate::router::subquery::WINDOW_ROWS,
            "The proxy reads the table's rows first for a SELECT of its own, not here (in a cursor or as a write's source). PARTITION BY the shard key, or add a shard-key condition so the query runs on one shard.",
        )
    })
}

/// Where each `count(...) OVER ()` item of the select list is; None when one sits between
/// wildcards, whose widths the plan cannot know.
pub(super) fn totals(select: &Select) -> Option<Vec<TotalColumn>> {
    let items = &select.projection;
    let wildcard = |i: &SelectItem| {
        matches!(
            i,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
        )
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if !whole_count_item(item) {
            continue;
        }
        let before = items[..i].iter().any(wildcard);
        let after = items[i + 1..].iter().any(wildcard);
        out.push(match (before, after) {
            (false, _) => TotalColumn::FromStart(i),
            (true, false) => TotalColumn::FromEnd(items.len() - 1 - i),
            (true, true) => return None,
        });
    }
    Some(out)
}

/// Whether a sort key names a `count(...) OVER ()` item, by position or name. Each shard's
/// own total is not the value the client sees, so the merge must not sort by it; and every
/// row the client sees carries the same total, so sorting by it orders nothing: the merge
/// leaves such a key out, and each shard, whose rows share their total too, sorts by the
/// other keys alike.
pub(super) fn sorts_by_total(select: &Select, k: &SortKey) -> bool {
    match &k.column {
        SortColumn::Position(p) => select
            .projection
            .get(p.wrapping_sub(1))
            .is_some_and(whole_count_item),
        SortColumn::Name(n) => select.projection.iter().any(|item| match item {
            SelectItem::ExprWithAlias { alias, .. } if whole_count_item(item) => {
                alias.value.eq_ignore_ascii_case(n)
            }
            SelectItem::UnnamedExpr(_) if whole_count_item(item) => {
                item_call(item).is_some_and(|f| n.eq_ignore_ascii_case(&last_ident(&f.name)))
            }
            _ => false,
        }),
    }
}

/// A select item that is `count(...) OVER ()`, bare or named.
fn whole_count_item(item: &SelectItem) -> bool {
    item_call(item).is_some_and(whole_count)
}

/// `count(*)`, `count(x)` or `sum(x)` over the whole result: no partition, order, frame or
/// name.
fn whole_count(f: &Function) -> bool {
    let whole = matches!(&f.over, Some(WindowType::WindowSpec(w))
        if w.window_name.is_none()
            && w.partition_by.is_empty()
            && w.order_by.is_empty()
            && w.window_frame.is_none());
    let plain_args = matches!(&f.args, FunctionArguments::List(l)
        if l.duplicate_treatment.is_none() && l.clauses.is_empty() && l.args.len() == 1);
    whole
        && plain_args
        && f.within_group.is_empty()
        && f.name.0.len() == 1
        && ["count", "sum"]
            .iter()
            .any(|n| last_ident(&f.name).eq_ignore_ascii_case(n))
}

/// The names (its own and its alias), key column and key type of the FROM list's first table,
/// when it is sharded and no join can make its columns NULL.
pub(super) fn first_table_key(
    select: &Select,
    placement: &Placement,
) -> Option<(Vec<String>, String, KeyType)> {
    let [from] = select.from.as_slice() else {
        return None;
    };
    let preserved = from.joins.iter().all(|j| {
        matches!(
            j.join_operator,
            JoinOperator::Join(_)
                | JoinOperator::Inner(_)
                | JoinOperator::Left(_)
                | JoinOperator::LeftOuter(_)
        )
    });
    let (names, key_type, key_column) =
        crate::router::subquery::sharded_table(&from.relation, placement)?;
    preserved.then_some((names, key_column, key_type))
}

/// An aggregate call that is not a window call, in the select list or ORDER BY.
fn plain_aggregate(select: &Select, q: &Query, placement: &Placement) -> bool {
    any_plain_aggregate(&select.projection, placement)
        || q.order_by
            .as_ref()
            .is_some_and(|ob| any_plain_aggregate(&ob.kind, placement))
}

fn any_plain_aggregate<V: sqlparser::ast::Visit>(node: &V, placement: &Placement) -> bool {
    crate::sql::first_expression(node, |e: &Expr| match e {
        Expr::Function(f) if f.over.is_none() && may_combine_rows(f, placement) => Some(()),
        _ => None,
    })
    .is_some()
}

/// Calls `f` with the window of every window call in `node`.
fn each_window<V: sqlparser::ast::Visit>(node: &V, f: &mut dyn FnMut(&WindowType)) {
    let _ = sqlparser::ast::visit_expressions(node, |e: &Expr| {
        if let Expr::Function(func) = e {
            if let Some(spec) = &func.over {
                f(spec);
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select_of(sql: &str) -> Select {
        let stmt =
            sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, sql)
                .unwrap()
                .remove(0);
        let Statement::Query(q) = stmt else {
            panic!("a query")
        };
        let SetExpr::Select(s) = *q.body else {
            panic!("a select")
        };
        *s
    }

    #[test]
    fn a_whole_count_is_placed_from_the_start_or_after_every_wildcard_from_the_end() {
        let at = |sql: &str| totals(&select_of(sql));
        assert_eq!(
            at("select id, count(*) over () as total from t"),
            Some(vec![TotalColumn::FromStart(1)])
        );
        assert_eq!(
            at("select *, count(*) over (), id from t"),
            Some(vec![TotalColumn::FromEnd(1)])
        );
        assert_eq!(at("select *, count(x) over (), * from t"), None);
        assert_eq!(
            at("select id, sum(x) over () as s from t"),
            Some(vec![TotalColumn::FromStart(1)])
        );
        // Not a count of the whole result: left to the partition rule.
        for sql in [
            "select count(*) over (partition by id) from t",
            "select count(*) over (order by id) from t",
            "select avg(x) over () from t",
            "select sum(x) over (order by id) from t",
            "select count(*) over () + 1 from t",
            "select count(*) over w from t window w as ()",
        ] {
            assert_eq!(at(sql), Some(vec![]), "{sql}");
        }
    }
}
