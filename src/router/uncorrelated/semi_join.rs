//! `[NOT] EXISTS (...)` over a sharded table correlated to a reference table's row, the one
//! table of the query around it: `SELECT s.* FROM shelves s WHERE EXISTS (SELECT 1 FROM items
//! i WHERE i.shelf_id = s.id AND i.qty > 100)`, as Django's `Exists(OuterRef("pk"))` filters or
//! annotates a reference parent.
//!
//! Every shard holds the reference table whole, but only its own items: each would answer the
//! EXISTS from its own rows. A reference row has a match somewhere exactly when some shard's
//! join of the two tables on the subquery's conditions holds it, so the proxy first reads those
//! rows, as the distinct texts of the whole reference row merged over the shards (`matched`),
//! and then puts `CAST(ROW(s.*) AS text) = ANY(<those texts>)` in the EXISTS's place (its
//! negation for NOT EXISTS). Both are true or false, never NULL, as EXISTS is, so the
//! replacement holds wherever the EXISTS stood. What is left reads reference tables only.
//!
//! A scalar subquery that picks one row by an order, `(SELECT i.name FROM items i WHERE
//! i.shelf_id = s.id ORDER BY i.qty DESC LIMIT 1)` (Django's `Subquery(...[:1])`), is read the
//! same way, as each reference row's first row of that join in that order over every shard
//! (`first_values`, a DISTINCT ON the proxy merges), and put in place as the value of the row's
//! text, NULL where no shard matched it, as the subquery would find no row.
//!
//! A reference row is known by its text, the same on every copy (see `unmatched`, whose check
//! of the column types the executor makes here too). The subquery must be a plain SELECT of
//! sharded tables (co-located, as the planner checks when it plans `matched`) with no
//! grouping, aggregate, window, DISTINCT, OFFSET, LIMIT 0, or subquery of its own, none of
//! whose tables goes by the reference table's name; its conditions move into the join's
//! WHERE, where a bare column name means what it meant in the subquery or is ambiguous (an
//! error, never another column).

use super::{array_text, parse_expr, parse_query, quoted};
use crate::error::PgError;
use crate::placement::{Placement, TableRule};
use sqlparser::ast::{
    Expr, GroupByExpr, LimitClause, ObjectName, Query, Select, SetExpr, TableFactor, Value,
};

/// The outer query's one table, when it is a plain reference table: how it is written in FROM,
/// and the name its row goes by.
pub(super) fn reference_row(q: &Query, placement: &Placement) -> Option<(String, String)> {
    let SetExpr::Select(s) = q.body.as_ref() else {
        return None;
    };
    let [twj] = s.from.as_slice() else {
        return None;
    };
    if !twj.joins.is_empty() {
        return None;
    }
    let TableFactor::Table {
        name,
        alias,
        args: None,
        ..
    } = &twj.relation
    else {
        return None;
    };
    if !matches!(
        placement.rule(&name.to_string()),
        Some(TableRule::Reference)
    ) {
        return None;
    }
    let qualifier = match alias {
        Some(a) if a.columns.is_empty() => a.name.to_string(),
        Some(_) => return None,
        None => ObjectName::to_string(name),
    };
    Some((twj.relation.to_string(), qualifier))
}

/// The query reading which reference rows some shard's rows match, for the EXISTS subquery
/// `sub` inside a query over `(table, row)` (`reference_row`); None when `sub` is not the
/// shape handled.
pub(super) fn matched(
    sub: &Query,
    (table, row): &(String, String),
    placement: &Placement,
) -> Option<Query> {
    if sub.with.is_some() || sub.fetch.is_some() || !sub.locks.is_empty() {
        return None;
    }
    if !super::no_limit_but_a_positive_one(sub) {
        return None;
    }
    let SetExpr::Select(s) = sub.body.as_ref() else {
        return None;
    };
    if !plain(s, placement) || has_subquery(s) {
        return None;
    }
    let mut sharded = 0;
    for twj in &s.from {
        for t in std::iter::once(&twj.relation).chain(twj.joins.iter().map(|j| &j.relation)) {
            let TableFactor::Table { name, alias, .. } = t else {
                return None;
            };
            let goes_by = alias
                .as_ref()
                .map(|a| a.name.value.clone())
                .unwrap_or_else(|| crate::router::plan::last_ident(name));
            if goes_by.eq_ignore_ascii_case(row.trim_matches('"')) {
                return None;
            }
            match placement.rule(&name.to_string()) {
                Some(TableRule::Sharded { .. }) => sharded += 1,
                Some(TableRule::Reference) => {}
                _ => return None,
            }
        }
    }
    if sharded == 0 {
        return None;
    }
    parse_query(&format!(
        "SELECT DISTINCT CAST(ROW({row}.*) AS text) FROM {table}, {}",
        from_and_where(s)
    ))
}

