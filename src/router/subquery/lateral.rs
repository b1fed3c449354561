//! LATERAL subqueries, and the derived tables inside them, that read only rows of their outer
//! row's shard key: those rows all live on the outer row's shard, so each shard runs the
//! statement as written. A subquery is tied so as EXISTS is (`key_tied`), or through its FROM:
//! its own tables tied to the outer row's key, its derived tables tied so in turn, its LATERAL
//! items tied to either (Drizzle's relational queries nest all three).

use super::*;

/// How many sharded tables the LATERAL derived tables of `select`'s FROM read, those that read
/// only rows of their outer row's key (`reads_outer_key`), which live on that row's shard (the
/// top rows of each key, `JOIN LATERAL (SELECT ... WHERE e.account_id = a.id ORDER BY ...
/// LIMIT 3) e ON true`).
pub(crate) fn tied_laterals(select: &Select, outer: &[TopTable], placement: &Placement) -> usize {
    from_factors(select)
        .filter_map(|factor| match factor {
            TableFactor::Derived {
                lateral: true,
                subquery,
                ..
            } if reads_outer_key(subquery, outer, placement) => {
                Some(relations(subquery.as_ref(), placement).sharded.len())
            }
            _ => None,
        })
        .sum()
}

/// Whether `q`, evaluated for one row of `outer`, reads only rows whose shard key is that
/// row's key: tied as EXISTS is (`correlated`), or through its FROM's derived tables, each
/// tied so itself (`FROM (SELECT * FROM posts p WHERE p.author_id = a.id ORDER BY ... LIMIT
/// 5) p`, as ORMs page a row's children), with its own tables tied to `outer` and its LATERAL
/// subqueries and WHERE's subqueries tied to those. Such rows all live on the outer row's shard.
fn reads_outer_key(q: &Query, outer: &[TopTable], placement: &Placement) -> bool {
    if correlated(q, outer, placement) {
        return true;
    }
    if q.with.is_some() {
        return false;
    }
    let SetExpr::Select(s) = q.body.as_ref() else {
        return false;
    };
    let own = top_tables(s, placement);
    if !own.is_empty() && !key_tied(s, &own, outer) {
        return false;
    }
    // What a LATERAL subquery may be tied to: the outer tables, this query's own, and its
    // derived tables of the outer row's key that return that key (SQL lets a LATERAL item
    // see only the items before it; PostgreSQL refuses any other).
    let mut scope = outer.to_vec();
    scope.extend(own.iter().cloned());
    let mut covered = own.len();
    for factor in from_factors(s) {
        let TableFactor::Derived {
            lateral,
            subquery,
            alias,
            ..
        } = factor
        else {
            continue;
        };
        let tables = relations(subquery.as_ref(), placement).sharded.len();
        if tables == 0 {
            continue;
        }
        let within = if *lateral { &scope[..] } else { outer };
        if !reads_outer_key(subquery, within, placement) {
            return false;
        }
        covered += tables;
        if let (Some(alias), SetExpr::Select(inner)) = (alias, subquery.body.as_ref()) {
            let key = top_tables(inner, placement)
                .into_iter()
                .find_map(|t| derived_rows::key_output_name(inner, &t).map(|name| (t.1, name)));
            if let (Some((key_type, name)), true) = (key, alias.columns.is_empty()) {
                scope.push((vec![alias.name.value.clone()], key_type, name));
            }
        }
    }
    match tied_in(per_row_exprs(q, s), &own, placement) {
        Ok(n) if n != usize::MAX => covered += n,
        _ => return false,
    }
    covered == relations(q, placement).sharded.len()
}

/// Every item of `s`'s FROM list, joined ones too (not inside nested joins).
fn from_factors(s: &Select) -> impl Iterator<Item = &TableFactor> {
    s.from
        .iter()
        .flat_map(|twj| std::iter::once(&twj.relation).chain(twj.joins.iter().map(|j| &j.relation)))
}
