//! The shards of one session's transaction, as the transaction code drives them.
//!
//! Enlisting, committing (one-phase or two-phase) and rolling back run on the session's own
//! connections, which the executor owns; this trait is the narrow part of them the transaction
//! code needs, so that it lives here, below the executor, and never reaches into a session.
//!
//! Invariant: every message sent is a whole simple-protocol Query, and each `send` is answered
//! up to its ReadyForQuery by the caller's `recv`s before the shard is handed back.

use crate::protocol::{build, Frame};
use bytes::BytesMut;
use std::future::Future;

pub trait Participants {
    /// Why a shard could not be reached (the session's own error, which ends it).
    type Lost;

    fn name(&self, shard: usize) -> &str;

    /// Whether the shard's last ReadyForQuery said it is inside a transaction block.
    fn in_transaction(&self, shard: usize) -> bool;

    fn send(
        &mut self,
        shard: usize,
        message: &[u8],
    ) -> impl Future<Output = Result<(), Self::Lost>> + Send;

    fn recv(&mut self, shard: usize) -> impl Future<Output = Result<Frame, Self::Lost>> + Send;

    /// Bytes for the client, in order with the rest of its answer (notices, errors).
    fn to_client(&mut self, bytes: &[u8]);

    /// The shard whose connection broke, when that is what `lost` means (not, say, a pool with
    /// no free connection): whatever was sent there last may or may not have run.
    fn broken(lost: &Self::Lost) -> Option<&str>;
}

/// Reads up to ReadyForQuery, passing notices to the client; returns the first error.
pub async fn until_ready<P: Participants>(
    p: &mut P,
    shard: usize,
) -> Result<Option<Frame>, P::Lost> {
    let mut first_error = None;
    loop {
        let f = p.recv(shard).await?;
        match f.tag {
            b'Z' => return Ok(first_error),
            b'E' if first_error.is_none() => first_error = Some(f),
            b'N' => p.to_client(&f.bytes),
            _ => {}
        }
    }
}

/// Runs `sql` on each of `shards` in one round trip (every shard is sent it before any answer
/// is read); returns the first error.
pub async fn on_each<P: Participants>(
    p: &mut P,
    shards: &[usize],
    sql: &str,
) -> Result<Option<Frame>, P::Lost> {
    let mut q = BytesMut::new();
    build::query(sql, &mut q);
    for &s in shards {
        p.send(s, &q).await?;
    }
    let mut first = None;
    for &s in shards {
        if let Some(e) = until_ready(p, s).await? {
            first.get_or_insert(e);
        }
    }
    Ok(first)
}