/// The query reading, for each reference row some shard's rows match, the value a scalar
/// subquery `sub` picks for it by `ORDER BY ... LIMIT 1` (Django's `Subquery(children
/// .order_by(...).values(...)[:1])` over a reference parent): the first row of each reference
/// row's join, in that order, over every shard. None when `sub` is not that shape.
pub(super) fn first_values(
    sub: &Query,
    (table, row): &(String, String),
    placement: &Placement,
) -> Option<Query> {
    let Some(LimitClause::LimitOffset {
        limit: Some(Expr::Value(v)),
        offset: None,
        limit_by,
    }) = &sub.limit_clause
    else {
        return None;
    };
    if !limit_by.is_empty() || !matches!(&v.value, Value::Number(n, _) if n == "1") {
        return None;
    }
    let order = sub.order_by.as_ref()?;
    let mut unlimited = sub.clone();
    unlimited.limit_clause = Some(LimitClause::LimitOffset {
        limit: Some(Expr::value(Value::Number("1".into(), false))),
        offset: None,
        limit_by: Vec::new(),
    });
    unlimited.order_by = None;
    // The same checks as an EXISTS's: a plain SELECT of sharded tables, nothing inside.
    let joined = matched(&unlimited, &(table.clone(), row.clone()), placement)?;
    let SetExpr::Select(s) = sub.body.as_ref() else {
        return None;
    };
    let [item @ (sqlparser::ast::SelectItem::UnnamedExpr(_)
    | sqlparser::ast::SelectItem::ExprWithAlias { .. })] = s.projection.as_slice()
    else {
        return None;
    };
    let sqlparser::ast::OrderByKind::Expressions(keys) = &order.kind else {
        return None;
    };
    // A key by position names the subquery's one item (Django writes `ORDER BY 1 DESC`),
    // which the read returns second, after the row's text.
    let mut shifted = Vec::new();
    for key in keys {
        let mut key = key.clone();
        if let Expr::Value(v) = &key.expr {
            match &v.value {
                Value::Number(n, _) if n == "1" => {
                    key.expr = Expr::value(Value::Number("2".into(), false));
                }
                _ => return None,
            }
        }
        shifted.push(key.to_string());
    }
    let keys = shifted;
    let SetExpr::Select(j) = joined.body.as_ref() else {
        return None;
    };
    parse_query(&format!(
        "SELECT DISTINCT ON (1) CAST(ROW({row}.*) AS text), {item} FROM {} ORDER BY 1, {}",
        from_and_where(j),
        keys.join(", ")
    ))
}

/// What takes a scalar subquery's place, given `first_values`' answer (texts, then values of
/// type `ty`): the value of the row's text, NULL for a row no shard matches, as the subquery
/// finds no row for it.
pub(super) fn value_of_row(
    first_values: &Query,
    ty: &str,
    texts: &[Option<String>],
    values: &[Option<String>],
) -> Result<Expr, PgError> {
    let unexpected = || super::refusal("a per-row first read has an unexpected shape");
    let SetExpr::Select(s) = first_values.body.as_ref() else {
        return Err(unexpected());
    };
    let row = row_of(s).ok_or_else(unexpected)?;
    let texts = quoted(&array_text(texts));
    let values = quoted(&array_text(values));
    parse_expr(&format!(
        "(CAST({values} AS {ty}[]))[array_position(CAST({texts} AS text[]), CAST(ROW({row}.*) AS text))]"
    ))
}

/// The reference table's columns and no row, to learn their types (`matched`'s first table).
pub fn columns(matched: &Query) -> Option<Query> {
    let SetExpr::Select(s) = matched.body.as_ref() else {
        return None;
    };
    let table = s.from.first()?.relation.to_string();
    let row = row_of(s)?;
    parse_query(&format!("SELECT {row}.* FROM {table} LIMIT 0"))
}

/// What takes the EXISTS's place: its reference row's text among the matched rows' texts.
pub(super) fn replacement(
    matched: &Query,
    negated: bool,
    texts: &[Option<String>],
) -> Result<Expr, PgError> {
    let SetExpr::Select(s) = matched.body.as_ref() else {
        return Err(super::refusal(
            "a semi-join's first read has an unexpected shape",
        ));
    };
    let row = row_of(s)
        .ok_or_else(|| super::refusal("a semi-join's first read has an unexpected shape"))?;
    let set = quoted(&array_text(texts));
    let test = format!("CAST(ROW({row}.*) AS text) = ANY(CAST({set} AS text[]))");
    parse_expr(&if negated {
        format!("NOT ({test})")
    } else {
        format!("({test})")
    })
}

/// `s`'s FROM list and WHERE, as text to follow `FROM`.
fn from_and_where(s: &Select) -> String {
    let from: Vec<String> = s.from.iter().map(|t| t.to_string()).collect();
    match &s.selection {
        Some(w) => format!("{} WHERE {w}", from.join(", ")),
        None => from.join(", "),
    }
}

/// The reference row's name in `matched`'s select item `CAST(ROW(row.*) AS text)`.
fn row_of(s: &Select) -> Option<String> {
    let item = s.projection.first()?.to_string();
    let inner = item.strip_prefix("CAST(ROW(")?.split(".*)").next()?;
    Some(inner.to_string())
}

