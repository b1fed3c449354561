//! Transaction control as the session carries it out: BEGIN, COMMIT (one shard, or two-phase
//! commit over several), ROLLBACK, savepoints and SET TRANSACTION on the shards the transaction
//! enlisted, and the implicit transactions the proxy opens for writes of several shards.

use super::*;
use crate::executor::session::Stop;
use crate::txn::commit::Ended;
use crate::txn::participants::on_each;

impl Exec<'_> {
    /// After a failed statement: an implicit transaction rolls back now, an explicit one waits
    /// for the client's ROLLBACK.
    pub async fn after_error(&mut self) -> R<()> {
        self.txn.fail();
        if self.txn.failed_implicit() {
            self.rollback_enlisted().await?;
            self.txn = TxnState::Idle;
        }
        Ok(())
    }

    /// Opens an implicit transaction for one statement that writes on several shards, when no
    /// transaction is open; returns whether it did (the caller then ends it).
    pub fn own_implicit(&mut self) -> bool {
        let own = self.txn == TxnState::Idle;
        if own {
            self.txn = self.new_txn("BEGIN".into(), true);
        }
        own
    }

    /// Ends a transaction opened by `own_implicit`: commit (two-phase when needed) on success.
    pub async fn end_own_implicit(&mut self, own: bool, step: Step) -> R<Step> {
        if !own {
            return Ok(step);
        }
        if step == Step::Failed {
            self.after_error().await?;
            return Ok(Step::Failed);
        }
        self.commit(false).await
    }

    pub(super) async fn txn_command(&mut self, cmd: TxnCmd) -> R<Step> {
        match cmd {
            TxnCmd::Begin(text) => {
                let tag = if text.trim_start().to_ascii_lowercase().starts_with("start") {
                    "START TRANSACTION"
                } else {
                    "BEGIN"
                };
                match &mut self.txn {
                    TxnState::Idle => self.txn = self.new_txn(text, false),
                    TxnState::Open(t) if t.implicit => {
                        t.implicit = false;
                        t.begin = text;
                    }
                    _ => build::warning(
                        "25001",
                        "there is already a transaction in progress",
                        &mut self.out,
                    ),
                }
                build::command_complete(tag, &mut self.out);
                Ok(Step::Done)
            }
            TxnCmd::Commit => match &self.txn {
                TxnState::Idle => {
                    build::warning(
                        "25P01",
                        "there is no transaction in progress",
                        &mut self.out,
                    );
                    build::command_complete("COMMIT", &mut self.out);
                    Ok(Step::Done)
                }
                TxnState::Failed(_) => {
                    self.rollback_enlisted().await?;
                    self.txn = TxnState::Idle;
                    build::command_complete("ROLLBACK", &mut self.out);
                    Ok(Step::Done)
                }
                TxnState::Open(_) => self.commit(true).await,
            },
            TxnCmd::Savepoint(name) => {
                let TxnState::Open(t) = &self.txn else {
                    return Ok(self.no_block("SAVEPOINT"));
                };
                if t.implicit {
                    return Ok(self.no_block("SAVEPOINT"));
                }
                let step = self.on_enlisted(&format!("SAVEPOINT {name}")).await?;
                if let (Step::Done, TxnState::Open(t)) = (step, &mut self.txn) {
                    t.savepoint(&name);
                    build::command_complete("SAVEPOINT", &mut self.out);
                }
                Ok(step)
            }
            TxnCmd::SetTransaction(sql) => self.set_transaction(sql).await,
            TxnCmd::Release(name) => self.unwind(&name, true).await,
            TxnCmd::RollbackTo(name) => self.unwind(&name, false).await,
            TxnCmd::Rollback => {
                if self.txn == TxnState::Idle {
                    build::warning(
                        "25P01",
                        "there is no transaction in progress",
                        &mut self.out,
                    );
                }
                self.rollback_enlisted().await?;
                self.txn = TxnState::Idle;
                build::command_complete("ROLLBACK", &mut self.out);
                Ok(Step::Done)
            }
        }
    }

    /// SET TRANSACTION. Before the transaction has touched a shard it is only recorded, and
    /// every shard runs it right after BEGIN, before anything else, as PostgreSQL requires.
    /// Shards already enlisted run it now and answer as PostgreSQL would (25001 for an isolation
    /// level once a query has run).
    pub(super) async fn set_transaction(&mut self, sql: String) -> R<Step> {
        let TxnState::Open(t) = &self.txn else {
            build::warning(
                "25P01",
                "SET TRANSACTION can only be used in transaction blocks",
                &mut self.out,
            );
            build::command_complete("SET", &mut self.out);
            return Ok(Step::Done);
        };
        // PostgreSQL refuses a different level inside a savepoint; with a shard enlisted,
        // the shards say so themselves.
        let asked = crate::txn::state::Isolation::named_in(&sql);
        let in_savepoint = t.enlisted.is_empty() && !t.savepoints.is_empty() && asked.is_some();
        if in_savepoint && asked != Some(self.txn_isolation().await?) {
            return Ok(self.error(&PgError::error(
                "25001",
                "SET TRANSACTION ISOLATION LEVEL must not be called in a subtransaction",
            )));
        }
        let TxnState::Open(t) = &self.txn else {
            return Ok(Step::Done);
        };
        if !t.enlisted.is_empty() && self.on_enlisted(&sql).await? == Step::Failed {
            return Ok(Step::Failed);
        }
        if let TxnState::Open(t) = &mut self.txn {
            t.characteristics.push(sql);
        }
        build::command_complete("SET", &mut self.out);
        Ok(Step::Done)
    }

    /// RELEASE (`release`) or ROLLBACK TO a savepoint on every enlisted shard.
    pub(super) async fn unwind(&mut self, name: &str, release: bool) -> R<Step> {
        let verb = if release { "RELEASE" } else { "ROLLBACK" };
        let (TxnState::Open(t) | TxnState::Failed(t)) = &mut self.txn else {
            return Ok(self.no_block(verb));
        };
        if t.implicit {
            return Ok(self.no_block(verb));
        }
        let mut unwound = t.clone();
        let found = if release {
            unwound.release(name)
        } else {
            unwound.rollback_to(name)
        };
        if let Err(missing) = found {
            return Ok(self.error(&PgError::error(
                "3B001",
                format!("savepoint \"{}\" does not exist", missing.0),
            )));
        }
        let sql = if release {
            format!("RELEASE SAVEPOINT {name}")
        } else {
            format!("ROLLBACK TO SAVEPOINT {name}")
        };
        let step = self.on_enlisted(&sql).await?;
        if step == Step::Done && !release {
            self.savepoint_rolled_back();
        }
        if step == Step::Done {
            // ROLLBACK TO leaves the transaction usable again, as in PostgreSQL.
            self.txn = TxnState::Open(unwound);
            build::command_complete(verb, &mut self.out);
        }
        Ok(step)
    }

    /// A savepoint command outside a transaction block (25P01, as PostgreSQL answers).
    pub(super) fn no_block(&mut self, verb: &str) -> Step {
        let what = if verb == "ROLLBACK" {
            "ROLLBACK TO SAVEPOINT"
        } else {
            verb
        };
        self.error(&PgError::error(
            "25P01",
            format!("{what} can only be used in transaction blocks"),
        ))
    }

    /// Runs `sql` on every enlisted shard at once; the first error goes to the client.
    pub(super) async fn on_enlisted(&mut self, sql: &str) -> R<Step> {
        let shards: Vec<usize> = self.txn.enlisted().into_iter().collect();
        let mut q = BytesMut::new();
        build::query(sql, &mut q);
        for &s in &shards {
            self.links[s].send(&q).await?;
        }
        let mut step = Step::Done;
        for &s in &shards {
            if let Some(err) = self.quiet_until_ready(s).await? {
                if step == Step::Done {
                    self.out.extend_from_slice(&err.bytes);
                }
                step = Step::Failed;
            }
        }
        Ok(step)
    }

    /// Commits the open transaction. One written shard commits first and plainly (its commit is
    /// the decision; read-only shards follow); two or more go through two-phase commit.
    pub async fn commit(&mut self, tag: bool) -> R<Step> {
        let step = self.commit_branches(tag).await?;
        self.transaction_ended(step == Step::Done);
        Ok(step)
    }

    pub(super) async fn commit_branches(&mut self, tag: bool) -> R<Step> {
        let TxnState::Open(t) = std::mem::replace(&mut self.txn, TxnState::Idle) else {
            return Ok(Step::Done);
        };
        let ctx = self.txn_ctx;
        match crate::txn::commit::commit(ctx, self, &t).await? {
            Ended::Committed => {
                if tag {
                    build::command_complete("COMMIT", &mut self.out);
                }
                Ok(Step::Done)
            }
            Ended::NotCommitted => Ok(Step::Failed),
            Ended::Lost(s) => Err(Stop::Shard(self.links[s].name.clone())),
        }
    }

    pub async fn rollback_enlisted(&mut self) -> R<()> {
        self.transaction_ended(false);
        if let TxnState::Open(t) | TxnState::Failed(t) = &self.txn {
            if t.changed_session {
                // A SET in the transaction is undone.
                self.default_isolation = None;
            }
            if t.written.len() >= 2 {
                metrics::counter!(crate::metrics::ABORTS, "reason" => "rollback").increment(1);
            }
        }
        let shards: Vec<usize> = self.txn.enlisted().into_iter().collect();
        on_each(self, &shards, "ROLLBACK").await?;
        Ok(())
    }
}
