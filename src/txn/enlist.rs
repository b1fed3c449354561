//! A shard joining the session's transaction: the client's BEGIN, SET TRANSACTION, the
//! transaction's time (see `sql::clock`) and active savepoints replayed on it the first time a
//! statement touches it.
//!
//! The opening can travel alone or in front of the statement in the same Query, which saves a
//! round trip per shard. Either way the statement never runs outside the transaction: in one
//! multi-statement Query, PostgreSQL skips everything after a failed BEGIN. A second shard may
//! not join a SERIALIZABLE transaction: each shard would serialize only its own part, which is
//! weaker than what the client asked for, so it is refused (0A000). The isolation level is read
//! inside the opening, so SET default_transaction_isolation is seen too, at no extra round trip.

use super::participants::{until_ready, Participants};
use super::state::TxnState;
use crate::error::{sqlstate, PgError};
use crate::protocol::build;
use bytes::BytesMut;

/// The statements that open the transaction on one shard.
#[derive(Debug)]
pub struct Opening {
    pub sql: String,
    /// Command tags the opening answers with before the isolation check.
    commands: usize,
    /// A second shard: the opening ends with `SELECT current_setting('transaction_isolation')`.
    check: bool,
    /// It gives the shard the transaction's time.
    pub timed: bool,
}

impl Opening {
    /// What `shard` must run to join the open transaction; None when it has joined already or
    /// no transaction is open.
    pub fn for_shard(txn: &TxnState, shard: usize) -> Option<Opening> {
        let TxnState::Open(t) = txn else {
            return None;
        };
        if t.enlisted.contains(&shard) {
            return None;
        }
        let check = !t.enlisted.is_empty();
        let mut sql = t.opening();
        if check {
            sql.push_str("; SELECT pg_catalog.current_setting('transaction_isolation')");
        }
        Some(Opening {
            sql,
            commands: t.opening_commands(),
            check,
            timed: t.time.is_some(),
        })
    }

    /// Reads the answers to this opening, sent at the head of a Query, up to where the
    /// statement's own answers begin; returns whether the shard joined (the caller records it).
    /// When it did not, the Query has been read to its end and the error sent to the client.
    pub async fn read<P: Participants>(&self, p: &mut P, shard: usize) -> Result<bool, P::Lost> {
        let mut commands = 0;
        let mut level: Option<String> = None;
        loop {
            let done = commands > self.commands || (!self.check && commands == self.commands);
            if done {
                break;
            }
            let f = p.recv(shard).await?;
            match f.tag {
                b'C' => commands += 1,
                b'D' => {
                    level = crate::protocol::inspect::data_row_column(f.body(), 0)
                        .flatten()
                        .map(|v| String::from_utf8_lossy(v).into_owned());
                }
                b'E' => {
                    p.to_client(&f.bytes);
                    until_ready(p, shard).await?;
                    return Ok(false);
                }
                b'N' => p.to_client(&f.bytes),
                // The Query ended early (it cannot without an error); nothing joined.
                b'Z' => return Ok(false),
                _ => {}
            }
        }
        if self.check && level.as_deref() == Some("serializable") {
            // The statement after the opening (if any) runs but is rolled back with the rest.
            until_ready(p, shard).await?;
            let mut q = BytesMut::new();
            build::query("ROLLBACK", &mut q);
            p.send(shard, &q).await?;
            until_ready(p, shard).await?;
            let e = PgError::error(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!(
                    "a SERIALIZABLE transaction cannot reach a second shard ({})",
                    p.name(shard)
                ),
            )
            .with_hint("Each shard would serialize only its own part. Use REPEATABLE READ, or keep the transaction on one shard.");
            let mut b = BytesMut::new();
            build::error(&e, &mut b);
            p.to_client(&b);
            return Ok(false);
        }
        Ok(true)
    }
}
