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
            let moved = tracker.client_position().map(|to_client| {
                BytesMut::from(&inspect::map_error_position(frame, to_client)[..])
            });
            if tracker.on_error() {
                let mut b = BytesMut::new();
                crate::protocol::build::error(&PgError::changed_result_type(), &mut b);
                Answer::Replace(b)
            } else if let Some(moved) = moved {
                Answer::Replace(moved)
            } else {
                Answer::Pass
            }
        }
        b'C' if tracker.on_command_complete(body) => Answer::Drop,
        _ => Answer::Pass,
    }
}
