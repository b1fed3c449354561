//! `count(...) OVER ()` and `sum(x) OVER ()` items over several shards (see
//! `router::plan::windows`): each shard counted (or summed) its own rows and wrote that total in
//! every row it sends, so one row of each shard tells its total, and the sum over the shards is
//! the whole result's, which the merge writes in every row it passes on. A shard with no rows
//! counts none; a sum that is NULL on every shard (no value) stays NULL. Sums of integers and
//! numerics only: a float sum's last digits would depend on the order of the additions.

use super::numeric_sum::NumSum;
use super::rows::unsupported;
use crate::error::{sqlstate, PgError};
use crate::executor::value::oid;
use crate::protocol::inspect::{self, FieldDesc};
use crate::protocol::Frame;
use crate::router::plan::TotalColumn;
use bytes::Bytes;

/// The client's columns the counts are in (`hidden` trailing columns are the merge's own).
pub fn columns(
    spec: &[TotalColumn],
    fields: &[FieldDesc],
    hidden: usize,
) -> Result<Vec<usize>, PgError> {
    let shown = fields.len().saturating_sub(hidden);
    spec.iter()
        .map(|t| {
            let at = match *t {
                TotalColumn::FromStart(i) => Some(i),
                TotalColumn::FromEnd(i) => shown.checked_sub(i + 1),
            };
            match at.and_then(|i| fields.get(i).map(|f| (i, f))) {
                Some((i, f)) if matches!(f.type_oid, oid::INT8 | oid::NUMERIC) && i < shown => {
                    Ok(i)
                }
                Some((_, f)) => Err(unsupported(format!(
                    "a total OVER () of {} across shards is not supported: only counts and sums of integers and numerics add up exactly",
                    super::rows::column_and_type(f)
                ))),
                None => Err(unsupported(
                    "the shards did not return the total OVER () where the statement puts it"
                        .into(),
                )),
            }
        })
        .collect()
}

/// Each column's total, in its format, from one row of each shard that has rows.
pub fn sums(
    firsts: &[&Frame],
    columns: &[usize],
    fields: &[FieldDesc],
) -> Result<Vec<(usize, Bytes)>, PgError> {
    let bad = || {
        PgError::error(
            sqlstate::PROTOCOL_VIOLATION,
            "cannot read a total OVER () a shard sent",
        )
    };
    let mut out = Vec::with_capacity(columns.len());
    for &c in columns {
        let (format, numeric) = fields
            .get(c)
            .map_or((0, false), |f| (f.format, f.type_oid == oid::NUMERIC));
        // A shard's NULL is a sum of no values, which adds nothing.
        let partials = firsts
            .iter()
            .map(|row| inspect::data_row_column(row.body(), c).ok_or_else(bad))
            .collect::<Result<Vec<_>, _>>()?;
        let partials = partials.into_iter().flatten();
        if numeric {
            let mut total: Option<NumSum> = None;
            for raw in partials {
                let v = NumSum::read(raw, format).ok_or_else(bad)?;
                total = Some(match total {
                    None => v,
                    Some(t) => t.add(v),
                });
            }
            if let Some(t) = total {
                out.push((c, t.encode(format)));
            }
            continue;
        }
        let mut total: Option<i64> = None;
        for raw in partials {
            let n = if format == 1 {
                raw.try_into().ok().map(i64::from_be_bytes)
            } else {
                std::str::from_utf8(raw).ok().and_then(|t| t.parse().ok())
            }
            .ok_or_else(bad)?;
            total = Some(
                total
                    .unwrap_or(0)
                    .checked_add(n)
                    .ok_or_else(|| PgError::error("22003", "bigint out of range"))?,
            );
        }
        if let Some(total) = total {
            out.push((
                c,
                if format == 1 {
                    Bytes::copy_from_slice(&total.to_be_bytes())
                } else {
                    Bytes::from(total.to_string())
                },
            ));
        }
    }
    Ok(out)
}

