//! Enlisting a shard in the session's transaction: replaying the client's BEGIN and active
//! savepoints on it the first time a statement touches it.
//!
//! The opening can travel alone (`enlist`) or in front of the statement in the same Query
//! (`opening` + `read_opening`), which saves a round trip per shard. Either way the statement
//! never runs outside the transaction: in one multi-statement Query, PostgreSQL skips everything
//! after a failed BEGIN. A second shard may not join a SERIALIZABLE transaction: each shard
//! would serialize only its own part, which is weaker than what the client asked for, so it is
//! refused (0A000). The isolation level is read inside the opening, so SET
//! default_transaction_isolation is seen too, at no extra round trip.

use super::session::{Exec, Step, R};
use super::txn::TxnState;
use crate::error::{sqlstate, PgError};
use crate::protocol::build;
use bytes::BytesMut;

/// The statements that open the transaction on one shard.
pub struct Opening {
    pub sql: String,
    /// Command tags the opening answers with before the isolation check.
    commands: usize,
    /// A second shard: the opening ends with `SELECT current_setting('transaction_isolation')`.
    check: bool,
}

impl Exec<'_> {
    /// What `shard` must run to join the open transaction; None when it has joined already or
    /// no transaction is open.
    pub fn opening(&self, shard: usize) -> Option<Opening> {
        let TxnState::Open(t) = &self.txn else {
            return None;
        };
        if t.enlisted.contains(&shard) {
            return None;
        }
        let check = !t.enlisted.is_empty();
        let mut sql = t.opening();
        if check {
            sql.push_str("; SELECT current_setting('transaction_isolation')");
        }
        Some(Opening {
            sql,
            commands: t.opening_commands(),
            check,
        })
    }

    /// Opens the client's transaction on `shard` if it has not been yet, in its own round trip.
    pub async fn enlist(&mut self, shard: usize) -> R<Step> {
        if self.ensure_cut().await? == Step::Failed {
            return Ok(Step::Failed);
        }
        let Some(o) = self.opening(shard) else {
            return Ok(Step::Done);
        };
        self.settle(shard).await?;
        let mut q = BytesMut::new();
        build::query(&o.sql, &mut q);
        self.links[shard].send(&q).await?;
        let step = self.read_opening(shard, &o).await?;
        if step == Step::Done {
            // The opening's own ReadyForQuery.
            self.quiet_until_ready(shard).await?;
        }
        Ok(step)
    }

    /// Reads the answers to an opening sent at the head of a Query, up to where the statement's
    /// own answers begin. On failure the Query is read to its end and the error written.
    pub async fn read_opening(&mut self, shard: usize, o: &Opening) -> R<Step> {
        let mut commands = 0;
        let mut level: Option<String> = None;
        loop {
            let done = commands > o.commands || (!o.check && commands == o.commands);
            if done {
                break;
            }
            let f = self.links[shard].recv().await?;
            match f.tag {
                b'C' => commands += 1,
                b'D' => {
                    level = crate::protocol::inspect::data_row_column(f.body(), 0)
                        .flatten()
                        .map(|v| String::from_utf8_lossy(v).into_owned());
                }
                b'E' => {
                    self.out.extend_from_slice(&f.bytes);
                    self.quiet_until_ready(shard).await?;
                    return Ok(Step::Failed);
                }
                b'N' => self.out.extend_from_slice(&f.bytes),
                b'Z' => {
                    // The Query ended early (it cannot without an error); nothing joined.
                    return Ok(Step::Failed);
                }
                _ => {}
            }
        }
        if o.check && level.as_deref() == Some("serializable") {
            // The statement after the opening (if any) runs but is rolled back with the rest.
            self.quiet_until_ready(shard).await?;
            let mut q = BytesMut::new();
            build::query("ROLLBACK", &mut q);
            self.links[shard].send(&q).await?;
            self.quiet_until_ready(shard).await?;
            let name = self.links[shard].name.clone();
            return Ok(self.error(
                &PgError::error(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    format!("a SERIALIZABLE transaction cannot reach a second shard ({name})"),
                )
                .with_hint("Each shard would serialize only its own part. Use REPEATABLE READ, or keep the transaction on one shard."),
            ));
        }
        if let TxnState::Open(t) = &mut self.txn {
            t.enlisted.insert(shard);
        }
        Ok(Step::Done)
    }
}
