//! Ending the session's transaction on the shards it enlisted: which shard's commit is the
//! decision, and in what order the others follow.
//!
//! One written shard commits first and plainly: its commit is the decision, and the read-only
//! shards follow (their commit changes nothing). Two or more written shards go through the
//! two-phase protocol (`two_phase`). Invariant: no read-only shard commits before the decision,
//! and a failed decision rolls back every other shard.
//!
//! Written means what the shard did, not what the plans said: a read can call a function that
//! writes, or lock rows. So before a transaction over several shards commits, the shards no
//! plan wrote on are asked whether their transaction holds a transaction id (PostgreSQL gives
//! one at the first change); those that do commit as written shards.

use super::participants::{on_each, Participants};
use super::state::OpenTxn;
use super::TxnContext;
use crate::error::PgError;
use crate::protocol::inspect::data_row_column;
use crate::protocol::{build, Frame};
use bytes::BytesMut;

pub mod two_phase;

/// How a commit ended. On success the command tag is left to the caller; otherwise the error
/// has gone to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Committed,
    /// Rolled back, or (the client was told so, 08007) with an unknown outcome.
    NotCommitted,
    /// A participant's connection broke while preparing: everything was rolled back (recovery
    /// rolls back a branch that may have been prepared) and the session cannot go on.
    Lost(usize),
}

/// Commits `t` on every shard it enlisted.
pub async fn commit<P: Participants>(
    ctx: &TxnContext,
    p: &mut P,
    t: &OpenTxn,
) -> Result<Ended, P::Lost> {
    let found;
    let t = if t.enlisted.len() >= 2 && t.enlisted.len() > t.written.len() {
        match wrote_unplanned(p, t).await? {
            Err(err) => {
                // The question failed, so that shard's transaction is aborted: nothing commits.
                p.to_client(&err.bytes);
                let all: Vec<usize> = t.enlisted.iter().copied().collect();
                on_each(p, &all, "ROLLBACK").await?;
                return Ok(Ended::NotCommitted);
            }
            Ok(wrote) if wrote.is_empty() => t,
            Ok(wrote) => {
                let mut with = t.clone();
                with.written.extend(wrote);
                found = with;
                &found
            }
        }
    } else {
        t
    };
    if t.written.len() >= 2 {
        let readers = t.enlisted.difference(&t.written).copied().collect();
        return Ok(two_phase::commit(ctx, p, &t.written, &readers).await);
    }
    if !t.written.is_empty() {
        metrics::counter!(crate::metrics::COMMITS, "kind" => "one_phase").increment(1);
    }
    let order = t.commit_order();
    // The written shard (if any) commits first: its commit is the decision.
    let readers = if t.written.is_empty() {
        &order[..]
    } else {
        let s = order[0];
        let result = match on_each(p, &[s], "COMMIT").await {
            Err(lost) => {
                let Some(name) = P::broken(&lost) else {
                    return Err(lost);
                };
                // The written shard may have committed before the connection broke.
                let e = PgError::error(
                    "08007",
                    format!("connection to shard {name} was lost while committing; the transaction's outcome is unknown"),
                )
                .with_hint("Check whether its changes are present before retrying.");
                let mut b = BytesMut::new();
                build::error(&e, &mut b);
                p.to_client(&b);
                return Ok(Ended::NotCommitted);
            }
            Ok(result) => result,
        };
        if let Some(err) = result {
            p.to_client(&err.bytes);
            on_each(p, &order[1..], "ROLLBACK").await?;
            return Ok(Ended::NotCommitted);
        }
        &order[1..]
    };
    // Read-only participants change nothing by committing: all at once.
    if let Some(err) = on_each(p, readers, "COMMIT").await? {
        if t.written.is_empty() {
            p.to_client(&err.bytes);
            return Ok(Ended::NotCommitted);
        }
        tracing::warn!("commit of a read-only participant failed after the decision");
    }
    Ok(Ended::Committed)
}

/// The enlisted shards of `t` that no plan wrote on but whose transaction holds a transaction
/// id: a function a read called wrote there, or the read locked rows. Every shard is asked in
/// the same round trip. An error (the shard's transaction is then aborted) is returned as it
/// came.
async fn wrote_unplanned<P: Participants>(
    p: &mut P,
    t: &OpenTxn,
) -> Result<Result<Vec<usize>, Frame>, P::Lost> {
    let readers: Vec<usize> = t.enlisted.difference(&t.written).copied().collect();
    let mut q = BytesMut::new();
    build::query(
        "SELECT pg_catalog.pg_current_xact_id_if_assigned() IS NOT NULL",
        &mut q,
    );
    for &s in &readers {
        p.send(s, &q).await?;
    }
    let mut wrote = Vec::new();
    let mut failed = None;
    for &s in &readers {
        loop {
            let f = p.recv(s).await?;
            match f.tag {
                b'D' if data_row_column(f.body(), 0) == Some(Some(b"t")) => wrote.push(s),
                b'E' => {
                    failed.get_or_insert(f);
                }
                b'Z' => break,
                _ => {}
            }
        }
    }
    Ok(failed.map_or(Ok(wrote), Err))
}