/// `row` with each total written in its column.
pub fn written(row: &Frame, totals: &[(usize, Bytes)]) -> Frame {
    let body = row.body();
    let count = body
        .get(..2)
        .map_or(0, |b| i16::from_be_bytes([b[0], b[1]]).max(0) as usize);
    let values: Vec<Option<Bytes>> = (0..count)
        .map(|i| match totals.iter().find(|(c, _)| *c == i) {
            Some((_, v)) => Some(v.clone()),
            None => inspect::data_row_column(body, i)
                .flatten()
                .map(Bytes::copy_from_slice),
        })
        .collect();
    Frame {
        tag: b'D',
        bytes: super::group_output::data_row(&values),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, type_oid: u32, format: i16) -> FieldDesc {
        FieldDesc {
            name: name.into(),
            table_oid: 0,
            column: 0,
            type_oid,
            typmod: -1,
            format,
        }
    }

    fn row(values: &[Option<&[u8]>]) -> Frame {
        let values: Vec<Option<Bytes>> = values
            .iter()
            .map(|v| v.map(Bytes::copy_from_slice))
            .collect();
        Frame {
            tag: b'D',
            bytes: super::super::group_output::data_row(&values),
        }
    }

    #[test]
    fn the_shards_counts_add_up_and_are_written_in_every_row() {
        let fields = [
            field("id", oid::INT4, 0),
            field("total", oid::INT8, 0),
            field("__shardgate_sort_0", oid::INT4, 0),
        ];
        // After a `*` of unknown width: counted from the last of the client's columns.
        let at = columns(&[TotalColumn::FromEnd(0)], &fields, 1).unwrap();
        assert_eq!(at, [1]);
        assert!(columns(&[TotalColumn::FromStart(0)], &fields, 1).is_err());
        let (a, b) = (
            row(&[Some(b"1"), Some(b"3"), Some(b"1")]),
            row(&[Some(b"2"), Some(b"4"), None]),
        );
        let totals = sums(&[&a, &b], &at, &fields).unwrap();
        assert_eq!(totals, [(1, Bytes::from("7"))]);
        let out = written(&a, &totals);
        assert_eq!(
            inspect::data_row_column(out.body(), 0),
            Some(Some(&b"1"[..]))
        );
        assert_eq!(
            inspect::data_row_column(out.body(), 1),
            Some(Some(&b"7"[..]))
        );
        assert_eq!(
            inspect::data_row_column(out.body(), 2),
            Some(Some(&b"1"[..]))
        );
        // In binary.
        let bin = [field("total", oid::INT8, 1)];
        let (x, y) = (
            row(&[Some(&5i64.to_be_bytes())]),
            row(&[Some(&6i64.to_be_bytes())]),
        );
        let totals = sums(&[&x, &y], &[0], &bin).unwrap();
        assert_eq!(totals, [(0, Bytes::copy_from_slice(&11i64.to_be_bytes()))]);
    }

    #[test]
    fn numeric_sums_add_up_exactly_and_nulls_add_nothing() {
        let fields = [field("s", oid::NUMERIC, 0), field("n", oid::INT8, 0)];
        let at = columns(
            &[TotalColumn::FromStart(0), TotalColumn::FromStart(1)],
            &fields,
            0,
        )
        .unwrap();
        let (a, b, c) = (
            row(&[Some(b"1.50"), None]),
            row(&[Some(b"2.125"), Some(b"4")]),
            row(&[None, None]),
        );
        let totals = sums(&[&a, &b, &c], &at, &fields).unwrap();
        assert_eq!(totals, [(0, Bytes::from("3.625")), (1, Bytes::from("4"))]);
        // NULL on every shard: nothing written, the rows' own NULL stays.
        assert_eq!(sums(&[&c], &at, &fields).unwrap(), []);
        assert!(columns(
            &[TotalColumn::FromStart(0)],
            &[field("f", oid::FLOAT8, 0)],
            0
        )
        .is_err());
    }
}
