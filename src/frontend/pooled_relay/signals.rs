//! `pg_cancel_backend` and `pg_terminate_backend` of a pid the proxy minted, in the one-shard
//! relay (see `sql::signal_call` for the calls recognised).
//!
//! The shard knows no such pid, so the message that makes the call (a Query, or the Bind that
//! gives it its value) is replaced by a statement of the proxy's whose answer is PostgreSQL's:
//! `true` for another live session, which is signalled, and for the caller's own pid the same
//! call of the backend serving it, which cancels the statement or ends the connection exactly
//! as PostgreSQL does. A Query's signal goes when the Query does; a Bind's once the shard
//! answered the Parse the proxy put ahead of it, so that an error earlier in the batch, which
//! makes PostgreSQL skip the rest, skips the signal too. A session of another user, which the
//! caller may not signal, gets the proxy's refusal raised on the shard, so that it aborts the
//! transaction as PostgreSQL's would. A pid no live session has goes to the shard as written,
//! which answers for it as for any pid that is no backend's.
//!
//! Invariant: `prepared` holds a statement name exactly while the client's statement of that
//! name is such a call with a parameter for its pid (the unnamed one under "").

use super::statement_text::parse_text_bytes;
use super::statements::{refusal, RelayStatements};
use crate::client::cancel::{forbidden, is_minted, CancelRegistry, Signalled, Signaller};
use crate::protocol::inspect;
use crate::protocol::message::Bind;
use crate::sql::signal_call::{self, Arg, SignalCall, SignalKind};
use bytes::Bytes;
use foldhash::HashMap;

pub struct Signals<'a> {
    signaller: Signaller<'a>,
    prepared: HashMap<Box<str>, SignalCall>,
}

impl<'a> Signals<'a> {
    pub fn new(registry: &'a CancelRegistry, own_pid: i32) -> Self {
        Signals {
            signaller: Signaller { registry, own_pid },
            prepared: HashMap::default(),
        }
    }

    /// What goes instead of the whole client message `frame`, if it is a call this session
    /// carries out. A Query's signal is delivered now; a Bind's once the shard ran the Parse
    /// ahead of it (see `deliver`).
    pub fn instead(&mut self, frame: &[u8], statements: &RelayStatements) -> Option<Instead> {
        let body = &frame[5..];
        match frame[0] {
            b'Q' if body.len() <= signal_call::LONGEST_CALL + 1
                && signal_call::may_be_call(body) =>
            {
                let text = std::str::from_utf8(body.strip_suffix(b"\0")?).ok()?;
                let call = signal_call::parse(text)?;
                let Arg::Pid(pid) = call.arg else {
                    return None;
                };
                let instead = self.instead_of(&call, pid)?;
                if let Some((pid, kind)) = instead.due {
                    self.deliver(pid, kind);
                }
                Some(Instead {
                    due: None,
                    ..instead
                })
            }
            b'P' => {
                self.note_parse(body);
                None
            }
            b'C' if body.first() == Some(&b'S') && !self.prepared.is_empty() => {
                let name = cstr(&body[1..])?;
                self.prepared.remove(name);
                None
            }
            b'B' if !self.prepared.is_empty() => {
                let bind = Bind::decode(&Bytes::copy_from_slice(body)).ok()?;
                let name = bind.statement.as_str();
                let call = self.prepared.get(name)?.clone();
                // A named statement is the one the session keeps: a Parse the shard refused
                // (a name still in use, say) did not make it a call.
                if !name.is_empty() {
                    let kept = std::str::from_utf8(statements.text_of(name)?).ok()?;
                    if signal_call::parse(kept).as_ref() != Some(&call) {
                        return None;
                    }
                }
                let Arg::Param(n) = call.arg else {
                    return None;
                };
                let pid = bind.params.constant(n)?.parse::<i64>().ok()?;
                self.instead_of(&call, pid)
            }
            _ => None,
        }
    }

    /// Carries out a signal that became due (see `instead`). A target that ended since it was
    /// looked at is gone either way.
    pub fn deliver(&self, pid: i32, kind: SignalKind) {
        if let Signalled::Sent(keys) = self.signaller.signal(pid, kind) {
            if !keys.is_empty() {
                tokio::spawn(crate::backend::forward_cancel(keys));
            }
        }
    }

    /// A Parse: its statement is, or is no longer, a call with a parameter for its pid.
    fn note_parse(&mut self, body: &[u8]) {
        let text = parse_text_bytes(body);
        let may_be = text.len() <= signal_call::LONGEST_CALL && signal_call::may_be_call(text);
        // Nearly every Parse: no call, and no name that was one.
        if !may_be && self.prepared.is_empty() {
            return;
        }
        let Some(name) = cstr(body) else {
            return;
        };
        let call = may_be
            .then(|| std::str::from_utf8(text).ok())
            .flatten()
            .and_then(signal_call::parse)
            .filter(|c| match c.arg {
                // A declared type the call does not take makes PostgreSQL refuse the Parse.
                Arg::Param(n) => c.takes_param_type(declared_type(body, text.len(), n)),
                Arg::Pid(_) => false,
            });
        match call {
            Some(call) => {
                self.prepared.insert(name.into(), call);
            }
            None if !self.prepared.is_empty() => {
                self.prepared.remove(name);
            }
            None => {}
        }
    }

