//! Timestamps: physical milliseconds shifted left 18 bits, plus a logical counter in the low
//! bits. Strictly increasing: within one millisecond the counter advances, and a clock that
//! steps back never makes a timestamp go back. Across a restart they stay increasing because
//! the oracle never issues a timestamp at or above its persisted high-water mark, and starts
//! above the last one persisted.

pub const LOGICAL_BITS: u32 = 18;

/// How far ahead of the last timestamp the persisted high-water mark is pushed (3 s).
pub const WINDOW: u64 = 3000 << LOGICAL_BITS;

#[derive(Debug)]
pub struct Clock {
    last: u64,
    /// Exclusive limit: persisted, so a restarted oracle starts above it.
    limit: u64,
}

impl Clock {
    /// A clock starting above `persisted` (the high-water mark read at start).
    pub fn new(persisted: u64) -> Clock {
        Clock {
            last: persisted,
            limit: persisted,
        }
    }

    /// The next timestamp at wall-clock `now_ms`, or None when it would reach the persisted
    /// limit (persist a higher one first).
    pub fn next(&mut self, now_ms: u64) -> Option<u64> {
        let ts = (self.last + 1).max(now_ms << LOGICAL_BITS);
        if ts >= self.limit {
            return None;
        }
        self.last = ts;
        Some(ts)
    }

    /// The limit to persist so the next timestamps at `now_ms` fit, when it should be raised
    /// (less than a third of the window left).
    pub fn wanted_limit(&self, now_ms: u64) -> Option<u64> {
        let next = (self.last + 1).max(now_ms << LOGICAL_BITS);
        (next + WINDOW / 3 >= self.limit).then_some(next + WINDOW)
    }

    /// Whether a timestamp at `now_ms` is below the limit.
    pub fn next_fits(&self, now_ms: u64) -> bool {
        (self.last + 1).max(now_ms << LOGICAL_BITS) < self.limit
    }

    /// A higher limit is durable.
    pub fn raise_limit(&mut self, limit: u64) {
        self.limit = self.limit.max(limit);
    }

    pub fn last(&self) -> u64 {
        self.last
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictly_increasing_within_a_millisecond_and_when_time_steps_back() {
        let mut c = Clock::new(0);
        c.raise_limit(c.wanted_limit(1000).unwrap());
        let a = c.next(1000).unwrap();
        let b = c.next(1000).unwrap();
        let d = c.next(999).unwrap();
        assert!(a < b && b < d);
        assert_eq!(a >> LOGICAL_BITS, 1000);
    }

    #[test]
    fn never_reaches_the_persisted_limit_and_restarts_above_it() {
        let mut c = Clock::new(0);
        assert_eq!(c.next(5), None, "nothing persisted yet");
        let limit = c.wanted_limit(5).unwrap();
        c.raise_limit(limit);
        let issued = c.next(5).unwrap();
        assert!(issued < limit);
        // A restart reads `limit` back: everything it issues is above what was issued before,
        // even with a clock that went back.
        let mut again = Clock::new(limit);
        again.raise_limit(again.wanted_limit(1).unwrap());
        assert!(again.next(1).unwrap() > issued);
    }
}
