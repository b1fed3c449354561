//! Derived tables that stand for some rows of one sharded table: `FROM (SELECT * FROM accounts
//! WHERE ...) a`, as ORMs write a filtered queryset they join or annotate.
//!
//! Such a derived table has, on each shard, only rows of that shard's part of the table, one
//! per table row, with the shard key among its columns. The outer query can treat it as the
//! table itself under its alias: a condition on `a.id` routes, a join on `a.id` is co-located,
//! and a subquery tied to `a.id` reads only that row's shard.
//!
//! Grouped by the key, or DISTINCT over it (`(SELECT account_id, count(*) FROM orders GROUP BY
//! account_id) o`), it holds whole groups on each shard, one row per group, still on the
//! shard of its key.
//!
//! Only these plain shapes qualify: one sharded table with no join, window, LIMIT, OFFSET or
//! locking clause, no DISTINCT, grouping or aggregate unless over the key as above, its
//! subqueries tied by the key, and the key selected under a name the outer query can use
//! (`*`, `t.*`, `id` or `id AS k`), with no column list on the alias. Anything else is judged
//! as before.

use super::{grouped_by_key, output_exprs, per_row_exprs, sharded_table, tied_in, TopTable};
use crate::placement::Placement;
use crate::router::plan::{has_own_aggregate_or_window, is_column, last_ident, relations};
use sqlparser::ast::{
    Expr, GroupByExpr, Query, Select, SelectItem, SelectItemQualifiedWildcardKind, SetExpr,
    TableFactor,
};

/// The derived tables of `select`'s own FROM that stand for a sharded table's rows, each as a
/// top table named by its alias with the name its key goes by, and how many sharded tables it
/// reads (its own and those of its tied subqueries).
pub(crate) fn derived_top_tables(select: &Select, placement: &Placement) -> Vec<(TopTable, usize)> {
    let mut found = Vec::new();
    for twj in &select.from {
        for factor in std::iter::once(&twj.relation).chain(twj.joins.iter().map(|j| &j.relation)) {
            if let TableFactor::Derived {
                lateral: false,
                subquery,
                alias: Some(alias),
                ..
            } = factor
            {
                if !alias.columns.is_empty() {
                    continue;
                }
                if let Some((key_type, key_name, tables)) = table_rows(subquery, placement) {
                    found.push(((vec![alias.name.value.clone()], key_type, key_name), tables));
                }
            }
        }
    }
    found
}

/// The key type, the key's output name and the sharded tables read, when `q` selects rows of
/// one sharded table, one output row per table row.
fn table_rows(
    q: &Query,
    placement: &Placement,
) -> Option<(crate::placement::KeyType, String, usize)> {
    if q.with.is_some()
        || q.limit_clause.is_some()
        || q.fetch.is_some()
        || !q.locks.is_empty()
        || q.for_clause.is_some()
    {
        return None;
    }
    let SetExpr::Select(s) = q.body.as_ref() else {
        return None;
    };
    if s.qualify.is_some() || !s.named_window.is_empty() || s.into.is_some() {
        return None;
    }
    // Grouped by the key (or DISTINCT over it), each group's rows share a key and a shard: a
    // group is whole on its shard, and its aggregates are final there.
    let grouped = grouped_by_key(q, placement);
    let plain = s.distinct.is_none()
        && matches!(&s.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty())
        && s.having.is_none();
    if !plain && !grouped {
        return None;
    }
    let [twj] = s.from.as_slice() else {
        return None;
    };
    if !twj.joins.is_empty() {
        return None;
    }
    let top = sharded_table(&twj.relation, placement)?;
    let key_type = top.1;
    // A window reads other rows than its own: those of other shards too.
    let windowed = output_exprs(q, s).any(has_window);
    if windowed
        || (!grouped && output_exprs(q, s).any(|e| has_own_aggregate_or_window(e, s, placement)))
    {
        return None;
    }
    let sharded = relations(q, placement).sharded.len();
    let tied = tied_in(per_row_exprs(q, s), std::slice::from_ref(&top), placement).ok()?;
    if tied.checked_add(1) != Some(sharded) {
        return None;
    }
    let key_name = key_output_name(s, &top)?;
    Some((key_type, key_name, sharded))
}

