//! Snapshot consistency in a session: the cut a transaction (or an autocommit statement) reads
//! from, taken on all its shards at once under the gate (DESIGN §6).
//!
//! The cut: acquire the snapshot class on the shards, then on each of them, in parallel,
//! `BEGIN ...; SET TRANSACTION ISOLATION LEVEL REPEATABLE READ; SELECT pg_current_snapshot()`,
//! then release. PostgreSQL takes a REPEATABLE READ snapshot at the first statement that needs
//! one, which `pg_current_snapshot()` forces, so every later read of the transaction on that
//! shard sees exactly that moment. A shard outside the cut can never join later (40001): its
//! snapshot would be from another moment.
//!
//! When the statement that needs the cut is a scattered read, the cut is *deferred*: its Query
//! goes out, the read's request follows it in the same round trip, and `finish_cut` (called by
//! the scatter before it reads any answer) reads the cut's answers and releases the gate. An
//! error in the cut is then reported instead of the read's rows, which are drained unseen.

use super::session::{Exec, Step, R};
use super::txn::TxnState;
use crate::error::{sqlstate, PgError};
use crate::protocol::build;
use crate::snapshot::gate::Class;
use crate::snapshot::Consistency;
use bytes::BytesMut;
use std::collections::BTreeSet;

impl Exec<'_> {
    /// A new transaction in the session's consistency mode.
    pub fn new_txn(&self, begin: String, implicit: bool, cut_all: bool) -> TxnState {
        let mut txn = TxnState::begin(begin, implicit);
        if let TxnState::Open(t) = &mut txn {
            t.snapshot = self.consistency == Consistency::Snapshot;
            t.cut_all = cut_all;
        }
        txn
    }

    /// Before a statement touches `shards` in a snapshot transaction: take the cut if none is
    /// taken yet, or refuse a shard outside it.
    pub async fn ensure_cut(&mut self, shards: &[usize]) -> R<Step> {
        self.ensure_cut_then(shards, false).await
    }

    /// An autocommit read of several shards in snapshot consistency, in one round trip: the
    /// cut, the read (`request`) and the COMMIT go out together, and are read in that order.
    /// `describe`: whether the client gets the RowDescription (see `scatter_request`).
    pub async fn autocommit_snapshot_read(
        &mut self,
        shards: &[usize],
        requests: &[bytes::Bytes],
        merge: &crate::router::plan::MergeSpec,
        describe: bool,
    ) -> R<Step> {
        self.txn = self.new_txn("BEGIN".into(), true, false);
        if self.ensure_cut_then(shards, true).await? == Step::Failed {
            // Refused before anything was sent (no oracle, or SERIALIZABLE).
            self.txn = TxnState::Idle;
            return Ok(Step::Failed);
        }
        let with_commit: Vec<bytes::Bytes> = requests
            .iter()
            .map(|r| {
                let mut b = BytesMut::from(&r[..]);
                build::query("COMMIT", &mut b);
                b.freeze()
            })
            .collect();
        let step =
            super::merge::scatter_request(self, shards, &with_commit, merge, describe).await?;
        // The COMMIT's answers (ROLLBACK if the read failed): the transaction is over either way.
        for &s in shards {
            self.quiet_until_ready(s).await?;
        }
        self.txn = TxnState::Idle;
        Ok(step)
    }

    /// As `ensure_cut`; `deferred`: the caller is about to scatter a read on these shards and
    /// will call `finish_cut` after sending it.
    pub async fn ensure_cut_then(&mut self, shards: &[usize], deferred: bool) -> R<Step> {
        let (cut_all, cut) = match &self.txn {
            TxnState::Open(t) if t.snapshot => (t.cut_all, t.cut.clone()),
            _ => return Ok(Step::Done),
        };
        if let Some(cut) = cut {
            return Ok(match shards.iter().find(|s| !cut.contains(s)) {
                None => Step::Done,
                Some(&outside) => self.error(&outside_cut(&self.links[outside].name)),
            });
        }
        let scope: BTreeSet<usize> = if cut_all {
            (0..self.links.len()).collect()
        } else {
            shards.iter().copied().collect()
        };
        self.take_cut(scope, deferred).await
    }

    async fn take_cut(&mut self, scope: BTreeSet<usize>, deferred: bool) -> R<Step> {
        let TxnState::Open(t) = &self.txn else {
            return Ok(Step::Done);
        };
        // SHOW takes no snapshot, so SET TRANSACTION may still follow it. The level it reports
        // (from BEGIN or default_transaction_isolation) is checked in `finish_cut`.
        let mut sql = format!(
            "{}; SHOW transaction_isolation; SET TRANSACTION ISOLATION LEVEL REPEATABLE READ; \
             SELECT pg_current_snapshot()",
            t.begin_sql()
        );
        for (_, raw) in &t.savepoints {
            sql.push_str("; SAVEPOINT ");
            sql.push_str(raw);
        }
        let shards: Vec<usize> = scope.iter().copied().collect();
        // One shard's snapshot is consistent by itself: no gate.
        let grant = match (&self.txn_ctx.oracle, shards.len() > 1) {
            (Some(oracle), true) => {
                match oracle
                    .acquire(Class::Snapshot, &shards, &self.txn_ctx.shard_names, None)
                    .await
                {
                    Ok(g) => Some(g),
                    Err(e) => {
                        return Ok(self.error(
                            &PgError::error(
                                "58000",
                                format!("cannot take a consistent snapshot: {e}"),
                            )
                            .with_hint("Snapshot reads of several shards need the timestamp oracle; SET shardgate.consistency = 'shard' reads without it."),
                        ))
                    }
                }
            }
            (None, true) => {
                return Ok(self.error(
                    &PgError::error(
                        sqlstate::FEATURE_NOT_SUPPORTED,
                        "snapshot consistency needs the commit gate, which is off",
                    )
                    .with_hint("Set transactions.snapshot = true in the config, or SET shardgate.consistency = 'shard'."),
                ))
            }
            _ => None,
        };
        let mut q = BytesMut::new();
        build::query(&sql, &mut q);
        for &s in &shards {
            self.links[s].send(&q).await?;
        }
        if let TxnState::Open(t) = &mut self.txn {
            t.enlisted.extend(shards.iter().copied());
            t.cut = Some(scope);
        }
        self.pending_cut = Some(PendingCut { grant, shards });
        if deferred {
            return Ok(Step::Done);
        }
        match self.finish_cut().await? {
            None => Ok(Step::Done),
            Some(e) => {
                self.out.extend_from_slice(&e.bytes);
                Ok(Step::Failed)
            }
        }
    }

    /// Reads the answers to a cut sent by `take_cut` and releases the gate; returns the cut's
    /// error (the transaction is then rolled back on its shards and failed).
    pub async fn finish_cut(&mut self) -> R<Option<crate::protocol::Frame>> {
        let Some(PendingCut { grant, shards }) = self.pending_cut.take() else {
            return Ok(None);
        };
        let mut failure = None;
        let mut serializable = false;
        for &s in &shards {
            let mut level: Option<String> = None;
            loop {
                let f = self.links[s].recv().await?;
                match f.tag {
                    b'D' if level.is_none() => {
                        level = crate::protocol::inspect::data_row_column(f.body(), 0)
                            .flatten()
                            .map(|v| String::from_utf8_lossy(v).into_owned());
                    }
                    b'E' if failure.is_none() => failure = Some(f),
                    b'N' => self.out.extend_from_slice(&f.bytes),
                    b'Z' => break,
                    _ => {}
                }
            }
            serializable |= level.as_deref() == Some("serializable");
        }
        self.snapshot_ts = grant.as_ref().map(|g| g.ts);
        drop(grant);
        if serializable && shards.len() > 1 && failure.is_none() {
            // REPEATABLE READ on each shard would be weaker than what the client asked for.
            let mut b = BytesMut::new();
            build::error(
                &PgError::error(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "a SERIALIZABLE transaction cannot read several shards",
                )
                .with_hint("Snapshot consistency reads one REPEATABLE READ cut of every shard; use REPEATABLE READ, or keep the transaction on one shard."),
                &mut b,
            );
            failure = Some(crate::protocol::Frame {
                tag: b'E',
                bytes: b.freeze(),
            });
        }
        if failure.is_some() {
            self.txn.fail();
        }
        Ok(failure)
    }

    /// `SET shardgate.<name> = <value>`, answered by the proxy.
    pub fn set_variable(&mut self, name: &str, value: &str) -> Step {
        match self.apply_setting(name, value) {
            Ok(()) => {
                build::command_complete("SET", &mut self.out);
                Step::Done
            }
            Err(e) => self.error(&e),
        }
    }

    /// Sets one of shardgate's own settings (from SET or the startup options).
    pub fn apply_setting(&mut self, name: &str, value: &str) -> Result<(), PgError> {
        if let Some(e) = setting_error(name, value, self.txn_ctx.oracle.is_some()) {
            return Err(e);
        }
        let value = setting_value(value);
        match (name, Consistency::parse(&value)) {
            ("consistency", Some(c)) => self.consistency = c,
            ("snapshot_scope", _) => self.snapshot_all = value == "all",
            _ => {}
        }
        Ok(())
    }

    /// `SHOW shardgate.consistency | snapshot_scope | snapshot_ts`.
    pub fn show_variable(&mut self, name: &str) -> Step {
        let value = match name {
            "consistency" => Some(self.consistency.name().to_string()),
            "snapshot_scope" => Some(
                if self.snapshot_all {
                    "all"
                } else {
                    "statement"
                }
                .to_string(),
            ),
            "snapshot_ts" => Some(self.snapshot_ts.map_or(String::new(), |t| t.to_string())),
            _ => None,
        };
        match value {
            Some(v) => {
                let column = format!("shardgate.{name}");
                if self.describe_rows {
                    build::row_description_text(&[column.as_str()], &mut self.out);
                }
                build::data_row_text(&[Some(&v)], &mut self.out);
                build::command_complete("SHOW", &mut self.out);
                Step::Done
            }
            None => self.error(&PgError::error(
                "42704",
                format!("unrecognized configuration parameter \"shardgate.{name}\""),
            )),
        }
    }
}

