//! A sequence set from the values a table holds: `SELECT setval(sequence, ...max(column)...)
//! FROM table`, as Django resets sequences after `loaddata` and in `sqlsequencereset` (`SELECT
//! setval(pg_get_serial_sequence('"t"','id'), coalesce(max("id"), 1), max("id") IS NOT null)
//! FROM "t";`), and `SELECT setval(sequence, (SELECT max(column) FROM table))`, as load scripts
//! and people write it after copying rows in with their ids.
//!
//! Over several shards the merge cannot compute the first (setval is no aggregate), and run on
//! one shard either would set the sequence from that shard's rows alone. The proxy reads each
//! `max()` and `min()` where the table's rows are (every shard of a sharded table, in the
//! client's transaction, so rows it just loaded count), puts the combined value in place of
//! each, and runs the call alone, as `sequence_moves` runs any `SELECT setval(...)`: checked
//! against the values in use, and sent where the sequence's tables draw from it.
//!
//! Only rows read through plain `max()` and `min()` of one table (a WHERE without subqueries)
//! are read so; anything else is left as it was: the planner refuses the first form over
//! several shards, and the second runs on the first shard, where setval's check refuses a
//! value below the ones in use.

use super::session::{Exec, R};
use crate::placement::{Placement, TableRule};
use crate::router::params::Params;
use crate::router::plan::{has_aggregate_or_window, last_ident, ungrouped, HOME};
use sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectNamePart, Query,
    SelectItem, SetExpr, Statement, Value,
};
use std::ops::ControlFlow;

/// Where an aggregate stood in the call, until its value replaces it: no parameter a client
/// can send is spelled so.
const MARK: &str = "$shardgate_aggregate";

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

