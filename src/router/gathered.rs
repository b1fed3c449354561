//! Aggregates whose answer is the whole group's, not a combination of the shards' answers:
//! `string_agg(x, ', ' ORDER BY k)`, `array_agg(DISTINCT x)`, `jsonb_agg(x ORDER BY k DESC)`,
//! `sum(DISTINCT x)` and the other combinable aggregates under DISTINCT,
//! json_agg, json_object_agg and jsonb_object_agg in any form (json_agg's separator between
//! elements follows the values' type, so its partials do not concatenate as jsonb_agg's do),
//! xmlagg, range_agg and range_intersect_agg, the statistics of two variables (corr, covar_*,
//! regr_*), the ordered-set aggregates `percentile_cont`, `percentile_disc` and `mode`, and
//! the hypothetical-set ones (`rank(v) WITHIN GROUP (ORDER BY x)`).
//!
//! The shards gather what the call reads per row instead: `array_agg` of each value argument
//! and of each ORDER BY or WITHIN GROUP key, under the call's FILTER. The merge concatenates
//! every array across shards (`Concatenation::Arrays`), and after the merge one shard
//! evaluates the call as the client wrote it over the unnested arrays (see `router::computed`):
//! `(SELECT string_agg(e0, ', ' ORDER BY e1) FROM (SELECT unnest(<values>) AS e0,
//! unnest(<keys>) AS e1) AS u)`. So PostgreSQL itself orders, removes duplicates, interpolates
//! and formats, under the types the shards described. Arguments every row shares (a
//! separator, a fraction) must be literals or bound values, which the evaluation reads again.
//!
//! Invariants: a row's values and keys sit at one index of their arrays. One shard's arrays of
//! a group come from one aggregation, fed the same rows in the same order (plain array_agg
//! calls under one FILTER, never with an order of their own, which a sort that is not stable
//! could break between them); the merge concatenates each of a group's arrays shard after
//! shard; the unnesting is in a select list, where the arrays are read in lockstep and a
//! composite element stays one value (in FROM, unnest would spread it into columns).

use sqlparser::ast::{
    DuplicateTreatment, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentClause,
    FunctionArguments, Ident, Value,
};

/// A call answered over its gathered values.
#[derive(Debug)]
pub struct Gathered {
    /// What the shards return for it, in order: `array_agg` of each expression the call
    /// reads per row (its values, then its ORDER BY or WITHIN GROUP keys).
    pub parts: Vec<Expr>,
    /// Whether the evaluation puts the values in an order of its own (ORDER BY, DISTINCT or
    /// WITHIN GROUP), so the order the shards' rows come in does not matter.
    pub ordered: bool,
    /// The arguments every row shares (a separator, a fraction), as written: literals and
    /// bound values the evaluation reads again.
    pub constants: Vec<Expr>,
    /// The call over the unnested columns (`__shardgate_e<n>`, one per part), without FILTER.
    evaluated: Function,
}

/// How a call reads its arguments: which are one value per row (gathered), by position; every
/// other argument is one for every row (a constant).
struct Reading {
    per_row: &'static [usize],
    /// How many arguments it takes (None: as many as its WITHIN GROUP keys, which PostgreSQL
    /// checks).
    arity: Option<usize>,
    /// Answered by gathering even without an order of their own.
    always: bool,
    /// An ordered-set aggregate: its values are its WITHIN GROUP keys.
    ordered_set: bool,
}

