//! A cursor over several shards under ORDER BY (`DECLARE c CURSOR FOR SELECT ... ORDER BY
//! ...`, as psycopg's named cursors and Django's `iterator()` declare them), or LIMIT or OFFSET
//! (Django's `iterator()` over a slice), merged FETCH by FETCH. Without ORDER BY the rows come
//! in no defined order, as on one server; with it, in that order.
//!
//! Each shard holds its own cursor over its rows, in the statement's order. A FETCH of n rows
//! reads up to a batch from each shard whose rows read so far have all been handed out, then
//! hands out the smallest head among the shards until n rows went out or a shard must be read
//! again; rows read and not handed out wait for the next FETCH, with their sort values. A
//! shard is known to have no rows left when it returned fewer than it was asked for.
//!
//! Invariants: a row goes out only when every shard that may still have rows has one waiting,
//! so the head compared is each shard's next row; every FETCH asks every shard something (none
//! to those with rows waiting), so a cursor its transaction closed fails as PostgreSQL fails.
//! The rows waiting are in the formats of the FETCH that read them; a FETCH asking for others
//! while rows wait is refused. OFFSET's rows are taken from the merge and dropped before any
//! is handed out; once LIMIT's rows went out, the cursor has none left, whatever the shards
//! still hold (each shard's cursor stops at offset + limit anyway).

use super::merge::rows::error_frame;
use super::merge::{strip_columns, Sorting};
use super::session::state::{CursorAt, OrderedCursor, Several};
use super::session::{Exec, Step, R};
use crate::error::{sqlstate, PgError};
use crate::protocol::{build, inspect, Frame};
use crate::router::cursor::Fetch;
use crate::router::plan::MergeSpec;
use bytes::BytesMut;
use std::collections::VecDeque;

/// Most rows read from one shard's cursor at a time.
const BATCH: u64 = 1000;

