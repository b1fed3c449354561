//! State shared by the two directions of a session relay.
//!
//! The client-to-shard pump notes when it sends each request that a ReadyForQuery will answer;
//! the shard-to-client pump takes them in the order responses come back, which is the same
//! order (the protocol answers requests in sequence). That is how a response is matched to its
//! request without decoding anything else.

use std::collections::VecDeque;
use std::time::Instant;

#[derive(Debug, Default)]
pub struct RelayState {
    /// When each Query, Sync or FunctionCall still awaiting its ReadyForQuery was sent.
    pub awaiting: VecDeque<Instant>,
    /// Transaction status from the last ReadyForQuery ('I', 'T' or 'E').
    pub tx_status: u8,
}

impl RelayState {
    /// On ReadyForQuery: when the request it answers was sent.
    pub fn on_ready(&mut self, status: u8) -> Option<Instant> {
        self.tx_status = status;
        self.awaiting.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_ready_for_query_answers_the_oldest_request() {
        let mut s = RelayState::default();
        let first = Instant::now();
        s.awaiting.push_back(first);
        s.awaiting.push_back(Instant::now());
        assert_eq!(s.on_ready(b'T'), Some(first));
        assert_eq!(s.tx_status, b'T');
        assert_eq!(s.awaiting.len(), 1);
        assert!(s.on_ready(b'I').is_some());
        assert_eq!(s.on_ready(b'I'), None);
    }
}
