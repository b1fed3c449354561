//! One time for every shard of a transaction, in a session that calls the clock (see
//! `sql::clock` for the rewritten calls and `txn::state` for the time an opening gives).
//!
//! A session that has called the clock gives each transaction the proxy's time at BEGIN, and
//! every shard gets it as it enlists. A session pays nothing for this until its first such
//! call. That call may come in a transaction that has already reached shards without a time,
//! and ROLLBACK TO may undo a time given to a shard after a savepoint; before each client
//! message such a transaction is put right here: its time is read from a shard it reached
//! (whose own start no statement has read yet, so it may stand for all), and every other shard
//! it reached is given that time.
//!
//! Invariant: shards are only asked between requests (`ShardLink::settled`); a transaction
//! whose connections are mid-conversation (extended messages sent without Sync) is put right
//! at the next message instead.

use super::session::{Exec, R};
use crate::txn::state::TxnState;

/// The shard's own transaction start, written as `sql::clock::time_text` writes the proxy's.
const OWN_TIME: &str = "SELECT pg_catalog.to_char(shardgate.now() AT TIME ZONE 'UTC', \
                        'YYYY-MM-DD HH24:MI:SS.US') || '+00'";

impl Exec<'_> {
    /// Before a read of `shards` outside a transaction block: one that calls the clock
    /// (`texts`, as sent to the shards) gets a transaction of its own, which gives every shard
    /// one time; true when it was opened here (the caller ends it with `end_own_implicit`).
    pub fn own_read_for_clock<'t>(
        &mut self,
        shards: &[usize],
        mut texts: impl Iterator<Item = &'t [u8]>,
    ) -> bool {
        shards.len() > 1
            && self.txn == TxnState::Idle
            && texts.any(crate::sql::clock::calls_stamped_clock)
            && self.own_implicit()
    }

    /// Gives every shard the open transaction reached the transaction's time, once the
    /// session calls the clock.
    pub async fn keep_one_clock(&mut self) -> R<()> {
        if !self.clock_seen {
            return Ok(());
        }
        let TxnState::Open(t) = &self.txn else {
            return Ok(());
        };
        if t.time.is_some() && t.enlisted.is_subset(&t.timed) {
            return Ok(());
        }
        let enlisted: Vec<usize> = t.enlisted.iter().copied().collect();
        if enlisted.iter().any(|&s| !self.links[s].settled()) {
            return Ok(());
        }
        if t.time.is_none() {
            let (time, from) = match enlisted.first() {
                None => (
                    crate::sql::clock::time_text(std::time::SystemTime::now()),
                    None,
                ),
                Some(&s) => match self.query_values(s, OWN_TIME).await? {
                    (values, None) if values.len() == 1 => (values[0].clone(), Some(s)),
                    (_, error) => return self.clock_failed(s, error),
                },
            };
            if let TxnState::Open(t) = &mut self.txn {
                t.time = Some(time);
                t.timed.extend(from);
            }
        }
        for s in enlisted {
            let Some(sql) = (match &self.txn {
                TxnState::Open(t) if !t.timed.contains(&s) => t.time_sql(),
                _ => None,
            }) else {
                continue;
            };
            if let Some(error) = self.run_quiet(s, &sql).await? {
                return self.clock_failed(s, Some(error));
            }
            if let TxnState::Open(t) = &mut self.txn {
                t.timed.insert(s);
                t.timed_late.insert(s);
            }
        }
        Ok(())
    }

    /// After a session statement ran on every shard: RESET ALL (or a RESET of the time's
    /// setting) in a transaction takes away the time its SET LOCAL gave each shard, so each is
    /// given it again before the next client message.
    pub(super) fn clock_maybe_reset(&mut self, sql: &str) {
        use crate::pool::settings::{classify, Change};
        let TxnState::Open(t) = &mut self.txn else {
            return;
        };
        let resets = match classify(sql) {
            Change::ResetAll => true,
            Change::Reset(name) => name.eq_ignore_ascii_case(crate::sql::clock::TIME_SETTING),
            _ => false,
        };
        if resets {
            t.timed.clear();
            t.timed_late.clear();
        }
    }

    /// A shard refused the proxy's own statement (it cannot, short of a broken `shardgate`
    /// schema): its part of the transaction is aborted, so the transaction is failed, and the
    /// client hears why with its next answer.
    fn clock_failed(&mut self, shard: usize, error: Option<crate::protocol::Frame>) -> R<()> {
        tracing::warn!(
            shard = %self.links[shard].name,
            "could not give the transaction its time on a shard"
        );
        if let Some(e) = error {
            self.shard_error(&e);
        }
        self.txn.fail();
        Ok(())
    }
}
