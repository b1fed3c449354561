//! The conflict target of `INSERT ... ON CONFLICT (columns)` into a sharded table.
//!
//! Each row goes to its key's shard, and PostgreSQL looks for a conflicting row there only. A
//! target that includes the shard key finds every row it could conflict with, since rows of
//! one key share a shard. A target without it (`ON CONFLICT (id)` on a table sharded by
//! `account_id`) names a unique index that holds per shard only: the proxy's DDL checks admit
//! one only over a column the cluster's sequence fills, and an upsert by it gives that column
//! its own values, so a row of that id under another key on another shard would be missed and
//! a second row written where PostgreSQL updates (or skips) the first. Such a statement is
//! refused.
//!
//! Not judged here: `ON CONFLICT ON CONSTRAINT` and `ON CONFLICT DO NOTHING` without a
//! target, whose arbiters are in the shards' catalogs; the executor judges them (see
//! `executor::upsert_arbiters`).

use super::{refuse, Plan};
use sqlparser::ast::{ConflictTarget, Insert, ObjectName, OnInsert};

/// The refusal of an ON CONFLICT whose target columns leave out `key_column`.
pub(super) fn refusal(ins: &Insert, table: &ObjectName, key_column: &str) -> Option<Plan> {
    let Some(OnInsert::OnConflict(c)) = &ins.on else {
        return None;
    };
    let Some(ConflictTarget::Columns(columns)) = &c.conflict_target else {
        return None;
    };
    if columns
        .iter()
        .any(|c| c.value.eq_ignore_ascii_case(key_column))
    {
        return None;
    }
    let listed: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
    Some(refuse(
        format!(
            "ON CONFLICT ({}) on sharded table {table} would look for conflicts on one shard only",
            listed.join(", ")
        ),
        format!(
            "Rows with the same {} may sit on other shards, under another {key_column}. Include the shard key in the conflict target and in a unique constraint over the same columns (UNIQUE ({key_column}, {})), or update by the shard key.",
            listed.join(", "),
            listed.join(", "),
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::ast::Statement;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn judged(sql: &str) -> bool {
        let Statement::Insert(ins) = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0)
        else {
            panic!("an insert")
        };
        let sqlparser::ast::TableObject::TableName(t) = &ins.table else {
            panic!("a table")
        };
        refusal(&ins, t, "account_id").is_some()
    }

    #[test]
    fn a_target_without_the_key_is_refused() {
        assert!(judged(
            "INSERT INTO lines (id, account_id) VALUES (1, 2) ON CONFLICT (id) DO UPDATE SET note = 'x'"
        ));
        assert!(judged(
            r#"INSERT INTO lines ("id", account_id) VALUES (1, 2) ON CONFLICT ("id") DO NOTHING"#
        ));
    }

    #[test]
    fn a_target_with_the_key_and_the_forms_judged_elsewhere_are_not() {
        for sql in [
            "INSERT INTO lines (id, account_id) VALUES (1, 2) ON CONFLICT (id, account_id) DO NOTHING",
            "INSERT INTO lines (id, account_id) VALUES (1, 2) ON CONFLICT DO NOTHING",
            "INSERT INTO lines (id, account_id) VALUES (1, 2) ON CONFLICT ON CONSTRAINT lines_pkey DO NOTHING",
            "INSERT INTO lines (id, account_id) VALUES (1, 2)",
        ] {
            assert!(!judged(sql), "{sql}");
        }
    }
}
