//! Function calls as the proxy reads them out of a statement: a SELECT that is one call alone,
//! and a call's arguments when every one is a plain expression.

use sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, Query, SelectItem, SetExpr,
};

/// The function a Query calls when it is a SELECT of that one call, without FROM
/// (`SELECT setval(...)`, `SELECT pg_cancel_backend(...)`), perhaps under an alias.
pub(crate) fn lone_call(q: &Query) -> Option<&Function> {
    let SetExpr::Select(s) = q.body.as_ref() else {
        return None;
    };
    if !s.from.is_empty() || s.projection.len() != 1 {
        return None;
    }
    match &s.projection[0] {
        SelectItem::UnnamedExpr(Expr::Function(f))
        | SelectItem::ExprWithAlias {
            expr: Expr::Function(f),
            ..
        } => Some(f),
        _ => None,
    }
}

/// The arguments of `f` when every one is a plain expression (no name, no `*`), in order; an
/// empty list for `f()`. None for any other form.
pub(crate) fn unnamed_arguments(f: &Function) -> Option<Vec<&Expr>> {
    match &f.args {
        FunctionArguments::None => Some(Vec::new()),
        FunctionArguments::List(list) => list
            .args
            .iter()
            .map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
                _ => None,
            })
            .collect(),
        FunctionArguments::Subquery(_) => None,
    }
}
