//! State shared by the two directions of a session relay.
//!
//! The client-to-shard pump appends events in the order it sends messages; the shard-to-client
//! pump consumes them in the order responses come back, which is the same order (the protocol
//! answers requests in sequence). That is how a response is matched to its request without
//! decoding anything else.

use crate::error::PgError;
use std::collections::VecDeque;
use std::time::Instant;

/// Marker the proxy sends in place of a refused statement; the shard answers it with SQLSTATE
/// 26000 naming this statement, and the proxy swaps that error for the real reason. Going through
/// the shard keeps its transaction state exactly as PostgreSQL would leave it after an error.
pub const REJECT_MARKER: &str = "shardgate.reject";

#[derive(Debug)]
pub enum Event {
    /// A Query/Sync/FunctionCall was sent at this instant; a ReadyForQuery will answer it.
    SyncPoint(Instant),
    /// The next error, if it is the marker's, becomes this error.
    Substitute(PgError),
}

#[derive(Debug, Default)]
pub struct RelayState {
    pub events: VecDeque<Event>,
    /// Transaction status from the last ReadyForQuery ('I', 'T' or 'E').
    pub tx_status: u8,
}

impl RelayState {
    /// On an ErrorResponse: the substitute error if this is the marker's answer.
    pub fn on_error(&mut self, sqlstate: Option<&str>, message: Option<&str>) -> Option<PgError> {
        if !matches!(self.events.front(), Some(Event::Substitute(_))) {
            return None;
        }
        let Some(Event::Substitute(err)) = self.events.pop_front() else {
            unreachable!("front checked above")
        };
        let is_marker =
            sqlstate == Some("26000") && message.is_some_and(|m| m.contains(REJECT_MARKER));
        is_marker.then_some(err)
    }

    /// On ReadyForQuery: when the request it answers was sent.
    pub fn on_ready(&mut self, status: u8) -> Option<Instant> {
        self.tx_status = status;
        while let Some(ev) = self.events.pop_front() {
            if let Event::SyncPoint(at) = ev {
                return Some(at);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err() -> PgError {
        PgError::error("0A000", "refused")
    }

    #[test]
    fn marker_error_is_substituted() {
        let mut s = RelayState::default();
        s.events.push_back(Event::Substitute(err()));
        s.events.push_back(Event::SyncPoint(Instant::now()));
        let msg = format!("prepared statement \"{REJECT_MARKER}\" does not exist");
        assert_eq!(s.on_error(Some("26000"), Some(&msg)), Some(err()));
        assert!(s.on_ready(b'I').is_some());
        assert!(s.events.is_empty());
    }

    #[test]
    fn an_earlier_error_consumes_the_substitution_unchanged() {
        let mut s = RelayState::default();
        s.events.push_back(Event::Substitute(err()));
        s.events.push_back(Event::SyncPoint(Instant::now()));
        assert_eq!(s.on_error(Some("22012"), Some("division by zero")), None);
        assert!(matches!(s.events.front(), Some(Event::SyncPoint(_))));
    }

    #[test]
    fn errors_of_earlier_requests_pass_untouched() {
        let mut s = RelayState::default();
        s.events.push_back(Event::SyncPoint(Instant::now()));
        s.events.push_back(Event::Substitute(err()));
        assert_eq!(s.on_error(Some("26000"), Some(REJECT_MARKER)), None);
        assert_eq!(s.events.len(), 2);
    }
}
