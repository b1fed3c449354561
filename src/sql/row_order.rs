//! Aggregates that list values in the order rows come, and the ordered derived tables that
//! feed them: `SELECT json_agg(t) FROM (SELECT ... ORDER BY id) t`. One PostgreSQL feeds such
//! an aggregate the derived table's rows in its order (PostgREST relies on it); rows merged
//! from several shards' partial aggregates would not keep it. Pure reading of the statement:
//! the router decides what to do about it.

use sqlparser::ast::{
    Expr, FunctionArguments, GroupByExpr, Query, SelectItem, SetExpr, TableFactor,
};

/// The query of derived table `t` (not LATERAL).
pub fn derived_query(t: &TableFactor) -> Option<&Query> {
    match t {
        TableFactor::Derived {
            lateral: false,
            subquery,
            ..
        } => Some(subquery),
        _ => None,
    }
}

/// The one derived table `q` reads, when it is ordered and `q` aggregates its rows in the
/// order they come: string_agg, array_agg, the JSON aggregates or xmlagg without an order or
/// DISTINCT of their own (`SELECT json_agg(t) FROM (SELECT ... ORDER BY id) t`, as PostgREST
/// writes). One server feeds the aggregate the rows in the derived table's order, which the
/// shards' partials would not keep; answered first, the rows come in that order.
pub fn fed_in_order(q: &Query) -> Option<&TableFactor> {
    let SetExpr::Select(s) = q.body.as_ref() else {
        return None;
    };
    let [only] = s.from.as_slice() else {
        return None;
    };
    if !only.joins.is_empty() {
        return None;
    }
    // Through derived tables that pass their source's rows on in order (PostgREST's
    // `FROM (SELECT * FROM pgrst_source) _postgrest_t`, its CTE put in place).
    let mut fed = &only.relation;
    while derived_query(fed)?.order_by.is_none() {
        fed = passed_on(derived_query(fed)?)?;
    }
    let in_row_order = |e: &Expr| {
        let Expr::Function(f) = e else { return None };
        let name = crate::sql::catalog_function_name(&f.name)?;
        let plain = match &f.args {
            FunctionArguments::List(l) => l.clauses.is_empty() && l.duplicate_treatment.is_none(),
            _ => false,
        };
        (plain && f.over.is_none() && ROW_ORDER_AGGREGATES.contains(&name.as_str())).then_some(())
    };
    let items = s.projection.iter().filter_map(|i| match i {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => Some(e),
        _ => None,
    });
    let reads = items
        .chain(s.having.as_ref())
        .any(|e| crate::sql::first_expression(e, in_row_order).is_some());
    reads.then_some(fed)
}

/// The derived table whose rows `q` passes on in their order: `q` selects columns of that one
/// table, filtered at most (no join, grouping, DISTINCT, window, limit or order of its own).
fn passed_on(q: &Query) -> Option<&TableFactor> {
    let SetExpr::Select(s) = q.body.as_ref() else {
        return None;
    };
    let plain = q.with.is_none()
        && q.limit_clause.is_none()
        && q.fetch.is_none()
        && s.distinct.is_none()
        && s.having.is_none()
        && matches!(&s.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty())
        && s.projection.iter().all(|i| match i {
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => true,
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_))
            }
            _ => false,
        });
    match s.from.as_slice() {
        [only] if plain && only.joins.is_empty() => {
            derived_query(&only.relation).map(|_| &only.relation)
        }
        _ => None,
    }
}

/// Whether `q`, once its ordered derived table (`fed_in_order`) is answered first, reads no
/// table at all (no subquery anywhere, CTEs put in place): the answer is then one read, which
/// needs no snapshot shared with another.
pub fn reads_only_its_fed_table(q: &Query) -> bool {
    let subquery = |e: &Expr| {
        matches!(
            e,
            Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. }
        )
        .then_some(())
    };
    q.with.is_none()
        && fed_in_order(q).is_some()
        && crate::sql::first_expression(q, subquery).is_none()
}

/// Aggregates whose answer lists the values in the order they are fed.
const ROW_ORDER_AGGREGATES: &[&str] = &[
    "array_agg",
    "json_agg",
    "json_object_agg",
    "jsonb_agg",
    "jsonb_object_agg",
    "string_agg",
    "xmlagg",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn query(sql: &str) -> Query {
        match sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0)
        {
            sqlparser::ast::Statement::Query(q) => *q,
            other => panic!("{other:?}"),
        }
    }

    fn fed(sql: &str) -> bool {
        fed_in_order(&query(sql)).is_some()
    }

    #[test]
    fn an_ordered_derived_table_feeds_an_aggregate_listing_values_in_row_order() {
        assert!(fed(
            "select json_agg(t) from (select * from accounts order by id) t"
        ));
        assert!(fed(
            "select coalesce(string_agg(o, ','), '') from (select owner o from accounts order by id) s"
        ));
        assert!(fed(
            "select id from (select * from accounts order by id) t having array_agg(id) is not null"
        ));
        // Through a derived table passing the rows on (a CTE put in place, as PostgREST reads).
        assert!(fed(
            "select json_agg(t) from (select * from (select id from accounts order by id) s where id > 1) t"
        ));
        // Not ordered, ordered inside the call, joined, or an aggregate that keeps no order.
        for sql in [
            "select json_agg(t) from (select * from accounts) t",
            "select json_agg(t order by id) from (select * from accounts order by id) t",
            "select array_agg(distinct id) from (select * from accounts order by id) t",
            "select json_agg(t) from (select * from accounts order by id) t, countries c",
            "select count(*) from (select * from accounts order by id) t",
            "select json_agg(t) from (select owner, count(*) from (select * from accounts order by id) s group by owner) t",
        ] {
            assert!(!fed(sql), "{sql}");
        }
    }

    #[test]
    fn one_read_when_nothing_but_the_fed_table_is_read() {
        let one_read = |sql: &str| reads_only_its_fed_table(&query(sql));
        assert!(one_read(
            "select count(t), json_agg(t) from (select * from accounts order by id) t"
        ));
        assert!(!one_read(
            "select json_agg(t), (select 1 from countries limit 1) from (select * from accounts order by id) t"
        ));
        assert!(!one_read(
            "select json_agg(t) from (select * from accounts where id in (select 1) order by id) t"
        ));
    }
}
