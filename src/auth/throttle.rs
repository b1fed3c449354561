//! Throttling of failed logins, per client address and per user name.
//!
//! After a few failures in a minute from one address or for one user, every further failure is
//! answered only after a pause that doubles up to 5 s. A client that waits for its answer before
//! trying again (every brute-force loop over one connection at a time) is slowed to a crawl; a
//! login that succeeds is never delayed. Memory is bounded: the table forgets entries idle for a
//! minute, and is cleared if it still grows past its limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);
const FREE_FAILURES: u32 = 3;
const MAX_DELAY: Duration = Duration::from_secs(5);
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Default)]
pub struct Throttle {
    entries: Mutex<HashMap<Key, Entry>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Addr(IpAddr),
    User(String),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last: Instant,
}

impl Throttle {
    /// Records a failed login and returns how long to wait before answering it.
    pub fn failed(&self, user: &str, addr: IpAddr) -> Duration {
        let now = Instant::now();
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, e| now.duration_since(e.last) < WINDOW);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        let mut worst = 0;
        for key in [Key::Addr(addr), Key::User(user.to_string())] {
            let e = map.entry(key).or_insert(Entry {
                failures: 0,
                last: now,
            });
            if now.duration_since(e.last) >= WINDOW {
                e.failures = 0;
            }
            e.failures = e.failures.saturating_add(1);
            e.last = now;
            worst = worst.max(e.failures);
        }
        delay_after(worst)
    }

    /// Failures recorded for this address in the current window.
    pub fn failures_from(&self, addr: IpAddr) -> u32 {
        let map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&Key::Addr(addr))
            .filter(|e| e.last.elapsed() < WINDOW)
            .map_or(0, |e| e.failures)
    }
}

fn delay_after(failures: u32) -> Duration {
    if failures <= FREE_FAILURES {
        return Duration::ZERO;
    }
    let doublings = (failures - FREE_FAILURES - 1).min(8);
    (Duration::from_millis(250) * (1 << doublings)).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_after_a_few_failures_and_are_capped() {
        let t = Throttle::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let delays: Vec<Duration> = (0..10).map(|_| t.failed("app", ip)).collect();
        assert_eq!(delays[..3], [Duration::ZERO; 3]);
        assert_eq!(delays[3], Duration::from_millis(250));
        assert_eq!(delays[4], Duration::from_millis(500));
        assert_eq!(delays[9], MAX_DELAY);
        // Another address guessing the same user is slowed too; an unrelated one is not.
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(t.failed("app", other), MAX_DELAY);
        assert_eq!(
            t.failed("someone", "10.0.0.3".parse().unwrap()),
            Duration::ZERO
        );
        assert_eq!(t.failures_from(ip), 10);
    }
}
