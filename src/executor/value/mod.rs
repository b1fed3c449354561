//! Sort keys decoded from DataRow columns, compared as PostgreSQL orders them.
//!
//! Only what a multi-shard ORDER BY needs is decoded: the sort columns of the rows at the heads of
//! the shard streams. Text compares bytewise, which is PostgreSQL's order under the C collation
//! (the executor refuses text sort keys on shards whose collation is not C, see docs/routing.md).
//! Timestamps with time zone compare as instants, whatever offset each was rendered with, and
//! intervals by their span, as PostgreSQL compares them ('1 day' = '24:00:00'); `datetime`
//! reads the text forms of dates and times, `interval` those of intervals.

pub mod array;
mod datetime;
pub mod interval;
pub mod jsonb;
pub mod network;

use datetime::{parse_date, parse_time, parse_timestamp, parse_timetz, timetz_binary};
use interval::Interval;
use std::cmp::Ordering;

/// Type OIDs the merge understands.
pub mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const TIMETZ: u32 = 1266;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;
    pub const INET: u32 = 869;
    pub const CIDR: u32 = 650;
    pub const MACADDR: u32 = 829;
    pub const MACADDR8: u32 = 774;
}

/// A decoded sort key.
#[derive(Debug, Clone, PartialEq)]
pub enum SortValue {
    Null,
    Int(i64),
    Float(f64),
    Numeric(Decimal),
    Bytes(Vec<u8>),
    /// An interval's span (see `interval::Interval::span`), which can pass 64 bits; a timetz
    /// as it sorts.
    Wide(i128),
    /// A jsonb value as PostgreSQL walks it to compare (see `jsonb`).
    Json(Vec<jsonb::Token>),
    /// An array of one of the types above (see `array`).
    Array(Box<array::Array>),
    /// An inet or cidr value (see `network`).
    Network(network::Network),
}

/// Whether the merge can sort on this type (in either format); the text is the reason if not.
pub fn supported(type_oid: u32) -> Result<(), String> {
    use oid::*;
    let ok = matches!(
        type_oid,
        BOOL | INT2
            | INT4
            | INT8
            | OID
            | FLOAT4
            | FLOAT8
            | TEXT
            | VARCHAR
            | BPCHAR
            | NAME
            | UUID
            | DATE
            | TIME
            | TIMESTAMP
            | TIMESTAMPTZ
            | INTERVAL
            | TIMETZ
            | NUMERIC
            | BYTEA
            | JSONB
            | INET
            | CIDR
            | MACADDR
            | MACADDR8
    ) || array::element_of(type_oid).is_some();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "sorting rows from several shards on a column of type {} is not supported",
            crate::sql::builtin_types::described(type_oid)
        ))
    }
}