fn reading(name: &str) -> Option<Reading> {
    let r = |per_row, arity, always, ordered_set| {
        Some(Reading {
            per_row,
            arity,
            always,
            ordered_set,
        })
    };
    match name {
        // Unordered, these concatenate as they are (see `Concatenation`).
        "string_agg" => r(&[0], Some(2), false, false),
        "array_agg" | "jsonb_agg" => r(&[0], Some(1), false, false),
        // Combined across shards unless DISTINCT (or an ORDER BY, which changes nothing).
        "sum" | "avg" | "min" | "max" | "bit_and" | "bit_or" | "bit_xor" | "bool_and"
        | "bool_or" | "every" | "stddev" | "stddev_pop" | "stddev_samp" | "variance"
        | "var_pop" | "var_samp" => r(&[0], Some(1), false, false),
        // Their separators and layout follow the values' type: never concatenated.
        "json_agg" => r(&[0], Some(1), true, false),
        "json_object_agg" | "jsonb_object_agg" => r(&[0, 1], Some(2), true, false),
        "xmlagg" | "range_agg" | "range_intersect_agg" => r(&[0], Some(1), true, false),
        // Over float8, accumulated row by row: the gathered rows, in the order the shards
        // return them, are added up as one server scanning them in that order would.
        "corr" | "covar_pop" | "covar_samp" | "regr_avgx" | "regr_avgy" | "regr_count"
        | "regr_intercept" | "regr_r2" | "regr_slope" | "regr_sxx" | "regr_sxy" | "regr_syy" => {
            r(&[0, 1], Some(2), true, false)
        }
        "percentile_cont" | "percentile_disc" => r(&[], Some(1), true, true),
        "mode" => r(&[], Some(0), true, true),
        // Hypothetical-set: the rank a row of the given values would have.
        "rank" | "dense_rank" | "percent_rank" | "cume_dist" => r(&[], None, true, true),
        _ => None,
    }
}

/// The name of the evaluation's column for part `n`.
fn column(n: usize) -> Ident {
    Ident::new(format!("__shardgate_e{n}"))
}

/// Whether `e` is a call this module answers or refuses (see `call`), told from its form
/// alone, without building its gathering.
pub fn answers(e: &Expr) -> bool {
    form(e).is_some()
}

/// The gathering of call `e`, if it is one this module answers; Err: a form of such a call
/// the merge cannot answer, and why.
pub fn call(e: &Expr) -> Option<Result<Gathered, String>> {
    let (f, reading, distinct) = form(e)?;
    let args: Vec<Expr> = match &f.args {
        FunctionArguments::List(list) => list
            .args
            .iter()
            .filter_map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) => Some(x.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Some(gathered(f, &args, &reading, distinct))
}

/// The call, how it reads its arguments and whether it is DISTINCT, if `e` is a call this
/// module gathers: a known aggregate, not a window, with an order, DISTINCT or WITHIN GROUP
/// (or one always gathered), its arguments unnamed and as many as it takes.
fn form(e: &Expr) -> Option<(&Function, Reading, bool)> {
    let Expr::Function(f) = e else { return None };
    let reading = reading(&crate::sql::catalog_function_name(&f.name)?)?;
    if f.over.is_some() || f.null_treatment.is_some() {
        return None;
    }
    if reading.ordered_set == f.within_group.is_empty() {
        return None;
    }
    let FunctionArguments::List(list) = &f.args else {
        // `mode()` has no arguments.
        return match (reading.ordered_set, &f.args) {
            (true, FunctionArguments::None) => Some((f, reading, false)),
            _ => None,
        };
    };
    let mut ordered = false;
    for clause in &list.clauses {
        match clause {
            FunctionArgumentClause::OrderBy(_) => ordered = true,
            _ => return None,
        }
    }
    let distinct = list.duplicate_treatment == Some(DuplicateTreatment::Distinct);
    if !(ordered || distinct || reading.always) {
        return None;
    }
    let unnamed = list
        .args
        .iter()
        .all(|a| matches!(a, FunctionArg::Unnamed(FunctionArgExpr::Expr(_))));
    if !unnamed || reading.arity.is_some_and(|n| n != list.args.len()) {
        return None;
    }
    Some((f, reading, distinct))
}

fn gathered(
    f: &Function,
    args: &[Expr],
    reading: &Reading,
    distinct: bool,
) -> Result<Gathered, String> {
    let call = Expr::Function(f.clone());
    let constants: Vec<Expr> = (0..args.len())
        .filter(|i| !reading.per_row.contains(i))
        .map(|i| args[i].clone())
        .collect();
    if let Some(c) = constants.iter().find(|c| !constant(c)) {
        return Err(format!(
            "{call} over several shards needs its argument {c} written as a constant or bound as a value: every row must share it"
        ));
    }
    let filter = f
        .filter
        .as_ref()
        .map_or(String::new(), |c| format!(" FILTER (WHERE {c})"));
    let mut parts = Vec::new();
    let mut gather = |x: &Expr| -> Result<Expr, String> {
        // A string literal the call would read as text is of no type to array_agg.
        let x = match x {
            Expr::Value(v)
                if matches!(
                    v.value,
                    Value::SingleQuotedString(_) | Value::EscapedStringLiteral(_)
                ) =>
            {
                format!("CAST({x} AS text)")
            }
            _ => x.to_string(),
        };
        parts.push(
            crate::sql::expression(&format!("array_agg({x}){filter}"))
                .map_err(|e| format!("{call} over several shards: {e}"))?,
        );
        Ok(Expr::Identifier(column(parts.len() - 1)))
    };
    let mut evaluated = f.clone();
    evaluated.filter = None;
    let mut values = Vec::new();
    if let FunctionArguments::List(list) = &mut evaluated.args {
        for &i in reading.per_row {
            let FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) = &mut list.args[i] else {
                unreachable!("checked by `call`")
            };
            values.push(x.to_string());
            *x = gather(x)?;
        }
        for clause in &mut list.clauses {
            let FunctionArgumentClause::OrderBy(keys) = clause else {
                continue;
            };
            for k in keys {
                k.expr = match (distinct, values.iter().position(|v| *v == k.expr.to_string())) {
                    // PostgreSQL requires DISTINCT's order to read the arguments.
                    (true, Some(at)) => Expr::Identifier(column(at)),
                    (true, None) => return Err(format!(
                        "{call} over several shards is not supported: with DISTINCT, order by the aggregated value itself"
                    )),
                    (false, _) => gather(&k.expr)?,
                };
            }
        }
    }
    for k in &mut evaluated.within_group {
        k.expr = gather(&k.expr)?;
    }
    let ordered = distinct
        || !evaluated.within_group.is_empty()
        || matches!(&evaluated.args, FunctionArguments::List(l) if !l.clauses.is_empty());
    Ok(Gathered {
        parts,
        ordered,
        constants,
        evaluated,
    })
}

