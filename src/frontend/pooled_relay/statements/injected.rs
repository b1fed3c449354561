//! Messages the relay sends in an extended-protocol batch on its own, before or in place of
//! the client's: each leaves in `expect` what its answers hold, so that the answers are
//! dropped or replaced rather than shown to the client.

use super::{cstr_bytes, put_frame, Expect, RelayStatements};
use crate::protocol::build;
use crate::sql::signal_call::SignalKind;
use bytes::{BufMut, BytesMut};

/// PostgreSQL's refusal of a statement whose result columns changed, raised on the shard so
/// that it aborts an open transaction as the real one does.
const REFUSAL: &str = "DO $shardgate$BEGIN RAISE EXCEPTION USING ERRCODE = '0A000', \
     MESSAGE = 'cached plan must not change result type'; END$shardgate$";

impl RelayStatements {
    /// The shard-side messages that raise PostgreSQL's refusal of a stale statement in place
    /// of the client's message; `expect` gets what their answers hold.
    pub fn refusal(out: &mut BytesMut, expect: &mut Vec<Expect>) {
        // Unnamed: the client's unnamed statement is replaced, as any Parse of it would.
        build::parse("", REFUSAL, &[], out);
        put_frame(b'B', &[0, 0, 0, 0, 0, 0, 0, 0], out);
        put_frame(b'E', &[0, 0, 0, 0, 0], out);
        expect.extend([
            Expect::Injected(None),
            Expect::InjectedBind,
            Expect::Refusal,
        ]);
    }

    /// `sql` run through the extended protocol under a statement and a portal name of the
    /// proxy's, both closed again: the client's unnamed statement and portal stay as they
    /// were. `sql` takes no parameters and returns no rows.
    pub fn own_statement(sql: &str, out: &mut BytesMut, expect: &mut Vec<Expect>) {
        const NAME: &str = "shardgate_own\0";
        build::parse(unterminated(NAME), sql, &[], out);
        let mut body = BytesMut::new();
        body.put_slice(NAME.as_bytes());
        body.put_slice(NAME.as_bytes());
        body.put_slice(&[0; 6]);
        put_frame(b'B', &body, out);
        body.clear();
        body.put_slice(NAME.as_bytes());
        body.put_i32(0);
        put_frame(b'E', &body, out);
        for kind in [b'P', b'S'] {
            body.clear();
            body.put_u8(kind);
            body.put_slice(NAME.as_bytes());
            put_frame(b'C', &body, out);
        }
        expect.extend([b'1', b'2', b'C', b'3', b'3'].map(Expect::Own));
    }

    /// In place of the client's Bind `frame`, the same portal bound to `sql` (no parameters,
    /// the client's result formats) under a statement name of the proxy's, closed again at
    /// once: the portal outlives its statement, and the client's statements stay as they were.
    /// `due` is the signal the statement's ParseComplete sets off. None when the Bind does not
    /// hold together.
    pub fn instead_of_bind(
        frame: &[u8],
        sql: &str,
        due: Option<(i32, SignalKind)>,
        out: &mut BytesMut,
        expect: &mut Vec<Expect>,
    ) -> Option<()> {
        const NAME: &str = "shardgate_signal\0";
        let body = &frame[5..];
        let portal = cstr_bytes(body)?;
        let mut at = portal.len() + 1;
        at += cstr_bytes(&body[at..])?.len() + 1;
        let word = |at: usize| -> Option<i16> {
            Some(i16::from_be_bytes(body.get(at..at + 2)?.try_into().ok()?))
        };
        let formats = word(at)?.max(0) as usize;
        at += 2 + 2 * formats;
        let params = word(at)?.max(0);
        at += 2;
        for _ in 0..params {
            let len = i32::from_be_bytes(body.get(at..at + 4)?.try_into().ok()?);
            at += 4 + len.max(0) as usize;
        }
        let results = body.get(at..)?;
        build::parse(unterminated(NAME), sql, &[], out);
        let mut msg = BytesMut::new();
        msg.put_slice(portal);
        msg.put_u8(0);
        msg.put_slice(NAME.as_bytes());
        msg.put_i16(0);
        msg.put_i16(0);
        msg.put_slice(results);
        put_frame(b'B', &msg, out);
        msg.clear();
        msg.put_u8(b'S');
        msg.put_slice(NAME.as_bytes());
        put_frame(b'C', &msg, out);
        expect.push(match due {
            Some((pid, kind)) => Expect::OwnSignal(pid, kind),
            None => Expect::Own(b'1'),
        });
        expect.push(Expect::Own(b'3'));
        Some(())
    }
}

/// A name kept with its NUL for the messages that carry it, without the NUL.
fn unterminated(name: &str) -> &str {
    name.strip_suffix('\0').unwrap_or(name)
}
