//! The numbers of `row_number()`, `rank()` and `dense_rank()` over the whole result (see
//! `router::plan::numbering`), written as the sorted merge passes each row, skipped ones
//! included: PostgreSQL numbers before OFFSET and LIMIT.
//!
//! Invariant: rows come in the window's order (its keys lead the merge's sort keys), so a row's
//! rank is its row number unless its window keys equal the previous row's.

use super::encode::encode_int;
use super::{order, Key};
use crate::error::PgError;
use crate::executor::value::SortValue;
use crate::protocol::inspect::FieldDesc;
use crate::router::plan::{NumberKind, Numbering};
use bytes::Bytes;
use std::cmp::Ordering;

pub(super) struct Numbers<'a> {
    columns: &'a [Numbering],
    fields: &'a [FieldDesc],
    row_number: i64,
    rank: i64,
    dense_rank: i64,
    /// The previous row's window keys.
    previous: Option<Vec<SortValue>>,
}

impl<'a> Numbers<'a> {
    pub(super) fn new(columns: &'a [Numbering], fields: &'a [FieldDesc]) -> Numbers<'a> {
        Numbers {
            columns,
            fields,
            row_number: 0,
            rank: 0,
            dense_rank: 0,
            previous: None,
        }
    }

    /// The next row's numbers by column, in each column's format; None when nothing is
    /// numbered. `values`: the row's sort values, in `keys`' order.
    pub(super) fn next(
        &mut self,
        values: &[SortValue],
        keys: &[Key],
    ) -> Option<Result<Vec<(usize, Bytes)>, PgError>> {
        let first = self.columns.first()?;
        let window = first.window_keys.min(keys.len()).min(values.len());
        self.row_number += 1;
        let peer = self
            .previous
            .as_ref()
            .is_some_and(|p| order(p, &values[..window], &keys[..window]) == Ordering::Equal);
        if !peer {
            self.rank = self.row_number;
            self.dense_rank += 1;
            self.previous = Some(values[..window].to_vec());
        }
        let written = self.columns.iter().map(|c| {
            let n = match c.kind {
                NumberKind::RowNumber => self.row_number,
                NumberKind::Rank => self.rank,
                NumberKind::DenseRank => self.dense_rank,
            };
            let field = self.fields.get(c.column).ok_or_else(|| {
                PgError::error(
                    crate::error::sqlstate::INTERNAL_ERROR,
                    "a numbered column is missing from the shards' answer",
                )
            })?;
            Ok((c.column, encode_int(n as i128, field)?))
        });
        Some(written.collect())
    }
}
