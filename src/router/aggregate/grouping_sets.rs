//! GROUP BY ROLLUP, CUBE and GROUPING SETS over several shards.
//!
//! Each shard groups its rows by every set, and a group of one set found on several shards is
//! merged as any group is, by its group columns. A column that a set leaves out is NULL in
//! that set's rows, which must not meet the rows of a set that groups by the column and holds
//! a NULL value: so each shard also returns `GROUPING(e1, ..., en)` over every expression the
//! sets name, a hidden group column that tells the sets apart. A `grouping(...)` item the
//! client selects is constant within a group, so it is merged as a group column too.
//!
//! GROUPING tells sets apart only by the expressions they group by. PostgreSQL keeps a set
//! named twice (`CUBE(a, a)` holds `(a)` twice, `ROLLUP(a, a)` groups by `(a, a)` and by
//! `(a)`) and returns its groups once per time, rows that the merge would take for one group
//! found on several shards: such a GROUP BY is refused.

use sqlparser::ast::{Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments};

/// PostgreSQL's limit on GROUPING's arguments.
const MAX_GROUPING_ARGUMENTS: usize = 31;

/// PostgreSQL's limit on the grouping sets a GROUP BY expands to.
const MAX_SETS: usize = 4096;

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
            // `GROUP BY ()` groups by nothing: alone, one group of all the rows, as without
            // GROUP BY. Selected as a column, it would be `()`, which is no expression.
            Expr::Tuple(items) if items.is_empty() => {}
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
    let mut expanded = expand(list, &flat)?;
    expanded.sort_unstable();
    if expanded.windows(2).any(|w| w[0] == w[1]) {
        return Err(
            "grouping sets that group by the same expressions twice over several shards are not supported"
                .into(),
        );
    }
    let grouping = if flat.is_empty() {
        None
    } else {
        let args = flat.iter().map(|e| e.to_string()).collect::<Vec<_>>();
        let call = format!("GROUPING({})", args.join(", "));
        Some(
            crate::sql::expression(&call)
                .map_err(|e| format!("grouping sets over several shards: {e}"))?,
        )
    };
    Ok((flat, grouping))
}

/// The grouping sets `list` expands to, as PostgreSQL expands them (each item's sets crossed
/// with the others'), each as the bits of the `flat` expressions it groups by.
fn expand(list: &[Expr], flat: &[Expr]) -> Result<Vec<u32>, String> {
    let bits = |exprs: &[Expr]| -> Result<u32, String> {
        exprs.iter().try_fold(0u32, |acc, e| {
            if matches!(e, Expr::Rollup(_) | Expr::Cube(_) | Expr::GroupingSets(_)) {
                return Err(
                    "grouping sets nested in grouping sets over several shards are not supported"
                        .to_string(),
                );
            }
            let at = flat.iter().position(|f| f.to_string() == e.to_string());
            Ok(acc | at.map_or(0, |i| 1 << i))
        })
    };
    let too_many = || format!("more than {MAX_SETS} grouping sets over several shards");
    let mut sets: Vec<u32> = vec![0];
    for g in list {
        let options: Vec<u32> = match g {
            Expr::Rollup(lists) => {
                let mut prefix = 0;
                let mut out = vec![0];
                for l in lists {
                    prefix |= bits(l)?;
                    out.push(prefix);
                }
                out
            }
            Expr::Cube(lists) => {
                if lists.len() > 12 {
                    return Err(too_many());
                }
                let each = lists
                    .iter()
                    .map(|l| bits(l))
                    .collect::<Result<Vec<_>, _>>()?;
                (0..1u32 << each.len())
                    .map(|pick| {
                        each.iter()
                            .enumerate()
                            .filter(|(i, _)| pick & (1 << i) != 0)
                            .fold(0, |acc, (_, b)| acc | b)
                    })
                    .collect()
            }
            Expr::GroupingSets(lists) => lists.iter().map(|l| bits(l)).collect::<Result<_, _>>()?,
            plain => vec![bits(std::slice::from_ref(plain))?],
        };
        if sets.len() * options.len() > MAX_SETS {
            return Err(too_many());
        }
        sets = sets
            .iter()
            .flat_map(|s| options.iter().map(move |o| s | o))
            .collect();
    }
    Ok(sets)
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
            "select 1 from t group by grouping sets ((a, b), (b, c), (c))",
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
        // A set named twice returns its groups twice: refused, as rows of one set found on
        // two shards look the same.
        for sql in [
            "select 1 from t group by cube(a, a)",
            "select 1 from t group by rollup(a, a)",
            "select 1 from t group by grouping sets ((a), (a))",
            "select 1 from t group by a, grouping sets ((a), ())",
            "select 1 from t group by grouping sets ((a, b), (b, a))",
            "select 1 from t group by rollup(a), rollup(b), grouping sets ((a), (b))",
            "select 1 from t group by a, rollup(a, b), cube((b, c))",
        ] {
            assert!(flatten(&group_list(sql)).is_err(), "{sql}");
        }
        for sql in [
            "select 1 from t group by cube(a, b)",
            "select 1 from t group by rollup(a, (b, c)), d",
            "select 1 from t group by grouping sets ((a), (b), ())",
            "select 1 from t group by a, a, rollup(b)",
        ] {
            assert!(flatten(&group_list(sql)).is_ok(), "{sql}");
        }
        let many: Vec<String> = (0..32).map(|i| format!("c{i}")).collect();
        let sql = format!("select 1 from t group by rollup({})", many.join(", "));
        assert!(flatten(&group_list(&sql)).is_err());
    }

    #[test]
    fn grouping_calls_are_recognised() {
        let e = |s: &str| crate::sql::expression(s).unwrap();
        assert!(is_grouping_call(&e("grouping(a, b)")));
        assert!(is_grouping_call(&e("GROUPING(a)")));
        assert!(!is_grouping_call(&e("grouping(a) + 1")));
        assert!(!is_grouping_call(&e("count(a)")));
        assert!(!is_grouping_call(&e("s.grouping(a)")));
    }
}
