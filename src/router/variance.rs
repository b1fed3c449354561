//! Variance and standard deviation over several shards: `var_samp`, `var_pop`, `variance`,
//! `stddev`, `stddev_samp` and `stddev_pop` of one argument, with or without FILTER.
//!
//! No shard's variance combines with another's, but PostgreSQL computes these aggregates over
//! integers and numerics from three sums alone (the count n, the sum s and the sum of squares q
//! of the values, in exact numeric arithmetic), and sums do combine. So before an item is split
//! for the merge (`computed::split`), each such call is written as
//! `shardgate.variance_of(count(x), sum(x::numeric), sum(x::numeric * x::numeric), sample,
//! root)`: the shards return the three sums, the merge adds them up, and one shard evaluates the
//! function over the totals. The function (created with the `shardgate` schema, see
//! `txn::schema`) repeats PostgreSQL's own steps and scales: n*q - s*s over n*(n-1) (or n*n),
//! 0 when that is not positive, NULL for too few values, NaN for NaN or infinite input, and the
//! square root correctly rounded at the quotient's scale, as PostgreSQL's root is.
//!
//! Over float4 and float8 PostgreSQL uses another algorithm whose last digits the sums would
//! not reproduce. The item's own type says which: the shards describe the call as the client
//! wrote it (`computed::never_evaluated`), double precision for a float argument, and the merge
//! refuses a computed item whose value comes out of another type than described.

use sqlparser::ast::{Expr, FunctionArg, FunctionArgExpr, FunctionArguments, VisitMut, VisitorMut};
use std::ops::ControlFlow;

/// The function the merged sums are evaluated with.
pub const FUNCTION: &str = crate::sql::pure_functions::VARIANCE_OF;

/// Writes every variance or standard deviation call in `item` (outside subqueries, which an
/// item computed after the merge may not hold anyway) over the sums it is made of.
pub fn written_over_sums(item: &mut Expr) {
    let _ = item.visit(&mut OverSums);
}

struct OverSums;

impl VisitorMut for OverSums {
    type Break = ();
    fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        if let Some(sums) = over_sums(e) {
            *e = sums;
        }
        ControlFlow::Continue(())
    }
}

/// `(sample, root)` for each aggregate: divided by n - 1 or by n, and its square root or not.
fn kind(name: &str) -> Option<(bool, bool)> {
    Some(match name {
        "var_samp" | "variance" => (true, false),
        "var_pop" => (false, false),
        "stddev" | "stddev_samp" => (true, true),
        "stddev_pop" => (false, true),
        _ => return None,
    })
}

/// The call written over sums, if `e` is one this module writes: a plain call of one argument
/// (a FILTER applies to each sum); DISTINCT and an ordering are left as written, for
/// `router::gathered`, and OVER or WITHIN GROUP for the planner to refuse.
fn over_sums(e: &Expr) -> Option<Expr> {
    let Expr::Function(f) = e else { return None };
    let name = crate::sql::catalog_function_name(&f.name)?;
    if f.over.is_some() || !f.within_group.is_empty() {
        return None;
    }
    let (sample, root) = kind(&name)?;
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    let [FunctionArg::Unnamed(FunctionArgExpr::Expr(x))] = list.args.as_slice() else {
        return None;
    };
    if list.duplicate_treatment.is_some() || !list.clauses.is_empty() || f.null_treatment.is_some()
    {
        return None;
    }
    let filter = f
        .filter
        .as_ref()
        .map_or(String::new(), |c| format!(" FILTER (WHERE {c})"));
    let text = format!(
        "shardgate.{FUNCTION}(count({x}){filter}, sum(({x})::numeric){filter}, \
         sum(({x})::numeric * ({x})::numeric){filter}, {sample}, {root})"
    );
    crate::sql::expression(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::written_over_sums;
    use sqlparser::ast::Expr;

    fn expr(sql: &str) -> Expr {
        crate::sql::expression(sql).unwrap()
    }

    fn written(sql: &str) -> String {
        let mut e = expr(sql);
        written_over_sums(&mut e);
        e.to_string()
    }

    #[test]
    fn each_kind_reads_three_sums() {
        assert_eq!(
            written("stddev(x)"),
            "shardgate.variance_of(count(x), sum((x)::NUMERIC), sum((x)::NUMERIC * (x)::NUMERIC), true, true)"
        );
        assert!(written("VAR_POP(a.b + 1)").ends_with("false, false)"));
        assert!(written("pg_catalog.variance(x)").ends_with("true, false)"));
        assert!(written("stddev_pop(x)").ends_with("false, true)"));
    }

    #[test]
    fn a_filter_applies_to_every_sum() {
        let w = written("var_samp(x) FILTER (WHERE y > 1)");
        assert_eq!(w.matches("FILTER (WHERE y > 1)").count(), 3, "{w}");
    }

    #[test]
    fn calls_inside_an_item_are_written_and_others_left() {
        let w = written("round(stddev(x), 2) + count(*)");
        assert!(w.starts_with("round(shardgate.variance_of(count(x)"), "{w}");
        assert!(w.ends_with("+ count(*)"), "{w}");
        for kept in [
            "stddev(DISTINCT x)",
            "stddev(x ORDER BY y)",
            "stddev(x) OVER ()",
            "myschema.stddev(x)",
            "\"stddev\"(x)",
            "var_samp(x, y)",
        ] {
            assert_eq!(written(kept), expr(kept).to_string());
        }
    }
}
