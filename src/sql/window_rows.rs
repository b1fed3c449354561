//! Windows over the rows of one sharded table that the shards cannot compute alone:
//! `SELECT id, rank() OVER (PARTITION BY region ORDER BY balance) FROM accounts WHERE ...`, or
//! over its groups (`SELECT region, rank() OVER (ORDER BY sum(balance)) ... GROUP BY region`).
//! A window not partitioned by the shard key sees rows of several shards, and one over groups
//! sees groups made of several shards' rows, so the table's rows are read first (those WHERE
//! keeps, when keeping them twice keeps the same ones) and the statement then runs on one
//! server over them, which groups them and computes every window as it would over the table.
//! Pure reading of the statement: the router decides what to do about it.
//!
//! Invariant: the statement itself still filters, orders and limits the rows as written; the
//! read only narrows what travels, and only by a WHERE calling no function but built-ins of
//! their arguments alone, whose second evaluation over the same rows keeps the same ones.

use sqlparser::ast::{Expr, ObjectName, Query, SetExpr, TableFactor, Visit, Visitor};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use std::ops::ControlFlow;

/// Columns every table has that a table's rows read as values would not.
const SYSTEM_COLUMNS: [&str; 6] = ["ctid", "xmin", "xmax", "cmin", "cmax", "tableoid"];

/// The one table of `q`'s FROM, when `q` computes window functions over its rows and nothing
/// else keeps them from being read first, with the query that reads them: `SELECT * FROM`
/// the table as `q` names it, under `q`'s WHERE when it calls no function but built-ins of
/// their arguments alone. `sharded` tells a sharded table by name.
pub fn read_first<'q>(
    q: &'q Query,
    sharded: &dyn Fn(&ObjectName) -> bool,
) -> Option<(&'q TableFactor, Query)> {
    let (s, table, name) = super::lone_table(q)?;
    if !q.locks.is_empty()
        || s.into.is_some()
        || q.with.is_some()
        || !sharded(name)
        || !has_window(q)
        || reads_more(q)
    {
        return None;
    }
    let filter = s
        .selection
        .as_ref()
        .filter(|w| !calls_function(w))
        .map(|w| format!(" WHERE {w}"))
        .unwrap_or_default();
    let text = format!("SELECT * FROM {table}{filter}");
    match Parser::parse_sql(&PostgreSqlDialect {}, &text)
        .ok()?
        .pop()?
    {
        sqlparser::ast::Statement::Query(read) => Some((table, *read)),
        _ => None,
    }
}

fn has_window(q: &Query) -> bool {
    struct Find;
    impl Visitor for Find {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            match e {
                Expr::Function(f) if f.over.is_some() => ControlFlow::Break(()),
                _ => ControlFlow::Continue(()),
            }
        }
    }
    q.visit(&mut Find).is_break()
}

/// Whether `q` holds a subquery (it would read other rows, or these twice) or names a system
/// column (which rows read as values do not have).
fn reads_more(q: &Query) -> bool {
    struct Find;
    impl Visitor for Find {
        type Break = ();
        fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            ControlFlow::Break(())
        }
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            let named = match e {
                Expr::Identifier(i) => Some(&i.value),
                Expr::CompoundIdentifier(parts) => parts.last().map(|i| &i.value),
                _ => None,
            };
            match named {
                Some(n) if SYSTEM_COLUMNS.contains(&n.to_ascii_lowercase().as_str()) => {
                    ControlFlow::Break(())
                }
                _ => ControlFlow::Continue(()),
            }
        }
    }
    // The statement itself is the first query visited.
    let SetExpr::Select(s) = q.body.as_ref() else {
        return true;
    };
    s.visit(&mut Find).is_break() || q.order_by.visit(&mut Find).is_break()
}

/// Whether `e` calls a function other than a built-in of its arguments alone (which a second
/// evaluation over the same row answers alike).
fn calls_function(e: &Expr) -> bool {
    struct Find;
    impl Visitor for Find {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            match e {
                Expr::Function(f)
                    if f.over.is_some() || !super::pure_functions::is_pure(&f.name) =>
                {
                    ControlFlow::Break(())
                }
                _ => ControlFlow::Continue(()),
            }
        }
    }
    e.visit(&mut Find).is_break()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(sql: &str) -> Query {
        match Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .pop()
            .unwrap()
        {
            sqlparser::ast::Statement::Query(q) => *q,
            other => panic!("{other}"),
        }
    }

    fn read(sql: &str) -> Option<String> {
        let q = query(sql);
        let sharded = |n: &ObjectName| n.to_string() == "accounts";
        read_first(&q, &sharded).map(|(_, r)| r.to_string())
    }

    #[test]
    fn a_window_over_one_tables_rows_reads_them_first() {
        assert_eq!(
            read("select id, rank() over (partition by region order by v) from accounts a where a.v > $1 and region in ('x', 'y') order by 2 limit 5").as_deref(),
            Some("SELECT * FROM accounts a WHERE a.v > $1 AND region IN ('x', 'y')")
        );
        // A WHERE calling a function that may answer otherwise the second time is evaluated
        // once, by the statement; built-ins of their arguments alone narrow the read.
        assert_eq!(
            read("select id, sum(v) over (partition by region) from accounts where v > random()")
                .as_deref(),
            Some("SELECT * FROM accounts")
        );
        assert_eq!(
            read("select id, sum(v) over (partition by region) from accounts where upper(owner) like 'A%'")
                .as_deref(),
            Some("SELECT * FROM accounts WHERE upper(owner) LIKE 'A%'")
        );
    }

    #[test]
    fn a_window_over_groups_reads_the_rows_they_are_made_of() {
        assert_eq!(
            read("select region, sum(v), rank() over (order by sum(v) desc) from accounts where v > 0 group by region having count(*) > 1").as_deref(),
            Some("SELECT * FROM accounts WHERE v > 0")
        );
        assert_eq!(
            read("select distinct region, count(*) over (partition by region) from accounts")
                .as_deref(),
            Some("SELECT * FROM accounts")
        );
        // Grouped without a window: the shards' groups are merged, nothing is read first.
        assert_eq!(
            read("select region, count(*) from accounts group by region"),
            None
        );
    }

    #[test]
    fn other_shapes_are_not_read_first() {
        for sql in [
            "select id from accounts",
            "select id, rank() over (order by v) from accounts join orders o on o.id = accounts.id",
            "select id, rank() over (order by v) from orders",
            "select id, rank() over (order by v) from accounts where id in (select id from accounts)",
            "select ctid, rank() over (order by v) from accounts",
            "select id, rank() over (order by v) from accounts for update",
        ] {
            assert_eq!(read(sql), None, "{sql}");
        }
    }
}