/// One value for every row: a literal or a bound value, cast, negated or in an ARRAY.
fn constant(e: &Expr) -> bool {
    match e {
        Expr::Value(_) => true,
        Expr::Cast { expr, .. } | Expr::UnaryOp { expr, .. } | Expr::Nested(expr) => constant(expr),
        Expr::Array(a) => a.elem.iter().all(constant),
        _ => false,
    }
}

impl Gathered {
    /// The call evaluated over the gathered arrays, which the evaluation reads as `columns`
    /// (one per part, in order). The unnesting is in a select list, where the arrays are read
    /// in lockstep and a composite element stays one value.
    pub fn evaluated(&self, columns: &[String]) -> Result<Expr, String> {
        let unnested: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(n, c)| format!("unnest({c}) AS {}", column(n)))
            .collect();
        let text = format!(
            "(SELECT {} FROM (SELECT {}) AS __shardgate_u)",
            self.evaluated,
            unnested.join(", ")
        );
        crate::sql::expression(&text)
            .map_err(|e| format!("{} over several shards: {e}", self.evaluated))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expr(sql: &str) -> Expr {
        crate::sql::expression(sql).unwrap()
    }

    fn gathered(sql: &str) -> Gathered {
        call(&expr(sql)).expect("answered").expect("gathered")
    }

    fn parts(g: &Gathered) -> Vec<String> {
        g.parts.iter().map(ToString::to_string).collect()
    }

    fn evaluated(g: &Gathered) -> String {
        let columns: Vec<String> = (0..g.parts.len()).map(|n| format!("c{n}")).collect();
        g.evaluated(&columns).unwrap().to_string()
    }

    #[test]
    fn values_then_keys_are_gathered_under_the_filter() {
        let g =
            gathered("string_agg(name, ', ' ORDER BY id DESC, k NULLS FIRST) FILTER (WHERE ok)");
        assert_eq!(
            parts(&g),
            [
                "array_agg(name) FILTER (WHERE ok)",
                "array_agg(id) FILTER (WHERE ok)",
                "array_agg(k) FILTER (WHERE ok)"
            ]
        );
        assert!(g.ordered);
        assert_eq!(g.constants, [expr("', '")]);
        assert_eq!(
            evaluated(&g),
            "(SELECT string_agg(__shardgate_e0, ', ' ORDER BY __shardgate_e1 DESC, __shardgate_e2 NULLS FIRST) \
             FROM (SELECT unnest(c0) AS __shardgate_e0, unnest(c1) AS __shardgate_e1, unnest(c2) AS __shardgate_e2) AS __shardgate_u)"
        );
    }

