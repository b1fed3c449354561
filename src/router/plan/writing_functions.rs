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

use super::last_ident;
use super::reading_functions::{named_through, Calls};
use crate::placement::Placement;
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
        let word = named_through(&function, &placement.function_words, |w| {
            WRITING.contains(&w)
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
}
