//! What keeps the copies of a reference table alike. A write of one runs on every shard, so
//! every value it computes must come out the same on every server. Values of a server's clock,
//! of its randomness or of its identity do not: `now()` is each shard's own transaction start,
//! `gen_random_uuid()` a different uuid on each. A write calling one is refused, rather than
//! leaving copies that answer differently depending on which shard a later read goes to.
//!
//! Known by name: PostgreSQL's built-ins of that kind and the uuid-ossp generators. A function
//! of the user's own that is volatile is not seen here (docs/routing.md says so).

use crate::placement::{Placement, TableRule};
use sqlparser::ast::{
    AlterColumnOperation, AlterTableOperation, ColumnOption, DataType, Distinct, Expr,
    FunctionArguments, LimitClause, NonBlock, ObjectName, ObjectNamePart, SetExpr, Statement,
    Value, ValueWithSpan, WindowType,
};
use std::ops::ControlFlow;

/// Functions whose value at one moment differs between servers, sorted for `binary_search`.
/// `nextval` is not here: writers of one reference table take turns (see `executor::write`), so
/// a sequence advanced only through the proxy gives every copy the same value.
pub(super) const DIFFER_BETWEEN_SERVERS: &[&str] = &[
    "clock_timestamp",
    "current_date",
    "current_time",
    "current_timestamp",
    "gen_random_uuid",
    "inet_client_addr",
    "inet_client_port",
    "inet_server_addr",
    "inet_server_port",
    "localtime",
    "localtimestamp",
    "now",
    "pg_backend_pid",
    "pg_conf_load_time",
    "pg_current_snapshot",
    "pg_current_xact_id",
    "pg_current_xact_id_if_assigned",
    "pg_postmaster_start_time",
    "random",
    "random_normal",
    "statement_timestamp",
    "timeofday",
    "transaction_timestamp",
    "txid_current",
    "txid_current_if_assigned",
    "txid_current_snapshot",
    "uuid_generate_v1",
    "uuid_generate_v1mc",
    "uuid_generate_v4",
];

/// Date and time input words that read the server's clock when the text is converted.
const CLOCK_WORDS: &[&str] = &["now", "today", "tomorrow", "yesterday"];

/// The first call (or clock word) in `node` whose value differs between servers, as written.
pub(crate) fn differing_value<V: sqlparser::ast::Visit>(node: &V) -> Option<String> {
    differing(node, false)
}

/// `differing_value`, where the transaction's clock as the proxy gives it (`sql::clock`) does
/// not differ: every shard of the transaction answers the same time.
pub(crate) fn differing_besides_the_clock<V: sqlparser::ast::Visit>(node: &V) -> Option<String> {
    differing(node, true)
}

fn differing<V: sqlparser::ast::Visit>(node: &V, one_clock: bool) -> Option<String> {
    crate::sql::first_expression(node, |e: &Expr| match e {
        Expr::Function(f) if crate::sql::clock::stamped_call(&f.name).is_some() => {
            (!one_clock).then(|| crate::sql::clock::call_as_written(&f.name))
        }
        Expr::Function(f) => {
            let name = match f.name.0.last() {
                Some(ObjectNamePart::Identifier(i)) => i.value.to_ascii_lowercase(),
                _ => String::new(),
            };
            // age(t) measures from the current date; age(a, b) is plain arithmetic.
            let one_argument = matches!(&f.args, FunctionArguments::List(l) if l.args.len() == 1);
            let differs = DIFFER_BETWEEN_SERVERS.binary_search(&name.as_str()).is_ok()
                || (name == "age" && one_argument);
            differs.then(|| format!("{}()", f.name))
        }
        Expr::Cast {
            expr, data_type, ..
        } if is_date_or_time(data_type) => clock_word(expr),
        Expr::TypedString(t) if is_date_or_time(&t.data_type) => match &t.value {
            ValueWithSpan {
                value: Value::SingleQuotedString(s),
                ..
            } => clock_text(s),
            _ => None,
        },
        _ => None,
    })
}

fn is_date_or_time(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Date
            | DataType::Time(..)
            | DataType::Timestamp(..)
            | DataType::Datetime(..)
            | DataType::Custom(..)
    ) && {
        let name = t.to_string().to_ascii_lowercase();
        ["date", "time", "timestamp", "timetz", "timestamptz"]
            .iter()
            .any(|n| name.starts_with(n))
    }
}

fn clock_word(e: &Expr) -> Option<String> {
    match e {
        Expr::Value(ValueWithSpan {
            value: Value::SingleQuotedString(s),
            ..
        }) => clock_text(s),
        _ => None,
    }
}

