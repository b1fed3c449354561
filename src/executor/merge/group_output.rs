//! Merged groups on their way to the client, once `having` kept them: ORDER BY sorted, and
//! the columns and rows the client sees (avg re-typed from its sum, hidden columns removed).
//! Values are compared in each column's final type, after `aggregate` combined the shards'
//! partial states.

use super::aggregate::{unsupported, Row};
use super::enums::Enums;
use super::rows::strip_columns;
use crate::error::{sqlstate, PgError};
use crate::executor::value::{self, oid, SortValue};
use crate::protocol::inspect::FieldDesc;
use crate::protocol::Frame;
use crate::router::aggregate::{AggColumn, AggSpec};
use crate::router::plan::{MergeSpec, SortColumn};
use bytes::{Bytes, BytesMut};
use std::cmp::Ordering;

pub fn client_fields(fields: &[FieldDesc], spec: &AggSpec) -> Vec<FieldDesc> {
    fields
        .iter()
        .zip(&spec.columns)
        .map(|(f, c)| match c {
            AggColumn::Avg { .. } => FieldDesc {
                type_oid: match f.type_oid {
                    oid::FLOAT4 | oid::FLOAT8 => oid::FLOAT8,
                    oid::INTERVAL => oid::INTERVAL,
                    _ => oid::NUMERIC,
                },
                ..f.clone()
            },
            _ => f.clone(),
        })
        .collect()
}

/// The RowDescription for the client: avg columns re-typed, hidden columns removed.
pub fn client_description(frame: &Frame, merge: &MergeSpec) -> Bytes {
    let Some(spec) = &merge.aggregate else {
        return strip_columns(frame, merge.hidden);
    };
    let mut bytes = BytesMut::from(&frame.bytes[..]);
    let mut at = 7;
    for col in &spec.columns {
        let Some(nul) = bytes.get(at..).and_then(|b| b.iter().position(|&b| b == 0)) else {
            break;
        };
        let fixed = at + nul + 1;
        if bytes.len() < fixed + 18 {
            break;
        }
        if let AggColumn::Avg { .. } = col {
            let sum_type =
                u32::from_be_bytes(bytes[fixed + 6..fixed + 10].try_into().expect("4 bytes"));
            let (ty, len): (u32, i16) = match sum_type {
                oid::FLOAT4 | oid::FLOAT8 => (oid::FLOAT8, 8),
                oid::INTERVAL => (oid::INTERVAL, 16),
                _ => (oid::NUMERIC, -1),
            };
            bytes[fixed + 6..fixed + 10].copy_from_slice(&ty.to_be_bytes());
            bytes[fixed + 10..fixed + 12].copy_from_slice(&len.to_be_bytes());
            bytes[fixed + 12..fixed + 16].copy_from_slice(&(-1i32).to_be_bytes());
        }
        at = fixed + 18;
    }
    strip_columns(
        &Frame {
            tag: b'T',
            bytes: bytes.freeze(),
        },
        merge.hidden,
    )
}

/// The sort keys with names resolved against the shards' columns (a set operation's ORDER BY
/// names its output columns) and positions checked against them; None when they stand as given.
pub fn positioned(
    order: &[crate::router::plan::SortKey],
    fields: &[FieldDesc],
) -> Result<Option<Vec<crate::router::plan::SortKey>>, PgError> {
    for k in order {
        if let SortColumn::Position(p) = k.column {
            if !(1..=fields.len()).contains(&p) {
                return Err(PgError::error(
                    "42P10",
                    format!("ORDER BY position {p} is not in select list"),
                ));
            }
        }
    }
    if !order
        .iter()
        .any(|k| matches!(k.column, SortColumn::Name(_)))
    {
        return Ok(None);
    }
    let mut resolved = order.to_vec();
    for k in &mut resolved {
        if let SortColumn::Name(n) = &k.column {
            let mut found = fields.iter().enumerate().filter(|(_, f)| &f.name == n);
            match (found.next(), found.next()) {
                (Some((i, _)), None) => k.column = SortColumn::Position(i + 1),
                _ => {
                    return Err(unsupported(format!(
                        "ORDER BY {n} over several shards needs {n} once in the select list"
                    ))
                    .with_hint("Select the sort column (once) so the merge can sort on it."))
                }
            }
        }
    }
    Ok(Some(resolved))
}

/// Sorts combined rows by the ORDER BY keys.
/// Enum columns in `enums` sort by their declared order.
pub fn sort(
    rows: &mut [Row],
    fields: &[FieldDesc],
    merge: &MergeSpec,
    enums: &Enums,
) -> Result<(), PgError> {
    if merge.order.is_empty() {
        return Ok(());
    }
    let mut keyed: Vec<(Vec<SortValue>, usize)> = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let mut values = Vec::with_capacity(merge.order.len());
        for k in &merge.order {
            let column = match k.column {
                SortColumn::Position(p) if (1..=fields.len()).contains(&p) => p - 1,
                _ => {
                    return Err(PgError::error(
                        sqlstate::INTERNAL_ERROR,
                        "aggregate sort key not resolved to a column",
                    ))
                }
            };
            let f = &fields[column];
            let raw = row.get(column).and_then(|v| v.as_deref());
            let decoded = match enums.get(&column) {
                Some(e) => e.value(raw),
                None => value::decode(f.type_oid, f.format, raw),
            };
            values.push(decoded.map_err(unsupported)?);
        }
        keyed.push((values, i));
    }
    keyed.sort_by(|(a, ia), (b, ib)| {
        for (k, (x, y)) in merge.order.iter().zip(a.iter().zip(b)) {
            let o = value::compare_key(x, y, k.descending, k.nulls_first);
            if o != Ordering::Equal {
                return o;
            }
        }
        ia.cmp(ib)
    });
    let order: Vec<usize> = keyed.into_iter().map(|(_, i)| i).collect();
    let mut taken: Vec<Option<Row>> = rows.iter_mut().map(|r| Some(std::mem::take(r))).collect();
    for (slot, i) in order.into_iter().enumerate() {
        rows[slot] = taken[i].take().expect("each row once");
    }
    Ok(())
}

/// A DataRow of these column values.
pub fn data_row(row: &[Option<Bytes>]) -> Bytes {
    let mut b = BytesMut::new();
    b.extend_from_slice(&[b'D', 0, 0, 0, 0]);
    b.extend_from_slice(&(row.len() as i16).to_be_bytes());
    for v in row {
        match v {
            None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                b.extend_from_slice(v);
            }
        }
    }
    let len = (b.len() - 1) as i32;
    b[1..5].copy_from_slice(&len.to_be_bytes());
    b.freeze()
}
