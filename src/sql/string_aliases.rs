//! Aliases written as string literals, which sqlparser accepts and PostgreSQL never does.
//!
//! sqlparser takes a single-quoted string after an expression or a table as its alias. In
//! PostgreSQL that string is part of what comes before it: `mood 'happy'` and
//! `pg_catalog.int4 '5'` are typed constants (`CAST('happy' AS mood)`), and `1 'x'` or
//! `k AS 'x'` is a syntax error. Written anew from such a parse (a read of several shards),
//! `mood AS 'happy'` failed on every shard with a syntax error for valid SQL. A select item
//! whose string "alias" follows a type name is read as the typed constant it is; any other
//! string alias is no parse at all, so the shard judges the text, as it does for texts the
//! parser cannot read.

use super::tokens::{significant, Token};
use sqlparser::ast::{
    CastKind, DataType, Expr, Ident, ObjectName, Select, SelectItem, Statement, TableAlias,
    TableFactor, Value, Visit, VisitMut, Visitor, VisitorMut,
};
use std::ops::ControlFlow;

/// Whether `stmt` has an alias that was written as a single-quoted string.
pub fn has_string_alias(stmt: &Statement) -> bool {
    stmt.visit(&mut Find).is_break()
}

/// `stmts`, parsed from `sql`, with each select item's string alias turned into the typed
/// constant PostgreSQL reads there; None when some string alias is not one.
pub fn typed_constants_from_aliases(
    sql: &str,
    mut stmts: Vec<Statement>,
) -> Option<Vec<Statement>> {
    if !stmts.iter().any(has_string_alias) {
        return Some(stmts);
    }
    // `x AS 'y'` is a syntax error in PostgreSQL: never a constant.
    if as_before_string(sql) {
        return None;
    }
    for stmt in &mut stmts {
        if stmt.visit(&mut Rewrite).is_break() {
            return None;
        }
    }
    Some(stmts)
}

/// Whether the word AS comes right before a single-quoted string in `sql`.
fn as_before_string(sql: &str) -> bool {
    let b = sql.as_bytes();
    let mut last_as = false;
    for (token, range) in significant(sql) {
        let is_string = token == Token::Other && b[range.start] == b'\'';
        if last_as && is_string {
            return true;
        }
        last_as = token == Token::Word && sql[range].eq_ignore_ascii_case("as");
    }
    false
}

fn quoted(alias: &Ident) -> bool {
    alias.quote_style == Some('\'')
}

fn table_alias(factor: &TableFactor) -> bool {
    let alias = match factor {
        TableFactor::Table { alias, .. }
        | TableFactor::Derived { alias, .. }
        | TableFactor::TableFunction { alias, .. }
        | TableFactor::Function { alias, .. }
        | TableFactor::UNNEST { alias, .. }
        | TableFactor::NestedJoin { alias, .. } => alias,
        _ => &None,
    };
    alias.as_ref().is_some_and(|a: &TableAlias| quoted(&a.name))
}

fn broken(found: bool) -> ControlFlow<()> {
    if found {
        ControlFlow::Break(())
    } else {
        ControlFlow::Continue(())
    }
}

struct Find;

impl Visitor for Find {
    type Break = ();

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<()> {
        broken(
            select.projection.iter().any(
                |item| matches!(item, SelectItem::ExprWithAlias { alias, .. } if quoted(alias)),
            ),
        )
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        broken(table_alias(factor))
    }
}

/// Turns select items' string aliases into typed constants; breaks at one it cannot.
struct Rewrite;

impl VisitorMut for Rewrite {
    type Break = ();

    fn pre_visit_select(&mut self, select: &mut Select) -> ControlFlow<()> {
        for item in &mut select.projection {
            let SelectItem::ExprWithAlias { expr, alias } = item else {
                continue;
            };
            if !quoted(alias) {
                continue;
            }
            let mut expr = std::mem::replace(expr, Expr::value(Value::Null));
            if !into_constant(&mut expr, &alias.value) {
                return ControlFlow::Break(());
            }
            *item = SelectItem::UnnamedExpr(expr);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        broken(table_alias(factor))
    }
}

/// Makes the name that `e` ends in (its rightmost operand) the type of a constant `text`, as
/// PostgreSQL reads `name 'text'`; false when `e` does not end in a name.
fn into_constant(e: &mut Expr, text: &str) -> bool {
    let name = match e {
        Expr::BinaryOp { right, .. } => return into_constant(right, text),
        Expr::UnaryOp { expr, .. } => return into_constant(expr, text),
        Expr::Identifier(id) => ObjectName::from(vec![id.clone()]),
        Expr::CompoundIdentifier(parts) => ObjectName::from(parts.clone()),
        _ => return false,
    };
    *e = Expr::Cast {
        kind: CastKind::Cast,
        expr: Box::new(Expr::value(Value::SingleQuotedString(text.to_string()))),
        data_type: DataType::Custom(name, Vec::new()),
        format: None,
    };
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn parsed(sql: &str) -> Vec<Statement> {
        Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap()
    }

    fn read(sql: &str) -> Option<String> {
        typed_constants_from_aliases(sql, parsed(sql)).map(|v| v[0].to_string())
    }

    #[test]
    fn a_string_after_a_type_name_is_a_constant_of_that_type() {
        assert_eq!(
            read("select k, mood 'happy', m = mood 'ok' from v").as_deref(),
            Some("SELECT k, CAST('happy' AS mood), m = CAST('ok' AS mood) FROM v")
        );
        assert_eq!(
            read("select - pg_catalog.int4 '5'").as_deref(),
            Some("SELECT -CAST('5' AS pg_catalog.int4)")
        );
        assert_eq!(
            read("select * from (select (select mood 'ok') from t) s").as_deref(),
            Some("SELECT * FROM (SELECT (SELECT CAST('ok' AS mood)) FROM t) s")
        );
    }

    #[test]
    fn other_string_aliases_are_no_parse() {
        for sql in [
            "select 1 'x'",
            "select k as 'x' from t",
            "select k from t 'x'",
            "select (k) 'x' from t",
        ] {
            assert!(has_string_alias(&parsed(sql)[0]), "{sql}");
            assert_eq!(read(sql), None, "{sql}");
        }
    }

    #[test]
    fn other_aliases_stay() {
        for sql in [
            "select k as \"x\", k y, 'str' from t as t1",
            "select date '2024-01-01', interval '1 day' from t",
            "select x from (select 1 x) s",
        ] {
            assert!(!has_string_alias(&parsed(sql)[0]), "{sql}");
            assert_eq!(read(sql), Some(parsed(sql)[0].to_string()), "{sql}");
        }
    }
}
