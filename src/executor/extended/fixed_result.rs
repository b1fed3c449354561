//! A prepared statement's result columns stay what they were when the client was shown them.
//!
//! PostgreSQL fixes a statement's result type when it prepares it: after DDL that changes the
//! columns, running it fails with 0A000 "cached plan must not change result type", and drivers
//! that cache statements (asyncpg, pgjdbc) prepare it again. The proxy prepares a client's
//! statement again wherever it runs next: on another shard, or with pooling on another server
//! connection of the same shard. Prepared there after the DDL, it would take the new columns
//! while the client still decodes rows with the old ones: a wrong answer.
//!
//! So the columns the client was shown (its Describe of the statement) are kept with the
//! statement. Preparing it again on a connection then sends a Describe with the Parse, in a
//! round trip of its own before anything runs, and is refused the way PostgreSQL refuses it
//! when they differ. A statement whose columns the client never asked for is prepared inline
//! with its Bind as before: the client decodes with the description it gets with the rows.
//! Scattered reads, which the shards prepare afresh every time, compare their description with
//! the kept one before any row is passed on (see `merge::scatter_request`).

use super::Extended;
use crate::error::PgError;
use crate::executor::session::{Exec, Step, R};
use crate::protocol::message::{Parse, Target, TargetKind};
use crate::protocol::{inspect, Frame};
use bytes::BytesMut;

/// Whether `now` (a RowDescription or NoData, numbered as the client sees it) has the columns
/// of `fixed`, formats aside.
fn same_result(fixed: &Frame, now: &Frame) -> bool {
    inspect::same_description(&fixed.bytes, &now.bytes)
}

impl Extended {
    /// Prepares the client's statement `name`, whose columns the client was shown, on `shard`'s
    /// connection ahead of a message of type `tag` there; `Failed` (with the error sent) when
    /// the shard refuses it or its columns changed. The caller has checked out the connection.
    pub(super) async fn prepare_checked(
        &mut self,
        exec: &mut Exec<'_>,
        shard: usize,
        name: &str,
        tag: u8,
    ) -> R<Step> {
        let Some(st) = self.statements.get(name) else {
            return Ok(Step::Done);
        };
        let Some(fixed) = st.columns.clone() else {
            return Ok(Step::Done);
        };
        let parse = match st.parse_for(exec, shard).await {
            Ok(p) => p,
            Err(e) => return Ok(exec.error(&e)),
        };
        let target = Target {
            kind: TargetKind::Statement,
            name: Parse::decode(&parse.slice(5..))
                .map(|p| p.name)
                .unwrap_or_default(),
        };
        if self.reach(exec, shard, tag).await? == Step::Failed {
            return Ok(Step::Failed);
        }
        exec.links[shard].prepares.increment(1);
        let mut out = BytesMut::from(&parse[..]);
        target.encode(b'D', &mut out);
        out.extend_from_slice(b"H\0\0\0\x04");
        exec.links[shard].send(&out).await?;
        self.touched.insert(shard);
        // ParseComplete and ParameterDescription, then the columns.
        let Some(now) = answer(exec, shard, b"Tn").await? else {
            return Ok(Step::Failed);
        };
        let now = exec.for_client(shard, now).await;
        if same_result(&fixed, &now) {
            if let Some(st) = self.statements.get_mut(name) {
                st.sent_to(exec, shard);
            }
            return Ok(Step::Done);
        }
        // Not kept there: the next use prepares it again and is refused again, as PostgreSQL
        // refuses it until the client prepares the statement anew.
        let mut out = BytesMut::new();
        target.encode(b'C', &mut out);
        out.extend_from_slice(b"H\0\0\0\x04");
        exec.links[shard].send(&out).await?;
        if answer(exec, shard, b"3").await?.is_none() {
            return Ok(Step::Failed);
        }
        Ok(exec.error(&PgError::changed_result_type()))
    }
}

/// Reads `shard`'s answers up to the first frame tagged one of `ends`; `None` after passing an
/// error on to the client. Notices and other asynchronous messages are passed on.
async fn answer(exec: &mut Exec<'_>, shard: usize, ends: &[u8]) -> R<Option<Frame>> {
    loop {
        let f = exec.links[shard].recv().await?;
        match f.tag {
            b'E' => {
                exec.out.extend_from_slice(&f.bytes);
                return Ok(None);
            }
            b'N' | b'A' | b'S' => exec.out.extend_from_slice(&f.bytes),
            t if ends.contains(&t) => return Ok(Some(f)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn frame(tag: u8, body: &[u8]) -> Frame {
        let mut b = BytesMut::new();
        b.put_u8(tag);
        b.put_i32(4 + body.len() as i32);
        b.put_slice(body);
        Frame {
            tag,
            bytes: b.freeze(),
        }
    }

    fn columns(types: &[u32], format: i16) -> Frame {
        let mut b = BytesMut::new();
        b.put_i16(types.len() as i16);
        for (i, t) in types.iter().enumerate() {
            b.put_slice(format!("c{i}\0").as_bytes());
            b.put_u32(16384);
            b.put_i16(i as i16 + 1);
            b.put_u32(*t);
            b.put_i16(4);
            b.put_i32(-1);
            b.put_i16(format);
        }
        frame(b'T', &b)
    }

    #[test]
    fn a_result_keeps_its_columns_and_kind() {
        let no_data = frame(b'n', &[]);
        assert!(same_result(&no_data, &no_data));
        assert!(same_result(&columns(&[23, 25], 0), &columns(&[23, 25], 1)));
        assert!(!same_result(
            &columns(&[23, 25], 0),
            &columns(&[23, 25, 25], 0)
        ));
        assert!(!same_result(&columns(&[23], 0), &columns(&[20], 0)));
        assert!(!same_result(&columns(&[], 0), &no_data));
    }
}
