//! The proxy's start, step by step in the log while a step keeps it waiting.
//!
//! A start asks every shard several things before it listens, and any of them can wait
//! without end: a lock another session holds on shardgate's tables, a shard that accepts
//! connections but does not answer. Each such step runs through `reported`, which says every
//! few seconds what the start still waits for, so that an operator watching a start that does
//! not finish sees which shard and which step hold it (a signal still stops it).

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a step that goes on is reported.
pub const EVERY: Duration = Duration::from_secs(5);

/// Runs `step`, logging `what` it does (e.g. "preparing shard s1") every `EVERY` while it
/// goes on.
pub async fn reported<T>(what: impl std::fmt::Display, step: impl Future<Output = T>) -> T {
    tokio::pin!(step);
    let started = Instant::now();
    loop {
        tokio::select! {
            out = &mut step => return out,
            _ = tokio::time::sleep(EVERY) => tracing::warn!(
                waited_secs = started.elapsed().as_secs(),
                "start still waiting: {what} (a lock held by another session on the shard, or \
                 a shard that does not answer, can hold it; SIGINT or SIGTERM stops the start)"
            ),
        }
    }
}
