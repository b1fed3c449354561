//! What the relay does with each answer from the shard that it looks into: most pass as they
//! came; answers to messages the proxy added are dropped; an error is moved back into the
//! client's text or replaced by a refusal; a ReadyForQuery says whether the connection can go
//! back to the pool.

use super::tracker::Tracker;
use crate::admin::clients::{Registered, State as ClientState};
use crate::error::PgError;
use crate::metrics as m;
use crate::protocol::inspect;
use bytes::BytesMut;

pub(super) enum Answer {
    Pass,
    /// Not for the client.
    Drop,
    /// The client gets this instead.
    Replace(BytesMut),
    /// A ReadyForQuery, which passes: `release` when the session is idle and the connection
    /// may go back to the pool, `wiped` when statements prepared on it are gone.
    Ready {
        release: bool,
        wiped: bool,
    },
}

/// A NotificationResponse: one the session's own connection raised names the client by the pid
/// of its BackendKeyData, as PostgreSQL names a session's own notifications by its pid. In
/// transaction pooling that pid is the proxy's, not the server connection's, and a client that
/// tells its own notifications from others' by comparing them would take its own for another's.
pub(super) fn notification(frame: &[u8], server_pid: i32, client_pid: i32) -> Answer {
    let body = &frame[5..];
    if body.len() < 4 || client_pid == 0 || client_pid == server_pid {
        return Answer::Pass;
    }
    if i32::from_be_bytes([body[0], body[1], body[2], body[3]]) != server_pid {
        return Answer::Pass;
    }
    let mut own = BytesMut::from(frame);
    own[5..9].copy_from_slice(&client_pid.to_be_bytes());
    Answer::Replace(own)
}

/// An ErrorResponse that ends the server session.
pub(super) fn is_fatal(frame: &[u8]) -> bool {
    frame[0] == b'E'
        && matches!(
            inspect::error_field(&frame[5..], b'S'),
            Some("FATAL") | Some("PANIC")
        )
}

pub(super) fn on_answer(
    tracker: &mut Tracker,
    frame: &[u8],
    metrics: &m::SessionMetrics,
    registered: &Registered,
) -> Answer {
    let (tag, body) = (frame[0], &frame[5..]);
    match tag {
        b'Z' => {
            let status = inspect::ready_status(body).unwrap_or(b'I');
            let r = tracker.on_ready(status);
            if let Some(sent) = r.sent {
                metrics.latency.record(sent.elapsed().as_secs_f64());
            }
            registered.set(match (status, tracker.idle()) {
                (b'I', true) => ClientState::Idle,
                (b'I', false) => ClientState::Active,
                _ => ClientState::InTransaction,
            });
            Answer::Ready {
                release: r.release,
                wiped: r.wiped,
            }
        }
        b'1' | b'2' | b'3' | b'C' if tracker.on_own_answer(tag) => Answer::Drop,
        b'1' if tracker.on_parse_complete() => Answer::Drop,
        b'3' => {
            tracker.on_close_complete();
            Answer::Pass
        }
        b'2' if tracker.on_bind_complete() => Answer::Drop,
        b't' if tracker.on_parameter_description() => Answer::Drop,
        b'T' | b'n' => {
            if tracker.on_description(frame) {
                Answer::Drop
            } else {
                Answer::Pass
            }
        }
        b'E' => {
            // Statement names as the client gave them, not as the shard knows them.
            let renamed = crate::pool::names::error_in_client_names(frame);
            let frame = renamed.as_deref().unwrap_or(frame);
            let moved = tracker.client_position().map(|to_client| {
                BytesMut::from(&inspect::map_error_position(frame, to_client)[..])
            });
            if tracker.on_error() {
                let mut b = BytesMut::new();
                crate::protocol::build::error(&PgError::changed_result_type(), &mut b);
                Answer::Replace(b)
            } else if let Some(moved) = moved {
                Answer::Replace(moved)
            } else if let Some(renamed) = renamed {
                Answer::Replace(BytesMut::from(&renamed[..]))
            } else {
                Answer::Pass
            }
        }
        b'C' if tracker.on_command_complete(body) => Answer::Drop,
        _ => Answer::Pass,
    }
}