impl Exec<'_> {
    /// The merge of a cursor just declared on `shards`, whose rows have `columns`; Err: its
    /// sort keys cannot be merged (a type or a collation a scatter refuses too).
    pub(super) async fn ordered_cursor(
        &mut self,
        shards: &[usize],
        columns: Frame,
        merge: MergeSpec,
    ) -> Result<OrderedCursor, PgError> {
        Sorting::resolve(self, shards, &columns, &merge).await?;
        Ok(OrderedCursor {
            skip: merge.offset,
            left: merge.limit,
            merge,
            columns,
            buffered: vec![VecDeque::new(); shards.len()],
            ended: vec![false; shards.len()],
            formats: Vec::new(),
        })
    }

    /// FETCH or MOVE forward from a cursor over several shards under ORDER BY.
    pub(super) async fn fetch_ordered(&mut self, f: Fetch, mut c: Several) -> R<Step> {
        let Some(mut o) = c.order.take() else {
            return Ok(self.error(&PgError::error(
                sqlstate::INTERNAL_ERROR,
                "an ordered cursor without its merge",
            )));
        };
        let verb = if f.is_move { "MOVE" } else { "FETCH" };
        let Some(mut remaining) = f.forward else {
            return Ok(self.error(&super::cursor::backward(verb)));
        };
        // Per-column formats name the client's columns: the hidden sort columns come as text.
        let mut formats = self.result_formats.clone();
        if formats.iter().all(|f| *f == 0) {
            // Text, however the Bind said it (or a simple Query).
            formats.clear();
        } else if formats.len() > 1 {
            formats.extend(std::iter::repeat_n(0, o.merge.hidden));
        }
        if o.buffered.iter().any(|b| !b.is_empty()) && o.formats != formats {
            return Ok(self.error(
                &PgError::error(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "a FETCH in other result formats than the last one from a cursor over several shards is not supported",
                )
                .with_hint("Fetch every row of such a cursor in the same formats (text or binary)."),
            ));
        }
        o.formats = formats.clone();
        let sorting = match Sorting::resolve(self, &c.shards, &o.columns, &o.merge).await {
            Ok(s) => s.in_formats(&formats),
            Err(e) => return Ok(self.error(&e)),
        };
        if !f.is_move && self.describe_rows {
            if let Some(d) = &c.description {
                self.out.extend_from_slice(&d.bytes);
            }
        }
        let batch = remaining.map_or(BATCH, |n| n.clamp(16, BATCH));
        let mut total = 0u64;
        let mut first = true;
        loop {
            // LIMIT's rows all went out: each shard is only asked whether its cursor is there.
            let spent = o.left == Some(0);
            let asked: Vec<(usize, u64)> = (0..c.shards.len())
                .filter_map(|i| {
                    if !spent && o.buffered[i].is_empty() && !o.ended[i] {
                        Some((i, batch))
                    } else {
                        first.then_some((i, 0))
                    }
                })
                .collect();
            first = false;
            if !asked.is_empty() {
                let read = self
                    .read_cursor_rows(&f.name, &c.shards, &mut o, &sorting, &asked)
                    .await?;
                if read == Step::Failed {
                    return Ok(Step::Failed);
                }
            }
            while remaining != Some(0) && o.left != Some(0) {
                let waiting = (0..c.shards.len()).any(|i| o.buffered[i].is_empty() && !o.ended[i]);
                if waiting {
                    break;
                }
                let Some(best) = first_head(&o.buffered, &sorting) else {
                    break;
                };
                let Some((row, _)) = o.buffered[best].pop_front() else {
                    break;
                };
                if o.skip > 0 {
                    o.skip -= 1;
                    continue;
                }
                o.left = o.left.map(|n| n - 1);
                if !f.is_move {
                    self.out
                        .extend_from_slice(&strip_columns(&row, o.merge.hidden));
                    self.maybe_flush().await?;
                }
                total += 1;
                remaining = remaining.map(|n| n - 1);
            }
            let done = o.left == Some(0)
                || (0..c.shards.len()).all(|i| o.buffered[i].is_empty() && o.ended[i]);
            if remaining == Some(0) || done {
                break;
            }
        }
        c.order = Some(o);
        self.cursors.insert(f.name, CursorAt::Several(c));
        build::command_complete(&format!("{verb} {total}"), &mut self.out);
        Ok(Step::Done)
    }

    /// Asks each `(index, rows)` of `asked` for that many rows of its cursor and keeps them
    /// waiting with their sort values; a shard that returns fewer has ended. Asked for none, a
    /// shard only says whether the cursor is there. Failed: the client has been told why.
    async fn read_cursor_rows(
        &mut self,
        name: &str,
        shards: &[usize],
        o: &mut OrderedCursor,
        sorting: &Sorting,
        asked: &[(usize, u64)],
    ) -> R<Step> {
        for &(i, n) in asked {
            let s = shards[i];
            // FETCH FORWARD 0 would fetch the current row again: none is asked by a MOVE.
            let verb = if n == 0 { "MOVE" } else { "FETCH" };
            let text = format!("{verb} FORWARD {n} FROM {}", crate::sql::identifier(name));
            let request = if o.formats.iter().any(|f| *f != 0) {
                super::rebind::rebind(&text, &Default::default(), &[], &o.formats, false, true)
            } else {
                let mut q = BytesMut::new();
                build::query(&text, &mut q);
                q.freeze()
            };
            // Binary rows name types inside them as this shard numbers them.
            let rows = self.row_types_for(s, Some(&o.columns), &o.formats).await;
            if matches!(rows, super::link::row_types::RowTypes::Renumber { .. }) {
                self.links[s].row_types.push(rows);
            }
            self.links[s].send(&request).await?;
        }
        let mut failure: Option<Frame> = None;
        for &(i, n) in asked {
            let s = shards[i];
            let mut got = 0;
            loop {
                let frame = self.links[s].recv().await?;
                match frame.tag {
                    b'Z' => break,
                    b'D' if failure.is_none() => match sorting.values(&frame) {
                        Ok(values) => o.buffered[i].push_back((frame, values)),
                        Err(e) => failure = Some(error_frame(&e)),
                    },
                    b'C' => got = inspect::command_rows(frame.body()).unwrap_or(0),
                    b'E' => {
                        failure.get_or_insert(frame);
                    }
                    b'N' => self.pass(&frame).await?,
                    _ => {}
                }
            }
            if n > 0 && got < n {
                o.ended[i] = true;
            }
        }
        if let Some(e) = failure {
            self.rewritten = true;
            self.shard_error(&e);
            self.rewritten = false;
            return Ok(Step::Failed);
        }
        Ok(Step::Done)
    }
}

/// The shard whose next row comes first (ties: the lowest, as the scatter merge picks).
fn first_head(
    buffered: &[VecDeque<(Frame, Vec<crate::executor::value::SortValue>)>],
    sorting: &Sorting,
) -> Option<usize> {
    let mut best: Option<(usize, &[crate::executor::value::SortValue])> = None;
    for (i, b) in buffered.iter().enumerate() {
        let Some((_, values)) = b.front() else {
            continue;
        };
        match best {
            Some((_, v)) if !sorting.after(v, values) => {}
            _ => best = Some((i, values)),
        }
    }
    best.map(|(i, _)| i)
}
