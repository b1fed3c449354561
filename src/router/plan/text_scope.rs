//! What a merge needs to tell the collation of the text it compares (`TextScope`), read from
//! the statement: the tables whose columns the text may come from, whether it names a
//! collation, and which output columns it pins to code-point order with `COLLATE "C"`.
//! `executor::merge::collation` judges the columns with it.

use super::{explicit_collation, folded, tables_read};
use crate::placement::Placement;
use sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectNamePart, Query, SelectItem,
    SetExpr, Statement,
};
use std::ops::ControlFlow;

/// Where the text a merge compares may take its collation from. Left empty on a merge that
/// compares nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TextScope {
    /// The declared tables the statement reads: a schema-qualified name as written, an
    /// unqualified one as its table's name (folded to lower case unless quoted), which the
    /// catalog matches in every schema, whatever the session's search_path finds first.
    pub tables: Vec<String>,
    /// The statement names a collation other than C, POSIX or ucs_basic (`x COLLATE ...`).
    pub named_collation: bool,
    /// The statement holds a set operation, whose output columns each combine its branches'
    /// columns: the column a RowDescription names is only the first branch's.
    pub set_operation: bool,
    /// Output columns (0-based) whose select item is `... COLLATE "C"`, or min/max of one:
    /// code-point text whatever they were computed from.
    pub code_point: Vec<usize>,
}

pub(super) fn of(stmt: &Statement, placement: &Placement) -> TextScope {
    let mut tables: Vec<String> = tables_read(stmt)
        .iter()
        .filter(|t| placement.rule(&t.to_string()).is_some())
        .map(|t| match t.0.as_slice() {
            [ObjectNamePart::Identifier(name)] => folded(name),
            _ => t.to_string(),
        })
        .collect();
    tables.sort();
    tables.dedup();
    let mut named_collation = false;
    let _ = sqlparser::ast::visit_expressions(stmt, |e: &Expr| {
        named_collation |= explicit_collation(e) == Some(false);
        ControlFlow::<()>::Continue(())
    });
    let mut set_operation = false;
    let _ = sqlparser::ast::Visit::visit(stmt, &mut SetOperations(&mut set_operation));
    TextScope {
        tables,
        named_collation,
        set_operation,
        code_point: match stmt {
            Statement::Query(q) => code_point_items(&q.body),
            _ => vec![],
        },
    }
}

struct SetOperations<'a>(&'a mut bool);

impl sqlparser::ast::Visitor for SetOperations<'_> {
    type Break = ();
    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        *self.0 |= matches!(q.body.as_ref(), SetExpr::SetOperation { .. });
        ControlFlow::Continue(())
    }
}

/// The positions of the leftmost SELECT's items pinned to code-point order, up to its first
/// `*` (after which positions are not known). A set operation's column takes the collation
/// its first branch names explicitly, as PostgreSQL resolves an explicit collation over
/// implicit ones.
fn code_point_items(body: &SetExpr) -> Vec<usize> {
    let select = match body {
        SetExpr::Select(s) => s,
        SetExpr::SetOperation { left, .. } => return code_point_items(left),
        SetExpr::Query(q) => return code_point_items(&q.body),
        _ => return vec![],
    };
    let mut found = vec![];
    for (i, item) in select.projection.iter().enumerate() {
        let e = match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
            _ => break,
        };
        if pinned(e) {
            found.push(i);
        }
    }
    found
}

fn pinned(e: &Expr) -> bool {
    match e {
        Expr::Nested(inner) => pinned(inner),
        Expr::Collate { .. } => explicit_collation(e) == Some(true),
        Expr::Function(f) => {
            let name = f.name.to_string().to_ascii_lowercase();
            let FunctionArguments::List(list) = &f.args else {
                return false;
            };
            matches!(
                name.as_str(),
                "min" | "max" | "pg_catalog.min" | "pg_catalog.max"
            ) && f.filter.is_none()
                && matches!(list.args.as_slice(),
                    [FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))] if pinned(arg))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(sql: &str) -> TextScope {
        let stmt =
            sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, sql)
                .unwrap()
                .remove(0);
        of(&stmt, &super::super::tests::placement())
    }

    #[test]
    fn reads_tables_collations_and_pinned_items() {
        let s = scope("select name collate \"C\", lower(name), max(name collate \"C\"), max(name) from USERS u join public.accounts a on a.id = u.id group by 1, 2");
        assert_eq!(s.tables, ["public.accounts", "users"]);
        assert!(!s.named_collation && !s.set_operation);
        assert_eq!(s.code_point, [0, 2]);
        let s = scope("select name from users where name collate \"und-x-icu\" = 'a'");
        assert!(s.named_collation);
        let s =
            scope("select x from (select name collate \"C\" as x from users union select 'a') s");
        assert!(s.set_operation);
        assert!(s.code_point.is_empty());
        let s = scope("select name collate \"C\" from users union select 'a'");
        assert_eq!(s.code_point, [0]);
        let s = scope("select *, name collate \"C\" from users");
        assert!(s.code_point.is_empty());
    }
}
