//! HAVING's conditions read as the merge applies them: an aggregate or group column compared
//! with a constant (a literal, `true`/`false`, or a bound value), the constant on either side,
//! or a boolean aggregate alone or negated. Anything else is refused by the planner.

use super::kinds::aggregate_kind;
use super::spec::ConstType;
use crate::router::params::Params;
use sqlparser::ast::{BinaryOperator, Expr, Value};

/// `bool_and(x)`, `bool_or(x)` or `every(x)` alone as a HAVING condition (Some(call, true)),
/// or under NOT (Some(call, false)).
pub(super) fn bare_boolean(e: &Expr) -> Option<(&Expr, bool)> {
    match e {
        Expr::Nested(i) => bare_boolean(i),
        Expr::UnaryOp {
            op: sqlparser::ast::UnaryOperator::Not,
            expr,
        } => bare_boolean(expr).map(|(call, holds)| (call, !holds)),
        Expr::Function(f)
            if matches!(aggregate_kind(e), Ok(Some(_)))
                && ["bool_and", "bool_or", "every"]
                    .iter()
                    .any(|n| f.name.to_string().eq_ignore_ascii_case(n)) =>
        {
            Some((e, true))
        }
        _ => None,
    }
}

/// A constant: a literal, or a bound parameter (ORMs bind HAVING's values), with the type
/// PostgreSQL gives it.
pub(super) fn literal(e: &Expr, params: &Params) -> Option<(String, ConstType)> {
    match e {
        Expr::Value(v) => match &v.value {
            // Digits alone are an integer where one fits, anything else numeric.
            Value::Number(n, _) => Some(match n.parse::<i64>() {
                Ok(_) if n.bytes().all(|b| b.is_ascii_digit()) => (n.clone(), ConstType::Integer),
                _ => (n.clone(), ConstType::Numeric),
            }),
            Value::Boolean(b) => Some((b.to_string(), ConstType::Column)),
            Value::SingleQuotedString(s) => Some((s.clone(), ConstType::Column)),
            Value::Placeholder(p) => {
                let n: usize = p.strip_prefix('$')?.parse().ok()?;
                let value = match (
                    params.format_of(n.checked_sub(1)?),
                    params.binary_undeclared(n),
                ) {
                    // As sent: a string's blanks are part of it.
                    (0, _) => params.text(n),
                    // Binary and left to the server, it has the type of what it is compared
                    // with, which is not known here: a float's or a date's bytes are no
                    // integer's.
                    (_, true) => None,
                    _ => params.constant(n),
                }?;
                Some((value, typed_as(params.type_of(n))))
            }
            _ => None,
        },
        Expr::UnaryOp {
            op: sqlparser::ast::UnaryOperator::Minus,
            expr,
        } => literal(expr, params).map(|(l, typed)| (format!("-{l}"), typed)),
        Expr::Nested(i) => literal(i, params),
        // `$1::INTEGER`, as psycopg binds with SQLAlchemy: an integer stays itself.
        Expr::Cast {
            expr, data_type, ..
        } if matches!(
            type_name(data_type).as_str(),
            "INTEGER" | "INT" | "INT4" | "BIGINT" | "INT8" | "SMALLINT" | "INT2"
        ) =>
        {
            // Left to the server, a parameter under the cast is of the cast's type.
            let bare = match &**expr {
                Expr::Value(v) => match &v.value {
                    Value::Placeholder(p) => p.strip_prefix('$').and_then(|n| n.parse().ok()),
                    _ => None,
                },
                _ => None,
            };
            match bare {
                Some(n) if params.binary_undeclared(n) => params.constant(n),
                _ => literal(expr, params).map(|(l, _)| l),
            }
            .map(|l| l.trim().to_string())
            .filter(|l| l.parse::<i64>().is_ok())
            .map(|l| (l, ConstType::Integer))
        }
        // `$1::NUMERIC`, as SQLAlchemy binds a Decimal. With a typmod the cast would round:
        // refused.
        Expr::Cast {
            expr, data_type, ..
        } if matches!(type_name(data_type).as_str(), "NUMERIC" | "DECIMAL") => {
            literal(expr, params)
                .filter(|(l, _)| plain_decimal(l))
                .map(|(l, _)| (l, ConstType::Numeric))
        }
        // `5.57::float8`: text that reads as a float (a binary value under the cast is read
        // as its declared type or not at all, as above).
        Expr::Cast {
            expr, data_type, ..
        } => {
            let typed = match type_name(data_type).as_str() {
                "FLOAT8" | "DOUBLE PRECISION" | "FLOAT" => ConstType::Float8,
                "FLOAT4" | "REAL" => ConstType::Float4,
                _ => return None,
            };
            literal(expr, params)
                .filter(|(l, _)| l.trim().parse::<f64>().is_ok())
                .map(|(l, _)| (l, typed))
        }
        _ => None,
    }
}

/// A parameter's type as a HAVING constant's: one the server infers (0) is the column's.
fn typed_as(type_oid: u32) -> ConstType {
    use crate::router::params::oid;
    match type_oid {
        oid::INT2 | oid::INT4 | oid::INT8 => ConstType::Integer,
        oid::NUMERIC => ConstType::Numeric,
        oid::FLOAT4 => ConstType::Float4,
        oid::FLOAT8 => ConstType::Float8,
        _ => ConstType::Column,
    }
}

/// A cast's type in upper case, `pg_catalog.` left off (as the proxy writes a subquery's
/// answer it ran first, see `router::uncorrelated`).
fn type_name(t: &sqlparser::ast::DataType) -> String {
    let name = t.to_string().to_ascii_uppercase();
    match name.strip_prefix("PG_CATALOG.") {
        Some(plain) => plain.to_string(),
        None => name,
    }
}

/// `-12.50`, `3`, `.5`: digits with at most one point and a leading minus, nothing else.
fn plain_decimal(l: &str) -> bool {
    let digits = l.strip_prefix('-').unwrap_or(l);
    digits.chars().any(|c| c.is_ascii_digit())
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && digits.matches('.').count() <= 1
}

/// The operator with its sides swapped (`5 < x` read as `x > 5`).
pub(super) fn flip(op: &BinaryOperator) -> BinaryOperator {
    match op {
        BinaryOperator::Lt => BinaryOperator::Gt,
        BinaryOperator::LtEq => BinaryOperator::GtEq,
        BinaryOperator::Gt => BinaryOperator::Lt,
        BinaryOperator::GtEq => BinaryOperator::LtEq,
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_decimals_pass_a_numeric_cast() {
        for ok in ["3", "-12.50", ".5", "7."] {
            assert!(plain_decimal(ok), "{ok}");
        }
        for not in ["", "-", ".", "1e5", "NaN", "1.2.3", "+1", " 1", "Infinity"] {
            assert!(!plain_decimal(not), "{not}");
        }
    }
}
