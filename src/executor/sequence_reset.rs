//! `SELECT setval(sequence, ...max(column)...) FROM table`: a sequence set from the values a
//! table holds, as Django resets sequences after `loaddata` and in `sqlsequencereset`
//! (`SELECT setval(pg_get_serial_sequence('"t"','id'), coalesce(max("id"), 1), max("id") IS
//! NOT null) FROM "t";`), and as load scripts do after copying rows in with their ids.
//!
//! Over several shards the merge cannot compute it (setval is no aggregate), and run on one
//! shard it would set the sequence from that shard's rows alone. The proxy reads each `max()`
//! and `min()` where the table's rows are (every shard of a sharded table, in the client's
//! transaction, so rows it just loaded count), puts the combined value in place of each, and
//! runs the call alone, as `sequence_moves` runs any `SELECT setval(...)`: checked against the
//! values in use, and sent where the sequence's tables draw from it.
//!
//! Only calls whose arguments read the rows through `max()` and `min()` of the one table are
//! read so; anything else (other aggregates, columns outside them, joins, subqueries) is left
//! to the planner, which refuses it over several shards.

use super::session::{Exec, R};
use crate::placement::{Placement, TableRule};
use crate::router::params::Params;
use crate::router::plan::{has_aggregate_or_window, last_ident, ungrouped, HOME};
use sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, SelectItem, SetExpr,
    Statement, TableFactor, Value,
};
use sqlparser::dialect::PostgreSqlDialect;
use std::ops::ControlFlow;

/// Where an aggregate stood in the call, until its value replaces it: no parameter a client
/// can send is spelled so.
const MARK: &str = "$shardgate_aggregate";

/// A `setval` over a table's rows, as read from its statement.
pub(super) struct FromRows {
    /// The statement with each aggregate replaced by `MARK`, its FROM and WHERE gone: the
    /// call alone, once the values replace the marks.
    alone: Statement,
    /// The aggregates, in the order they are met: `max` or `min`, and the expression each
    /// reads.
    aggregates: Vec<(&'static str, String)>,
    /// The table as written in FROM (with its alias), and the WHERE condition.
    from: String,
    selection: Option<String>,
    /// The table's name, for its placement.
    table: String,
}

/// `max(x)` or `min(x)`, plain (no DISTINCT, FILTER, ORDER BY or window).
fn plain_extreme(f: &Function) -> Option<(&'static str, &Expr)> {
    let kind = match last_ident(&f.name).to_ascii_lowercase().as_str() {
        "max" => "max",
        "min" => "min",
        _ => return None,
    };
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    if f.over.is_some()
        || f.filter.is_some()
        || !f.within_group.is_empty()
        || list.duplicate_treatment.is_some()
        || !list.clauses.is_empty()
    {
        return None;
    }
    match list.args.as_slice() {
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(e))] => Some((kind, e)),
        _ => None,
    }
}

fn is_subquery(e: &Expr) -> bool {
    matches!(
        e,
        Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. }
    )
}

/// Whether `node` names a column or reads a relation: left after the aggregates are taken
/// out, it would not be the call alone.
fn reads_rows<V: sqlparser::ast::Visit>(node: &V) -> bool {
    sqlparser::ast::visit_expressions(node, |e: &Expr| {
        if is_subquery(e) || matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_)) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .is_break()
}

