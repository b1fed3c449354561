//! Combined values written back for the client: counts, sums and averages in the column's
//! type and format, as PostgreSQL would have written them, and the one row of a count of
//! groups.

use crate::error::{sqlstate, PgError};
use crate::executor::numeric::{float8_text, Num};
use crate::executor::value::interval::{self, Interval};
use crate::protocol::inspect::FieldDesc;
use bytes::Bytes;

/// A merged row: each column's value in the client's format (None for NULL).
pub(super) type Row = Vec<Option<Bytes>>;

pub(super) fn read_int(raw: &[u8], format: i16) -> Option<i128> {
    if format == 1 {
        Some(i64::from_be_bytes(raw.try_into().ok()?) as i128)
    } else {
        std::str::from_utf8(raw).ok()?.parse().ok()
    }
}

pub(super) fn interval_out_of_range() -> PgError {
    PgError::error("22008", interval::OUT_OF_RANGE)
}

/// An interval in the column's format; `None` is one that left the type's range.
pub(super) fn encode_interval(v: Option<Interval>, f: &FieldDesc) -> Result<Bytes, PgError> {
    let v = v.ok_or_else(interval_out_of_range)?;
    Ok(Bytes::from(if f.format == 1 {
        v.to_binary()
    } else {
        v.to_text().into_bytes()
    }))
}

/// The one row of a count of groups: the count in the first column, in its format.
pub fn count_row(groups: usize, fields: &[FieldDesc]) -> Result<Row, PgError> {
    let first = fields.first().ok_or_else(|| {
        PgError::error(
            sqlstate::PROTOCOL_VIOLATION,
            "no columns to count groups in",
        )
    })?;
    let mut row = vec![None; fields.len()];
    row[0] = Some(encode_int(groups as i128, first)?);
    Ok(row)
}

pub(super) fn encode_int(v: i128, f: &FieldDesc) -> Result<Bytes, PgError> {
    let v = i64::try_from(v).map_err(|_| PgError::error("22003", "bigint out of range"))?;
    Ok(if f.format == 1 {
        Bytes::copy_from_slice(&v.to_be_bytes())
    } else {
        Bytes::from(v.to_string())
    })
}

pub(super) fn encode_numeric(v: &Num, format: i16) -> Bytes {
    if format == 1 {
        Bytes::from(v.to_binary())
    } else {
        Bytes::from(v.to_text())
    }
}

pub(super) fn encode_float8(v: f64, format: i16) -> Bytes {
    if format == 1 {
        Bytes::copy_from_slice(&v.to_be_bytes())
    } else {
        Bytes::from(float8_text(v))
    }
}