/// Decodes one column value (`None` = SQL NULL).
pub fn decode(type_oid: u32, format: i16, raw: Option<&[u8]>) -> Result<SortValue, String> {
    use oid::*;
    let Some(raw) = raw else {
        return Ok(SortValue::Null);
    };
    let bad = || format!("cannot decode a value of type OID {type_oid} for sorting");
    if format == 1 {
        return Ok(match type_oid {
            BOOL => SortValue::Int(raw.first().copied().ok_or_else(bad)? as i64),
            INT2 => SortValue::Int(i16::from_be_bytes(raw.try_into().map_err(|_| bad())?) as i64),
            INT4 | DATE => {
                SortValue::Int(i32::from_be_bytes(raw.try_into().map_err(|_| bad())?) as i64)
            }
            OID => SortValue::Int(u32::from_be_bytes(raw.try_into().map_err(|_| bad())?) as i64),
            INT8 | TIME | TIMESTAMP | TIMESTAMPTZ => {
                SortValue::Int(i64::from_be_bytes(raw.try_into().map_err(|_| bad())?))
            }
            FLOAT4 => {
                SortValue::Float(f32::from_be_bytes(raw.try_into().map_err(|_| bad())?) as f64)
            }
            FLOAT8 => SortValue::Float(f64::from_be_bytes(raw.try_into().map_err(|_| bad())?)),
            TEXT | VARCHAR | NAME | UUID | BPCHAR | BYTEA | MACADDR | MACADDR8 => {
                SortValue::Bytes(raw.to_vec())
            }
            INET | CIDR => SortValue::Network(network::Network::from_binary(raw).ok_or_else(bad)?),
            NUMERIC => SortValue::Numeric(numeric_binary(raw).ok_or_else(bad)?),
            INTERVAL => SortValue::Wide(Interval::from_binary(raw).ok_or_else(bad)?.span()),
            TIMETZ => SortValue::Wide(timetz_binary(raw).ok_or_else(bad)?),
            // A version byte (1), then the text form.
            JSONB => match raw.split_first() {
                Some((1, text)) => json(std::str::from_utf8(text).map_err(|_| bad())?)?,
                _ => return Err(bad()),
            },
            _ => match array::element_of(type_oid) {
                Some(e) => SortValue::Array(Box::new(array::from_binary(e, raw).ok_or_else(bad)?)),
                None => return Err(bad()),
            },
        });
    }
    let s = std::str::from_utf8(raw).map_err(|_| bad())?;
    Ok(match type_oid {
        // As the shards write it; anything else is not a boolean read right.
        BOOL => SortValue::Int(match s {
            "t" => 1,
            "f" => 0,
            _ => return Err(bad()),
        }),
        INT2 | INT4 | INT8 | OID => SortValue::Int(s.parse().map_err(|_| bad())?),
        FLOAT4 | FLOAT8 => SortValue::Float(parse_float(s).ok_or_else(bad)?),
        NUMERIC => SortValue::Numeric(Decimal::parse(s).ok_or_else(bad)?),
        TEXT | VARCHAR | NAME | UUID | BPCHAR => SortValue::Bytes(raw.to_vec()),
        // PostgreSQL orders bytea by its bytes, as memcmp, the shorter first on a tie.
        BYTEA => SortValue::Bytes(bytea_text(s).ok_or_else(bad)?),
        DATE => SortValue::Int(parse_date(s).ok_or_else(|| not_iso(s))?),
        TIMESTAMP => SortValue::Int(parse_timestamp(s, false).ok_or_else(|| not_iso(s))?),
        TIMESTAMPTZ => SortValue::Int(parse_timestamp(s, true).ok_or_else(|| not_iso(s))?),
        TIME => SortValue::Int(parse_time(s).ok_or_else(bad)?),
        TIMETZ => SortValue::Wide(parse_timetz(s).ok_or_else(bad)?),
        JSONB => json(s)?,
        INET | CIDR => SortValue::Network(network::Network::parse(s).ok_or_else(bad)?),
        MACADDR | MACADDR8 => SortValue::Bytes(network::mac_bytes(s).ok_or_else(bad)?),
        _ if array::element_of(type_oid).is_some() => {
            let e = array::element_of(type_oid).unwrap_or_default();
            SortValue::Array(Box::new(array::from_text(e, s).ok_or_else(|| {
                format!("cannot read {s:?} as an array to merge by (dates, times and intervals in it as DateStyle ISO and IntervalStyle postgres write them)")
            })?))
        }
        INTERVAL => SortValue::Wide(Interval::parse(s).map(|i| i.span()).ok_or_else(|| {
            format!(
                "cannot read {s:?} as an interval to merge by: the proxy merges intervals \
                 written in IntervalStyle postgres, the default (SET IntervalStyle = postgres)"
            )
        })?),
        _ => return Err(bad()),
    })
}

fn json(s: &str) -> Result<SortValue, String> {
    jsonb::parse(s)
        .map(SortValue::Json)
        .ok_or_else(|| "cannot read a jsonb value from a shard to merge by".to_string())
}

/// Why a date or time in text cannot be merged by: only ISO DateStyle is read, since the
/// others put day and month in an order the text alone does not tell, or name time zones.
fn not_iso(s: &str) -> String {
    format!(
        "cannot read {s:?} as a date or time to merge by: the proxy merges dates and times \
         written in DateStyle ISO, the default (SET DateStyle = ISO)"
    )
}

fn numeric_binary(raw: &[u8]) -> Option<Decimal> {
    let sign = u16::from_be_bytes(raw.get(4..6)?.try_into().ok()?);
    match sign {
        0xC000 => Some(Decimal::NaN),
        0xD000 => Some(Decimal::Inf(true)),
        0xF000 => Some(Decimal::Inf(false)),
        _ => Decimal::parse(&super::numeric::Num::from_binary(raw)?.to_text()),
    }
}

/// The bytes of a bytea in either output form: hex (`\\x0a1b`, the default) or escape
/// (printable bytes as themselves, a backslash doubled, others as `\\ooo` in octal).
fn bytea_text(s: &str) -> Option<Vec<u8>> {
    if let Some(hex) = s.strip_prefix("\\x") {
        let digits = hex.as_bytes();
        if digits.len() % 2 != 0 {
            return None;
        }
        let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        return digits
            .chunks(2)
            .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
            .collect();
    }
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b != b'\\' {
            out.push(b);
            rest = tail;
            continue;
        }
        match tail {
            [b'\\', more @ ..] => {
                out.push(b'\\');
                rest = more;
            }
            [a @ b'0'..=b'3', o @ b'0'..=b'7', c @ b'0'..=b'7', more @ ..] => {
                out.push((a - b'0') << 6 | (o - b'0') << 3 | (c - b'0'));
                rest = more;
            }
            _ => return None,
        }
    }
    Some(out)
}

