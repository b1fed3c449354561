//! Parentheses around a prefix operator's operand where the parser's own writing would run
//! two operators together.
//!
//! sqlparser writes a prefix operator and its operand without a space: `- -3` comes back as
//! `--3`, which PostgreSQL reads as a comment to the end of the line, and `@ -3` as `@-3`,
//! which it reads as an operator `@-` that does not exist. Wherever the proxy writes a
//! statement anew (a read of several shards, each shard's part of a split INSERT) the shards
//! would get a different statement, or a comment eating the rest of it. An operand that is
//! written starting with an operator character is put in parentheses after parsing: `-(-3)`
//! means what `- -3` means.

use sqlparser::ast::{Expr, Statement, UnaryOperator};
use std::ops::ControlFlow;

/// Characters PostgreSQL's operators are made of.
const OPERATOR_CHARS: &[u8] = b"+-*/<>=~!@#%^&|`?";

/// Puts in parentheses each operand of a prefix operator in `stmt` that would otherwise be
/// written against it.
pub fn keep_operands_apart(stmt: &mut Statement) {
    let _ = sqlparser::ast::visit_expressions_mut(stmt, |e: &mut Expr| {
        if let Expr::UnaryOp { op, expr } = e {
            let written_against = !matches!(
                op,
                UnaryOperator::Not
                    | UnaryOperator::Hash
                    | UnaryOperator::AtDashAt
                    | UnaryOperator::DoubleAt
                    | UnaryOperator::QuestionDash
                    | UnaryOperator::QuestionPipe
                    | UnaryOperator::PGPostfixFactorial
            );
            if written_against && starts_with_operator(expr) {
                let operand =
                    std::mem::replace(expr.as_mut(), Expr::value(sqlparser::ast::Value::Null));
                **expr = Expr::Nested(Box::new(operand));
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

/// Whether `e` is written starting with an operator character. Only a prefix operation or a
/// signed number can; the text is looked at for those alone.
fn starts_with_operator(e: &Expr) -> bool {
    matches!(e, Expr::UnaryOp { .. } | Expr::Value(_))
        && e.to_string()
            .bytes()
            .next()
            .is_some_and(|c| OPERATOR_CHARS.contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn written(sql: &str) -> String {
        let mut stmt = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0);
        keep_operands_apart(&mut stmt);
        stmt.to_string()
    }

    #[test]
    fn operators_that_would_run_together_are_kept_apart() {
        assert_eq!(
            written("select - -3, @ -3.5, ~ -5, - - - x"),
            "SELECT -(-3), @(-3.5), ~(-5), -(-(-x))"
        );
        assert_eq!(written("select |/ - -16"), "SELECT |/(-(-16))");
    }

    #[test]
    fn other_operands_stay_as_written() {
        assert_eq!(
            written("select -3, - x, -(x), 1 - -3, not -x"),
            "SELECT -3, -x, -(x), 1 - -3, NOT -x"
        );
    }
}
