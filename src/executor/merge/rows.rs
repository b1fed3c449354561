//! The shards' rows on their way to a merged result: reading the next row of a shard, the
//! OFFSET and LIMIT window over the merged stream, columns the proxy added and the client
//! must not see, and the collation check that a merged text order depends on.

use crate::error::{sqlstate, PgError};
use crate::executor::session::{Exec, R};
use crate::protocol::inspect::FieldDesc;
use crate::protocol::{build, Frame};
use bytes::BytesMut;

/// OFFSET then LIMIT over the merged stream.
pub struct Window {
    pub skip: u64,
    pub left: Option<u64>,
    pub sent: u64,
}

impl Window {
    pub fn full(&self) -> bool {
        self.left == Some(0)
    }

    pub fn admit(&mut self) -> bool {
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        match &mut self.left {
            Some(0) => false,
            Some(n) => {
                *n -= 1;
                self.sent += 1;
                true
            }
            None => {
                self.sent += 1;
                true
            }
        }
    }
}

pub fn error_frame(e: &PgError) -> Frame {
    let mut b = BytesMut::new();
    build::error(e, &mut b);
    Frame {
        tag: b'E',
        bytes: b.freeze(),
    }
}

/// The refusal of a text sort key on shards whose collation does not order by code point.
pub fn non_c_order(column: &str) -> PgError {
    PgError::error(
        sqlstate::FEATURE_NOT_SUPPORTED,
        format!("ORDER BY text column {column} over several shards under a collation other than C"),
    )
    .with_hint("The merge orders text by code point, as the C collation does: write ORDER BY col COLLATE \"C\", or use a C-collated database.")
}

/// The next DataRow of a shard, or None at its CommandComplete (or error, kept in `late`).
pub async fn next_row(
    exec: &mut Exec<'_>,
    shard: usize,
    late: &mut Option<Frame>,
) -> R<Option<Frame>> {
    loop {
        let f = exec.links[shard].recv().await?;
        match f.tag {
            b'D' => return Ok(Some(f)),
            b'C' | b'I' => return Ok(None),
            b'E' => {
                late.get_or_insert(f);
                return Ok(None);
            }
            b'N' => exec.out.extend_from_slice(&f.bytes),
            b'Z' => return Ok(None),
            _ => {}
        }
    }
}

/// Reads every shard to ReadyForQuery, discarding what is left.
pub async fn drain(exec: &mut Exec<'_>, shards: &[usize]) -> R<()> {
    for &s in shards {
        exec.quiet_until_ready(s).await?;
    }
    Ok(())
}

/// A RowDescription or DataRow without its last `hidden` columns (the sort values the client
/// did not select). With none hidden, the frame's bytes as they are.
pub fn strip_columns(frame: &Frame, hidden: usize) -> bytes::Bytes {
    if hidden == 0 {
        return frame.bytes.clone();
    }
    // Shards frame correctly; should one not, its frame passes unchanged rather than panicking.
    strip(frame, hidden).unwrap_or_else(|| frame.bytes.clone())
}

fn strip(frame: &Frame, hidden: usize) -> Option<bytes::Bytes> {
    let body = frame.body();
    let n = i16::from_be_bytes(body.get(..2)?.try_into().ok()?) as usize;
    let keep = n.checked_sub(hidden)?;
    let mut at = 2;
    for _ in 0..keep {
        if frame.tag == b'T' {
            at += body.get(at..)?.iter().position(|&b| b == 0)? + 1 + 18;
        } else {
            let len = i32::from_be_bytes(body.get(at..at + 4)?.try_into().ok()?);
            at += 4 + len.max(0) as usize;
        }
    }
    let kept = body.get(2..at)?;
    let mut out = BytesMut::with_capacity(at + 5);
    out.extend_from_slice(&[frame.tag, 0, 0, 0, 0]);
    out.extend_from_slice(&(keep as i16).to_be_bytes());
    out.extend_from_slice(kept);
    let len = (out.len() - 1) as i32;
    out[1..5].copy_from_slice(&len.to_be_bytes());
    Some(out.freeze())
}

/// How a refusal names a column and its type: the proxy's own hidden columns (an aggregate's
/// argument, a DISTINCT value) mean nothing to the client, so they are named by type only.
pub(super) fn column_and_type(f: &FieldDesc) -> String {
    let of_type = crate::sql::builtin_types::described(f.type_oid);
    match f.name.starts_with("__shardgate") {
        true => format!("a value of type {of_type}"),
        false => format!("column {} of type {of_type}", f.name),
    }
}

/// A refusal of what the merge cannot combine as PostgreSQL would.
pub(super) fn unsupported(msg: String) -> PgError {
    PgError::error(sqlstate::FEATURE_NOT_SUPPORTED, msg)
        .with_hint("Add a shard-key condition so the query runs on one shard.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_columns_are_stripped() {
        let mut row = BytesMut::new();
        build::data_row_text(&[Some("a"), None, Some("sortval")], &mut row);
        let frame = Frame {
            tag: b'D',
            bytes: row.freeze(),
        };
        let mut expect = BytesMut::new();
        build::data_row_text(&[Some("a"), None], &mut expect);
        assert_eq!(strip_columns(&frame, 1), expect.freeze());
        let mut desc = BytesMut::new();
        build::row_description_text(&["x", "__shardgate_sort_0"], &mut desc);
        let frame = Frame {
            tag: b'T',
            bytes: desc.freeze(),
        };
        let mut expect = BytesMut::new();
        build::row_description_text(&["x"], &mut expect);
        assert_eq!(strip_columns(&frame, 1), expect.freeze());
        // A frame with fewer columns than hidden ones passes unchanged, without a panic.
        let short = Frame {
            tag: b'D',
            bytes: bytes::Bytes::from_static(b"D\0\0\0\x06\0\0"),
        };
        assert_eq!(strip_columns(&short, 3), short.bytes);
    }
}