    fn instead_of(&self, call: &SignalCall, pid: i64) -> Option<Instead> {
        if !is_minted(pid) {
            return None;
        }
        let pid = pid as i32;
        let (sql, due) = match self.signaller.access(pid) {
            Signalled::NoSuchSession => return None,
            Signalled::Own => (call.answer_sql(true), None),
            Signalled::Forbidden => {
                let err = forbidden(call.kind);
                (refusal(err.code, &err.message, err.hint.as_deref()), None)
            }
            Signalled::Sent(_) => (call.answer_sql(false), Some((pid, call.kind))),
        };
        Some(Instead { sql, due })
    }
}

/// A client message's replacement.
pub struct Instead {
    /// The statement whose answer is PostgreSQL's.
    pub sql: String,
    /// The signal to deliver once that statement's Parse ran (a Bind's only).
    pub due: Option<(i32, SignalKind)>,
}

/// The type a Parse `body` whose text is `text_len` bytes declares for parameter `n` (1-based);
/// 0, as for one left to the server, when it declares none.
fn declared_type(body: &[u8], text_len: usize, n: usize) -> u32 {
    let at = cstr(body).map_or(0, |name| name.len() + 1) + text_len + 1;
    let word = |at: usize, len: usize| body.get(at..at + len);
    let count = word(at, 2).map_or(0, |b| i16::from_be_bytes([b[0], b[1]]));
    if n > count.max(0) as usize {
        return 0;
    }
    word(at + 2 + 4 * (n - 1), 4).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// The NUL-terminated UTF-8 string at the start of `bytes`.
fn cstr(bytes: &[u8]) -> Option<&str> {
    inspect::cstr(bytes).map(|(s, _)| s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::cancel::Owner;
    use crate::frontend::pooled_relay::statements::tests::frame;
    use bytes::BytesMut;

    fn parse(name: &str, text: &str, types: &[u32]) -> Vec<u8> {
        let mut out = BytesMut::new();
        crate::protocol::build::parse(name, text, types, &mut out);
        out.to_vec()
    }

    #[test]
    fn a_parse_is_a_call_only_with_types_postgresql_takes_for_it() {
        let registry = CancelRegistry::default();
        let statements = RelayStatements::default();
        let mut signals = Signals::new(&registry, 1);
        let call = "select pg_terminate_backend($1)";
        for (types, is_call) in [
            (&[][..], true),
            (&[23][..], true),
            (&[21][..], true),
            (&[20][..], false),
            (&[25][..], false),
        ] {
            signals.instead(&parse("", call, types), &statements);
            assert_eq!(signals.prepared.contains_key(""), is_call, "{types:?}");
        }
        signals.instead(
            &parse("s", "select pg_cancel_backend($1::int)", &[20]),
            &statements,
        );
        assert!(signals.prepared.contains_key("s"), "cast to int");
        assert_eq!(declared_type(&parse("s", "x", &[7, 9])[5..], 1, 2), 9);
        assert_eq!(declared_type(&parse("s", "x", &[7])[5..], 1, 2), 0);
        // Prepared again as something else, the name is no call.
        signals.instead(&parse("s", "select 1", &[]), &statements);
        assert!(!signals.prepared.contains_key("s"));
    }

    #[test]
    fn a_bind_is_replaced_only_for_a_live_session_and_a_statement_that_is_the_call() {
        let registry = CancelRegistry::default();
        let t = crate::config::ShardTarget::parse("postgres://u@h/db").unwrap();
        let app = || Owner::new("app", false);
        let me = registry.register_slots(vec![t.clone()], vec![None], app());
        let other = registry.register_slots(vec![t.clone()], vec![None], app());
        let stranger = registry.register_slots(vec![t], vec![None], Owner::new("report", false));
        let mut statements = RelayStatements::default();
        let mut signals = Signals::new(&registry, me.key.pid);
        let bind = |stmt: &str, pid: i32| {
            let mut body = format!("\0{stmt}\0\0\0\0\x01").into_bytes();
            let value = pid.to_string();
            body.extend_from_slice(&(value.len() as i32).to_be_bytes());
            body.extend_from_slice(value.as_bytes());
            body.extend_from_slice(b"\0\0");
            frame(b'B', &body)
        };
        // "s" is kept as `select $1`; a second Parse of the name, which PostgreSQL refuses,
        // does not make it the call.
        let (mut out, mut expect) = (BytesMut::new(), Vec::new());
        statements.translate(&parse("s", "select $1", &[]), 1, &mut out, &mut expect);
        let call = "select pg_terminate_backend($1)";
        signals.instead(&parse("s", call, &[]), &statements);
        assert!(signals
            .instead(&bind("s", other.key.pid), &statements)
            .is_none());
        // The unnamed statement is whatever its last Parse made it.
        signals.instead(&parse("", call, &[]), &statements);
        let instead = signals
            .instead(&bind("", other.key.pid), &statements)
            .unwrap();
        assert_eq!(instead.sql, "SELECT true AS \"pg_terminate_backend\"");
        assert_eq!(
            instead.due,
            Some((
                other.key.pid,
                crate::sql::signal_call::SignalKind::Terminate
            ))
        );
        let refused = signals
            .instead(&bind("", stranger.key.pid), &statements)
            .unwrap();
        assert!(refused.sql.starts_with("DO ") && refused.sql.contains("'42501'"));
        assert_eq!(refused.due, None, "nothing is signalled");
        let own = signals.instead(&bind("", me.key.pid), &statements).unwrap();
        assert!(own.sql.contains("pg_backend_pid()") && own.due.is_none());
        // A real pid, and a minted one no session has, are the shard's to answer.
        assert!(signals.instead(&bind("", 4242), &statements).is_none());
        let gone = other.key.pid;
        drop(other);
        assert!(signals.instead(&bind("", gone), &statements).is_none());
    }
}
