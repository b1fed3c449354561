//! `FROM ONLY t`, `UPDATE ONLY t`, `DELETE FROM ONLY t`: the parser has no ONLY before a
//! table in these statements and reads the keyword as a table named `only` (`ONLY accounts`
//! becomes the table `only` under the alias `accounts`, `ONLY (accounts)` a call of a
//! function `only`). Planned by that reading, a read of a sharded table ran on one shard and
//! answered with its rows alone. `only` is a reserved word in PostgreSQL, so an unquoted table
//! of that name is always the keyword: such statements are refused until the planner can
//! read them.

use super::{refuse, Plan};
use sqlparser::ast::{ObjectName, ObjectNamePart, Statement};
use std::ops::ControlFlow;

/// The refusal of `stmt` if it names a table through ONLY.
pub(super) fn refusal(stmt: &Statement) -> Option<Plan> {
    let keyword = |name: &ObjectName| {
        matches!(name.0.as_slice(),
            [ObjectNamePart::Identifier(i)]
                if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("only"))
    };
    let found = sqlparser::ast::visit_relations(stmt, |name| {
        if keyword(name) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    found.is_break().then(|| {
        refuse(
            "ONLY before a table name is not supported on several shards",
            "Name the table without ONLY: it reads the same rows unless the table has \
             inheritance children or partitions on the shards.",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn refused(sql: &str) -> bool {
        let stmt = &Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap()[0];
        refusal(stmt).is_some()
    }

    #[test]
    fn only_before_a_table_is_refused_wherever_the_table_is_named() {
        for sql in [
            "select count(*) from only accounts",
            "select count(*) from only (accounts)",
            "select * from currencies c join only accounts on true",
            "select * from accounts where id in (select id from only accounts)",
            "update only accounts set note = 'x' where id = 5",
            "delete from only accounts where id = 5",
        ] {
            assert!(refused(sql), "{sql}");
        }
    }

    #[test]
    fn a_quoted_table_named_only_and_other_uses_of_the_word_are_not() {
        for sql in [
            "select * from \"only\"",
            "select id from accounts fetch first 3 rows only",
            "select * from accounts only_alias",
            "select only_col from accounts",
        ] {
            assert!(!refused(sql), "{sql}");
        }
    }
}
