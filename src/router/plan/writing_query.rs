//! Queries that write: `WITH ... INSERT/UPDATE/DELETE`, and a SELECT whose WITH list holds
//! one (`WITH w AS (INSERT ... RETURNING *) SELECT * FROM w`). sqlparser reads both as a query,
//! so without this they would be placed as reads: a reference table's write on the first copy
//! alone, a table living on one shard written there as a read (outside the shards a
//! transaction's commit counts as written).
//!
//! A reference table written so runs on every copy, its writers taking turns, as its INSERT,
//! UPDATE or DELETE alone does; every other table of the statement must then be whole on
//! every shard too. A table living on one shard is written there, as a write. Sharded tables
//! written so are refused by `plan_query`, as any WITH over them besides a plain SELECT.

use super::*;

/// The tables the query writes: its body's target and each of its WITH list's.
pub(super) fn written_tables(q: &Query) -> Vec<&ObjectName> {
    let ctes = q.with.iter().flat_map(|w| &w.cte_tables);
    std::iter::once(q.body.as_ref())
        .chain(ctes.map(|c| c.query.body.as_ref()))
        .filter_map(|body| match body {
            SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) => target(s),
            _ => None,
        })
        .collect()
}

/// The tables a statement writes: an INSERT's, UPDATE's or DELETE's target, and a query's as
/// above.
pub(crate) fn tables_written(stmt: &Statement) -> Vec<&ObjectName> {
    match stmt {
        Statement::Query(q) => written_tables(q),
        other => target(other).into_iter().collect(),
    }
}

/// Where a query that writes runs, or None when it writes nothing or only tables `plan_query`
/// places (sharded tables, refused there, and catalogs).
pub(super) fn plan(q: &Query, placement: &Placement, rels: &Relations) -> Option<Plan> {
    let written = written_tables(q);
    let mut reference: Vec<String> = written
        .iter()
        .filter(|n| matches!(placement.rule(&n.to_string()), Some(TableRule::Reference)))
        .map(|n| last_ident(n).to_lowercase())
        .collect();
    reference.sort();
    reference.dedup();
    let Some(table) = reference.first() else {
        let pinned = written.iter().any(|n| {
            matches!(
                placement.rule(&n.to_string()),
                Some(TableRule::Pinned { .. })
            )
        });
        return match rels.pinned_shard() {
            Some(shard) if pinned => Some(on_pinned_shard(q, placement, shard, true)),
            _ => None,
        };
    };
    if !rels.sharded.is_empty() || rels.pinned_shard().is_some() {
        return Some(refuse(
            format!("a write of reference table {table} with tables that are not on every shard is not supported"),
            format!("A write of {table} runs on every shard's copy. Run it as a statement of its own, in the same transaction."),
        ));
    }
    if let [first, second, ..] = &reference[..] {
        return Some(refuse(
            format!("one statement writing reference tables {first} and {second} is not supported"),
            "Writers of each reference table take turns, one table at a time. Write each table in a statement of its own, in the same transaction.",
        ));
    }
    Some(
        super::copies::check_write(table, q)
            .unwrap_or_else(|| on_every_copy(placement, &q.to_string(), table)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::router::plan::tests::query;

    #[test]
    fn the_body_and_each_cte_tell_what_is_written() {
        let names = |sql: &str| {
            written_tables(&query(sql))
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names("with w as (insert into r (x) values (1) returning *) select * from w"),
            ["r"]
        );
        assert_eq!(
            names("with w as (select 1) update public.r set x = 2"),
            ["public.r"]
        );
        assert_eq!(
            names("with d as (delete from a returning *) insert into b select * from d"),
            ["b", "a"]
        );
        assert!(names("with w as (select * from r) select * from w").is_empty());
    }
}
