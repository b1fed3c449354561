//! Which aggregate calls combine across shards, and as what: each shard's partial count, sum,
//! min, max and bitwise aggregate adds up (or compares, or ORs) to the whole's, its string_agg,
//! array_agg and jsonb_agg concatenate with the others'; count(DISTINCT x) is counted by the merge from the values; anything
//! else is named in the refusal.

use sqlparser::ast::{Expr, FunctionArguments, Ident, ObjectNamePart, Value};

/// The aggregate function of an expression, if it is a supported one applied directly.
pub(in crate::router) fn aggregate_kind(e: &Expr) -> Result<Option<&'static str>, String> {
    let Expr::Function(f) = e else {
        return Ok(None);
    };
    let name = match f.name.0.last() {
        Some(ObjectNamePart::Identifier(i)) => i.value.to_ascii_lowercase(),
        _ => return Ok(None),
    };
    if let FunctionArguments::List(list) = &f.args {
        if name == "count"
            && list.duplicate_treatment == Some(sqlparser::ast::DuplicateTreatment::Distinct)
            && list.clauses.is_empty()
            && distinct_argument(e).is_some()
            && f.over.is_none()
            && f.within_group.is_empty()
        {
            return Ok(Some("count_distinct"));
        }
    }
    let kind = match name.as_str() {
        "count" => "count",
        "sum" => "sum",
        // Over booleans false sorts first: AND is the least of the shards' answers, OR the
        // greatest.
        "min" | "bool_and" | "every" => "min",
        "max" | "bool_or" => "max",
        "avg" => "avg",
        // Over integers OR, AND and XOR are associative and skip NULLs: the shards' partials
        // combine to the whole's (other types are refused by the merge).
        "bit_or" => "bit_or",
        "bit_and" => "bit_and",
        "bit_xor" => "bit_xor",
        // Their partials concatenate in the merge (string_agg's with its separator, see
        // `separator`).
        "string_agg" => "string_agg",
        "array_agg" => "array_agg",
        "jsonb_agg" => "jsonb_agg",
        _ => return Ok(None),
    };
    // FILTER only chooses the rows a shard aggregates, so its partials combine as any other.
    if f.over.is_some() || !f.within_group.is_empty() {
        return Err(format!(
            "{name}() with OVER or WITHIN GROUP over several shards is not supported"
        ));
    }
    if let FunctionArguments::List(list) = &f.args {
        if list.duplicate_treatment.is_some() && f.filter.is_some() {
            return Err(format!(
                "{name}(DISTINCT ...) FILTER (...) over several shards is not supported"
            ));
        }
        if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
            return Err(format!(
                "{name}(DISTINCT ...) other than count(DISTINCT x), and ordered aggregates, over several shards are not supported"
            ));
        }
        let arguments = if kind == "string_agg" { 2 } else { 1 };
        if list.args.len() != arguments {
            return Err(format!(
                "{name}() with {} arguments is not supported",
                list.args.len()
            ));
        }
    }
    Ok(Some(kind))
}

/// The separator of `string_agg(x, separator)`: a string literal, or a bound value, which every
/// row of every shard puts between its value and the one before, so the merge joins the
/// shards' partial strings with it. Err: another separator, which the merge cannot know.
pub(super) fn separator(
    e: &Expr,
    params: &crate::router::params::Params,
) -> Result<Vec<u8>, String> {
    use sqlparser::ast::{FunctionArg, FunctionArgExpr};
    let given = match e {
        Expr::Function(f) => match &f.args {
            FunctionArguments::List(list) => match list.args.as_slice() {
                [_, FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v)))] => {
                    match &v.value {
                        Value::SingleQuotedString(s) => Some(s.clone().into_bytes()),
                        Value::Placeholder(p) => p
                            .strip_prefix('$')
                            .and_then(|n| n.parse::<usize>().ok())
                            .and_then(|n| params.text(n))
                            .map(String::into_bytes),
                        _ => None,
                    }
                }
                _ => None,
            },
            _ => None,
        },
        _ => None,
    };
    given.ok_or_else(|| {
        format!(
            "{e} over several shards needs its separator written as a string or bound as a value"
        )
    })
}

