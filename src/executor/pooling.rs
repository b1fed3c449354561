//! What transaction pooling asks of a session: when it may give its server connections back,
//! what pins it to them, and how its settings and statement names follow it from one
//! connection to the next (see `pool`).

use super::session::{Exec, Step, R};
use crate::config::PoolMode;
use crate::error::PgError;
use crate::pool::settings::{self, Change};
use crate::protocol::build;
use crate::protocol::message::{ClientMessage, Kind, TargetKind};
use crate::txn::state::TxnState;

impl Exec<'_> {
    /// Makes an extended-protocol message what the shards must see: a Parse that leaves state
    /// on its connection pins the session, and under pooling statement names are the
    /// session's own. In place: a message is a few hundred bytes, and each move copies it.
    pub fn for_shards(&mut self, msg: &mut ClientMessage) {
        if let Kind::Parse(p) = &msg.kind {
            self.pin_for(&p.sql);
        }
        if self.pool.renames() {
            self.pool.names.rename(msg);
            if !self.pool.inlined.is_empty() {
                match &msg.kind {
                    // The name now stands for this Parse's statement, or for none.
                    Kind::Parse(p) => {
                        self.pool.inlined.remove(&p.name);
                    }
                    Kind::Close(t) if t.kind == TargetKind::Statement => {
                        self.pool.inlined.remove(&t.name);
                    }
                    _ => {}
                }
            }
            self.inline_execute(msg);
        }
    }

    /// Between requests: in transaction mode, a session outside any transaction, with nothing
    /// pending on a shard, gives its connections back.
    pub fn release_if_idle(&mut self, extended_pending: bool) {
        if !self.pool.shares()
            || self.txn != TxnState::Idle
            || extended_pending
            || !self.unsynced.is_empty()
            || !self.cursors.is_empty()
            || self.pending_cut.is_some()
        {
            return;
        }
        for link in &mut self.links {
            link.release();
        }
    }

    /// In transaction mode, a transaction takes a connection on every shard, in shard order,
    /// before its first statement. Taking them one by one as statements reach shards would
    /// let two transactions each hold what the other waits for (one holds shard 1 and wants
    /// shard 0, the other the reverse) until the checkout timeout ends one of them; one order
    /// for everybody rules that out. Statements outside a transaction take only their shards,
    /// in shard order as they are sent.
    pub async fn take_all_for_transaction(&mut self) -> R<()> {
        if !self.wants_all_for_transaction() {
            return Ok(());
        }
        for link in &mut self.links {
            link.ensure().await?;
        }
        Ok(())
    }

    /// Whether `take_all_for_transaction` has connections to take.
    pub fn wants_all_for_transaction(&self) -> bool {
        self.pool.mode == PoolMode::Transaction
            && self.txn != TxnState::Idle
            && !self.links.iter().all(|l| l.holds_conn())
    }

    /// Pins the session if any statement of `sql` may leave state on its connections (see
    /// `pool::pins`). SQL PREPARE does not: the session keeps those statements itself (see
    /// `sql_prepare`).
    pub fn pin_for(&mut self, sql: &str) {
        if !self.pool.shares() || self.pool.pins_nothing == sql {
            return;
        }
        match crate::pool::pins::pins_in(sql, true) {
            Some(why) => self.pin(why),
            None => {
                self.pool.pins_nothing.clear();
                self.pool.pins_nothing.push_str(sql);
            }
        }
    }

    fn pin(&mut self, why: &'static str) {
        if self.pool.pinned.is_none() {
            tracing::debug!("session pinned to its server connections: {why}");
            metrics::counter!(crate::metrics::POOL_PINS, "reason" => why).increment(1);
            self.pool.pinned = Some(why);
        }
    }

    /// The open transaction ended: its SETs take effect if it committed.
    pub(super) fn transaction_ended(&mut self, committed: bool) {
        if !self.pool.settings.has_pending() {
            self.pool.uncertain = false;
            return;
        }
        if committed {
            self.pool.settings.committed();
            if std::mem::take(&mut self.pool.uncertain) && self.pool.mode == PoolMode::Transaction {
                self.pin("a SET undone by ROLLBACK TO SAVEPOINT");
            }
            self.settings_changed(true);
        } else {
            self.pool.settings.rolled_back();
            self.pool.uncertain = false;
        }
    }

    /// ROLLBACK TO SAVEPOINT succeeded.
    pub(super) fn savepoint_rolled_back(&mut self) {
        if self.pool.settings.has_pending() {
            self.pool.uncertain = true;
        }
    }

    /// Every link checks out with the new settings; the connections held now ran them.
    fn settings_changed(&mut self, held_carry_them: bool) {
        let (replay, fingerprint) = (
            self.pool.settings.replay(),
            self.pool.settings.fingerprint(),
        );
        for link in &mut self.links {
            link.set_settings(replay.clone(), fingerprint);
            link.carries(if held_carry_them {
                fingerprint
            } else {
                settings::UNKNOWN
            });
        }
    }

    /// A session statement ran on every shard (SET, RESET ...), with this outcome.
    pub(super) fn session_statement_ran(&mut self, sql: &str, step: Step) {
        let in_transaction = self.txn != TxnState::Idle;
        match step {
            Step::Done => {
                self.pool.settings.ran(sql, in_transaction);
                // A RESET takes the held connections back to their own login's values, not to
                // the client's startup parameters the proxy replayed as SETs: what they carry
                // is then not the session's settings.
                let resets = matches!(settings::classify(sql), Change::Reset(_) | Change::ResetAll);
                if !in_transaction {
                    self.settings_changed(!resets);
                } else if resets {
                    for link in &mut self.links {
                        link.carries(settings::UNKNOWN);
                    }
                }
            }
            // Some shards may have run it: what the held connections carry is not known.
            Step::Failed if !in_transaction => self.settings_changed(false),
            Step::Failed => {}
        }
    }

    /// In transaction mode, DISCARD ALL outside a transaction is the proxy's: the shards'
    /// connections are shared, so it forgets this session's statements and settings rather
    /// than wipe other sessions' statements. None: the shards run it.
    pub(super) fn pooled_discard(&mut self, sql: &str) -> Option<Step> {
        if !self.pool.shares()
            || self.txn != TxnState::Idle
            || settings::classify(sql) != Change::DiscardAll
        {
            return None;
        }
        self.pool.names.forget_all();
        self.sql_statements.clear();
        self.deallocated.push(None);
        self.pool.settings.ran(sql, false);
        self.default_isolation = None;
        self.settings_changed(true);
        for link in &mut self.links {
            // Whatever a held connection carries, the next checkout replays from RESET.
            link.carries(settings::UNKNOWN);
        }
        build::command_complete("DISCARD ALL", &mut self.out);
        Some(Step::Done)
    }

    /// SQL DEALLOCATE of protocol-level statements in transaction mode: they live under this
    /// session's names on whichever connections prepared them, so the proxy forgets them (the
    /// connections drop them when they are retired). None: the shards run it.
    pub(super) fn pooled_deallocate(&mut self, name: Option<&str>) -> Option<Step> {
        if !self.pool.renames() {
            return None;
        }
        match name {
            None => {
                self.pool.names.forget_all();
                self.deallocated.push(None);
                build::command_complete("DEALLOCATE ALL", &mut self.out);
            }
            Some(name) => match self.pool.names.forget(name) {
                Some(shard_name) => {
                    self.deallocated.push(Some(shard_name));
                    build::command_complete("DEALLOCATE", &mut self.out);
                }
                None => {
                    return Some(self.error(&PgError::error(
                        "26000",
                        format!("prepared statement \"{name}\" does not exist"),
                    )))
                }
            },
        }
        Some(Step::Done)
    }
}