fn parse_float(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        other => other.parse().ok(),
    }
}

/// An exact decimal from numeric's text form, for ordering only.
#[derive(Debug, Clone, PartialEq)]
pub enum Decimal {
    NaN,
    Inf(bool),
    /// Sign, integer digits without leading zeros, fraction digits without trailing zeros.
    Finite(bool, String, String),
}

impl Decimal {
    pub fn parse(s: &str) -> Option<Decimal> {
        match s {
            "NaN" => return Some(Decimal::NaN),
            "Infinity" => return Some(Decimal::Inf(true)),
            "-Infinity" => return Some(Decimal::Inf(false)),
            _ => {}
        }
        let (neg, digits) = match s.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, s),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let int = int.trim_start_matches('0').to_string();
        let frac = frac.trim_end_matches('0').to_string();
        let zero = int.is_empty() && frac.is_empty();
        Some(Decimal::Finite(neg && !zero, int, frac))
    }

    fn cmp_magnitude(a: (&str, &str), b: (&str, &str)) -> Ordering {
        a.0.len()
            .cmp(&b.0.len())
            .then_with(|| a.0.cmp(b.0))
            .then_with(|| a.1.cmp(b.1))
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        use Decimal::*;
        // PostgreSQL: -Infinity < finite < Infinity < NaN.
        let rank = |d: &Decimal| match d {
            Inf(false) => 0,
            Finite(..) => 1,
            Inf(true) => 2,
            NaN => 3,
        };
        Some(match (self, other) {
            (Finite(na, ia, fa), Finite(nb, ib, fb)) => match (na, nb) {
                (false, true) => Ordering::Greater,
                (true, false) => Ordering::Less,
                (false, false) => Decimal::cmp_magnitude((ia, fa), (ib, fb)),
                (true, true) => Decimal::cmp_magnitude((ib, fb), (ia, fa)),
            },
            (a, b) => rank(a).cmp(&rank(b)),
        })
    }
}

/// Order of two values of one sort key: NULLs first or last as asked, then the value order,
/// reversed for DESC (which does not move NULLs: their place is `nulls_first`).
/// Text types, whose order depends on the collation.
pub fn is_text(type_oid: u32) -> bool {
    matches!(type_oid, oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME)
}

/// Arrays of the types `is_text` names: name[], text[], bpchar[] and varchar[].
pub fn is_text_array(type_oid: u32) -> bool {
    matches!(type_oid, 1003 | 1009 | 1014 | 1015)
}

