//! Global transaction identifiers: the name a distributed transaction's prepared branches carry.
//!
//! `sg_<instance>_<seq>_<decider>`: a fixed prefix so recovery touches only ours, the proxy
//! instance (random per process start) and a per-process sequence number so a gid is never
//! reused, and the name of the decider shard whose `shardgate.commit_record` holds the outcome.
//! Every prepared branch is found by listing `pg_prepared_xacts`, so the gid needs to carry only
//! where the decision lives. PostgreSQL limits gids to 199 bytes; shard names are checked to fit.

use std::sync::atomic::{AtomicU64, Ordering};

pub const PREFIX: &str = "sg_";

pub use crate::config::MAX_SHARD_NAME;

/// Hands out this process's gids.
#[derive(Debug)]
pub struct GidSource {
    instance: String,
    next: AtomicU64,
}

impl GidSource {
    pub fn new() -> GidSource {
        GidSource {
            instance: format!("{:016x}", rand::random::<u64>()),
            next: AtomicU64::new(1),
        }
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub fn next(&self, decider: &str) -> String {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{PREFIX}{}_{seq}_{decider}", self.instance)
    }
}

impl Default for GidSource {
    fn default() -> Self {
        GidSource::new()
    }
}

/// The decider shard named in one of our gids; None for any other gid (a client's own).
pub fn decider(gid: &str) -> Option<&str> {
    let rest = gid.strip_prefix(PREFIX)?;
    let (instance, rest) = rest.split_once('_')?;
    let (seq, decider) = rest.split_once('_')?;
    let ok = instance.len() == 16
        && instance.bytes().all(|b| b.is_ascii_hexdigit())
        && !seq.is_empty()
        && seq.bytes().all(|b| b.is_ascii_digit())
        && !decider.is_empty();
    ok.then_some(decider)
}

/// A gid as an SQL string literal.
pub fn literal(gid: &str) -> String {
    crate::sql::string_literal(gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gids_are_unique_and_name_their_decider() {
        let src = GidSource::new();
        let a = src.next("shard_a");
        let b = src.next("shard_a");
        assert_ne!(a, b);
        assert_eq!(decider(&a), Some("shard_a"));
        assert!(a.len() < 200);
    }

    #[test]
    fn foreign_gids_are_not_ours() {
        assert_eq!(decider("sg_client_thing"), None);
        assert_eq!(decider("my_app_gid"), None);
        assert_eq!(decider("sg_0123456789abcdef_x_s1"), None);
        assert_eq!(decider("sg_0123456789abcdef_7_s1"), Some("s1"));
    }

    #[test]
    fn literals_are_quoted() {
        assert_eq!(literal("a'b"), "'a''b'");
    }
}