fn setting_value(value: &str) -> String {
    value.trim().trim_matches('\'').to_ascii_lowercase()
}

/// Why `shardgate.<name> = <value>` cannot be set (None: it can). `snapshot_possible`: the
/// commit gate runs (snapshot consistency needs it).
pub fn setting_error(name: &str, value: &str, snapshot_possible: bool) -> Option<PgError> {
    let value = setting_value(value);
    match name {
        "consistency" => match Consistency::parse(&value) {
            Some(Consistency::Snapshot) if !snapshot_possible => Some(
                PgError::error(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "snapshot consistency needs the commit gate, which is off",
                )
                .with_hint("Set transactions.snapshot = true in the proxy's config."),
            ),
            Some(_) => None,
            None => Some(PgError::error(
                "22023",
                format!("invalid value for shardgate.consistency: \"{value}\" (use shard or snapshot)"),
            )),
        },
        "snapshot_scope" => match value.as_str() {
            "all" | "statement" => None,
            _ => Some(PgError::error(
                "22023",
                format!("invalid value for shardgate.snapshot_scope: \"{value}\" (use statement or all)"),
            )),
        },
        _ => Some(PgError::error(
            "42704",
            format!("unrecognized configuration parameter \"shardgate.{name}\""),
        )),
    }
}

/// A cut whose answers have not been read yet, and the gate it holds until they are.
pub struct PendingCut {
    grant: Option<crate::snapshot::client::Grant>,
    shards: Vec<usize>,
}

fn outside_cut(shard: &str) -> PgError {
    PgError::error(
        "40001",
        format!("shard {shard} is outside this transaction's consistent snapshot"),
    )
    .with_hint("A snapshot transaction reads the shards its first statement touched. SET shardgate.snapshot_scope = 'all' before BEGIN takes the snapshot on every shard.")
}
