//! HAVING over merged groups: each condition compares a group's column with a constant in the
//! type PostgreSQL would compare them in, which the two types pick together. An integer
//! aggregate against `38.5` compares as numeric, any number against a float as float8, a real
//! against a quoted literal or a real parameter as real; a constant of the column's own type
//! is read as that type. A number compared with a column that is no number is PostgreSQL's
//! error, not a comparison of text.

use super::aggregate::{unsupported, Row};
use crate::error::PgError;
use crate::executor::value::{self, oid, Decimal, SortValue};
use crate::protocol::inspect::FieldDesc;
use crate::router::aggregate::{AggSpec, CmpOp, ConstType, HavingCond};
use std::cmp::Ordering;

/// Keeps the rows that satisfy every HAVING condition.
pub fn having(rows: Vec<Row>, fields: &[FieldDesc], spec: &AggSpec) -> Result<Vec<Row>, PgError> {
    if spec.having.is_empty() {
        return Ok(rows);
    }
    let mut kept = Vec::with_capacity(rows.len());
    'rows: for row in rows {
        for cond in &spec.having {
            let f = &fields[cond.column];
            // NULL satisfies no comparison.
            let Some(raw) = &row[cond.column] else {
                continue 'rows;
            };
            let (v, lit) = compared(f, raw, cond)?;
            let o = value::compare(&v, &lit);
            let holds = match cond.op {
                CmpOp::Eq => o == Ordering::Equal,
                CmpOp::NotEq => o != Ordering::Equal,
                CmpOp::Lt => o == Ordering::Less,
                CmpOp::LtEq => o != Ordering::Greater,
                CmpOp::Gt => o == Ordering::Greater,
                CmpOp::GtEq => o != Ordering::Less,
            };
            if !holds {
                continue 'rows;
            }
        }
        kept.push(row);
    }
    Ok(kept)
}

/// The kinds of number a column can be, as PostgreSQL's comparison operators tell them apart.
#[derive(Clone, Copy, PartialEq)]
enum Number {
    Integer,
    Numeric,
    Float,
}

fn number(type_oid: u32) -> Option<Number> {
    match type_oid {
        oid::INT2 | oid::INT4 | oid::INT8 => Some(Number::Integer),
        oid::NUMERIC => Some(Number::Numeric),
        oid::FLOAT4 | oid::FLOAT8 => Some(Number::Float),
        _ => None,
    }
}

/// The group's value and the constant, both in the type they compare in.
fn compared(
    f: &FieldDesc,
    raw: &[u8],
    cond: &HavingCond,
) -> Result<(SortValue, SortValue), PgError> {
    let column = || column_value(f, raw);
    let lit = cond.literal.as_str();
    match (number(f.type_oid), cond.typed) {
        (_, ConstType::Column)
        | (Some(Number::Integer), ConstType::Integer)
        | (Some(Number::Numeric), ConstType::Integer | ConstType::Numeric) => {
            Ok((column()?, own_type(f.type_oid, lit)?))
        }
        (Some(Number::Integer), ConstType::Numeric) => {
            let SortValue::Int(v) = column()? else {
                return Err(undecodable(f.type_oid));
            };
            Ok((SortValue::Numeric(decimal(&v.to_string())?), SortValue::Numeric(decimal(lit)?)))
        }
        (Some(_), typed) => Ok((SortValue::Float(column_float(f, raw)?), SortValue::Float(float(lit, typed)?))),
        (None, typed) => Err(PgError::error(
            "42883",
            format!(
                "operator does not exist: {} {} {}",
                crate::sql::builtin_types::name_of(f.type_oid)
                    .unwrap_or_else(|| crate::sql::builtin_types::described(f.type_oid)),
                cond.op.symbol(),
                match typed {
                    ConstType::Integer => "integer",
                    ConstType::Numeric => "numeric",
                    ConstType::Float4 => "real",
                    _ => "double precision",
                }
            ),
        )
        .with_hint("No operator matches the given name and argument types. You might need to add explicit type casts.")),
    }
}

