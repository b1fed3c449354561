//! Refusing statements on the rows of a table whose key column the proxy found, while it ran,
//! to be one it cannot route by (`Placement::unroutable`, filled by `backend::key_columns`'s
//! watch after DDL run on a shard directly).
//!
//! Such a column compares keys otherwise than the proxy hashes them, so a read by key could
//! miss a row another shard holds and a write could store a duplicate there: every plan that
//! reads or writes the table's rows is refused. DDL and procedural code still run, so that the
//! column can be put right through the proxy (its own check judges the result), as do
//! statements that name other tables only.

use super::query::tables_read;
use super::Plan;
use crate::error::{sqlstate, PgError};
use crate::placement::Placement;
use sqlparser::ast::{CopySource, Statement};

/// `planned`, or its refusal when it touches rows of an unroutable table that `stmt` names.
pub(super) fn gate(stmt: &Statement, placement: &Placement, planned: Plan) -> Plan {
    let touches_rows = matches!(
        planned,
        Plan::Shard { .. }
            | Plan::Scatter { .. }
            | Plan::Write { .. }
            | Plan::Copy(_)
            | Plan::Cursor(_)
    );
    if !touches_rows {
        return planned;
    }
    let copied = match stmt {
        Statement::Copy {
            source: CopySource::Table { table_name, .. },
            ..
        } => Some(table_name.clone()),
        _ => None,
    };
    let found = copied
        .into_iter()
        .chain(tables_read(stmt))
        .find_map(|name| {
            let name = name.to_string();
            placement
                .unroutable(&name)
                .map(|why| (name, why.to_string()))
        });
    match found {
        None => planned,
        Some((table, why)) => Plan::Reject(
            PgError::error(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!("the rows of {table} cannot be routed now: {why}"),
            )
            .with_hint(format!(
                "{} The proxy checks again every health_check_interval_secs and routes the \
                 table again once the column is right on every shard.",
                crate::backend::key_columns::HINT
            )),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::placement;
    use super::super::{plan, Plan};
    use crate::router::params::Params;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;
    use std::sync::Arc;

    fn planned(sql: &str, bad: &[&str]) -> Plan {
        let mut p = placement();
        p.unroutable = Arc::new(
            bad.iter()
                .map(|t| (t.to_string(), "shard s2: char(8)".to_string()))
                .collect(),
        );
        let stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        plan(&stmts[0], &p, &Params::default())
    }

    fn refused(plan: &Plan) -> Option<String> {
        match plan {
            Plan::Reject(e) => Some(e.message.clone()),
            _ => None,
        }
    }

    #[test]
    fn reads_and_writes_of_its_rows_are_refused() {
        for sql in [
            "select * from users where name = 'x'",
            "select count(*) from public.\"users\"",
            "select * from countries c join users u on u.name = c.code where u.name = 'x'",
            "insert into users (name) values ('x')",
            "update users set email = 'e' where name = 'x'",
            "delete from users where name = 'x'",
            "copy users from stdin",
            "copy users to stdout",
            "copy (select * from users) to stdout",
            "declare c cursor for select * from users",
        ] {
            let why = refused(&planned(sql, &["users"]));
            assert_eq!(
                why.as_deref(),
                Some(if sql.contains("public.") {
                    "the rows of public.\"users\" cannot be routed now: shard s2: char(8)"
                } else {
                    "the rows of users cannot be routed now: shard s2: char(8)"
                }),
                "{sql}"
            );
        }
    }

    #[test]
    fn other_tables_and_ddl_run_as_planned() {
        for sql in [
            "select * from accounts where id = 1",
            "insert into countries values ('x')",
            "alter table users alter column name type text",
            "create index on users (name)",
            "select 1",
        ] {
            let with = planned(sql, &["users"]);
            assert_eq!(with, planned(sql, &[]), "{sql}");
            assert!(refused(&with).is_none(), "{sql}: {with:?}");
        }
    }
}
