//! `pg_cancel_backend` and `pg_terminate_backend` of a pid the proxy minted, in the one-shard
//! relay (see `sql::signal_call` for the calls recognised).
//!
//! The shard knows no such pid, so the message that makes the call (a Query, or the Bind that
//! gives it its value) is replaced by a statement of the proxy's whose answer is PostgreSQL's:
//! `true` for another live session, which is signalled, and for the caller's own pid the same
//! call of the backend serving it, which cancels the statement or ends the connection exactly
//! as PostgreSQL does. A Query's signal goes when the Query does; a Bind's once the shard
//! answered the Parse the proxy put ahead of it, so that an error earlier in the batch, which
//! makes PostgreSQL skip the rest, skips the signal too. A pid no live session has goes to the
//! shard as written, which answers for it as for any pid that is no backend's.
//!
//! Invariant: `prepared` holds a statement name exactly while the client's statement of that
//! name is such a call with a parameter for its pid (the unnamed one under "").

use crate::client::cancel::{is_minted, CancelRegistry, Signalled, Signaller};
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
    pub fn instead(&mut self, frame: &[u8]) -> Option<Instead> {
        let body = &frame[5..];
        match frame[0] {
            b'Q' if body.len() <= signal_call::LONGEST_CALL + 1 => {
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
                let call = self.prepared.get(bind.statement.as_str())?.clone();
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
        let Some(name) = cstr(body) else {
            return;
        };
        let text = &body[name.len() + 1..];
        let text = &text[..text.len().min(signal_call::LONGEST_CALL + 1)];
        let call = cstr(text)
            .and_then(signal_call::parse)
            .filter(|c| matches!(c.arg, Arg::Param(_)));
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
        if pid == self.signaller.own_pid {
            return Some(Instead {
                sql: call.answer_sql(true),
                due: None,
            });
        }
        self.signaller.registry.is_live(pid).then(|| Instead {
            sql: call.answer_sql(false),
            due: Some((pid, call.kind)),
        })
    }
}

/// A client message's replacement.
pub struct Instead {
    /// The statement whose answer is PostgreSQL's.
    pub sql: String,
    /// The signal to deliver once that statement's Parse ran (a Bind's only).
    pub due: Option<(i32, SignalKind)>,
}

/// The NUL-terminated UTF-8 string at the start of `bytes`.
fn cstr(bytes: &[u8]) -> Option<&str> {
    let end = bytes.iter().position(|b| *b == 0)?;
    std::str::from_utf8(&bytes[..end]).ok()
}
