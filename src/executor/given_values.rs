//! Values an INSERT gives, itself, to a column the cluster's sequence fills (an ORM's `id` on a
//! table sharded by another column, see `key_sequence`) where a unique index without the shard
//! key holds that column.
//!
//! Each shard checks such an index against its own rows only. That is enough for the values the
//! sequence hands out, each new to the whole cluster, but not for one the application gives (a
//! fixture loaded twice, an import, `create(id=...)`): another shard may hold it under another
//! key. So before such an INSERT writes, its transaction
//!
//! 1. takes an advisory lock for the table on every shard, the first shard first, so writers of
//!    given values into one table take turns, and the lock on the shard that got a row is let
//!    go only when that row is committed there;
//! 2. looks for the given values on every shard, in a snapshot taken after the lock (where the
//!    transaction's own may be older, REPEATABLE READ or a snapshot cut, on the proxy's own
//!    connection too), and fails as PostgreSQL does (23505, naming the index) when one is there
//!    under another key, or when the statement gives one value twice under two keys (rows under
//!    the same key share a shard, whose index judges them);
//! 3. moves the column's sequence past the largest value given, by `nextval` (never backwards,
//!    whatever other proxies draw meanwhile), and drops the given values from this proxy's cache
//!    of drawn values, so the sequence does not hand one out again.
//!
//! A given value must be a constant or a bound parameter: anything else would be computed once
//! for the look and again for the row. Not covered, and documented: a value already drawn into
//! another proxy's cache (or by a session whose INSERT has not run yet). COPY has its own look
//! (`copy_given`), and UPDATE too (`given_update`).

use super::given_lookup::{
    computed, duplicate, is_default, lock_for, request, with_literals, Check, GivenValues, Over,
    RowsLook, MOST_ADVANCE,
};
use super::key_sequence::column_names;
use super::session::{Exec, Step, R};
use crate::backend::catalog::UniqueIndex;
use crate::error::{sqlstate, PgError};
use crate::protocol::build;
use crate::router::params::Params;
use crate::router::plan::{last_ident, HOME};
use crate::txn::state::{Isolation, TxnState};
use bytes::BytesMut;
use sqlparser::ast::{Ident, ObjectName, SetExpr, Statement};

