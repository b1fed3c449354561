//! Calls of the shards' own functions that may write.
//!
//! `SELECT log_event(...)` reads nothing, but the function inserts a row: on the shard the
//! statement runs on, it is a write, and must be treated as one where that matters (a
//! pipeline's implicit transaction, a read of several shards outside a transaction block).
//! The planner only has the words of each definition (`Placement::function_words`), so a
//! definition that holds a word of a statement that changes rows (or runs text it cannot see,
//! `EXECUTE`), or names a function whose definition does, counts as writing. A word it only
//! resembles counts too: the statement then pays for a transaction it did not need, never
//! for atomicity it lost. Whether a shard really wrote is asked again at commit (see
//! `txn::commit`).
//!
//! A function that writes a reference table (`Placement::function_writes`: the table after
//! INSERT INTO, UPDATE, DELETE FROM, MERGE INTO or TRUNCATE in its definition) would change
//! the copy of the shard it runs on only, and the copies would differ: a statement that calls
//! one is refused.

use super::reading_functions::{runs_calls, through_calls, Calls};
use super::{last_ident, refuse, Plan};
use crate::placement::{Placement, TableRule};
use sqlparser::ast::{ObjectName, Statement};

/// Words of statements that change rows or lock them, and of dynamic SQL.
const WRITING: [&str; 7] = [
    "insert", "update", "delete", "merge", "truncate", "copy", "execute",
];

/// Whether `stmt` calls one of the shards' functions that may write.
pub(crate) fn calls_writing_function(stmt: &Statement, placement: &Placement) -> bool {
    if placement.function_words.is_empty() {
        return false;
    }
    let writes = |name: &ObjectName| -> Option<(String, String)> {
        let function = last_ident(name).to_lowercase();
        // PostgreSQL's own functions are not in the list, nor C ones.
        let word = through_calls(&function, &placement.function_words, |_, named| {
            named
                .iter()
                .find(|w| WRITING.contains(&w.as_str()))
                .cloned()
        })?;
        Some((function, word))
    };
    let mut calls = Calls {
        reads: &writes,
        found: None,
    };
    let _ = sqlparser::ast::Visit::visit(stmt, &mut calls);
    calls.found.is_some()
}

/// The refusal of `stmt` if it calls a function that writes a reference table, itself or
/// through a function it calls.
pub(super) fn reference_refusal(stmt: &Statement, placement: &Placement) -> Option<Plan> {
    if placement.function_writes.is_empty() || !runs_calls(stmt) {
        return None;
    }
    let short = |name: &str| name.rsplit('.').next().unwrap_or(name).to_lowercase();
    let references: Vec<String> = placement
        .tables
        .iter()
        .filter(|(_, rule)| matches!(rule, TableRule::Reference))
        .map(|(name, _)| short(name))
        .collect();
    // With `undeclared_tables = "reference"`, every table the config does not declare is one.
    let declared: Vec<String> = placement.tables.keys().map(|n| short(n)).collect();
    let undeclared_copied = matches!(placement.undeclared, Some(TableRule::Reference));
    let is_reference = |t: &str| {
        references.iter().any(|r| r == t) || (undeclared_copied && !declared.iter().any(|d| d == t))
    };
    let writes = |name: &ObjectName| -> Option<(String, String)> {
        let function = last_ident(name).to_lowercase();
        through_calls(&function, &placement.function_words, |f, _| {
            let written = placement.function_writes.get(f)?;
            let table = written.iter().find(|t| is_reference(t))?;
            Some((f.to_string(), table.clone()))
        })
    };
    let mut calls = Calls {
        reads: &writes,
        found: None,
    };
    let _ = sqlparser::ast::Visit::visit(stmt, &mut calls);
    let (function, table) = calls.found?;
    Some(refuse(
        format!(
            "function {function} writes reference table {table}: it would change only the copy on the shard it runs on"
        ),
        "Write the reference table with a statement of its own, which the proxy runs on every copy.",
    ))
}

#[cfg(test)]
mod tests {
    use super::super::tests::placement;
    use super::*;
    use std::sync::Arc;

    fn calls(sql: &str, placement: &Placement) -> bool {
        let stmt =
            sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, sql)
                .unwrap()
                .remove(0);
        calls_writing_function(&stmt, placement)
    }

    #[test]
    fn a_call_of_a_function_that_writes_or_calls_one_that_does_is_a_write() {
        let mut p = placement();
        assert!(!calls("select note(1)", &p), "no functions known");
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect();
        p.function_words = Arc::new(
            [
                ("note".to_string(), words(&["insert", "into", "notes"])),
                ("outer_note".to_string(), words(&["select", "note"])),
                ("dynamic".to_string(), words(&["execute", "format"])),
                ("pure".to_string(), words(&["select", "upper", "x"])),
            ]
            .into_iter()
            .collect(),
        );
        assert!(calls("select note(1)", &p));
        assert!(calls("SELECT id, Note(id) FROM accounts WHERE id = 3", &p));
        assert!(
            calls("select * from outer_note(2)", &p),
            "called in FROM, through another"
        );
        assert!(calls("select dynamic('x')", &p));
        assert!(!calls("select pure('x'), upper('y') from accounts", &p));
        assert!(!calls("select 1", &p));
    }

    #[test]
    fn a_call_of_a_function_writing_a_reference_table_is_refused() {
        let mut p = placement();
        let words = |w: &[&str]| -> std::collections::BTreeSet<String> {
            w.iter().map(|s| s.to_string()).collect()
        };
        p.function_words = Arc::new(
            [
                (
                    "add_country".to_string(),
                    words(&["insert", "into", "countries"]),
                ),
                ("via".to_string(), words(&["select", "add_country"])),
                ("note".to_string(), words(&["insert", "into", "notes"])),
            ]
            .into_iter()
            .collect(),
        );
        p.function_writes = Arc::new(
            [
                ("add_country".to_string(), words(&["countries"])),
                ("note".to_string(), words(&["notes"])),
            ]
            .into_iter()
            .collect(),
        );
        let planned_in = |sql: &str, p: &Placement| {
            let stmt = sqlparser::parser::Parser::parse_sql(
                &sqlparser::dialect::PostgreSqlDialect {},
                sql,
            )
            .unwrap()
            .remove(0);
            super::super::plan(&stmt, p, &Default::default())
        };
        let planned = |sql: &str| planned_in(sql, &p);
        for sql in [
            "select add_country('xx')",
            "select via() from accounts where id = 1",
            "update accounts set name = add_country(name) where id = 2",
        ] {
            match planned(sql) {
                Plan::Reject(e) => assert!(e.message.contains("countries"), "{sql}: {e:?}"),
                other => panic!("{sql}: {other:?}"),
            }
        }
        assert!(matches!(
            planned("select note(1) from accounts where id = 1"),
            Plan::Shard { write: true, .. }
        ));
        // Where undeclared tables are reference tables, notes is one.
        let mut copied = p.clone();
        copied.undeclared = Some(TableRule::Reference);
        assert!(matches!(
            planned_in("select note(1) from accounts where id = 1", &copied),
            Plan::Reject(_)
        ));
    }
}
