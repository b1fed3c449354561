//! How the merge tells a column's values apart as PostgreSQL's `=` does: which types it can
//! group at all, and the bytes a group or a count(DISTINCT) keys a value by (numeric 1.0 =
//! 1.00, float -0 = 0, char(n) without trailing blanks, an interval by its span).

use super::rows::unsupported;
use crate::error::PgError;
use crate::executor::value::{self, oid, SortValue};
use crate::protocol::inspect::FieldDesc;
use bytes::Bytes;

/// Types beyond the merge's sort types whose values are written one way each (timetz, "char",
/// inet, cidr, macaddr, macaddr8, money, bit, varbit): equal exactly when their bytes are, in
/// one session.
pub(super) const ONE_SPELLING: [u32; 9] = [1266, 18, 869, 650, 829, 774, 790, 1560, 1562];

/// Whether rows of a column group alike in the proxy as on one server: its values are equal
/// exactly when their bytes are, or `group_key` makes them so (an interval by its span, as
/// '1 day' = '24:00:00', jsonb with its numbers by value). Other types (arrays holding numbers;
/// ranges; types of an extension) can write one value several ways, and a group could come
/// back once per way.
pub(super) fn groupable(type_oid: u32) -> bool {
    ONE_SPELLING.contains(&type_oid)
        || matches!(
            type_oid,
            oid::BOOL
                | oid::BYTEA
                | oid::NAME
                | oid::INT2
                | oid::INT4
                | oid::INT8
                | oid::OID
                | oid::TEXT
                | oid::VARCHAR
                | oid::BPCHAR
                | oid::DATE
                | oid::TIME
                | oid::TIMESTAMP
                | oid::TIMESTAMPTZ
                | oid::INTERVAL
                | oid::UUID
                | oid::NUMERIC
                | oid::FLOAT4
                | oid::FLOAT8
                | oid::JSONB
        )
        || value::array::element_of(type_oid).is_some()
}

/// The bytes a group column's value is grouped by: as it came, but for values PostgreSQL calls
/// equal that are written otherwise (numeric 1.0 = 1.00, float -0 = 0, char(n) 'a' = 'a  ',
/// interval '1 mon' = '30 days').
pub(super) fn group_key(f: &FieldDesc, raw: Bytes) -> Result<Bytes, PgError> {
    Ok(match f.type_oid {
        oid::NUMERIC | oid::FLOAT4 | oid::FLOAT8 | oid::INTERVAL | oid::JSONB => {
            Bytes::from(distinct_key(f, &raw)?)
        }
        t if value::array::element_of(t).is_some() => Bytes::from(distinct_key(f, &raw)?),
        oid::BPCHAR => {
            let kept = raw.iter().rposition(|&b| b != b' ').map_or(0, |p| p + 1);
            raw.slice(..kept)
        }
        _ => raw,
    })
}

/// Bytes that are equal exactly when PostgreSQL's `=` holds for two values of one column: text,
/// integers, dates and timestamps by value; numeric with its scale dropped (1.0 = 1.00); floats
/// with -0 = 0 and one NaN; char(n) without trailing blanks.
pub(super) fn distinct_key(f: &FieldDesc, raw: &[u8]) -> Result<Vec<u8>, PgError> {
    if ONE_SPELLING.contains(&f.type_oid) {
        return Ok(raw.to_vec());
    }
    let v = value::decode(f.type_oid, f.format, Some(raw)).map_err(unsupported)?;
    Ok(value_key(f.type_oid, v))
}

/// `distinct_key` of a decoded value of type `type_oid`.
fn value_key(type_oid: u32, v: SortValue) -> Vec<u8> {
    match v {
        SortValue::Int(i) => i.to_be_bytes().to_vec(),
        SortValue::Float(x) => {
            let x = if x == 0.0 {
                0.0
            } else if x.is_nan() {
                f64::NAN
            } else {
                x
            };
            x.to_bits().to_be_bytes().to_vec()
        }
        SortValue::Numeric(d) => format!("{d:?}").into_bytes(),
        // An interval's span: '1 day' = '24:00:00', as PostgreSQL's `=` has it.
        SortValue::Wide(i) => i.to_be_bytes().to_vec(),
        // jsonb with its numbers by value: '{"a": 1.0}' = '{"a": 1}'.
        SortValue::Json(t) => value::jsonb::equality_key(&t),
        // An array by its shape and its elements' keys, each length-prefixed.
        SortValue::Array(a) => {
            let elem = value::array::element_of(type_oid).unwrap_or_default();
            let mut out = Vec::new();
            for (lower, len) in &a.dims {
                out.extend_from_slice(&lower.to_be_bytes());
                out.extend_from_slice(&(*len as u64).to_be_bytes());
            }
            out.push(b'|');
            for e in a.elems {
                match e {
                    None => out.push(0),
                    Some(v) => {
                        let k = value_key(elem, v);
                        out.push(1);
                        out.extend_from_slice(&(k.len() as u64).to_be_bytes());
                        out.extend_from_slice(&k);
                    }
                }
            }
            out
        }
        SortValue::Network(n) => format!("{n:?}").into_bytes(),
        // char(n) compares without its trailing blanks.
        SortValue::Bytes(mut b) if type_oid == oid::BPCHAR => {
            b.truncate(b.iter().rposition(|&c| c != b' ').map_or(0, |p| p + 1));
            b
        }
        SortValue::Bytes(b) => b,
        SortValue::Null => Vec::new(),
    }
}