/// A group's value as its type sorts; a real's as the real it is, widened.
fn column_value(f: &FieldDesc, raw: &[u8]) -> Result<SortValue, PgError> {
    if f.type_oid == oid::FLOAT4 && f.format == 0 {
        return float(std::str::from_utf8(raw).unwrap_or(""), ConstType::Float4)
            .map(SortValue::Float);
    }
    value::decode(f.type_oid, f.format, Some(raw)).map_err(unsupported)
}

/// A group's number as float8, as PostgreSQL casts integers and numerics to compare them with
/// a float.
fn column_float(f: &FieldDesc, raw: &[u8]) -> Result<f64, PgError> {
    match column_value(f, raw)? {
        SortValue::Int(v) => Ok(v as f64),
        SortValue::Float(v) => Ok(v),
        SortValue::Numeric(d) => Ok(d.to_f64()),
        _ => Err(undecodable(f.type_oid)),
    }
}

/// The constant read as the column's own type, as PostgreSQL reads a quoted literal there.
fn own_type(type_oid: u32, lit: &str) -> Result<SortValue, PgError> {
    match number(type_oid) {
        Some(Number::Integer) => lit.trim().parse::<i64>().map(SortValue::Int).map_err(|_| {
            invalid(
                if type_oid == oid::INT8 {
                    "bigint"
                } else {
                    "integer"
                },
                lit,
            )
        }),
        Some(Number::Numeric) => decimal(lit).map(SortValue::Numeric),
        Some(Number::Float) => {
            let typed = match type_oid {
                oid::FLOAT4 => ConstType::Float4,
                _ => ConstType::Float8,
            };
            float(lit, typed).map(SortValue::Float)
        }
        None if type_oid == oid::BOOL => bool_literal(lit)
            .map(|b| SortValue::Int(b as i64))
            .map_err(|_| invalid("boolean", lit)),
        None if matches!(type_oid, oid::DATE | oid::TIMESTAMP | oid::TIMESTAMPTZ) => {
            let text = moment_text(lit, type_oid == oid::TIMESTAMPTZ)?;
            value::decode(type_oid, 0, Some(text.as_bytes())).map_err(unsupported)
        }
        None => value::decode(type_oid, 0, Some(lit.as_bytes())).map_err(unsupported),
    }
}

/// A date or time constant in the form the merge reads (see `value::datetime`): ISO 8601's
/// `T` between date and time, as node-postgres writes a Date, read as a blank, and `Z` as
/// `+00`. A timestamptz constant must name its zone: without one PostgreSQL reads it in the
/// session's TimeZone, which the merge does not apply, so it is refused, not read as UTC.
fn moment_text(lit: &str, zoned: bool) -> Result<String, PgError> {
    let t = lit.trim();
    if matches!(t, "infinity" | "-infinity") {
        return Ok(t.to_string());
    }
    let mut text = t.to_string();
    let b = t.as_bytes();
    if let Some(at) = (1..b.len().saturating_sub(1)).find(|&i| {
        matches!(b[i], b'T' | b't') && b[i - 1].is_ascii_digit() && b[i + 1].is_ascii_digit()
    }) {
        text.replace_range(at..at + 1, " ");
    }
    if let Some(utc) = text.strip_suffix(['Z', 'z']) {
        text = format!("{utc}+00");
    }
    // `19:00` is `19:00:00`: the merge reads seconds always written.
    if let Some((date, time)) = text.split_once(' ') {
        let clock_end = time.find(['+', '-', ' ']).unwrap_or(time.len());
        if time[..clock_end].matches(':').count() == 1 {
            text = format!("{date} {}:00{}", &time[..clock_end], &time[clock_end..]);
        }
    }
    let time = text.split_once(' ').map_or("", |(_, time)| time);
    if zoned && !time.contains(['+', '-']) {
        return Err(PgError::error(
            crate::error::sqlstate::FEATURE_NOT_SUPPORTED,
            format!(
                "HAVING compares {lit:?} with a timestamp with time zone merged from several \
                 shards, and a time without its zone is read in the session's TimeZone, which \
                 the merge does not apply"
            ),
        )
        .with_hint(
            "Write the zone in the constant ('2024-01-03 05:30:00+05:30'), or add a shard-key \
             condition so the query runs on one shard.",
        ));
    }
    Ok(text)
}