fn clock_text(s: &str) -> Option<String> {
    let word = s.trim().to_ascii_lowercase();
    CLOCK_WORDS
        .contains(&word.as_str())
        .then(|| format!("'{}'", s.trim()))
}

/// Refuses a write of the reference table `table` that computes a value differing between
/// servers; `None` when every copy would get the same.
/// The transaction's clock is allowed: every copy is written in one transaction, and the
/// executor refuses the write if a shard it reaches has not been given the time
/// (`executor::write`).
pub(super) fn check_write<V: sqlparser::ast::Visit>(table: &str, write: &V) -> Option<super::Plan> {
    differing_besides_the_clock(write).map(|what| {
        super::refuse(
            format!(
                "a write of reference table {table} may not use {what}: each shard's copy would get its own value"
            ),
            "Compute the value once, in the application or with a SELECT through shardgate, and write it as a constant or parameter.",
        )
    })
}

/// Refuses a write of the reference table `table` whose rows or values each copy would pick
/// its own way: by a system column outside RETURNING (`ctid`, `xmin`, `tableoid` ... differ
/// between copies), or through rows a LIMIT, OFFSET, FETCH or DISTINCT ON picks, or a window
/// function numbers, without an ORDER BY (`DELETE ... WHERE id IN (SELECT id ... LIMIT 100)`
/// deletes the first rows each copy happens to read). An INSERT ... SELECT whose source picks
/// rows so is read once by the executor (see `executor::copies_source`) before it comes here.
pub(super) fn check_rows(table: &str, write: &Statement) -> Option<super::Plan> {
    let mut parts = write.clone();
    match &mut parts {
        Statement::Insert(i) => i.returning = None,
        Statement::Update(u) => u.returning = None,
        Statement::Delete(d) => d.returning = None,
        _ => {}
    }
    let what = match super::system_column(&parts) {
        Some(column) => format!("the system column {column}"),
        None => match rows_picked_by_order(&parts) {
            Some(PickedBy {
                ordered: false,
                what,
            }) => format!("rows {what} picks"),
            _ => return None,
        },
    };
    Some(super::refuse(
        format!("a write of reference table {table} by {what} is not supported: each shard's copy would pick its own rows"),
        "Name the rows by a key (a primary key or unique column), or order the subquery by one.",
    ))
}

/// A LIMIT, OFFSET, FETCH or DISTINCT ON, or a window function, in a statement: rows picked or
/// numbered by the order they come in; or SKIP LOCKED, rows picked by the locks a server holds.
pub(crate) struct PickedBy {
    /// Under an ORDER BY (of the query, or of the window), which may still leave ties.
    pub ordered: bool,
    /// What picks them, in words.
    pub what: &'static str,
}

