//! Snapshot consistency in a session (docs/snapshot.md): what each isolation level reads.
//!
//! - REPEATABLE READ: one cut of *every* shard, taken at the transaction's first statement.
//!   The proxy acquires the snapshot class of the gate on all shards, sends each of them
//!   `BEGIN ...; SHOW transaction_isolation; SELECT pg_current_snapshot()` in parallel, and
//!   releases the gate when all have answered. PostgreSQL fixes a REPEATABLE READ snapshot at
//!   the first statement that needs one, which `pg_current_snapshot()` is, so every later read
//!   on any shard sees that one moment, and reaching another shard later can never fail.
//!   Taking the cut lazily, shard by shard, would need proof that no distributed commit touched
//!   both the cut and the new shard since; when that proof fails there is nothing left to fall
//!   back on but an error, so the cut covers every shard from the start.
//! - READ COMMITTED: each statement that reads several shards is gated on its own (see
//!   `gate_statement`): its shards take their statement snapshots while no distributed commit
//!   can be half-applied on them. One-shard statements need no gate.
//! - SERIALIZABLE: no cut. One shard's serializable transaction is consistent by itself; a
//!   second shard is refused (0A000, see `enlist`).
//! - An autocommit read of several shards takes a cut of just its shards.
//!
//! When the statement that needs the cut is a scattered read or a one-shard statement, the
//! cut is *deferred*: its Query goes out, the statement's request follows it in the same round
//! trip, and `finish_cut` (called before any answer of the statement is read) reads the cut's
//! answers and releases the gate. An error in the cut is then reported instead of the
//! statement's answers, which are drained unseen.

use super::session::state::PendingCut;
use super::session::{Exec, Step, R};
use crate::error::{sqlstate, PgError};
use crate::protocol::{build, Frame};
use crate::router::plan::HOME;
use crate::txn::snapshot::gate::Class;
use crate::txn::snapshot::Consistency;
use crate::txn::state::{Isolation, TxnState};
use bytes::{Bytes, BytesMut};
use std::collections::BTreeSet;