    #[test]
    fn a_string_literal_is_gathered_as_text() {
        assert_eq!(
            parts(&gathered("string_agg('x', ',' ORDER BY id)")),
            ["array_agg(CAST('x' AS TEXT))", "array_agg(id)"]
        );
    }

    #[test]
    fn distinct_gathers_the_values_alone_and_orders_by_them() {
        let g = gathered("pg_catalog.array_agg(DISTINCT x ORDER BY x DESC)");
        assert_eq!(parts(&g), ["array_agg(x)"]);
        assert!(evaluated(&g).starts_with(
            "(SELECT pg_catalog.array_agg(DISTINCT __shardgate_e0 ORDER BY __shardgate_e0 DESC) FROM"
        ));
        assert!(gathered("string_agg(DISTINCT x, ',')").ordered);
        let g = gathered("avg(DISTINCT x) FILTER (WHERE y)");
        assert_eq!(parts(&g), ["array_agg(x) FILTER (WHERE y)"]);
        assert!(evaluated(&g).starts_with("(SELECT avg(DISTINCT __shardgate_e0) FROM"));
        let other_key = call(&expr("array_agg(DISTINCT x ORDER BY y)")).unwrap();
        assert!(other_key.unwrap_err().contains("aggregated value itself"));
    }

    #[test]
    fn ordered_set_aggregates_gather_their_keys() {
        let g = gathered("percentile_cont(ARRAY[0.25, $2]) WITHIN GROUP (ORDER BY x DESC)");
        assert_eq!(parts(&g), ["array_agg(x)"]);
        assert!(g.ordered);
        assert!(evaluated(&g).starts_with(
            "(SELECT percentile_cont(ARRAY[0.25, $2]) WITHIN GROUP (ORDER BY __shardgate_e0 DESC) FROM"
        ));
        assert_eq!(
            parts(&gathered("mode() WITHIN GROUP (ORDER BY x)")),
            ["array_agg(x)"]
        );
        let per_row = call(&expr("percentile_disc(y) WITHIN GROUP (ORDER BY x)")).unwrap();
        assert!(per_row.unwrap_err().contains("constant"));
    }

    #[test]
    fn statistics_and_hypothetical_ranks_gather_what_they_read() {
        let g = gathered("corr(y, x) FILTER (WHERE x > 0)");
        assert!(!g.ordered);
        assert_eq!(
            parts(&g),
            [
                "array_agg(y) FILTER (WHERE x > 0)",
                "array_agg(x) FILTER (WHERE x > 0)"
            ]
        );
        assert!(evaluated(&g).starts_with("(SELECT corr(__shardgate_e0, __shardgate_e1) FROM"));
        let g = gathered("rank(3, 'b') WITHIN GROUP (ORDER BY a DESC, b)");
        assert_eq!(parts(&g), ["array_agg(a)", "array_agg(b)"]);
        assert_eq!(g.constants, [expr("3"), expr("'b'")]);
        assert!(g.ordered);
    }

    #[test]
    fn json_calls_are_gathered_even_unordered_and_the_rest_is_left() {
        let g = gathered("json_agg(t)");
        assert!(!g.ordered);
        assert_eq!(parts(&g), ["array_agg(t)"]);
        assert_eq!(
            parts(&gathered("jsonb_object_agg(k, v)")),
            ["array_agg(k)", "array_agg(v)"]
        );
        for left in [
            "string_agg(x, ',')",
            "array_agg(x)",
            "jsonb_agg(x)",
            "json_agg(x) OVER ()",
            "rank() OVER (ORDER BY x)",
            "corr(x)",
            "myschema.json_agg(x)",
            "\"json_agg\"(x)",
            "percentile_cont(0.5)",
            "sum(x)",
            "count(DISTINCT x)",
            "string_agg(x)",
        ] {
            assert!(call(&expr(left)).is_none(), "{left}");
        }
    }

    #[test]
    fn a_separator_must_be_one_for_every_row() {
        assert_eq!(
            gathered("string_agg(x, $2 ORDER BY x)").constants,
            [expr("$2")]
        );
        let per_row = call(&expr("string_agg(x, sep ORDER BY x)")).unwrap();
        assert!(per_row.unwrap_err().contains("constant"));
    }
}