fn plain(s: &Select, placement: &Placement) -> bool {
    s.distinct.is_none()
        && s.having.is_none()
        && matches!(&s.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty())
        && s.named_window.is_empty()
        && s.qualify.is_none()
        && s.into.is_none()
        && !crate::router::plan::has_own_aggregate_or_window(&s.projection, s, placement)
}

fn has_subquery(s: &Select) -> bool {
    sqlparser::ast::visit_expressions(s, |e: &Expr| match e {
        Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => {
            std::ops::ControlFlow::Break(())
        }
        _ => std::ops::ControlFlow::Continue(()),
    })
    .is_break()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::plan::tests::{placement, query};

    /// The first read of the EXISTS in `sql`'s WHERE, inside a query over `countries c`.
    fn first_read(sql: &str) -> Option<String> {
        let q = query(sql);
        let p = placement();
        let row = reference_row(&q, &p)?;
        let SetExpr::Select(s) = q.body.as_ref() else {
            return None;
        };
        let Some(Expr::Exists { subquery, .. }) = &s.selection else {
            return None;
        };
        matched(subquery, &row, &p).map(|m| m.to_string())
    }

    #[test]
    fn the_reference_rows_some_shard_matches_are_read_by_a_join() {
        assert_eq!(
            first_read("select * from countries c where exists (select 1 from accounts a where a.country = c.code and a.v > 3 limit 1)").as_deref(),
            Some("SELECT DISTINCT CAST(ROW(c.*) AS TEXT) FROM countries c, accounts a WHERE a.country = c.code AND a.v > 3")
        );
        let m = query(&first_read("select * from countries where exists (select 1 from accounts a join ledger l on l.account_id = a.id where a.country = countries.code)").unwrap());
        assert_eq!(
            columns(&m).unwrap().to_string(),
            "SELECT countries.* FROM countries LIMIT 0"
        );
        let e = replacement(&m, true, &[Some("(de,x)".into())]).unwrap();
        assert_eq!(
            e.to_string(),
            "NOT (CAST(ROW(countries.*) AS TEXT) = ANY(CAST('{\"(de,x)\"}' AS TEXT[])))"
        );
    }

    #[test]
    fn a_first_value_per_row_is_read_as_each_rows_first_joined_row() {
        let p = placement();
        let q = query("select c.code, (select a.v from accounts a where a.country = c.code order by 1 desc, a.id limit 1) from countries c");
        let row = reference_row(&q, &p).unwrap();
        let SetExpr::Select(s) = q.body.as_ref() else {
            panic!()
        };
        let sqlparser::ast::SelectItem::UnnamedExpr(Expr::Subquery(sub)) = &s.projection[1] else {
            panic!()
        };
        let read = first_values(sub, &row, &p).unwrap();
        assert_eq!(
            read.to_string(),
            "SELECT DISTINCT ON (1) CAST(ROW(c.*) AS TEXT), a.v FROM countries c, accounts a WHERE a.country = c.code ORDER BY 1, 2 DESC, a.id"
        );
        assert_eq!(
            value_of_row(&read, "INTEGER", &[Some("(de)".into())], &[Some("7".into())])
                .unwrap()
                .to_string(),
            "(CAST('{\"7\"}' AS INTEGER[]))[array_position(CAST('{\"(de)\"}' AS TEXT[]), CAST(ROW(c.*) AS TEXT))]"
        );
        // Not without ORDER BY or with another LIMIT.
        for sql in [
            "(select a.v from accounts a where a.country = c.code limit 1)",
            "(select a.v from accounts a where a.country = c.code order by a.v limit 2)",
        ] {
            let sub = query(&sql[1..sql.len() - 1]);
            assert!(first_values(&sub, &row, &p).is_none(), "{sql}");
        }
    }

    #[test]
    fn other_shapes_are_not_read_so() {
        for sql in [
            // An aggregate's one row, a LIMIT 0, an OFFSET, grouping, a subquery inside.
            "select * from countries c where exists (select count(*) from accounts a where a.country = c.code)",
            "select * from countries c where exists (select 1 from accounts a where a.country = c.code limit 0)",
            "select * from countries c where exists (select 1 from accounts a where a.country = c.code offset 2)",
            "select * from countries c where exists (select a.v from accounts a where a.country = c.code group by a.v)",
            "select * from countries c where exists (select 1 from accounts a where a.country = c.code and a.id in (select account_id from ledger))",
            // No sharded table, or one going by the reference row's name.
            "select * from countries c where exists (select 1 from countries d where d.code = c.code)",
            "select * from countries c where exists (select 1 from accounts c where c.country = 'x')",
            // The outer query is not one reference table.
            "select * from accounts c where exists (select 1 from ledger l where l.v = c.v)",
            "select * from countries c join countries d on d.code = c.code where exists (select 1 from accounts a where a.country = c.code)",
        ] {
            assert!(first_read(sql).is_none(), "{sql}");
        }
    }
}
