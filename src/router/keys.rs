//! Finding shard-key values in a WHERE clause: only AND-connected `key = v`, `key IN (...)` and
//! `key = ANY($n)` count, so `WHERE id = 5 OR v = 1` is (correctly) not a single-shard query.

use super::params::Params;
use crate::placement::{KeyType, KeyValue};
use sqlparser::ast::{BinaryOperator, Expr, Value};

/// What a predicate says about the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySet {
    /// Nothing usable: every shard may hold matching rows.
    Any,
    /// Only rows whose key is one of these can match (empty: none can).
    Values(Vec<KeyValue>),
}

/// Keys constrained by `expr` for the column that `is_key` recognises.
pub fn keys_in(
    expr: &Expr,
    is_key: &dyn Fn(&Expr) -> bool,
    ty: KeyType,
    params: &Params,
) -> Result<KeySet, String> {
    match expr {
        Expr::Nested(inner) => keys_in(inner, is_key, ty, params),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            // The first conjunct that constrains the key is enough: every matching row satisfies it.
            match keys_in(left, is_key, ty, params)? {
                KeySet::Any => keys_in(right, is_key, ty, params),
                found => Ok(found),
            }
        }
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } => {
            let value = if is_key(strip(left)) {
                right
            } else if is_key(strip(right)) {
                left
            } else {
                return Ok(KeySet::Any);
            };
            Ok(match literal_key(value, ty, params)? {
                Some(Some(v)) => KeySet::Values(vec![v]),
                Some(None) => KeySet::Values(vec![]),
                None => KeySet::Any,
            })
        }
        Expr::InList {
            expr,
            list,
            negated: false,
        } if is_key(strip(expr)) => {
            let mut out = Vec::new();
            for item in list {
                match literal_key(item, ty, params)? {
                    Some(Some(v)) => out.push(v),
                    Some(None) => {}
                    None => return Ok(KeySet::Any),
                }
            }
            Ok(KeySet::Values(out))
        }
        Expr::AnyOp {
            left,
            compare_op: BinaryOperator::Eq,
            right,
            ..
        } if is_key(strip(left)) => match strip(right) {
            Expr::Value(v) => match &v.value {
                Value::Placeholder(p) => {
                    Ok(KeySet::Values(params.key_array(placeholder_index(p)?, ty)?))
                }
                _ => Ok(KeySet::Any),
            },
            Expr::Array(arr) => {
                let mut out = Vec::new();
                for item in &arr.elem {
                    match literal_key(item, ty, params)? {
                        Some(Some(v)) => out.push(v),
                        Some(None) => {}
                        None => return Ok(KeySet::Any),
                    }
                }
                Ok(KeySet::Values(out))
            }
            _ => Ok(KeySet::Any),
        },
        _ => Ok(KeySet::Any),
    }
}

/// Casts and parentheses do not change which row a value names.
pub fn strip(e: &Expr) -> &Expr {
    match e {
        Expr::Nested(inner) => strip(inner),
        Expr::Cast { expr, .. } => strip(expr),
        other => other,
    }
}

/// `Some(Some(v))` a key value, `Some(None)` SQL NULL, `None` not a constant.
pub fn literal_key(
    e: &Expr,
    ty: KeyType,
    params: &Params,
) -> Result<Option<Option<KeyValue>>, String> {
    let (e, negative) = match strip(e) {
        Expr::UnaryOp {
            op: sqlparser::ast::UnaryOperator::Minus,
            expr,
        } => (strip(expr), true),
        other => (other, false),
    };
    let Expr::Value(v) = e else { return Ok(None) };
    let text = match &v.value {
        Value::Number(n, _) => {
            if negative {
                format!("-{n}")
            } else {
                n.clone()
            }
        }
        Value::SingleQuotedString(s) if !negative => s.clone(),
        Value::Null => return Ok(Some(None)),
        Value::Placeholder(p) if !negative => {
            return params.key(placeholder_index(p)?, ty).map(Some)
        }
        _ => return Ok(None),
    };
    KeyValue::from_text(ty, &text).map(|v| Some(Some(v)))
}

fn placeholder_index(p: &str) -> Result<usize, String> {
    p.strip_prefix('$')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("unsupported parameter {p}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn keys(where_clause: &str, params: &Params) -> KeySet {
        let e = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(where_clause)
            .unwrap()
            .parse_expr()
            .unwrap();
        let is_key = |e: &Expr| matches!(e, Expr::Identifier(i) if i.value == "id");
        keys_in(&e, &is_key, KeyType::Integer, params).unwrap()
    }

    #[test]
    fn and_connected_equalities_count_or_does_not() {
        let none = Params::default();
        assert_eq!(
            keys("id = 5 and v > 1", &none),
            KeySet::Values(vec![KeyValue::Integer(5)])
        );
        assert_eq!(
            keys("v > 1 and (id = '7')", &none),
            KeySet::Values(vec![KeyValue::Integer(7)])
        );
        assert_eq!(keys("id = 5 or v = 1", &none), KeySet::Any);
        assert_eq!(
            keys("id in (1, -2)", &none),
            KeySet::Values(vec![KeyValue::Integer(1), KeyValue::Integer(-2)])
        );
        assert_eq!(keys("id > 5", &none), KeySet::Any);
        assert_eq!(keys("id = null", &none), KeySet::Values(vec![]));
        assert_eq!(
            keys("id = 5::bigint", &none),
            KeySet::Values(vec![KeyValue::Integer(5)])
        );
        assert_eq!(
            keys("id = any(array[3, 4])", &none),
            KeySet::Values(vec![KeyValue::Integer(3), KeyValue::Integer(4)])
        );
    }

    #[test]
    fn placeholders_use_bound_values() {
        let p = Params {
            values: smallvec::smallvec![
                Some(bytes::Bytes::from_static(b"9")),
                Some(bytes::Bytes::from_static(b"{1,2}")),
            ],
            formats: vec![],
        };
        assert_eq!(
            keys("id = $1", &p),
            KeySet::Values(vec![KeyValue::Integer(9)])
        );
        assert_eq!(
            keys("id = any($2)", &p),
            KeySet::Values(vec![KeyValue::Integer(1), KeyValue::Integer(2)])
        );
    }
}