pub fn compare_key(a: &SortValue, b: &SortValue, descending: bool, nulls_first: bool) -> Ordering {
    match (a, b) {
        (SortValue::Null, SortValue::Null) => Ordering::Equal,
        (SortValue::Null, _) => {
            if nulls_first {
                Ordering::Less
            } else {
                Ordering::Greater
            }
        }
        (_, SortValue::Null) => {
            if nulls_first {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
        _ => {
            let o = compare(a, b);
            if descending {
                o.reverse()
            } else {
                o
            }
        }
    }
}

/// PostgreSQL's order for two non-null values of one column (NaN above every float).
pub fn compare(a: &SortValue, b: &SortValue) -> Ordering {
    match (a, b) {
        (SortValue::Int(x), SortValue::Int(y)) => x.cmp(y),
        (SortValue::Float(x), SortValue::Float(y)) => match (x.is_nan(), y.is_nan()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            _ => x.partial_cmp(y).unwrap_or(Ordering::Equal),
        },
        (SortValue::Numeric(x), SortValue::Numeric(y)) => {
            x.partial_cmp(y).unwrap_or(Ordering::Equal)
        }
        (SortValue::Bytes(x), SortValue::Bytes(y)) => x.cmp(y),
        (SortValue::Wide(x), SortValue::Wide(y)) => x.cmp(y),
        (SortValue::Json(x), SortValue::Json(y)) => jsonb::compare(x, y),
        (SortValue::Array(x), SortValue::Array(y)) => array::compare(x, y),
        (SortValue::Network(x), SortValue::Network(y)) => x.compare(y),
        _ => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(oid: u32, s: &str) -> SortValue {
        decode(oid, 0, Some(s.as_bytes())).unwrap()
    }

    #[test]
    fn bytea_orders_by_its_bytes_in_either_output_form() {
        let b = |s: &str| t(oid::BYTEA, s);
        assert_eq!(b("\\x00ff10"), SortValue::Bytes(vec![0, 255, 16]));
        assert_eq!(
            b("a\\\\b\\000\\377"),
            SortValue::Bytes(vec![b'a', b'\\', b'b', 0, 255])
        );
        assert_eq!(b("\\x"), b(""));
        // Shorter first on a tie, as memcmp then length.
        assert_eq!(compare(&b("\\x0001"), &b("\\x000100")), Ordering::Less);
        assert_eq!(compare(&b("\\x7f"), &b("\\x80")), Ordering::Less);
        for bad in ["\\x0", "\\xzz", "a\\9"] {
            assert!(
                decode(oid::BYTEA, 0, Some(bad.as_bytes())).is_err(),
                "{bad}"
            );
        }
        assert_eq!(
            decode(oid::BYTEA, 1, Some(&[1, 2][..])).unwrap(),
            SortValue::Bytes(vec![1, 2])
        );
    }

    #[test]
    fn numeric_orders_by_value_not_text() {
        let vals = [
            "-Infinity",
            "-10.5",
            "-2",
            "0",
            "0.001",
            "2",
            "10",
            "10.25",
            "Infinity",
            "NaN",
        ];
        for w in vals.windows(2) {
            assert_eq!(
                compare(&t(oid::NUMERIC, w[0]), &t(oid::NUMERIC, w[1])),
                Ordering::Less,
                "{w:?}"
            );
        }
        assert_eq!(
            compare(&t(oid::NUMERIC, "1.50"), &t(oid::NUMERIC, "1.5")),
            Ordering::Equal
        );
        assert_eq!(
            compare(&t(oid::NUMERIC, "-0.0"), &t(oid::NUMERIC, "0")),
            Ordering::Equal
        );
    }

    #[test]
    fn floats_put_nan_last() {
        assert_eq!(
            compare(&t(oid::FLOAT8, "NaN"), &t(oid::FLOAT8, "Infinity")),
            Ordering::Greater
        );
        assert_eq!(
            compare(&t(oid::FLOAT8, "-1.5"), &t(oid::FLOAT8, "1e-3")),
            Ordering::Less
        );
    }

    #[test]
    fn timestamptz_compares_instants() {
        let a = t(oid::TIMESTAMPTZ, "2024-10-27 02:30:00+02");
        let b = t(oid::TIMESTAMPTZ, "2024-10-27 02:00:00+01");
        assert_eq!(compare(&a, &b), Ordering::Less);
        assert_eq!(
            compare(
                &t(oid::TIMESTAMPTZ, "2024-01-01 00:00:00.5+00"),
                &t(oid::TIMESTAMPTZ, "2024-01-01 00:00:00.25+00")
            ),
            Ordering::Greater
        );
        assert_eq!(
            compare(&t(oid::DATE, "0001-01-01 BC"), &t(oid::DATE, "0001-01-01")),
            Ordering::Less
        );
        assert_eq!(
            compare(
                &t(oid::TIMESTAMP, "infinity"),
                &t(oid::TIMESTAMP, "9999-12-31 23:59:59")
            ),
            Ordering::Greater
        );
    }

    #[test]
    fn dates_and_timestamps_at_the_ends_of_their_range() {
        // The same scale as the binary forms: microseconds / days since 2000-01-01.
        assert_eq!(
            t(oid::TIMESTAMP, "2000-01-01 00:00:01"),
            SortValue::Int(1_000_000)
        );
        assert_eq!(t(oid::DATE, "2000-01-02"), SortValue::Int(1));
        // Past the year where microseconds since 1970 overflow, up to PostgreSQL's last value.
        let ascending = [
            "-infinity",
            "4713-01-01 00:00:00 BC",
            "1999-12-31 23:59:59.999999",
            "294247-01-10 04:00:54.775807",
            "294247-01-10 04:00:54.775808",
            "294276-12-31 23:59:59.999999",
            "infinity",
        ];
        for w in ascending.windows(2) {
            assert_eq!(
                compare(&t(oid::TIMESTAMP, w[0]), &t(oid::TIMESTAMP, w[1])),
                Ordering::Less,
                "{} < {}",
                w[0],
                w[1]
            );
        }
        let dates = [
            "4713-01-01 BC",
            "0001-01-01",
            "294277-01-01",
            "5874897-12-31",
            "infinity",
        ];
        for w in dates.windows(2) {
            assert_eq!(
                compare(&t(oid::DATE, w[0]), &t(oid::DATE, w[1])),
                Ordering::Less
            );
        }
        // Out of any timestamp's range: an error, not a wrapped number.
        assert!(decode(oid::TIMESTAMP, 0, Some(b"99999999999-01-01 00:00:00")).is_err());
    }

    #[test]
    fn binary_forms() {
        let a = decode(oid::INT8, 1, Some(&(-5i64).to_be_bytes())).unwrap();
        let b = decode(oid::INT8, 1, Some(&3i64.to_be_bytes())).unwrap();
        assert_eq!(compare(&a, &b), Ordering::Less);
        assert!(supported(oid::NUMERIC).is_ok());
        assert!(supported(9999).is_err());
    }
}
