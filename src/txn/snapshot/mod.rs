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

pub use crate::config::Consistency;