/// The aggregate an item combines as: a supported aggregate itself, or `coalesce(sum(x), 0)`
/// / `coalesce(count(x), 0)` (Django's `Sum(..., default=0)`), which combines as its
/// aggregate because 0 adds nothing: the shards' coalesced partials add up to the coalesced
/// total, and to 0 when no shard has a row. Only an integer 0: `0.0` would give an integer
/// sum a scale the client's server would not write.
pub(super) fn combined_kind(e: &Expr) -> Result<Option<&'static str>, String> {
    match zero_default(e) {
        Some(kind) => Ok(Some(kind)),
        None => aggregate_kind(e),
    }
}

/// The aggregate of a `coalesce(sum(x), 0)` or `coalesce(count(x), 0)`.
pub(super) fn zero_default(e: &Expr) -> Option<&'static str> {
    use sqlparser::ast::{FunctionArg, FunctionArgExpr};
    let Expr::Function(f) = e else { return None };
    let coalesce = matches!(f.name.0.as_slice(), [ObjectNamePart::Identifier(i)] if i.value.eq_ignore_ascii_case("coalesce"));
    let (true, FunctionArguments::List(list)) = (coalesce, &f.args) else {
        return None;
    };
    let [FunctionArg::Unnamed(FunctionArgExpr::Expr(agg)), FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(zero)))] =
        list.args.as_slice()
    else {
        return None;
    };
    match aggregate_kind(agg) {
        Ok(Some(kind @ ("sum" | "count"))) if matches!(&zero.value, Value::Number(n, _) if n == "0") => {
            Some(kind)
        }
        _ => None,
    }
}

/// Whether `e` is one value on every shard: literals, bound parameters and the transaction's
/// clock (`now()`, which the proxy gives every shard of a read alike: see `sql::clock`), with
/// casts and operators over them. Other function calls are not (`random()` differs between
/// servers).
pub(super) fn is_constant(e: &Expr) -> bool {
    match e {
        Expr::Value(_) | Expr::TypedString { .. } => true,
        Expr::Function(f) => crate::sql::clock::stamped_call(&f.name).is_some(),
        Expr::Cast { expr, .. } | Expr::UnaryOp { expr, .. } | Expr::Nested(expr) => {
            is_constant(expr)
        }
        Expr::BinaryOp { left, right, .. } => is_constant(left) && is_constant(right),
        _ => false,
    }
}

/// A constant written out, which any server evaluates alike (`is_constant` without the clock's
/// calls, which the evaluation after the merge would read at another time).
pub(super) fn is_literal(e: &Expr) -> bool {
    is_constant(e)
        && crate::sql::first_expression(e, |x| matches!(x, Expr::Function(_)).then_some(()))
            .is_none()
}

/// Whether `e` is or holds a count(DISTINCT ...).
pub(super) fn counts_distinct(e: &Expr) -> bool {
    crate::sql::first_expression(e, |x| {
        matches!(aggregate_kind(x), Ok(Some("count_distinct"))).then_some(())
    })
    .is_some()
}

pub(super) fn has_count_distinct(items: &[(Expr, Option<Ident>)]) -> bool {
    items
        .iter()
        .any(|(e, _)| matches!(aggregate_kind(e), Ok(Some("count_distinct"))))
}

/// Why an item calling an aggregate (or window) function cannot be merged.
pub(super) fn not_combinable(e: &Expr) -> String {
    match e {
        Expr::Function(_) => format!(
            "{e} over several shards is not supported: the proxy cannot combine the shards' partial results"
        ),
        _ => format!("the expression {e} combines aggregates, which cannot be merged across shards"),
    }
}

/// The values a one-argument aggregate such as `count(DISTINCT x)` reads: x, or what its
/// FILTER keeps of x.
pub(super) fn distinct_argument(e: &Expr) -> Option<Expr> {
    use sqlparser::ast::{FunctionArg, FunctionArgExpr};
    let Expr::Function(f) = e else { return None };
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    let [FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))] = list.args.as_slice() else {
        return None;
    };
    // `count(DISTINCT x) FILTER (WHERE c)` counts the values of `CASE WHEN c THEN x END`:
    // a row the filter leaves out gives NULL, which a distinct count skips as it skips x's.
    Some(match &f.filter {
        None => arg.clone(),
        Some(c) => Expr::Case {
            case_token: sqlparser::ast::helpers::attached_token::AttachedToken::empty(),
            end_token: sqlparser::ast::helpers::attached_token::AttachedToken::empty(),
            operand: None,
            conditions: vec![sqlparser::ast::CaseWhen {
                condition: Expr::Nested(c.clone()),
                result: arg.clone(),
            }],
            else_result: None,
        },
    })
}
