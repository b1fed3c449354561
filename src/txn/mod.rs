//! Transactions over several shards, in one room:
//!
//! - a session's side, run on its own shard connections through the narrow `participants`
//!   interface the executor implements: the transaction as the client sees it (`state`), a
//!   shard joining it (`enlist`), and its end (`commit`: the one-phase order, and the decider
//!   protocol in `commit::two_phase`);
//! - what works over control connections, so any proxy (or the `shardgate recover` command)
//!   can finish any transaction: gids, the `shardgate` schema on each shard, recovery of
//!   in-doubt transactions, snapshot mode (`snapshot`), and ending deadlocks across shards
//!   (`deadlock`).
//!
//! The decision of a distributed transaction is one row committed inside its decider shard's own
//! transaction; nothing about it lives on a proxy's disk (docs/transactions.md).

pub mod commit;
pub mod deadlock;
pub mod enlist;
pub mod gid;
pub mod participants;
pub mod recovery;
pub mod schema;
pub mod snapshot;
pub mod state;

use crate::config::{ShardTarget, TransactionsConfig};
use std::time::Duration;

/// What the commit protocol and recovery share across sessions.
#[derive(Debug)]
pub struct TxnContext {
    pub gids: gid::GidSource,
    /// How long COMMIT waits for an unreachable participant after the decision.
    pub commit_wait: Duration,
    pub shards: Vec<ShardTarget>,
    pub connect_timeout: Duration,
    pub recovery: recovery::Options,
    /// Wakes the recovery task early (a session lost track of a transaction's outcome).
    pub kick: tokio::sync::Notify,
    /// The timestamp oracle, when multi-shard commits are gated (`transactions.snapshot`).
    pub oracle: Option<crate::txn::snapshot::client::Oracle>,
    /// Sessions start in this consistency mode.
    pub default_consistency: crate::txn::snapshot::Consistency,
    pub shard_names: Vec<String>,
}

impl TxnContext {
    pub fn new(
        config: &TransactionsConfig,
        shards: Vec<ShardTarget>,
        connect_timeout: Duration,
    ) -> TxnContext {
        TxnContext {
            gids: gid::GidSource::new(),
            commit_wait: Duration::from_millis(config.commit_wait_ms),
            connect_timeout,
            recovery: recovery::Options::from_config(config, connect_timeout),
            kick: tokio::sync::Notify::new(),
            oracle: None,
            default_consistency: crate::txn::snapshot::Consistency::parse(&config.consistency)
                .unwrap_or(crate::txn::snapshot::Consistency::Shard),
            shard_names: shards.iter().map(|s| s.name.clone()).collect(),
            shards,
        }
    }
}