/// A float constant as PostgreSQL's float8in or float4in reads it; a real is widened.
fn float(lit: &str, typed: ConstType) -> Result<f64, PgError> {
    let t = lit.trim();
    if typed == ConstType::Float4 {
        return t
            .parse::<f32>()
            .map(f64::from)
            .map_err(|_| invalid("real", lit));
    }
    t.parse::<f64>()
        .map_err(|_| invalid("double precision", lit))
}

/// A numeric constant as numeric_in reads it: blanks around, a sign, an exponent, NaN and
/// Infinity in any case.
fn decimal(lit: &str) -> Result<Decimal, PgError> {
    read_decimal(lit).ok_or_else(|| invalid("numeric", lit))
}

fn read_decimal(lit: &str) -> Option<Decimal> {
    let t = lit.trim();
    let (neg, body) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    if body.eq_ignore_ascii_case("nan") && body.len() == t.len() {
        return Some(Decimal::NaN);
    }
    if body.eq_ignore_ascii_case("infinity") || body.eq_ignore_ascii_case("inf") {
        return Some(Decimal::Inf(!neg));
    }
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(at) => (&body[..at], body[at + 1..].parse::<i32>().ok()?),
        None => (body, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty() || exp.unsigned_abs() > 1000 {
        return None;
    }
    // The point moved by the exponent, over the digits written.
    let digits = format!("{int}{frac}");
    let point = int.len() as i64 + exp as i64;
    let plain = if point <= 0 {
        format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
    } else if point as usize >= digits.len() {
        format!("{digits}{}", "0".repeat(point as usize - digits.len()))
    } else {
        format!(
            "{}.{}",
            &digits[..point as usize],
            &digits[point as usize..]
        )
    };
    Decimal::parse(&format!("{}{plain}", if neg { "-" } else { "" }))
}

/// A boolean constant as PostgreSQL reads one ('true', 'yes', 'on', '1' ...), unique prefixes
/// included; anything else is an error, not false.
fn bool_literal(text: &str) -> Result<bool, ()> {
    let t = text.trim().to_ascii_lowercase();
    let prefix_of = |word: &str, min: usize| t.len() >= min && word.starts_with(t.as_str());
    if prefix_of("true", 1) || prefix_of("yes", 1) || t == "on" || t == "1" {
        Ok(true)
    } else if prefix_of("false", 1) || prefix_of("no", 1) || prefix_of("off", 2) || t == "0" {
        Ok(false)
    } else {
        Err(())
    }
}

/// PostgreSQL's error for a constant its type does not read.
fn invalid(type_name: &str, lit: &str) -> PgError {
    PgError::error(
        "22P02",
        format!("invalid input syntax for type {type_name}: \"{lit}\""),
    )
}

fn undecodable(type_oid: u32) -> PgError {
    unsupported(format!(
        "cannot compare a merged value of type {} with HAVING's constant",
        crate::sql::builtin_types::described(type_oid)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boolean_constants_read_as_postgresql_reads_them() {
        for t in ["t", "true", "TRUE", " yes ", "y", "on", "1", "tr"] {
            assert_eq!(bool_literal(t), Ok(true), "{t}");
        }
        for f in ["f", "false", "no", "n", "off", "0", "fal"] {
            assert_eq!(bool_literal(f), Ok(false), "{f}");
        }
        for bad in ["o", "maybe", "", "2", "truex"] {
            assert!(bool_literal(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn numeric_constants_read_as_numeric_in_reads_them() {
        let d = |s: &str| read_decimal(s);
        assert_eq!(d("3.85e1"), Decimal::parse("38.5"));
        assert_eq!(d(" +12.50 "), Decimal::parse("12.5"));
        assert_eq!(d("1E3"), Decimal::parse("1000"));
        assert_eq!(d("-5e-3"), Decimal::parse("-0.005"));
        assert_eq!(d(".5"), Decimal::parse("0.5"));
        assert_eq!(d("7."), Decimal::parse("7"));
        assert_eq!(d("NaN"), Some(Decimal::NaN));
        assert_eq!(d("-Infinity"), Some(Decimal::Inf(false)));
        for bad in [
            "", ".", "e5", "1e", "1.2.3", "--1", "0x10", "1e99999", "-nan",
        ] {
            assert_eq!(d(bad), None, "{bad}");
        }
    }

    #[test]
    fn moments_are_read_with_their_zone_or_refused() {
        assert_eq!(
            moment_text("2024-01-03T00:00:00.000+00:00", true).unwrap(),
            "2024-01-03 00:00:00.000+00:00"
        );
        assert_eq!(
            moment_text(" 2024-01-03 05:30:00Z ", true).unwrap(),
            "2024-01-03 05:30:00+00"
        );
        assert_eq!(
            moment_text("2024-01-03 05:30:00-05", true).unwrap(),
            "2024-01-03 05:30:00-05"
        );
        assert_eq!(
            moment_text("2024-01-03 05:30:00", false).unwrap(),
            "2024-01-03 05:30:00"
        );
        assert_eq!(moment_text("2024-02-07", false).unwrap(), "2024-02-07");
        assert_eq!(
            moment_text("2024-01-02 19:00", false).unwrap(),
            "2024-01-02 19:00:00"
        );
        assert_eq!(
            moment_text("2024-01-02 19:00-05", true).unwrap(),
            "2024-01-02 19:00:00-05"
        );
        assert_eq!(moment_text("infinity", true).unwrap(), "infinity");
        // The session's TimeZone would place these: refused, never read as UTC.
        for local in ["2024-01-03 05:30:00", "2024-02-08", "2024-01-03T05:30"] {
            let e = moment_text(local, true).unwrap_err();
            assert_eq!(e.code, "0A000", "{local}");
        }
    }

    #[test]
    fn numbers_compare_in_the_type_postgresql_picks() {
        let field = |type_oid| FieldDesc {
            name: "max".into(),
            table_oid: 0,
            column: 0,
            type_oid,
            typmod: -1,
            format: 0,
        };
        let cond = |literal: &str, typed| HavingCond {
            column: 0,
            op: CmpOp::Eq,
            literal: literal.into(),
            typed,
        };
        let equal = |f: &FieldDesc, raw: &str, c: &HavingCond| {
            let (v, l) = compared(f, raw.as_bytes(), c).unwrap();
            value::compare(&v, &l) == Ordering::Equal
        };
        // A real against a quoted literal is real; against a numeric constant, float8.
        assert!(equal(
            &field(oid::FLOAT4),
            "3.9",
            &cond("3.9", ConstType::Column)
        ));
        assert!(!equal(
            &field(oid::FLOAT4),
            "3.9",
            &cond("3.9", ConstType::Numeric)
        ));
        assert!(equal(
            &field(oid::FLOAT4),
            "3.9",
            &cond("3.9", ConstType::Float4)
        ));
        // An integer against a decimal compares as numeric.
        assert!(equal(
            &field(oid::INT4),
            "40",
            &cond("40.0", ConstType::Numeric)
        ));
        assert!(!equal(
            &field(oid::INT4),
            "40",
            &cond("40.5", ConstType::Numeric)
        ));
        // A numeric against a float8 compares as float8: 17 significant digits meet.
        assert!(equal(
            &field(oid::NUMERIC),
            "0.10000000000000001",
            &cond("0.1", ConstType::Float8)
        ));
        assert!(!equal(
            &field(oid::NUMERIC),
            "0.10000000000000001",
            &cond("0.1", ConstType::Numeric)
        ));
        // A quoted decimal is no integer, as PostgreSQL says.
        let err = compared(&field(oid::INT4), b"40", &cond("40.5", ConstType::Column)).unwrap_err();
        assert_eq!(err.code, "22P02");
        // A number against text is no comparison at all.
        let err = compared(&field(oid::TEXT), b"x", &cond("5", ConstType::Integer)).unwrap_err();
        assert_eq!(err.code, "42883");
    }
}
