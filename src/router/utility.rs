//! Utility statements by their leading keywords: every statement PostgreSQL's grammar has is
//! broadcast, routed, handed to a dedicated executor path, or refused with its reason. None is
//! answered with "could not analyse".
//!
//! This table is consulted for text sqlparser cannot read (and for the utility statements it
//! reads but the planner has no AST rule for), so it must never route by a word that a data
//! statement could start with: SELECT, INSERT, UPDATE, DELETE, WITH and MERGE are planned from
//! their AST only.

use super::plan::{Plan, HOME};
use crate::error::{sqlstate, PgError};

/// The plan for a utility statement whose first three words (lower case) are `w`; None when the
/// words name no utility statement.
pub fn plan_keywords(w: &[&str; 3]) -> Option<Plan> {
    let transactional = |t: bool| Some(Plan::Broadcast { transactional: t });
    match (w[0], w[1], w[2]) {
        // Code the proxy cannot read: it runs on every shard, and may not write sharded rows.
        ("do", _, _) | ("call", _, _) => Some(Plan::Procedural),
        ("load", _, _) => Some(Plan::Session),
        ("vacuum" | "analyze" | "analyse" | "checkpoint", _, _) => transactional(false),
        // Without a table name CLUSTER and REINDEX DATABASE/SYSTEM process many tables, one
        // transaction each, which PostgreSQL refuses inside a transaction block.
        ("cluster", "" | "verbose", "") => transactional(false),
        ("cluster", _, _) => transactional(true),
        ("reindex", _, _) => {
            let many = matches!(w[1], "database" | "system")
                || (w[1].starts_with('(') && w[2] != "table" && w[2] != "index");
            transactional(!(many || w.contains(&"concurrently")))
        }
        ("refresh", _, _) | ("security", "label", _) | ("import", "foreign", _) => {
            transactional(true)
        }
        ("reassign" | "grant" | "revoke" | "comment", _, _) => transactional(true),
        ("create" | "drop" | "alter", _, _) => schema_change(w),
        // A COPY sqlparser could read is planned from its AST; this one has a clause it
        // cannot (a WHERE, an option it does not know).
        ("copy", _, _) => Some(refuse(
            "this form of COPY (with WHERE or an option shardgate cannot read) is not supported on several shards",
            "COPY FROM STDIN without WHERE and filter with INSERT ... SELECT, or use the plain option forms (FORMAT, HEADER, FREEZE, DELIMITER, NULL, QUOTE, ESCAPE).",
        )),
        _ => None,
    }
}

/// CREATE, ALTER and DROP of anything: on every shard, atomically, except what PostgreSQL keeps
/// out of transaction blocks and what would be wrong on every shard.
fn schema_change(w: &[&str; 3]) -> Option<Plan> {
    let temporary = |x: &str| x == "temp" || x == "temporary";
    if w[0] == "create"
        && (temporary(w[1]) || (matches!(w[1], "local" | "global") && temporary(w[2])))
    {
        return Some(refuse(
            "temporary tables are not supported on several shards",
            "A temporary table would exist on one shard connection only. Use a regular table, or a CTE.",
        ));
    }
    let object = if w[1] == "or" { "" } else { w[1] };
    match object {
        "subscription" => Some(refuse(
            format!(
                "{} SUBSCRIPTION through shardgate is not supported",
                w[0].to_ascii_uppercase()
            ),
            "A subscription on every shard would copy the publisher's rows into every shard; create it on the shard that should receive them.",
        )),
        "system" | "database" | "tablespace" => Some(Plan::Broadcast {
            transactional: false,
        }),
        _ if w.contains(&"concurrently") => Some(Plan::Broadcast {
            transactional: false,
        }),
        "" if w[0] != "create" => None,
        _ => Some(Plan::Broadcast {
            transactional: true,
        }),
    }
}

fn refuse(message: impl Into<String>, hint: impl Into<String>) -> Plan {
    Plan::Reject(PgError::error(sqlstate::FEATURE_NOT_SUPPORTED, message).with_hint(hint))
}