impl Exec<'_> {
    /// A new transaction in the session's consistency mode.
    pub fn new_txn(&self, begin: String, implicit: bool) -> TxnState {
        let mut txn = TxnState::begin(begin, implicit);
        if let TxnState::Open(t) = &mut txn {
            t.snapshot = self.consistency == Consistency::Snapshot;
            // A session that calls the clock gives each transaction its time from the start.
            if self.clock_seen {
                t.time = Some(crate::sql::clock::time_text(std::time::SystemTime::now()));
            }
        }
        txn
    }

    /// One snapshot for a statement the proxy reads in two parts (a subquery answered first,
    /// then the statement). With no transaction open, opens one of the proxy's own, REPEATABLE
    /// READ where the session's level is READ COMMITTED (one statement reads one snapshot
    /// there too), and answers Ok(true): the caller ends it. Ok(false): the open transaction's
    /// snapshot serves both; an implicit one that has reached no shard yet (a multi-statement
    /// query, or an extended-protocol batch that writes, whose first statement this is) is made
    /// REPEATABLE READ for that. Err: a READ COMMITTED transaction whose statements each take
    /// a new snapshot.
    pub async fn one_snapshot_for_two_reads(&mut self) -> R<Result<bool, ()>> {
        if self.txn == TxnState::Idle {
            let begin = match self.txn_isolation().await? {
                Isolation::ReadCommitted => "BEGIN ISOLATION LEVEL REPEATABLE READ",
                _ => "BEGIN",
            };
            self.txn = self.new_txn(begin.into(), true);
            return Ok(Ok(true));
        }
        if self.txn_isolation().await? != Isolation::ReadCommitted {
            return Ok(Ok(false));
        }
        match &mut self.txn {
            TxnState::Open(t) if t.implicit && t.enlisted.is_empty() && t.cut.is_none() => {
                t.begin = "BEGIN ISOLATION LEVEL REPEATABLE READ".into();
                Ok(Ok(false))
            }
            _ => Ok(Err(())),
        }
    }

    /// The refusal of a statement read in two parts (`refusal`, the planner's) in a READ
    /// COMMITTED transaction that has run other statements (see `one_snapshot_for_two_reads`);
    /// `first` says what the proxy reads first.
    pub fn two_reads_refused(&self, refusal: &PgError, first: &str) -> PgError {
        let (place, instead) = if matches!(&self.txn, TxnState::Open(t) if t.implicit) {
            (
                "after other statements of its implicit READ COMMITTED transaction (a query of several statements, or an extended-protocol batch up to its Sync)",
                "send it as a query of its own, or with a Sync of its own",
            )
        } else {
            (
                "in a READ COMMITTED transaction block",
                "run the statement outside a transaction block",
            )
        };
        PgError::error(
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("{}, {place}", refusal.message),
        )
        .with_hint(format!("The proxy reads {first} first, which needs one snapshot for that and the statement: {instead}, or in a REPEATABLE READ transaction."))
    }

    /// The isolation level of the open snapshot-consistency transaction (None: no such
    /// transaction). Reads the session's default from the home shard once, when the client
    /// named no level.
    pub async fn snapshot_level(&mut self) -> R<Option<Isolation>> {
        if !matches!(&self.txn, TxnState::Open(t) if t.snapshot) {
            return Ok(None);
        }
        self.txn_isolation().await.map(Some)
    }

    /// The isolation level of the open transaction (the session's default when none is
    /// open or none was named).
    pub async fn txn_isolation(&mut self) -> R<Isolation> {
        let named = match &self.txn {
            TxnState::Open(t) | TxnState::Failed(t) => t.named_isolation(),
            TxnState::Idle => None,
        };
        if let Some(level) = named.or(self.default_isolation) {
            return Ok(level);
        }
        self.settle(HOME).await?;
        let (values, error) = self
            .query_values(HOME, "SHOW default_transaction_isolation")
            .await?;
        let level = values
            .first()
            .and_then(|v| Isolation::named_in(v))
            .unwrap_or(Isolation::ReadCommitted);
        if error.is_none() {
            self.default_isolation = Some(level);
        }
        Ok(level)
    }

    /// Before a statement touches shards in a snapshot transaction: a REPEATABLE READ
    /// transaction takes its cut of every shard if it has none yet.
    pub async fn ensure_cut(&mut self) -> R<Step> {
        self.ensure_cut_then(false).await
    }

    /// An autocommit read of several shards in snapshot consistency, in one round trip: the
    /// cut, the read (`request`) and the COMMIT go out together, and are read in that order.
    /// `describe`: whether the client gets the RowDescription (see `scatter_request`).
    pub async fn autocommit_snapshot_read(
        &mut self,
        shards: &[usize],
        requests: &[Bytes],
        merge: &crate::router::plan::MergeSpec,
        describe: bool,
    ) -> R<Step> {
        self.txn = self.new_txn("BEGIN".into(), true);
        let scope = shards.iter().copied().collect();
        if self.take_cut(scope, None, true).await? == Step::Failed {
            // Refused before anything was sent (no oracle).
            self.txn = TxnState::Idle;
            return Ok(Step::Failed);
        }
        // A grouped merge may ask a shard of the read something once the rows are in (items
        // computed after the merge are evaluated there; float sums need its
        // extra_float_digits), and that shard must have nothing left to answer first: the
        // COMMIT then follows the merge instead of riding with the read.
        let evaluates = merge.aggregate.is_some();
        let with_commit: Vec<Bytes> = requests
            .iter()
            .map(|r| {
                let mut b = BytesMut::from(&r[..]);
                if !evaluates {
                    build::query("COMMIT", &mut b);
                }
                b.freeze()
            })
            .collect();
        let step =
            super::merge::scatter_request(self, shards, &with_commit, merge, describe).await?;
        // The COMMIT's answers (ROLLBACK if the read failed): the transaction is over either way.
        for &s in shards {
            if evaluates {
                let mut q = BytesMut::new();
                build::query("COMMIT", &mut q);
                self.links[s].send(&q).await?;
            }
            self.quiet_until_ready(s).await?;
        }
        self.txn = TxnState::Idle;
        Ok(step)
    }

    /// As `ensure_cut`; `deferred`: the caller is about to send its statement and will call
    /// `finish_cut` before reading its answers.
    pub async fn ensure_cut_then(&mut self, deferred: bool) -> R<Step> {
        if !matches!(&self.txn, TxnState::Open(t) if t.snapshot && t.cut.is_none()) {
            return Ok(Step::Done);
        }
        if self.snapshot_level().await? != Some(Isolation::RepeatableRead) {
            return Ok(Step::Done);
        }
        let scope = (0..self.links.len()).collect();
        self.take_cut(scope, Some("repeatable read"), deferred)
            .await
    }

    /// Sends the cut to `scope`. `expect`: the level every shard must report (the client's);
    /// None for an autocommit read, which runs REPEATABLE READ whatever the default, unless the
    /// default is SERIALIZABLE, which several shards cannot give.
    async fn take_cut(
        &mut self,
        scope: BTreeSet<usize>,
        expect: Option<&'static str>,
        deferred: bool,
    ) -> R<Step> {
        let TxnState::Open(t) = &self.txn else {
            return Ok(Step::Done);
        };
        // SHOW takes no snapshot, so SET TRANSACTION may still follow it.
        let mut sql = format!("{}; SHOW transaction_isolation; ", t.begin_sql());
        if expect.is_none() {
            sql.push_str("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ; ");
        }
        sql.push_str("SELECT pg_catalog.pg_current_snapshot()");
        if let Some(time) = t.time_sql() {
            sql.push_str("; ");
            sql.push_str(&time);
        }
        for (_, raw) in &t.savepoints {
            sql.push_str("; SAVEPOINT ");
            sql.push_str(raw);
        }
        let shards: Vec<usize> = scope.iter().copied().collect();
        let grant = match self.gate(&shards).await {
            Ok(g) => g,
            Err(e) => return Ok(self.error(&e)),
        };
        let mut q = BytesMut::new();
        build::query(&sql, &mut q);
        for &s in &shards {
            self.settle(s).await?;
        }
        for &s in &shards {
            self.links[s].send(&q).await?;
        }
        if let TxnState::Open(t) = &mut self.txn {
            t.enlisted.extend(shards.iter().copied());
            if t.time.is_some() {
                t.timed.extend(shards.iter().copied());
            }
            t.cut = Some(scope);
        }
        self.pending_cut = Some(PendingCut {
            grant,
            shards,
            expect,
        });
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

    /// The snapshot class of the gate on `shards` (None for one shard: its snapshot is
    /// consistent by itself).
    async fn gate(
        &mut self,
        shards: &[usize],
    ) -> Result<Option<crate::txn::snapshot::client::Grant>, PgError> {
        if shards.len() < 2 {
            return Ok(None);
        }
        let Some(oracle) = &self.txn_ctx.oracle else {
            return Err(PgError::error(
                sqlstate::FEATURE_NOT_SUPPORTED,
                "snapshot consistency needs the commit gate, which is off",
            )
            .with_hint("Set transactions.snapshot = true in the config, or SET shardgate.consistency = 'shard'."));
        };
        oracle
            .acquire(Class::Snapshot, shards, &self.txn_ctx.shard_names, None)
            .await
            .map(Some)
            .map_err(|e| {
                PgError::error("58000", format!("cannot take a consistent snapshot: {e}"))
                    .with_hint("Snapshot reads of several shards need the timestamp oracle; SET shardgate.consistency = 'shard' reads without it.")
            })
    }

    /// Whether a read of `shards` must be gated statement by statement: a READ COMMITTED
    /// transaction in snapshot consistency reading several shards.
    pub async fn gates_statements(&mut self, shards: &[usize]) -> R<bool> {
        if shards.len() < 2
            || !matches!(&self.txn, TxnState::Open(t) if t.snapshot && t.cut.is_none())
        {
            return Ok(false);
        }
        Ok(self.snapshot_level().await? == Some(Isolation::ReadCommitted))
    }

    /// Sends a read of several shards in a READ COMMITTED transaction so that its statement
    /// snapshots form one consistent cut. Each request is Parse+Bind+...+Sync (a Query is
    /// turned into one). The Parse goes first, alone: analysing the statement takes its table
    /// locks, the one thing it could wait for. Then, under the snapshot class of the gate,
    /// the rest: PostgreSQL takes the statement's snapshot at Bind, so the gate is released
    /// at BindComplete, before the statement runs. A Parse error is returned (and nothing
    /// else was sent); an error in the rest is left for the caller to read.
    pub async fn gate_statement(
        &mut self,
        shards: &[usize],
        requests: &[Bytes],
    ) -> R<Option<Frame>> {
        let mut rests = Vec::with_capacity(shards.len());
        for (i, &s) in shards.iter().enumerate() {
            let request = &requests[i.min(requests.len() - 1)];
            let (head, rest) = split_at_bind(request);
            let mut first = BytesMut::from(&head[..]);
            first.extend_from_slice(b"S\0\0\0\x04");
            self.links[s].send(&first).await?;
            rests.push(rest);
        }
        let mut failure = None;
        for &s in shards {
            if let Some(e) = self.quiet_until_ready(s).await? {
                failure.get_or_insert(e);
            }
        }
        if failure.is_some() {
            return Ok(failure);
        }
        let grant = match self.gate(shards).await {
            Ok(g) => g,
            Err(e) => {
                let mut b = BytesMut::new();
                build::error(&e, &mut b);
                return Ok(Some(Frame {
                    tag: b'E',
                    bytes: b.freeze(),
                }));
            }
        };
        for (&s, rest) in shards.iter().zip(&rests) {
            self.links[s].send(rest).await?;
        }
        for &s in shards {
            loop {
                let f = self.links[s].recv().await?;
                match f.tag {
                    b'2' => break,
                    b'N' => self.out.extend_from_slice(&f.bytes),
                    _ => {
                        // The statement failed before its snapshot: its error is the caller's.
                        self.links[s].unread(f);
                        break;
                    }
                }
            }
        }
        self.snapshot_ts = grant.as_ref().map(|g| g.ts);
        drop(grant);
        Ok(None)
    }

    /// Reads the answers to a cut sent by `take_cut` and releases the gate; returns the cut's
    /// error (the transaction is then failed; the caller rolls it back).
    pub async fn finish_cut(&mut self) -> R<Option<Frame>> {
        let Some(PendingCut {
            grant,
            shards,
            expect,
        }) = self.pending_cut.take()
        else {
            return Ok(None);
        };
        let mut failure = None;
        let mut levels = BTreeSet::new();
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
            levels.insert(level.unwrap_or_default());
        }
        self.snapshot_ts = grant.as_ref().map(|g| g.ts);
        drop(grant);
        let refusal = match expect {
            _ if failure.is_some() => None,
            // An autocommit read: REPEATABLE READ is as strong as any level but SERIALIZABLE.
            None if shards.len() > 1 && levels.contains("serializable") => Some(
                PgError::error(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "a SERIALIZABLE transaction cannot read several shards",
                )
                .with_hint("Snapshot consistency reads one REPEATABLE READ cut of the shards; use REPEATABLE READ, or keep the transaction on one shard."),
            ),
            // The level the session's default was believed to be changed underneath (a
            // setting made outside the proxy's sight): running the cut would change the level.
            Some(want) if levels.iter().any(|l| l != want) => Some(
                PgError::error(
                    sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                    format!("the shards run this transaction at {}, not {want}", levels.iter().find(|l| *l != want).map(String::as_str).unwrap_or("?")),
                )
                .with_hint("Name the isolation level in BEGIN, and retry the transaction."),
            ),
            _ => None,
        };
        if let Some(e) = refusal {
            self.default_isolation = None;
            let mut b = BytesMut::new();
            build::error(&e, &mut b);
            failure = Some(Frame {
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
        if let ("consistency", Some(c)) = (name, Consistency::parse(&value)) {
            self.consistency = c;
        }
        Ok(())
    }

    /// `SHOW shardgate.consistency | snapshot_scope | snapshot_ts`.
    pub fn show_variable(&mut self, name: &str) -> Step {
        let value = match name {
            "consistency" => Some(self.consistency.name().to_string()),
            // Kept for scripts written when a cut could cover fewer shards.
            "snapshot_scope" => Some("all".to_string()),
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
            "all" => None,
            _ => Some(PgError::error(
                "22023",
                format!("invalid value for shardgate.snapshot_scope: \"{value}\""),
            ).with_hint("A REPEATABLE READ transaction in snapshot consistency always reads one cut of every shard; 'all' is the only value.")),
        },
        _ => Some(PgError::error(
            "42704",
            format!("unrecognized configuration parameter \"shardgate.{name}\""),
        )),
    }
}

/// A re-bound request split before its Bind: what must run before the gate (Parse), and the
/// rest. A simple Query is first turned into the same messages, with text results.
fn split_at_bind(request: &Bytes) -> (Bytes, Bytes) {
    let request = if request.first() == Some(&b'Q') {
        query_as_extended(request)
    } else {
        request.clone()
    };
    let mut at = 0;
    while at + 5 <= request.len() && request[at] != b'B' {
        let len = i32::from_be_bytes([
            request[at + 1],
            request[at + 2],
            request[at + 3],
            request[at + 4],
        ]) as usize;
        at += 1 + len;
    }
    let at = at.min(request.len());
    (request.slice(..at), request.slice(at..))
}

/// A one-statement Query as Parse + Bind + Describe portal + Execute + Sync: the same
/// answers, plus ParseComplete and BindComplete.
fn query_as_extended(request: &Bytes) -> Bytes {
    let sql = crate::protocol::message::Query::decode(&request.slice(5..))
        .map(|q| q.sql)
        .unwrap_or_default();
    super::rebind::rebind(
        &sql,
        &crate::router::params::Params::default(),
        &[],
        &[],
        true,
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(b: &Bytes) -> Vec<u8> {
        let (mut at, mut out) = (0, Vec::new());
        while at < b.len() {
            out.push(b[at]);
            at += 1 + i32::from_be_bytes([b[at + 1], b[at + 2], b[at + 3], b[at + 4]]) as usize;
        }
        out
    }

    #[test]
    fn a_query_splits_into_its_parse_and_the_rest() {
        let mut q = BytesMut::new();
        build::query("select 1", &mut q);
        let (head, rest) = split_at_bind(&q.freeze());
        assert_eq!(tags(&head), b"P");
        assert_eq!(tags(&rest), b"BDES");
    }
}
