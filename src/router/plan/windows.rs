//! Window functions over several shards: `row_number() OVER (PARTITION BY account_id ORDER BY
//! created_at)`, and the top rows per key read through a derived table (`SELECT * FROM (SELECT
//! ..., row_number() OVER (PARTITION BY key ...) rn FROM t) s WHERE rn <= 3`).
//!
//! A window partitioned by the shard key sees the rows of one key, and every row of a key lives
//! on its key's shard (a NULL key's rows all on the home shard): each shard computes every
//! such window over whole partitions, so its rows come back final and the query is merged as
//! plain rows (ORDER BY, LIMIT). The key must be of the first table of the FROM list, which no
//! join makes NULL. Refused: any other window (each shard would number its own rows), a named
//! window, and windows over grouped or DISTINCT rows.

use super::*;
use sqlparser::ast::{JoinOperator, WindowType};

/// The refusal of a query's window calls (in its select list and ORDER BY) that the shards
/// cannot each compute whole; None when every one is partitioned by the shard key.
pub(super) fn refusal(q: &Query, select: &Select, placement: &Placement) -> Option<Plan> {
    let grouped = select.distinct.is_some()
        || !matches!(&select.group_by, sqlparser::ast::GroupByExpr::Expressions(e, _) if e.is_empty())
        || select.having.is_some()
        || plain_aggregate(select, q, placement);
    if grouped {
        return Some(refuse(
            "window functions over grouped or DISTINCT rows over several shards are not supported",
            "Add a shard-key condition so the query runs on one shard.",
        ));
    }
    let key = first_table_key(select, placement);
    let partitioned = |spec: &WindowType| match (spec, &key) {
        (WindowType::WindowSpec(w), Some((names, column, _))) => {
            w.window_name.is_none() && w.partition_by.iter().any(|e| is_column(e, names, column))
        }
        _ => false,
    };
    let mut every = true;
    each_window(&select.projection, &mut |spec| every &= partitioned(spec));
    if let Some(ob) = &q.order_by {
        each_window(&ob.kind, &mut |spec| every &= partitioned(spec));
    }
    (!every).then(|| {
        refuse(
            "window functions over several shards must be partitioned by the shard key of the first table",
            "PARTITION BY the shard key (each shard then holds whole partitions), or add a shard-key condition so the query runs on one shard.",
        )
    })
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
    let TableFactor::Table {
        name,
        alias,
        args: None,
        ..
    } = &from.relation
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
    let mut names = vec![last_ident(name).to_string()];
    names.extend(alias.as_ref().map(|a| a.name.value.clone()));
    preserved.then(|| (names, key_column.clone(), *key_type))
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