/// The first place `node` picks or numbers rows by their order, if any (see `PickedBy`):
/// unordered ones first.
pub(crate) fn rows_picked_by_order<V: sqlparser::ast::Visit>(node: &V) -> Option<PickedBy> {
    #[derive(Default)]
    struct Find {
        ordered: Option<&'static str>,
        unordered: Option<&'static str>,
    }
    impl sqlparser::ast::Visitor for Find {
        type Break = ();
        fn pre_visit_query(&mut self, q: &sqlparser::ast::Query) -> ControlFlow<()> {
            if q.locks
                .iter()
                .any(|l| l.nonblock == Some(NonBlock::SkipLocked))
            {
                self.note(false, "SKIP LOCKED (by the locks each server holds)")?;
            }
            // `LIMIT 0` picks no row at all (the executor's form of a source without rows).
            let none = matches!(&q.limit_clause, Some(LimitClause::LimitOffset {
                limit: Some(Expr::Value(v)), offset: None, ..
            }) if v.value == Value::Number("0".into(), false));
            let distinct_on = matches!(q.body.as_ref(), SetExpr::Select(s)
                if matches!(s.distinct, Some(Distinct::On(_))));
            let what = if q.limit_clause.is_some() && !none {
                Some("a LIMIT or OFFSET without ORDER BY")
            } else if q.fetch.is_some() {
                Some("a FETCH without ORDER BY")
            } else if distinct_on {
                Some("DISTINCT ON without ORDER BY")
            } else {
                None
            };
            if let Some(what) = what {
                self.note(q.order_by.is_some(), what)?;
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if let Expr::Function(f) = e {
                let what = "a window function without ORDER BY";
                match &f.over {
                    Some(WindowType::WindowSpec(w)) => self.note(!w.order_by.is_empty(), what)?,
                    Some(WindowType::NamedWindow(_)) => self.note(false, what)?,
                    None => {}
                }
            }
            ControlFlow::Continue(())
        }
    }
    impl Find {
        fn note(&mut self, ordered: bool, what: &'static str) -> ControlFlow<()> {
            if ordered {
                self.ordered.get_or_insert(what);
                ControlFlow::Continue(())
            } else {
                self.unordered = Some(what);
                ControlFlow::Break(())
            }
        }
    }
    let mut find = Find::default();
    let _ = node.visit(&mut find);
    match (find.unordered, find.ordered) {
        (Some(what), _) => Some(PickedBy {
            ordered: false,
            what,
        }),
        (None, Some(what)) => Some(PickedBy {
            ordered: true,
            what,
        }),
        _ => None,
    }
}

/// Refuses a write of the reference table `table` that reads a table living on one shard:
/// every copy would read that shard's table where it has it, and an empty one elsewhere. An
/// INSERT ... SELECT from one is read there first by the executor and written as VALUES (see
/// `executor::copies_source`); what reaches the planner is the rest.
pub(super) fn check_reads<V: sqlparser::ast::Visit>(
    table: &str,
    write: &V,
    placement: &Placement,
) -> Option<super::Plan> {
    let shard = super::relations(write, placement).pinned_shard()?;
    Some(super::refuse(
        format!(
            "a write of reference table {table} that reads tables living on shard {} is not supported: each shard's copy would read its own",
            placement.shard_names[shard]
        ),
        "Read the rows first and write them as values, or use INSERT ... SELECT, which reads its source once.",
    ))
}

/// Refuses a definition of the reference table `table` (CREATE TABLE, ALTER TABLE) whose
/// defaults, filling query or rewritten columns compute a value differing between servers: every
/// INSERT that leaves such a column out, and every row an ALTER fills, would differ by copy.
pub(super) fn check_definition(
    table: &ObjectName,
    stmt: &Statement,
    placement: &Placement,
) -> Option<super::Plan> {
    if !matches!(
        placement.rule(&table.to_string()),
        Some(TableRule::Reference)
    ) {
        return None;
    }
    if let Some(column) = numbered_column(stmt) {
        return Some(super::refuse(
            format!("filling column {column} of reference table {table} from a sequence is not supported: each shard's copy would number its rows in its own physical order"),
            format!("Add the column without a default, set it by key (UPDATE {table} SET {column} = ... WHERE ...), then give it its default (ALTER COLUMN {column} SET DEFAULT nextval(...), or ADD GENERATED BY DEFAULT AS IDENTITY), which fills no row."),
        ));
    }
    differing_value(stmt).map(|what| {
        super::refuse(
            format!(
                "reference table {table} may not take values from {what}: each shard's copy would get its own"
            ),
            "Give the column no such default and write the value in each INSERT, computed once (in the application, or by a SELECT through shardgate); or declare the table sharded.",
        )
    })
}

/// The column an ALTER TABLE fills, for the rows the table holds, from a sequence: a serial or
/// identity column added, or one whose default or `USING` calls `nextval`. PostgreSQL fills
/// them in the order it reads the rows, which is each copy's own physical order.
fn numbered_column(stmt: &Statement) -> Option<String> {
    let Statement::AlterTable(at) = stmt else {
        return None;
    };
    at.operations.iter().find_map(|op| match op {
        AlterTableOperation::AddColumn { column_def, .. } => {
            let serial = matches!(&column_def.data_type,
                DataType::Custom(name, _) if super::create_table::is_serial(&super::last_ident(name)));
            let identity = column_def.options.iter().any(|o| {
                matches!(
                    &o.option,
                    ColumnOption::Identity(_)
                        | ColumnOption::Generated {
                            generation_expr: None,
                            ..
                        }
                )
            });
            (serial || identity || calls_nextval(column_def)).then(|| column_def.name.value.clone())
        }
        AlterTableOperation::AlterColumn {
            column_name,
            op: AlterColumnOperation::SetDataType { using: Some(u), .. },
        } if calls_nextval(u) => Some(column_name.value.clone()),
        _ => None,
    })
}

fn calls_nextval<V: sqlparser::ast::Visit>(node: &V) -> bool {
    crate::sql::first_expression(node, |e| {
        matches!(e, Expr::Function(f) if super::last_ident(&f.name).eq_ignore_ascii_case("nextval"))
            .then_some(())
    })
    .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn found(sql: &str) -> Option<String> {
        let stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        differing_value(&stmts[0])
    }

    #[test]
    fn the_list_is_sorted_for_the_binary_search() {
        assert!(DIFFER_BETWEEN_SERVERS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn rows_picked_by_their_order_or_a_system_column_are_refused() {
        let checked = |sql: &str| {
            let stmt = Parser::parse_sql(&PostgreSqlDialect {}, sql)
                .unwrap()
                .remove(0);
            check_rows("r", &stmt)
        };
        for sql in [
            "delete from r where id in (select id from r limit 2)",
            "update r set x = 1 where ctid = '(0,1)'",
            "update r set x = (select y from s fetch first 1 row only)",
            "insert into r values ((select y from s limit 1))",
            "delete from r where id in (select distinct on (k) id from s)",
            "update r set x = (select max(n) from (select row_number() over () n from s) t)",
            "update r set taken = true where id = (select id from r where not taken order by id limit 1 for update skip locked)",
        ] {
            assert!(checked(sql).is_some(), "{sql}");
        }
        for sql in [
            "delete from r where id in (select id from r order by id limit 2)",
            "insert into r select * from s limit 0",
            "update r set x = 1 where id = 5 returning ctid",
            "insert into r values (1) returning xmin",
            "update r set x = (select max(n) from (select row_number() over (order by id) n from s) t)",
        ] {
            assert!(checked(sql).is_none(), "{sql}");
        }
    }

    #[test]
    fn columns_filled_from_a_sequence_for_existing_rows_are_found() {
        let numbered =
            |sql: &str| numbered_column(&Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap()[0]);
        for sql in [
            "alter table r add column n serial",
            "alter table r add column n bigserial not null",
            "alter table r add column n int generated by default as identity",
            "alter table r add column n int generated always as identity",
            "alter table r add column n bigint default nextval('s')",
            "alter table r alter column m type bigint using nextval('s')",
        ] {
            assert_eq!(
                numbered(sql).as_deref(),
                Some(if sql.contains("alter column") {
                    "m"
                } else {
                    "n"
                }),
                "{sql}"
            );
        }
        for sql in [
            "alter table r add column serial_no int",
            "alter table r add column n int default 0",
            "alter table r add column n int generated always as (m * 2) stored",
            "alter table r alter column n set default nextval('s')",
            "alter table r alter column m type bigint using m::bigint",
        ] {
            assert_eq!(numbered(sql), None, "{sql}");
        }
    }

    #[test]
    fn clocks_randomness_and_server_identity_are_found_wherever_they_stand() {
        for sql in [
            "insert into r values ('a', now())",
            "insert into r values ('a', CURRENT_TIMESTAMP)",
            "insert into r values ('a', current_date)",
            "insert into r values ('a', LOCALTIMESTAMP)",
            "update r set x = random()::text where k = 'a'",
            "update r set u = gen_random_uuid()",
            "update r set u = public.uuid_generate_v4()",
            "delete from r where t < now() - interval '1 day'",
            "insert into r select 'a', clock_timestamp()",
            "insert into r values ('a', 'b') on conflict (k) do update set t = statement_timestamp()",
            "insert into r values ('a', 'now'::timestamptz)",
            "insert into r values ('a', timestamp 'today')",
            "update r set d = date ' Tomorrow '",
            "update r set n = age(t)",
            "update r set n = pg_backend_pid()",
        ] {
            assert!(found(sql).is_some(), "{sql}");
        }
    }

    #[test]
    fn the_transactions_clock_passes_in_writes_only() {
        let stmts = Parser::parse_sql(
            &PostgreSqlDialect {},
            "insert into r values ('a', shardgate.now(), shardgate.\"current_date\"())",
        )
        .unwrap();
        assert_eq!(differing_besides_the_clock(&stmts[0]), None);
        assert_eq!(differing_value(&stmts[0]).as_deref(), Some("now()"));
        let stmts = Parser::parse_sql(
            &PostgreSqlDialect {},
            "update r set t = shardgate.now(), u = clock_timestamp()",
        )
        .unwrap();
        assert_eq!(
            differing_besides_the_clock(&stmts[0]).as_deref(),
            Some("clock_timestamp()")
        );
    }

    #[test]
    fn values_every_server_computes_alike_pass() {
        for sql in [
            "insert into r values ('a', 'b')",
            "insert into r values (nextval('r_id_seq'), lower('X'))",
            "update r set n = age(timestamp '2024-01-01', timestamp '2020-01-01')",
            "update r set t = timestamptz '2024-01-01 00:00:00+00'",
            "update r set label = 'now'",
            "update r set label = 'today'::text",
            "insert into r values ('a', 'now'::text)",
            "delete from r where k = 'random'",
        ] {
            assert_eq!(found(sql), None, "{sql}");
        }
    }
}
