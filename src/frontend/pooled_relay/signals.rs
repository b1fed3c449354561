//! `pg_cancel_backend` and `pg_terminate_backend` of a pid the proxy minted, in the one-shard
//! relay (see `sql::signal_call` for the calls recognised).
//!
//! The shard knows no such pid, so such a call is carried out at the proxy when its message
//! goes to the shard (a Query, or the Bind that gives the call its value), and the message is
//! replaced by a statement of the proxy's whose answer is PostgreSQL's: `true` for a signal
//! delivered, and for the caller's own pid the same call of the backend serving it. A pid no
//! live session has goes to the shard as written, which answers for it as for any pid that is
//! no backend's.
//!
//! Invariant: `prepared` holds a statement name exactly while the client's statement of that
//! name is such a call with a parameter for its pid (the unnamed one under "").

use crate::client::cancel::{is_minted, CancelRegistry, Signalled, Signaller};
use crate::protocol::message::Bind;
use crate::sql::signal_call::{self, Arg, SignalCall};
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

    /// The statement to run instead of the whole client message `frame`, if it is a call this
    /// session carries out (and then it has been carried out).
    pub fn instead(&mut self, frame: &[u8]) -> Option<String> {
        let body = &frame[5..];
        match frame[0] {
            b'Q' => {
                let text = std::str::from_utf8(body.strip_suffix(b"\0")?).ok()?;
                let call = signal_call::parse(text)?;
                let Arg::Pid(pid) = call.arg else {
                    return None;
                };
                self.carry_out(&call, pid)
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
                self.carry_out(&call, pid)
            }
            _ => None,
        }
    }

    /// A Parse: its statement is, or is no longer, a call with a parameter for its pid.
    fn note_parse(&mut self, body: &[u8]) {
        let Some(name) = cstr(body) else {
            return;
        };
        let call = cstr(&body[name.len() + 1..])
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

    fn carry_out(&self, call: &SignalCall, pid: i64) -> Option<String> {
        if !is_minted(pid) {
            return None;
        }
        match self.signaller.signal(pid as i32, call.kind) {
            Signalled::NoSuchSession => None,
            Signalled::Own => Some(call.answer_sql(true)),
            Signalled::Sent(keys) => {
                if !keys.is_empty() {
                    tokio::spawn(crate::backend::forward_cancel(keys));
                }
                Some(call.answer_sql(false))
            }
        }
    }
}

/// The NUL-terminated UTF-8 string at the start of `bytes`.
fn cstr(bytes: &[u8]) -> Option<&str> {
    let end = bytes.iter().position(|b| *b == 0)?;
    std::str::from_utf8(&bytes[..end]).ok()
}