/// The rows of one table a call reads, through the plain `max()` and `min()` of one SELECT.
struct Part {
    /// The aggregates, in the order they are met: `max` or `min`, and the expression each
    /// reads.
    aggregates: Vec<(&'static str, String)>,
    /// The table as written in FROM (with its alias), and the WHERE condition.
    from: String,
    selection: Option<String>,
    /// The table's name, for its placement.
    table: String,
}

/// A `setval` over tables' rows, as read from its statement.
pub(super) struct FromRows {
    /// The call alone, each aggregate replaced by `MARK`, its FROM and WHERE gone.
    alone: Statement,
    /// What it reads, in the order the marks are met.
    parts: Vec<Part>,
}

/// A query of one table's rows whose one item reads them only through plain `max()` and
/// `min()`: the item, each aggregate replaced by `MARK`, and what it reads.
fn over_rows(q: &Query, placement: &Placement) -> Option<(Expr, Part)> {
    if q.with.is_some()
        || q.order_by.is_some()
        || q.limit_clause.is_some()
        || q.fetch.is_some()
        || !q.locks.is_empty()
    {
        return None;
    }
    let (s, from, name) = crate::sql::lone_table(q)?;
    if !ungrouped(s)
        || s.distinct.is_some()
        || s.into.is_some()
        || s.selection
            .as_ref()
            .is_some_and(|w| has_aggregate_or_window(w, placement) || reads_subquery(w))
    {
        return None;
    }
    let mut item = match s.projection.as_slice() {
        [SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. }] => e.clone(),
        _ => return None,
    };
    let mut aggregates = Vec::new();
    let read = sqlparser::ast::visit_expressions_mut(&mut item, |e: &mut Expr| {
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
    // What is left must not read the rows: no column, relation or other aggregate.
    if !read
        || aggregates.is_empty()
        || reads_rows(&item)
        || has_aggregate_or_window(&item, placement)
    {
        return None;
    }
    let part = Part {
        aggregates,
        from: from.to_string(),
        selection: s.selection.as_ref().map(|w| w.to_string()),
        table: name.to_string(),
    };
    Some((item, part))
}

/// Whether `f` calls `setval`, under any schema.
fn is_setval(f: &Function) -> bool {
    matches!(f.name.0.last(), Some(ObjectNamePart::Identifier(i)) if i.value.eq_ignore_ascii_case("setval"))
}

/// The one SELECT item of a query without set operations.
fn only_item(stmt: &mut Statement) -> Option<&mut sqlparser::ast::Select> {
    let Statement::Query(q) = stmt else {
        return None;
    };
    match q.body.as_mut() {
        SetExpr::Select(s) if s.projection.len() == 1 => Some(s),
        _ => None,
    }
}

/// The setval over tables' rows that `stmt` is, if it is one (see the module comment).
pub(super) fn from_rows(stmt: &Statement, placement: &Placement) -> Option<FromRows> {
    let Statement::Query(q) = stmt else {
        return None;
    };
    // Every statement a session runs is asked: the one item answers for nearly all.
    let SetExpr::Select(s) = q.body.as_ref() else {
        return None;
    };
    match s.projection.as_slice() {
        [SelectItem::UnnamedExpr(Expr::Function(f))
        | SelectItem::ExprWithAlias {
            expr: Expr::Function(f),
            ..
        }] if is_setval(f) => {}
        _ => return None,
    }
    // `SELECT setval(...) FROM t`.
    if !s.from.is_empty() {
        let (item, part) = over_rows(q, placement)?;
        let mut alone = stmt.clone();
        let s = only_item(&mut alone)?;
        s.from.clear();
        s.selection = None;
        match &mut s.projection[0] {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => *e = item,
            _ => return None,
        }
        return Some(FromRows {
            alone,
            parts: vec![part],
        });
    }
    // `SELECT setval(sequence, (SELECT max(id) FROM t))`, when some such subquery reads a
    // table that the first shard, where the call runs, does not hold whole. Other subqueries
    // (of the catalog, say) stay as they are.
    let mut alone = stmt.clone();
    let s = only_item(&mut alone)?;
    let mut parts = Vec::new();
    let _ = sqlparser::ast::visit_expressions_mut(&mut s.projection, |e: &mut Expr| {
        if let Expr::Subquery(sub) = e {
            if let Some((item, part)) = over_rows(sub, placement) {
                parts.push(part);
                *e = Expr::Nested(Box::new(item));
            }
        }
        ControlFlow::<()>::Continue(())
    });
    let apart = |p: &Part| match placement.rule(&p.table) {
        Some(TableRule::Sharded { .. }) => true,
        Some(TableRule::Pinned { shard }) => *shard != HOME,
        _ => false,
    };
    parts.iter().any(apart).then_some(FromRows { alone, parts })
}

impl Part {
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

    /// Each aggregate's value over every shard's reading (`readings[shard][aggregate]`), as
    /// an expression; None when a reading is not what was asked for.
    fn values(&self, readings: &[Vec<String>]) -> Option<Vec<Expr>> {
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
            values.push(crate::sql::expression(&text).ok()?);
        }
        Some(values)
    }
}

impl FromRows {
    /// The call alone, each aggregate replaced by its value (`readings[part][shard]`); None
    /// when a reading is not what was asked for.
    fn alone(&self, readings: &[Vec<Vec<String>>]) -> Option<Statement> {
        if readings.len() != self.parts.len() {
            return None;
        }
        let mut values = Vec::new();
        for (part, read) in self.parts.iter().zip(readings) {
            values.extend(part.values(read)?);
        }
        let mut alone = self.alone.clone();
        let mut next = values.into_iter();
        let s = only_item(&mut alone)?;
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
    /// The call alone for a setval over tables' rows (see the module comment), with the
    /// placement of each table it read: Ok(None) when `stmt` is not one, Err when a reading
    /// failed, its error written for the client.
    pub(super) async fn setval_from_rows(
        &mut self,
        stmt: &Statement,
        params: &Params,
        types: &[u32],
    ) -> R<Result<Option<(Statement, Vec<TableRule>)>, ()>> {
        let Some(rows) = from_rows(stmt, &self.placement) else {
            return Ok(Ok(None));
        };
        let (mut rules, mut readings) = (Vec::new(), Vec::new());
        for part in &rows.parts {
            let Some(rule) = self.placement.rule(&part.table).cloned() else {
                return Ok(Ok(None));
            };
            let shards: Vec<usize> = match rule {
                TableRule::Sharded { .. } => (0..self.links.len()).collect(),
                TableRule::Reference => vec![HOME],
                TableRule::Pinned { shard } => vec![shard],
            };
            let Some(request) = super::given_lookup::request(&part.reading(), params, types) else {
                return Ok(Ok(None));
            };
            let mut read = Vec::with_capacity(shards.len());
            for s in shards {
                match self.read_in_transaction(s, &request).await? {
                    Ok(r) => read.push(r),
                    Err(()) => return Ok(Err(())),
                }
            }
            rules.push(rule);
            readings.push(read);
        }
        Ok(Ok(rows.alone(&readings).map(|alone| (alone, rules))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement() -> Placement {
        crate::config::Config::three_shards(
            "[tables.lines]\nshard_key = \"account_id\"\nkey_type = \"bigint\"\n[tables.refs]\nreference = true\n",
        )
        .placement()
        .unwrap()
    }

    fn read(sql: &str) -> Option<FromRows> {
        let stmt =
            sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, sql)
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
        let [part] = rows.parts.as_slice() else {
            panic!("one table read");
        };
        assert_eq!(
            part.aggregates,
            vec![("max", "\"id\"".to_string()), ("max", "\"id\"".to_string())]
        );
        assert_eq!(part.from, "\"lines\" AS l");
        assert_eq!(part.selection.as_deref(), Some("l.account_id > $1"));
        assert_eq!(part.table, "\"lines\"");
        let reading = part.reading();
        assert!(reading.contains("pg_catalog.max(\"id\")"), "{reading}");
        assert!(
            reading.contains("FROM \"lines\" AS l WHERE l.account_id > $1"),
            "{reading}"
        );
        let alone = rows
            .alone(&[vec![
                vec!["CAST('40' AS bigint)".into(), "CAST('40' AS bigint)".into()],
                vec!["CAST(NULL AS bigint)".into(), "CAST(NULL AS bigint)".into()],
            ]])
            .unwrap()
            .to_string();
        assert_eq!(
            alone,
            "SELECT setval(pg_get_serial_sequence('\"lines\"', 'id'), coalesce((SELECT pg_catalog.max(v) FROM (VALUES (CAST('40' AS BIGINT)), (CAST(NULL AS BIGINT))) AS shardgate_values (v)), 1), (SELECT pg_catalog.max(v) FROM (VALUES (CAST('40' AS BIGINT)), (CAST(NULL AS BIGINT))) AS shardgate_values (v)) IS NOT NULL)"
        );
        // A reading of another length is not put in place.
        assert!(rows
            .alone(&[vec![vec!["CAST('1' AS int)".into()]]])
            .is_none());
    }

    #[test]
    fn a_subquery_over_a_sharded_tables_rows_is_read() {
        let rows = read(
            "select setval('lines_id_seq', (select coalesce(max(id), 0) + 1 from lines), (select max(id) is null from lines where account_id = 3))",
        )
        .unwrap();
        assert_eq!(rows.parts.len(), 2);
        assert_eq!(rows.parts[1].selection.as_deref(), Some("account_id = 3"));
        let one = |v: &str| vec![vec![format!("CAST({v} AS bigint)")]];
        let alone = rows.alone(&[one("'9'"), one("NULL")]).unwrap().to_string();
        assert_eq!(
            alone,
            "SELECT setval('lines_id_seq', (coalesce((SELECT pg_catalog.max(v) FROM (VALUES (CAST('9' AS BIGINT))) AS shardgate_values (v)), 0) + 1), ((SELECT pg_catalog.max(v) FROM (VALUES (CAST(NULL AS BIGINT))) AS shardgate_values (v)) IS NULL))"
        );
        // Every table it reads is whole on the first shard: left as it is.
        assert!(read("select setval('refs_id_seq', (select max(id) from refs))").is_none());
        assert!(
            read("select setval('s', (select max(a.id) from lines a join lines b on true))")
                .is_none()
        );
        assert!(read("select setval('s', (select max(id) from lines), (select true))").is_some());
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
            "select setval('s', (select count(*) from lines))",
            "select nextval((select max(id) from lines)::text)",
        ] {
            assert!(read(sql).is_none(), "{sql}");
        }
    }
}