fn reads_subquery(e: &Expr) -> bool {
    sqlparser::ast::visit_expressions(e, |x: &Expr| {
        if is_subquery(x) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .is_break()
}

/// The setval over a table's rows that `stmt` is, if it is one (see the module comment).
pub(super) fn from_rows(stmt: &Statement, placement: &Placement) -> Option<FromRows> {
    let Statement::Query(q) = stmt else {
        return None;
    };
    if q.with.is_some()
        || q.order_by.is_some()
        || q.limit_clause.is_some()
        || q.fetch.is_some()
        || !q.locks.is_empty()
    {
        return None;
    }
    let SetExpr::Select(s) = q.body.as_ref() else {
        return None;
    };
    let [from] = s.from.as_slice() else {
        return None;
    };
    let TableFactor::Table {
        name, args: None, ..
    } = &from.relation
    else {
        return None;
    };
    if !from.joins.is_empty()
        || !ungrouped(s)
        || s.distinct.is_some()
        || s.into.is_some()
        || s.projection.len() != 1
        || s.selection
            .as_ref()
            .is_some_and(|w| has_aggregate_or_window(w, placement) || reads_subquery(w))
    {
        return None;
    }
    let call = match &s.projection[0] {
        SelectItem::UnnamedExpr(Expr::Function(f))
        | SelectItem::ExprWithAlias {
            expr: Expr::Function(f),
            ..
        } => f,
        _ => return None,
    };
    if !last_ident(&call.name).eq_ignore_ascii_case("setval") {
        return None;
    }
    let mut alone = stmt.clone();
    let Statement::Query(aq) = &mut alone else {
        return None;
    };
    let SetExpr::Select(a) = aq.body.as_mut() else {
        return None;
    };
    a.from.clear();
    a.selection = None;
    let mut aggregates = Vec::new();
    let read = sqlparser::ast::visit_expressions_mut(&mut a.projection, |e: &mut Expr| {
        if let Expr::Function(f) = e {
            if let Some((kind, read)) = plain_extreme(f) {
                if has_aggregate_or_window(read, placement) || reads_subquery(read) {
                    return ControlFlow::Break(());
                }
                aggregates.push((kind, read.to_string()));
                *e = Expr::value(Value::Placeholder(MARK.into()));
            }
        }
        ControlFlow::Continue(())
    })
    .is_continue();
    if !read {
        return None;
    }
    // What is left must be the call alone: no column, relation or other aggregate.
    if aggregates.is_empty()
        || reads_rows(&a.projection)
        || has_aggregate_or_window(&a.projection, placement)
    {
        return None;
    }
    Some(FromRows {
        alone,
        aggregates,
        from: from.to_string(),
        selection: s.selection.as_ref().map(|w| w.to_string()),
        table: name.to_string(),
    })
}

impl FromRows {
    /// A shard's reading: each aggregate over its rows as an SQL literal of its type
    /// (`CAST('150' AS bigint)`, `CAST(NULL AS bigint)`), one row each, in order.
    fn reading(&self) -> String {
        let items: Vec<String> = self
            .aggregates
            .iter()
            .map(|(kind, read)| {
                let value = format!("pg_catalog.{kind}({read})");
                format!(
                    "pg_catalog.format('CAST(%s AS %s)', pg_catalog.quote_nullable(({value})::pg_catalog.text), pg_catalog.pg_typeof({value}))"
                )
            })
            .collect();
        let filter = self
            .selection
            .as_ref()
            .map_or(String::new(), |w| format!(" WHERE {w}"));
        format!(
            "SELECT u.e FROM (SELECT ARRAY[{}] AS r FROM {}{filter}) AS s, \
             pg_catalog.unnest(s.r) WITH ORDINALITY AS u(e, n) ORDER BY u.n",
            items.join(", "),
            self.from
        )
    }

    /// The call alone, each aggregate replaced by its value over every shard's reading
    /// (`readings[shard][aggregate]`); None when a reading is not what was asked for.
    fn alone(&self, readings: &[Vec<String>]) -> Option<Statement> {
        if readings.iter().any(|r| r.len() != self.aggregates.len()) {
            return None;
        }
        let mut values = Vec::with_capacity(self.aggregates.len());
        for (i, (kind, _)) in self.aggregates.iter().enumerate() {
            let rows: Vec<String> = readings.iter().map(|r| format!("({})", r[i])).collect();
            let text = format!(
                "(SELECT pg_catalog.{kind}(v) FROM (VALUES {}) AS shardgate_values (v))",
                rows.join(", ")
            );
            values.push(
                sqlparser::parser::Parser::new(&PostgreSqlDialect {})
                    .try_with_sql(&text)
                    .ok()?
                    .parse_expr()
                    .ok()?,
            );
        }
        let mut alone = self.alone.clone();
        let mut next = values.into_iter();
        let Statement::Query(q) = &mut alone else {
            return None;
        };
        let SetExpr::Select(s) = q.body.as_mut() else {
            return None;
        };
        // The marks the aggregates left, met in the same order.
        let _ = sqlparser::ast::visit_expressions_mut(&mut s.projection, |e: &mut Expr| {
            if matches!(e, Expr::Value(v) if v.value == Value::Placeholder(MARK.into())) {
                if let Some(v) = next.next() {
                    *e = v;
                }
            }
            ControlFlow::<()>::Continue(())
        });
        Some(alone)
    }
}

impl Exec<'_> {
    /// The call alone for a setval over a table's rows (see the module comment), with the
    /// table's placement: Ok(None) when `stmt` is not one, Err when a reading failed, its error
    /// written for the client.
    pub(super) async fn setval_from_rows(
        &mut self,
        stmt: &Statement,
        params: &Params,
        types: &[u32],
    ) -> R<Result<Option<(Statement, TableRule)>, ()>> {
        let Some(rows) = from_rows(stmt, &self.placement) else {
            return Ok(Ok(None));
        };
        let Some(rule) = self.placement.rule(&rows.table).cloned() else {
            return Ok(Ok(None));
        };
        let shards: Vec<usize> = match rule {
            TableRule::Sharded { .. } => (0..self.links.len()).collect(),
            TableRule::Reference => vec![HOME],
            TableRule::Pinned { shard } => vec![shard],
        };
        let Some(request) = super::given_lookup::request(&rows.reading(), params, types) else {
            return Ok(Ok(None));
        };
        let mut readings = Vec::with_capacity(shards.len());
        for s in shards {
            match self.read_in_transaction(s, &request).await? {
                Ok(read) => readings.push(read),
                Err(()) => return Ok(Err(())),
            }
        }
        Ok(Ok(rows.alone(&readings).map(|alone| (alone, rule))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement() -> Placement {
        crate::config::Config::three_shards(
            "[tables.lines]\nshard_key = \"account_id\"\nkey_type = \"bigint\"\n",
        )
        .placement()
        .unwrap()
    }

    fn read(sql: &str) -> Option<FromRows> {
        let stmt = sqlparser::parser::Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .pop()
            .unwrap();
        from_rows(&stmt, &placement())
    }

    #[test]
    fn djangos_reset_is_read_with_its_two_aggregates() {
        let rows = read(
            "SELECT setval(pg_get_serial_sequence('\"lines\"','id'), coalesce(max(\"id\"), 1), max(\"id\") IS NOT null) FROM \"lines\" AS l WHERE l.account_id > $1;",
        )
        .unwrap();
        assert_eq!(
            rows.aggregates,
            vec![("max", "\"id\"".to_string()), ("max", "\"id\"".to_string())]
        );
        assert_eq!(rows.from, "\"lines\" AS l");
        assert_eq!(rows.selection.as_deref(), Some("l.account_id > $1"));
        assert_eq!(rows.table, "\"lines\"");
        let reading = rows.reading();
        assert!(reading.contains("pg_catalog.max(\"id\")"), "{reading}");
        assert!(
            reading.contains("FROM \"lines\" AS l WHERE l.account_id > $1"),
            "{reading}"
        );
        let alone = rows
            .alone(&[
                vec!["CAST('40' AS bigint)".into(), "CAST('40' AS bigint)".into()],
                vec!["CAST(NULL AS bigint)".into(), "CAST(NULL AS bigint)".into()],
            ])
            .unwrap()
            .to_string();
        assert_eq!(
            alone,
            "SELECT setval(pg_get_serial_sequence('\"lines\"', 'id'), coalesce((SELECT pg_catalog.max(v) FROM (VALUES (CAST('40' AS BIGINT)), (CAST(NULL AS BIGINT))) AS shardgate_values (v)), 1), (SELECT pg_catalog.max(v) FROM (VALUES (CAST('40' AS BIGINT)), (CAST(NULL AS BIGINT))) AS shardgate_values (v)) IS NOT NULL)"
        );
        // A reading of another length is not put in place.
        assert!(rows.alone(&[vec!["CAST('1' AS int)".into()]]).is_none());
    }

    #[test]
    fn only_max_and_min_of_one_table_are_read() {
        assert!(read("select setval('s', min(id)) from lines").is_some());
        for sql in [
            "select setval('s', max(id) + count(*)) from lines",
            "select setval('s', max(id), id > 3) from lines",
            "select setval('s', max(distinct id)) from lines",
            "select setval('s', max(id) filter (where id > 3)) from lines",
            "select setval('s', max(id)) from lines join refs on true",
            "select setval('s', max(id)) from lines where id in (select id from refs)",
            "select setval('s', max(id)) from lines group by account_id",
            "select setval('s', max(id)) from lines limit 1",
            "select setval('s', (select max(id) from refs)) from lines",
            "select setval(name, max(id)) from lines",
            "select setval('s', 5) from lines",
            "select nextval('s'), max(id) from lines",
            "select setval('s', max(id)) from generate_series(1, 3) id",
        ] {
            assert!(read(sql).is_none(), "{sql}");
        }
    }
}
