//! GROUP BY ROLLUP, CUBE and GROUPING SETS over several shards.
//!
//! Each shard groups its rows by every set, and a group of one set found on several shards is
//! merged as any group is, by its group columns. A column that a set leaves out is NULL in
//! that set's rows, which must not meet the rows of a set that groups by the column and holds
//! a NULL value: so each shard also returns `GROUPING(e1, ..., en)` over every expression the
//! sets name, a hidden group column that tells the sets apart. A `grouping(...)` item the
//! client selects is constant within a group, so it is merged as a group column too.

use sqlparser::ast::{Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments};

/// PostgreSQL's limit on GROUPING's arguments.
const MAX_GROUPING_ARGUMENTS: usize = 31;

/// The expressions a GROUP BY list names, its sets flattened, each once (by its text), and,
/// when it has sets, the GROUPING call that tells them apart. Err: why it cannot be merged.
pub(super) fn flatten(list: &[Expr]) -> Result<(Vec<Expr>, Option<Expr>), String> {
    let mut flat: Vec<Expr> = Vec::new();
    let mut add = |e: &Expr| {
        if !flat.iter().any(|f| f.to_string() == e.to_string()) {
            flat.push(e.clone());
        }
    };
    let mut sets = false;
    for g in list {
        match g {
            Expr::Rollup(lists) | Expr::Cube(lists) | Expr::GroupingSets(lists) => {
                sets = true;
                lists.iter().flatten().for_each(&mut add);
            }
            plain => add(plain),
        }
    }
    if !sets {
        return Ok((flat, None));
    }
    if flat.len() > MAX_GROUPING_ARGUMENTS {
        return Err(format!(
            "grouping sets over more than {MAX_GROUPING_ARGUMENTS} expressions over several shards are not supported"
        ));
    }
    let grouping = if flat.is_empty() {
        None
    } else {
        let args = flat.iter().map(|e| e.to_string()).collect::<Vec<_>>();
        let call = format!("GROUPING({})", args.join(", "));
        Some(
            sqlparser::parser::Parser::new(&sqlparser::dialect::PostgreSqlDialect {})
                .try_with_sql(&call)
                .and_then(|mut p| p.parse_expr())
                .map_err(|e| format!("grouping sets over several shards: {e}"))?,
        )
    };
    Ok((flat, grouping))
}

/// Whether `e` is a call of GROUPING(...) (plain arguments, no modifiers).
pub(super) fn is_grouping_call(e: &Expr) -> bool {
    let Expr::Function(Function {
        name,
        args: FunctionArguments::List(list),
        over: None,
        filter: None,
        within_group,
        ..
    }) = e
    else {
        return false;
    };
    name.0.len() == 1
        && name.to_string().eq_ignore_ascii_case("grouping")
        && within_group.is_empty()
        && list.duplicate_treatment.is_none()
        && list.clauses.is_empty()
        && list
            .args
            .iter()
            .all(|a| matches!(a, FunctionArg::Unnamed(FunctionArgExpr::Expr(_))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::ast::{GroupByExpr, SetExpr, Statement};

    fn group_list(sql: &str) -> Vec<Expr> {
        let stmts =
            sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, sql)
                .unwrap();
        let Statement::Query(q) = &stmts[0] else {
            panic!()
        };
        let SetExpr::Select(s) = q.body.as_ref() else {
            panic!()
        };
        let GroupByExpr::Expressions(e, _) = &s.group_by else {
            panic!()
        };
        e.clone()
    }

    #[test]
    fn sets_are_flattened_once_each_and_told_apart_by_grouping() {
        let (flat, grouping) = flatten(&group_list(
            "select 1 from t group by a, rollup(a, b), cube((b, c))",
        ))
        .unwrap();
        let texts: Vec<String> = flat.iter().map(|e| e.to_string()).collect();
        assert_eq!(texts, ["a", "b", "c"]);
        assert_eq!(grouping.unwrap().to_string(), "GROUPING(a, b, c)");
        let (flat, grouping) = flatten(&group_list("select 1 from t group by a, b % 2")).unwrap();
        assert_eq!(flat.len(), 2);
        assert!(grouping.is_none());
        // GROUPING SETS (()) is one group of everything, as no GROUP BY is.
        let (flat, grouping) =
            flatten(&group_list("select 1 from t group by grouping sets (())")).unwrap();
        assert!(flat.is_empty() && grouping.is_none());
        let many: Vec<String> = (0..32).map(|i| format!("c{i}")).collect();
        let sql = format!("select 1 from t group by rollup({})", many.join(", "));
        assert!(flatten(&group_list(&sql)).is_err());
    }

    #[test]
    fn grouping_calls_are_recognised() {
        let e = |s: &str| {
            sqlparser::parser::Parser::new(&sqlparser::dialect::PostgreSqlDialect {})
                .try_with_sql(s)
                .unwrap()
                .parse_expr()
                .unwrap()
        };
        assert!(is_grouping_call(&e("grouping(a, b)")));
        assert!(is_grouping_call(&e("GROUPING(a)")));
        assert!(!is_grouping_call(&e("grouping(a) + 1")));
        assert!(!is_grouping_call(&e("count(a)")));
        assert!(!is_grouping_call(&e("s.grouping(a)")));
    }
}
