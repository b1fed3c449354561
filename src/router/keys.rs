//! Finding shard-key values in a WHERE clause: only AND-connected `key = v`, `key IN (...)` and
//! `key = ANY($n)` count, so `WHERE id = 5 OR v = 1` is (correctly) not a single-shard query.

use super::params::Params;
use crate::placement::{KeyType, KeyValue};
use sqlparser::ast::{BinaryOperator, CharacterLength, DataType, ExactNumberInfo, Expr, Value};

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
            let (column, value) = if is_key(strip_for(left, ty)) {
                (left, right)
            } else if is_key(strip_for(right, ty)) {
                (right, left)
            } else {
                return Ok(KeySet::Any);
            };
            // `id::numeric = '5.0'`: the string is read as a number, as the column is.
            if made_numeric(column) && is_string(value) {
                return Ok(KeySet::Any);
            }
            Ok(
                match compared_key(value, ty, params, compared(column, ty))? {
                    Some(Some(v)) => KeySet::Values(vec![v]),
                    Some(None) => KeySet::Values(vec![]),
                    None => KeySet::Any,
                },
            )
        }
        Expr::InList {
            expr,
            list,
            negated: false,
        } if is_key(strip_for(expr, ty)) => {
            let how = compared(expr, ty);
            let mut out = Vec::new();
            for item in list {
                match compared_key(item, ty, params, how)? {
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
        } if is_key(strip_for(left, ty)) => match strip_for(right, ty) {
            Expr::Value(v) => match &v.value {
                // Elements compared with the key's text or as numbers may be written in ways
                // no key is: not read.
                Value::Placeholder(_) if compared(left, ty) != ComparedAs::Key => Ok(KeySet::Any),
                Value::Placeholder(p) => Ok(params
                    .key_array(placeholder_index(p)?, ty)?
                    .map_or(KeySet::Any, KeySet::Values)),
                _ => Ok(KeySet::Any),
            },
            Expr::Array(arr) => {
                let how = compared(left, ty);
                let mut out = Vec::new();
                for item in &arr.elem {
                    match compared_key(item, ty, params, how)? {
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

/// What the key column's side of a comparison is compared as, after its casts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ComparedAs {
    /// The key itself, or an integer type for an integer key: a value is read as a key.
    Key,
    /// The key's text (`id::text` of an integer or uuid key): a value is text, and one no
    /// key is written as matches no row rather than failing.
    Text,
    /// A number (`id::numeric`): `5.0` matches 5, so only integer literals are keys.
    Numeric,
}

/// How `column` (the key, under the casts `strip_for` looks through) is compared: its
/// outermost cast decides, since that is the type the other side meets.
fn compared(column: &Expr, ty: KeyType) -> ComparedAs {
    match column {
        Expr::Nested(inner) => compared(inner, ty),
        Expr::Cast { data_type, .. } if as_text(data_type) && ty != KeyType::Text => {
            ComparedAs::Text
        }
        Expr::Cast {
            data_type:
                DataType::Numeric(ExactNumberInfo::None) | DataType::Decimal(ExactNumberInfo::None),
            ..
        } => ComparedAs::Numeric,
        _ => ComparedAs::Key,
    }
}

/// As `literal_key`, for a value compared with the key as `how` says.
fn compared_key(
    e: &Expr,
    ty: KeyType,
    params: &Params,
    how: ComparedAs,
) -> Result<Option<Option<KeyValue>>, String> {
    let placeholder = match strip_for(e, ty) {
        Expr::Value(v) => match &v.value {
            Value::Placeholder(p) => Some(placeholder_index(p)?),
            _ => None,
        },
        _ => None,
    };
    match (how, placeholder) {
        (ComparedAs::Key, _) => literal_key(e, ty, params),
        // Left to the server, the parameter is numeric, whose binary form is no integer's.
        (ComparedAs::Numeric, Some(_)) => Ok(None),
        (ComparedAs::Numeric, None) => literal_key(e, ty, params),
        // Under a cast of its own (`$1::int8::text`) the parameter may arrive in the binary
        // form of another type: not read.
        (ComparedAs::Text, Some(_)) if !bare_or_text(e) => Ok(None),
        (ComparedAs::Text, Some(n)) => params.key_from_text(n, ty).map(Some),
        (ComparedAs::Text, None) => match literal_key(e, ty, params) {
            // `id::text = 'abc'` is false for every row, as PostgreSQL answers.
            Err(_) => Ok(Some(None)),
            found => found,
        },
    }
}

/// A parameter in parentheses, or under casts to text only: text in either format.
fn bare_or_text(e: &Expr) -> bool {
    match e {
        Expr::Nested(inner) => bare_or_text(inner),
        Expr::Cast {
            expr, data_type, ..
        } => as_text(data_type) && bare_or_text(expr),
        other => is_placeholder(other),
    }
}

/// Parentheses, and the casts that keep a value of any key type as it is: to `text` and to
/// `varchar` without a length. Any other cast may change which rows an equality matches
/// (`name::varchar(2) = 'ab'` matches `abc` too, `name::int = 5` matches `05`), so an
/// expression under one is not read as the key or its value.
pub fn strip(e: &Expr) -> &Expr {
    match e {
        Expr::Nested(inner) => strip(inner),
        Expr::Cast {
            expr, data_type, ..
        } if as_text(data_type) => strip(expr),
        other => other,
    }
}

/// As `strip`, also through the casts that keep a key of type `ty`: to the integer types and
/// `numeric` for an integer key, to `uuid` for a uuid key.
pub fn strip_for(e: &Expr, ty: KeyType) -> &Expr {
    match e {
        Expr::Nested(inner) => strip_for(inner, ty),
        Expr::Cast {
            expr, data_type, ..
        } if as_text(data_type) || keeps(data_type, ty) => {
            let inner = strip_for(expr, ty);
            // A string made numeric is read as a number, rounded where it meets an integer
            // (`'7.5'::numeric::int` is 8, `'5.0'::numeric` equals 5): not the key its text
            // would be read as, so the cast stays and no key is read through it.
            // So is a parameter under the cast: the server reads it as numeric, whose binary
            // form is no integer's.
            let numeric_string = matches!(
                data_type,
                DataType::Numeric(ExactNumberInfo::None) | DataType::Decimal(ExactNumberInfo::None)
            ) && (is_string(expr) || is_placeholder(expr));
            if numeric_string {
                e
            } else {
                inner
            }
        }
        other => other,
    }
}

/// Whether `e` passes through a cast to numeric (a key column compared as a number).
fn made_numeric(e: &Expr) -> bool {
    match e {
        Expr::Nested(inner) => made_numeric(inner),
        Expr::Cast {
            expr, data_type, ..
        } => {
            matches!(
                data_type,
                DataType::Numeric(ExactNumberInfo::None) | DataType::Decimal(ExactNumberInfo::None)
            ) || made_numeric(expr)
        }
        _ => false,
    }
}

/// A parameter, in any parentheses.
fn is_placeholder(e: &Expr) -> bool {
    match e {
        Expr::Nested(inner) => is_placeholder(inner),
        Expr::Value(v) => matches!(v.value, Value::Placeholder(_)),
        _ => false,
    }
}

/// A string literal, in any parentheses.
fn is_string(e: &Expr) -> bool {
    match e {
        Expr::Nested(inner) => is_string(inner),
        Expr::Value(v) => matches!(v.value, Value::SingleQuotedString(_)),
        _ => false,
    }
}

fn as_text(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Text | DataType::Varchar(None) | DataType::CharacterVarying(None)
    )
}

/// `smallint`, `integer` or `bigint`, under any of their names.
pub fn is_integer_type(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int(_)
            | DataType::Integer(_)
            | DataType::BigInt(_)
            | DataType::SmallInt(_)
            | DataType::Int2(_)
            | DataType::Int4(_)
            | DataType::Int8(_)
    )
}

fn keeps(t: &DataType, ty: KeyType) -> bool {
    match ty {
        KeyType::Integer => {
            is_integer_type(t)
                || matches!(
                    t,
                    DataType::Numeric(ExactNumberInfo::None)
                        | DataType::Decimal(ExactNumberInfo::None)
                )
        }
        KeyType::Uuid => matches!(t, DataType::Uuid),
        KeyType::Text => false,
    }
}

/// `varchar(n)` (or `character varying(n)`): an explicit cast to it keeps the first n
/// characters.
fn varchar_length(t: &DataType) -> Option<usize> {
    match t {
        DataType::Varchar(Some(CharacterLength::IntegerLength { length, .. }))
        | DataType::CharacterVarying(Some(CharacterLength::IntegerLength { length, .. })) => {
            usize::try_from(*length).ok()
        }
        _ => None,
    }
}

/// The type of the cast applied right to the parameter in `e` (through parentheses and
/// other casts above it): the type the server gives a parameter left to it.
fn own_cast(e: &Expr) -> Option<&DataType> {
    match e {
        Expr::Nested(inner) => own_cast(inner),
        Expr::Cast {
            expr, data_type, ..
        } => own_cast(expr).or_else(|| is_placeholder(expr).then_some(data_type)),
        _ => None,
    }
}

/// `Some(Some(v))` a key value, `Some(None)` SQL NULL, `None` not a constant.
pub fn literal_key(
    e: &Expr,
    ty: KeyType,
    params: &Params,
) -> Result<Option<Option<KeyValue>>, String> {
    let orig = e;
    // A text key cast to varchar(n) is its first n characters.
    if let Expr::Cast {
        expr, data_type, ..
    } = strip(e)
    {
        if let (KeyType::Text, Some(n)) = (ty, varchar_length(data_type)) {
            return Ok(literal_key(expr, ty, params)?.map(|key| {
                key.map(|k| match k {
                    KeyValue::Text(t) => KeyValue::Text(t.chars().take(n).collect()),
                    other => other,
                })
            }));
        }
    }
    let (e, negative) = match strip_for(e, ty) {
        Expr::UnaryOp {
            op: sqlparser::ast::UnaryOperator::Minus,
            expr,
        } => (strip_for(expr, ty), true),
        other => (other, false),
    };
    let Expr::Value(v) = e else { return Ok(None) };
    let text = match &v.value {
        // A number that is not an integer compares with an integer key as numeric: `5.0`
        // matches 5 and `5.5` nothing, so it is no key to route by.
        Value::Number(n, _) if ty == KeyType::Integer && !is_integer_literal(n) => return Ok(None),
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
            let n = placeholder_index(p)?;
            if !params.typed_as_key(n, ty) {
                return Ok(None);
            }
            // Left to the server, a parameter under a cast of its own takes that cast's type
            // (`$1::text::bigint` is text), not the key's.
            return match own_cast(orig) {
                None => params.key(n, ty).map(Some),
                Some(t) if as_text(t) => params.key_cast_from_text(n, ty).map(Some),
                Some(t) if keeps(t, ty) => params.key(n, ty).map(Some),
                Some(_) => Ok(None),
            };
        }
        _ => return Ok(None),
    };
    KeyValue::from_text(ty, &text).map(|v| Some(Some(v)))
}

/// The refusal of a key value that cannot be read: 22003 for digits beyond bigint's range,
/// 22P02 for anything else, as PostgreSQL reading the value would answer.
pub(crate) fn bad_key(message: String) -> crate::error::PgError {
    let code = if message.ends_with(crate::placement::key::OUT_OF_RANGE) {
        "22003"
    } else {
        "22P02"
    };
    crate::error::PgError::error(code, message)
}

/// Digits only, within bigint's range: how PostgreSQL reads a numeric literal as an integer.
fn is_integer_literal(n: &str) -> bool {
    n.bytes().all(|b| b.is_ascii_digit()) && n.parse::<i64>().is_ok()
}

fn placeholder_index(p: &str) -> Result<usize, String> {
    p.strip_prefix('$')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("unsupported parameter {p}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(where_clause: &str, params: &Params) -> KeySet {
        keys_as(where_clause, KeyType::Integer, params)
    }

    /// The keys a WHERE clause names of the key column `id`, of type `ty`.
    fn keys_as(where_clause: &str, ty: KeyType, params: &Params) -> KeySet {
        let e = crate::sql::expression(where_clause).unwrap();
        let is_key = |e: &Expr| matches!(e, Expr::Identifier(i) if i.value == "id");
        keys_in(&e, &is_key, ty, params).unwrap()
    }

    #[test]
    fn only_casts_that_keep_the_key_are_looked_through() {
        let none = Params::default();
        let text = |w: &str| keys_as(w, KeyType::Text, &none);
        let int = |w: &str| keys_as(w, KeyType::Integer, &none);
        let t = |v: &str| KeySet::Values(vec![KeyValue::Text(v.into())]);
        let i = |v: i64| KeySet::Values(vec![KeyValue::Integer(v)]);
        assert_eq!(text("id::text = 'ab'"), t("ab"));
        assert_eq!(text("id = ('ab'::varchar)"), t("ab"));
        // A cast to varchar(n) of the value keeps n characters; of the column, it matches
        // every key that starts so.
        assert_eq!(text("id = 'abc'::varchar(2)"), t("ab"));
        assert_eq!(text("id::varchar(2) = 'ab'"), KeySet::Any);
        assert_eq!(text("id::int = 5"), KeySet::Any);
        assert_eq!(text("id = 'ab '::char(3)"), KeySet::Any);
        assert_eq!(text("id::citext = 'AB'"), KeySet::Any);
        assert_eq!(int("id = '5'::bigint"), i(5));
        assert_eq!(int("id::int2 = 5"), i(5));
        assert_eq!(int("id::numeric = 5"), i(5));
        assert_eq!(int("id::text = '5'"), i(5));
        assert_eq!(int("id::float8 = 5"), KeySet::Any);
        // A string read as a number is compared as one.
        assert_eq!(int("id = '7.5'::numeric::int"), KeySet::Any);
        assert_eq!(int("id = '5.0'::numeric"), KeySet::Any);
        assert_eq!(int("id = '5'::int::numeric"), i(5));
        assert_eq!(int("id::numeric = '5.0'"), KeySet::Any);
        assert_eq!(int("id::numeric = 5"), i(5));
    }

    /// Binary parameters as a driver sends them after asking the server their types.
    fn binary(values: &[&'static [u8]], types: &[u32]) -> Params {
        Params {
            values: values
                .iter()
                .map(|v| Some(bytes::Bytes::from_static(v)))
                .collect(),
            formats: vec![1],
            types: types.iter().copied().collect(),
        }
    }

    #[test]
    fn the_keys_text_is_compared_as_text() {
        const INT4: [u8; 4] = 1234i32.to_be_bytes();
        let none = Params::default();
        let i = |v: i64| KeySet::Values(vec![KeyValue::Integer(v)]);
        // No key is written so: no row matches, as PostgreSQL answers (not an error).
        assert_eq!(keys("id::text = 'abc'", &none), KeySet::Values(vec![]));
        assert_eq!(keys("id::text in ('abc', '5')", &none), i(5));
        // `1234` sent as text in binary form is four characters, not an int4.
        let text = binary(&[b"1234"], &[]);
        assert_eq!(keys("id::text = $1", &text), i(1234));
        assert_eq!(keys("$1 = (id)::varchar", &text), i(1234));
        assert_eq!(keys("id::text = $1::text", &text), i(1234));
        assert_eq!(keys("id::text = $1::int8::text", &text), KeySet::Any);
        assert_eq!(
            keys("id::text = $1", &binary(&[b"abc"], &[])),
            KeySet::Values(vec![])
        );
        // Left to the server, the parameter of `$1::text::bigint` is text.
        assert_eq!(keys("id = $1::text::bigint", &text), i(1234));
        assert_eq!(keys("id = ($1::varchar)::int8", &text), i(1234));
        assert_eq!(keys("id = $1::int4", &binary(&[&INT4], &[])), i(1234));
        assert_eq!(keys("id = $1::float8::int8", &text), KeySet::Any);
        // Declared text, cast to the key's type by the statement.
        assert_eq!(keys("id = $1::bigint", &binary(&[b"1234"], &[25])), i(1234));
        // Undeclared and compared as numeric: the server sends numeric's binary form.
        assert_eq!(keys("id::numeric = $1", &text), KeySet::Any);
        assert_eq!(keys("id = $1::numeric", &text), KeySet::Any);
        // Compared as the key, an int4's four bytes are still read as one.
        assert_eq!(keys("id = $1", &binary(&[&INT4], &[])), i(1234));
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
            types: Default::default(),
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
