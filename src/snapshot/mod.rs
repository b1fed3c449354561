//! Snapshot mode (docs/snapshot.md): a timestamp oracle and the commit/snapshot gate, so a read of
//! several shards sees one consistent cut.
//!
//! Vanilla PostgreSQL cannot read "as of" a timestamp; the proxy controls *when* each shard's
//! snapshot is taken relative to distributed commits. A writer holds a commit window on its
//! shards from its decision until its last COMMIT PREPARED is acknowledged; a reader takes its
//! REPEATABLE READ snapshots on all its shards while holding the snapshot class, which excludes
//! commit windows. So no reader's snapshots straddle a half-applied distributed commit.
//!
//! `clock` makes timestamps, `gate` decides grants, `oracle` is the service (embedded in a proxy,
//! or behind `server` as `shardgate oracle`), `client` is how a proxy reaches it.

pub mod client;
pub mod clock;
pub mod gate;
pub mod oracle;
pub mod server;

/// A session's consistency mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Atomic commit; a reader may briefly see a distributed commit on some shards only.
    Shard,
    /// Reads of several shards see one consistent cut.
    Snapshot,
}

impl Consistency {
    pub fn parse(s: &str) -> Option<Consistency> {
        match s.to_ascii_lowercase().as_str() {
            "shard" => Some(Consistency::Shard),
            "snapshot" => Some(Consistency::Snapshot),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Consistency::Shard => "shard",
            Consistency::Snapshot => "snapshot",
        }
    }
}