/// `TABLE name` is `SELECT * FROM name`; the rewrite lets the planner route it.
pub fn table_shorthand(sql: &str) -> Option<String> {
    let text = sql.trim().trim_end_matches(';').trim_end();
    let rest = text
        .get(..6)
        .filter(|w| w.eq_ignore_ascii_case("table "))
        .map(|_| text[6..].trim())?;
    (!rest.is_empty()).then(|| format!("SELECT * FROM {rest}"))
}

/// The statements answered by the home shard alone: notifications (every session listens on
/// its home shard, and NOTIFY is sent there) and SHOW.
pub fn at_home(first: &str) -> Option<Plan> {
    matches!(first, "listen" | "unlisten" | "notify" | "show").then_some(Plan::Shard {
        shard: HOME,
        write: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(sql: &str) -> [String; 3] {
        let mut it = sql.split_whitespace().map(|w| w.to_ascii_lowercase());
        [
            it.next().unwrap_or_default(),
            it.next().unwrap_or_default(),
            it.next().unwrap_or_default(),
        ]
    }

    fn planned(sql: &str) -> Option<Plan> {
        let w = words(sql);
        plan_keywords(&[&w[0], &w[1], &w[2]])
    }

    #[test]
    fn every_utility_statement_has_a_plan() {
        for sql in [
            "DO $$BEGIN END$$",
            "CALL p(1)",
            "LOAD 'plpgsql'",
            "CLUSTER",
            "CLUSTER accounts USING accounts_pkey",
            "REINDEX TABLE accounts",
            "REFRESH MATERIALIZED VIEW mv",
            "SECURITY LABEL ON TABLE t IS 'x'",
            "IMPORT FOREIGN SCHEMA s FROM SERVER x INTO y",
            "REASSIGN OWNED BY a TO b",
            "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO public",
            "ALTER SYSTEM SET work_mem = '4MB'",
            "CREATE DATABASE d",
            "DROP OWNED BY a",
            "CREATE OR REPLACE FUNCTION f() RETURNS int AS 'select 1' LANGUAGE sql",
            "CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION f()",
            "CREATE ACCESS METHOD m TYPE TABLE HANDLER h",
        ] {
            let p = planned(sql);
            assert!(
                matches!(
                    p,
                    Some(Plan::Broadcast { .. } | Plan::Procedural | Plan::Session)
                ),
                "{sql}: {p:?}"
            );
        }
    }

    #[test]
    fn what_may_not_run_in_a_transaction_block_is_broadcast_outside_one() {
        for sql in [
            "CLUSTER",
            "REINDEX DATABASE d",
            "REINDEX (VERBOSE) SYSTEM d",
            "REINDEX TABLE CONCURRENTLY t",
            "CREATE INDEX CONCURRENTLY i ON t (a)",
            "DROP INDEX CONCURRENTLY i",
            "ALTER SYSTEM SET work_mem = '4MB'",
            "CREATE DATABASE d",
            "DROP TABLESPACE x",
        ] {
            assert_eq!(
                planned(sql),
                Some(Plan::Broadcast {
                    transactional: false
                }),
                "{sql}"
            );
        }
        assert_eq!(
            planned("REINDEX (VERBOSE) TABLE t"),
            Some(Plan::Broadcast {
                transactional: true
            })
        );
    }

    #[test]
    fn subscriptions_temporary_tables_and_unread_copies_are_refused_with_a_reason() {
        for sql in [
            "CREATE SUBSCRIPTION s CONNECTION 'x' PUBLICATION p",
            "CREATE TEMP TABLE t (a int)",
            "CREATE LOCAL TEMPORARY TABLE t (a int)",
            "COPY t FROM STDIN WHERE a > 1",
        ] {
            assert!(matches!(planned(sql), Some(Plan::Reject(_))), "{sql}");
        }
    }

    #[test]
    fn data_statements_are_never_planned_by_keyword() {
        for sql in [
            "SELECT 1",
            "INSERT INTO t VALUES (1)",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "UPDATE t SET a = 1",
            "MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE",
        ] {
            assert_eq!(planned(sql), None, "{sql}");
        }
    }

    #[test]
    fn table_shorthand_reads_as_select_star() {
        assert_eq!(
            table_shorthand("TABLE accounts;").as_deref(),
            Some("SELECT * FROM accounts")
        );
        assert_eq!(table_shorthand("TABLES"), None);
        assert_eq!(table_shorthand("table "), None);
    }
}
