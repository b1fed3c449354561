//! `pg_cancel_backend` and `pg_terminate_backend` of a pid the proxy minted (`Plan::Signal`).
//!
//! No shard knows the pid: the proxy answers as PostgreSQL would. Another live session is
//! cancelled on the server connections it holds (a cancel request's path) or told to end, and
//! the answer is `true`; the session's own pid cancels this statement (57014) or ends this
//! session (FATAL 57P01); a pid no session has gets PostgreSQL's warning and `false`; another
//! user's session, which the caller may not signal, gets 42501.

use super::session::{Exec, Step, Stop, R};
use crate::client::cancel::{forbidden, Signalled};
use crate::error::{sqlstate, PgError};
use crate::protocol::build;
use crate::sql::signal_call::SignalKind;
use bytes::{BufMut, BytesMut};

impl Exec<'_> {
    pub(super) async fn signal(&mut self, kind: SignalKind, pid: i32, column: &str) -> R<Step> {
        let outcome = match self.signals {
            Some(s) => s.signal(pid, kind),
            None => Signalled::NoSuchSession,
        };
        let signalled = match outcome {
            Signalled::NoSuchSession => {
                build::warning(
                    "01000",
                    &format!("PID {pid} is not a PostgreSQL backend process"),
                    &mut self.out,
                );
                false
            }
            Signalled::Forbidden => return Ok(self.error(&forbidden(kind))),
            Signalled::Own => {
                return match kind {
                    SignalKind::Cancel => Ok(self.error(&PgError::error(
                        sqlstate::QUERY_CANCELED,
                        "canceling statement due to user request",
                    ))),
                    SignalKind::Terminate => Err(Stop::Refused(Box::new(PgError::fatal(
                        sqlstate::ADMIN_SHUTDOWN,
                        "terminating connection due to administrator command",
                    )))),
                }
            }
            Signalled::Sent(keys) => {
                if !keys.is_empty() {
                    tokio::spawn(crate::backend::forward_cancel(keys));
                }
                true
            }
        };
        let binary = self.result_formats.first() == Some(&1);
        if self.describe_rows {
            bool_description(column, binary, &mut self.out);
        }
        self.out.put_u8(b'D');
        self.out.put_i32(4 + 2 + 4 + 1);
        self.out.put_i16(1);
        self.out.put_i32(1);
        self.out.put_u8(match (binary, signalled) {
            (true, s) => s as u8,
            (false, true) => b't',
            (false, false) => b'f',
        });
        build::command_complete("SELECT 1", &mut self.out);
        Ok(Step::Done)
    }
}

/// The RowDescription of the call's one `boolean` column.
pub fn bool_description(column: &str, binary: bool, out: &mut BytesMut) {
    const BOOL: u32 = 16;
    let mut body = BytesMut::new();
    body.put_i16(1);
    body.put_slice(column.as_bytes());
    body.put_u8(0);
    body.put_u32(0);
    body.put_i16(0);
    body.put_u32(BOOL);
    body.put_i16(1);
    body.put_i32(-1);
    body.put_i16(binary as i16);
    out.put_u8(b'T');
    out.put_i32(4 + body.len() as i32);
    out.put_slice(&body);
}