/// The name `s` returns `top`'s key under: `*`, `t.*`, the key column, or it aliased.
pub(crate) fn key_output_name(s: &Select, top: &TopTable) -> Option<String> {
    let (names, key_column) = (&top.0, &top.2);
    s.projection.iter().find_map(|item| match item {
        SelectItem::Wildcard(_) => Some(key_column.clone()),
        SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(t), _) => {
            let t = last_ident(t);
            names
                .iter()
                .any(|n| n.eq_ignore_ascii_case(&t))
                .then(|| key_column.clone())
        }
        SelectItem::UnnamedExpr(e) if is_column(e, names, key_column) => {
            key_named(e).or_else(|| Some(key_column.clone()))
        }
        SelectItem::ExprWithAlias { expr, alias } if is_column(expr, names, key_column) => {
            Some(alias.value.clone())
        }
        _ => None,
    })
}

/// Whether a window call is anywhere in `e` (subqueries included, to be safe).
fn has_window(e: &Expr) -> bool {
    sqlparser::ast::visit_expressions(e, |e: &Expr| match e {
        Expr::Function(f) if f.over.is_some() => std::ops::ControlFlow::Break(()),
        _ => std::ops::ControlFlow::Continue(()),
    })
    .is_break()
}

/// The output name of a selected column: its last identifier.
fn key_named(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(i) => Some(i.value.clone()),
        Expr::CompoundIdentifier(parts) => parts.last().map(|i| i.value.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The top tables the derived tables of `sql`'s FROM stand for.
    fn tops(sql: &str) -> Vec<(TopTable, usize)> {
        let p = crate::router::plan::tests::placement();
        derived_top_tables(&crate::router::plan::tests::select(sql), &p)
    }

    fn key_name(sql: &str) -> Option<String> {
        tops(sql).pop().map(|((_, _, key), _)| key)
    }

    #[test]
    fn a_derived_table_of_one_tables_rows_goes_by_its_alias_and_key() {
        let found = tops("select * from (select * from accounts where id > 3) a");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0 .0, vec!["a".to_string()]);
        assert_eq!(found[0].0 .2, "id");
        assert_eq!(found[0].1, 1);
        assert_eq!(
            key_name("select * from (select t.* from accounts t) a"),
            Some("id".into())
        );
        assert_eq!(
            key_name("select * from (select owner, id as k from accounts) a"),
            Some("k".into())
        );
        assert_eq!(
            key_name(
                "select * from (select account_id, count(*) from ledger group by account_id) a"
            ),
            Some("account_id".into())
        );
        // A tied subquery inside is counted among the tables it reads.
        let found = tops(
            "select * from (select * from accounts x where exists (select 1 from ledger l where l.account_id = x.id)) a",
        );
        assert_eq!(found[0].1, 2);
    }

    #[test]
    fn anything_that_mixes_rows_of_several_shards_does_not_qualify() {
        for sql in [
            "select * from (select owner from accounts) a",
            "select * from (select * from accounts limit 3) a",
            "select * from (select distinct owner, id from accounts order by id) a (o, k)",
            "select * from (select owner, count(*) from accounts group by owner) a",
            "select * from (select id, rank() over (order by owner) from accounts) a",
            "select * from (select a.* from accounts a join ledger l on l.account_id = a.id) a",
            "select * from (select * from accounts where id in (select account_id from ledger limit 2)) a",
            "select * from (select * from accounts) as a (k)",
            "select * from lateral (select * from accounts) a",
        ] {
            assert!(tops(sql).is_empty(), "{sql}");
        }
    }
}