impl Exec<'_> {
    /// Whether `stmt` may give a value to a sequence column of a sharded table other than its
    /// key, so that it must not take the extended protocol's one-shard fast path, which sends
    /// the client's messages without the look (see the module comment).
    pub fn gives_sequence_value(&self, stmt: &Statement) -> bool {
        let Some((ins, _, table, key_column)) = self.sharded_insert(stmt) else {
            return false;
        };
        let key_column = key_column.as_str();
        let Some(blocks) = self.key_blocks else {
            return false;
        };
        let known = blocks.columns.lock().unwrap_or_else(|p| p.into_inner());
        let Some(sequences) = known.get(&table) else {
            // Not learnt yet: `may_need_values` keeps it off the fast path already.
            return false;
        };
        let columns = if ins.columns.is_empty() {
            match self.known_columns(&table) {
                Some(c) => c,
                None => {
                    return sequences
                        .iter()
                        .any(|s| !s.column.eq_ignore_ascii_case(key_column))
                }
            }
        } else {
            column_names(ins)
        };
        let Some(source) = &ins.source else {
            return false;
        };
        let SetExpr::Values(values) = source.body.as_ref() else {
            // INSERT ... SELECT runs rewritten (see `insert_select`), never on the fast path.
            return false;
        };
        sequences
            .iter()
            .filter(|s| !s.column.eq_ignore_ascii_case(key_column))
            .filter_map(|s| {
                columns
                    .iter()
                    .position(|c| c.eq_ignore_ascii_case(&s.column))
            })
            .any(|k| values.rows.iter().any(|r| !is_default(r.get(k))))
    }

    /// What `stmt` (an INSERT ... VALUES as the client gave it, before the proxy fills in
    /// sequence values) must do before it writes; None when it gives no such value. Err when it
    /// was refused (its error written for the client).
    pub async fn given_values(
        &mut self,
        stmt: &Statement,
        params: &Params,
        types: &[u32],
    ) -> R<Result<Option<GivenValues>, ()>> {
        let Some((ins, name, table, key_column)) = self.sharded_insert(stmt) else {
            return Ok(Ok(None));
        };
        let Some(rows) = ins.source.as_ref().and_then(|s| match s.body.as_ref() {
            SetExpr::Values(v) => Some(&v.rows),
            _ => None,
        }) else {
            return Ok(Ok(None));
        };
        let sequences: Vec<_> = self
            .sequence_columns(&table)
            .await?
            .into_iter()
            .filter(|s| !s.column.eq_ignore_ascii_case(&key_column))
            .collect();
        if sequences.is_empty() {
            return Ok(Ok(None));
        }
        // Column names as the INSERT writes them (quotes kept), or the table's own.
        let (names, written): (Vec<String>, Vec<String>) = if ins.columns.is_empty() {
            let names = self.table_columns(&table).await?;
            let quoted = names
                .iter()
                .map(|n| Ident::with_quote('"', n).to_string())
                .collect();
            (names, quoted)
        } else {
            (
                column_names(ins),
                ins.columns.iter().map(|c| c.to_string()).collect(),
            )
        };
        let position = |c: &str| names.iter().position(|n| n.eq_ignore_ascii_case(c));
        let given: Vec<_> = sequences
            .iter()
            .filter(|s| {
                position(&s.column).is_some_and(|k| rows.iter().any(|r| !is_default(r.get(k))))
            })
            .collect();
        if given.is_empty() {
            return Ok(Ok(None));
        }
        let indexes = match self.indexes_without_key(name, &key_column).await {
            Ok(Some(found)) => found,
            Ok(None) => return Ok(Ok(None)),
            Err(()) => return Ok(Err(())),
        };
        let mut out = GivenValues {
            lock: lock_for(&last_ident(name)),
            checks: Vec::new(),
            after: Vec::new(),
            moved: Vec::new(),
        };
        let mut advanced: Vec<&str> = Vec::new();
        for index in &indexes {
            let Some(held) = given.iter().find(|s| {
                index
                    .columns
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(&s.column))
            }) else {
                continue;
            };
            // A column the INSERT leaves out takes its default, which the proxy cannot name;
            // an expression of the index, likewise (both are left to the shard).
            let Some(at): Option<Vec<usize>> = (!index.expression)
                .then(|| index.columns.iter().map(|c| position(c)).collect())
                .flatten()
            else {
                continue;
            };
            let over = Over {
                at: &at,
                seq: at
                    .iter()
                    .position(|&k| names[k].eq_ignore_ascii_case(&held.column)),
                key: position(&key_column),
                written: &written,
            };
            let (matches, seq_values) = match over.rows(rows, params) {
                RowsLook::Matches(m, v) => (m, v),
                RowsLook::Computed(e) => {
                    self.error(&computed(&e, &table, index, &key_column));
                    return Ok(Err(()));
                }
                RowsLook::Twice(values) => {
                    self.error(&duplicate(index, &values));
                    return Ok(Err(()));
                }
            };
            if matches.is_empty() {
                continue;
            }
            let sql = over.select(&table, &matches);
            let Some(check) = request(&sql, params, types) else {
                // Never left unlooked: a value given would go unchecked.
                self.error(&PgError::error(
                    sqlstate::INTERNAL_ERROR,
                    format!("could not build the look for the values given to {table}"),
                ));
                return Ok(Err(()));
            };
            out.checks.push(Check {
                index: index.clone(),
                request: check,
                fresh: with_literals(&sql, params),
            });
            if !seq_values.is_empty() && !advanced.contains(&held.sequence.as_str()) {
                advanced.push(&held.sequence);
                // Now, before the sequence fills this statement's other rows.
                if self.advance_past(&held.sequence, &seq_values).await? == Step::Failed {
                    return Ok(Err(()));
                }
            }
        }
        Ok(Ok((!out.checks.is_empty()).then_some(out)))
    }

    /// The unique indexes of sharded table `name` without `key_column` (the first shard's
    /// catalog, cached until DDL); None without a catalog, Err when it could not tell (the
    /// client's error written).
    pub(super) async fn indexes_without_key(
        &mut self,
        name: &ObjectName,
        key_column: &str,
    ) -> Result<Option<Vec<UniqueIndex>>, ()> {
        let Some(catalog) = self.catalog else {
            return Ok(None);
        };
        match catalog
            .unique_without_key(&last_ident(name), key_column)
            .await
        {
            Ok(found) => Ok(Some(found)),
            Err(e) => {
                self.error(&PgError::error(
                    "58000",
                    format!("cannot read the unique indexes of {name}: {e}"),
                ));
                Err(())
            }
        }
    }

    /// Runs `given` in the session's open transaction (see the module comment), before the
    /// INSERT's own requests; Failed with the client's error written.
    pub async fn claim_given_values(&mut self, given: &GivenValues) -> R<Step> {
        let Some(fresh) = self.lock_first(given).await? else {
            return Ok(Step::Failed);
        };
        let shards: Vec<usize> = (0..self.links.len()).collect();
        let mut lock = BytesMut::new();
        build::query(&given.lock, &mut lock);
        for (i, check) in given.checks.iter().enumerate() {
            // The other shards take their lock and run the first look in one round trip: a
            // shard runs the look once the lock is granted, in a snapshot taken then.
            let locking = |s: usize| i == 0 && s != HOME;
            for &s in &shards {
                if locking(s) {
                    self.links[s].send(&lock).await?;
                }
                self.links[s].send(&check.request).await?;
            }
            let (mut found, mut failure) = (None, None);
            for &s in &shards {
                if locking(s) {
                    if let Some(e) = self.quiet_until_ready(s).await? {
                        failure.get_or_insert(e);
                    }
                }
                let (values, error) = self.values_until_ready(s).await?;
                failure = failure.or(error);
                found = found.or(values.into_iter().next());
            }
            if let Some(e) = failure {
                self.own_error(&e);
                return Ok(Step::Failed);
            }
            if fresh && found.is_none() {
                match self.look_afresh(check, &shards).await {
                    Ok(f) => found = f,
                    Err(e) => return Ok(self.error(&e)),
                }
            }
            if let Some(value) = found {
                return Ok(self.error(&duplicate(&check.index, &value)));
            }
        }
        Ok(Step::Done)
    }

    /// Enlists every shard and takes `given`'s lock on the first; None when that failed (the
    /// client's error written), else whether the look must also be made afresh.
    pub(super) async fn lock_first(&mut self, given: &GivenValues) -> R<Option<bool>> {
        for s in 0..self.links.len() {
            if self.enlist(s).await? == Step::Failed {
                return Ok(None);
            }
        }
        // Asked before anything is sent.
        let fresh = self.needs_fresh_look().await?;
        // The first shard first: whoever holds it meets on the others only a writer it waits
        // for, never one waiting for it.
        if let Some(e) = self.run_quiet(HOME, &given.lock).await? {
            self.own_error(&e);
            return Ok(None);
        }
        Ok(Some(fresh))
    }

    /// Whether the transaction's snapshot may predate the lock (REPEATABLE READ, a snapshot
    /// cut): it sees its own rows but not what another committed while it waited, so the
    /// proxy's own connection looks too, in a snapshot taken then.
    pub(super) async fn needs_fresh_look(&mut self) -> R<bool> {
        Ok(matches!(&self.txn, TxnState::Open(t) if t.snapshot)
            || self.txn_isolation().await? != Isolation::ReadCommitted)
    }

    /// `check` on the proxy's own connection to each shard: the first value found.
    async fn look_afresh(
        &self,
        check: &Check,
        shards: &[usize],
    ) -> Result<Option<String>, PgError> {
        let Some(sql) = &check.fresh else {
            return Err(PgError::error(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!("a value bound in binary for {} cannot be looked for outside this transaction's snapshot", check.index.columns.join(", ")),
            )
            .with_hint("Bind it in text or as an integer, or run the INSERT at READ COMMITTED."));
        };
        let Some(catalog) = self.catalog else {
            return Ok(None);
        };
        for &s in shards {
            let found = catalog.texts_of(s, sql).await.map_err(|e| {
                PgError::error("58000", format!("cannot look for the values given: {e}"))
            })?;
            if let Some(v) = found.into_iter().flatten().next() {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// Moves `sequence` past the values `given` and drops them from the cache of drawn values.
    pub(super) async fn advance_past(&mut self, sequence: &str, values: &[i64]) -> R<Step> {
        let Some(&most) = values.iter().max() else {
            return Ok(Step::Done);
        };
        if let Some(blocks) = self.key_blocks {
            blocks.drop_values(sequence, values);
        }
        let literal = crate::sql::string_literal(sequence);
        // Calls of nextval that leave the sequence at or past `most` (none for a sequence that
        // counts down, which the proxy never moves).
        let (needed, error) = self
            .query_values(
                HOME,
                &format!(
                    "SELECT GREATEST(0, CASE WHEN q.seqincrement OPERATOR(pg_catalog.>) 0 \
                     THEN pg_catalog.ceil(({most}::pg_catalog.numeric OPERATOR(pg_catalog.-) s.last_value) \
                     OPERATOR(pg_catalog./) q.seqincrement)::pg_catalog.int8 \
                     OPERATOR(pg_catalog.+) (NOT s.is_called)::pg_catalog.int4 ELSE 0 END)::pg_catalog.text \
                     FROM {sequence} s, pg_catalog.pg_sequence q \
                     WHERE q.seqrelid OPERATOR(pg_catalog.=) {literal}::pg_catalog.regclass"
                ),
            )
            .await?;
        if let Some(e) = error {
            self.own_error(&e);
            return Ok(Step::Failed);
        }
        let needed: i64 = needed.first().and_then(|n| n.parse().ok()).unwrap_or(0);
        if needed == 0 {
            return Ok(Step::Done);
        }
        if needed > MOST_ADVANCE {
            return Ok(self.error(
                &PgError::error(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    format!("value {most} is too far ahead of sequence {sequence} for the proxy to move it there"),
                )
                .with_detail("A value given for a column the sequence fills must be one the sequence will not hand out later, so the proxy moves the sequence past it; this one is more than a million values ahead.")
                .with_hint(format!("Move the sequence first: SELECT setval({literal}, {most});")),
            ));
        }
        let (_, error) = self
            .query_values(
                HOME,
                &format!(
                    "SELECT pg_catalog.count(pg_catalog.nextval({literal}::pg_catalog.regclass))::pg_catalog.text \
                     FROM pg_catalog.generate_series(1, {needed})"
                ),
            )
            .await?;
        if let Some(e) = error {
            self.own_error(&e);
            return Ok(Step::Failed);
        }
        Ok(Step::Done)
    }

    /// An error of one of the proxy's own statements: it carries no position in the client's
    /// text.
    pub(super) fn own_error(&mut self, e: &crate::protocol::Frame) {
        let rewritten = std::mem::replace(&mut self.rewritten, true);
        self.shard_error(e);
        self.rewritten = rewritten;
    }
}
