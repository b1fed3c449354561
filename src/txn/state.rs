//! The session's transaction as the client sees it, over any number of shard transactions.
//!
//! Shards are enlisted lazily: the client's BEGIN (with its isolation level and access mode) and
//! every savepoint still active are replayed on a shard the first time a statement touches it, so
//! ROLLBACK TO works on shards enlisted after the savepoint was taken. The shards written are
//! recorded: one written shard commits plainly, two or more go through two-phase commit.

use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnState {
    Idle,
    Open(OpenTxn),
    /// An error happened in an explicit transaction: only COMMIT, ROLLBACK and ROLLBACK TO
    /// SAVEPOINT are accepted.
    Failed(OpenTxn),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenTxn {
    /// BEGIN text replayed on each shard as it enlists.
    pub begin: String,
    /// `SET TRANSACTION ...` the client sent before the transaction touched any shard,
    /// replayed right after BEGIN (where PostgreSQL allows them).
    pub characteristics: Vec<String>,
    /// Implicit: a multi-statement simple Query, or a multi-shard write, outside a transaction
    /// block.
    pub implicit: bool,
    pub enlisted: BTreeSet<usize>,
    pub written: BTreeSet<usize>,
    /// Active savepoints, oldest first, as (name to match, name as the client wrote it).
    pub savepoints: Vec<(String, String)>,
    /// Snapshot consistency: a REPEATABLE READ transaction reads one cut of every shard, taken
    /// under the gate at its first statement; a READ COMMITTED one gates each read of several
    /// shards (see `snapshot_read`).
    pub snapshot: bool,
    /// The shards of the cut, once taken.
    pub cut: Option<BTreeSet<usize>>,
    /// A session setting ran in this transaction (undone if it rolls back).
    pub changed_session: bool,
    /// Types this transaction created, which only its own connections can see yet.
    pub own_types: Vec<OwnType>,
    /// The transaction's time, as every shard's `now()` reads it (see `sql::clock`), once it
    /// has one: given to each shard as it enlists. None in a session that has not called the
    /// clock: each shard then keeps its own, which nothing has read.
    pub time: Option<String>,
    /// Enlisted shards that answer `time`: given it as they joined, or the shard it was read
    /// from.
    pub timed: BTreeSet<usize>,
    /// Of those, shards given the time after they joined (see `Exec::keep_one_clock`): a
    /// ROLLBACK TO may undo it there, so they lose their place in `timed` at every one.
    pub timed_late: BTreeSet<usize>,
}

/// One type the open transaction created, as one shard numbers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnType {
    pub shard: usize,
    pub oid: u32,
    /// Schema-qualified, as `backend::catalog::type_oids` names types.
    pub name: String,
}

/// A transaction's isolation level as PostgreSQL runs it (READ UNCOMMITTED is READ COMMITTED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    ReadCommitted,
    RepeatableRead,
    Serializable,
}

impl Isolation {
    /// The level named in `transaction_isolation`'s words, or in a statement that sets one
    /// (`BEGIN ISOLATION LEVEL ...`, `SET TRANSACTION ...`, `SET default_transaction_isolation`).
    pub fn named_in(text: &str) -> Option<Isolation> {
        let words: Vec<String> = text
            .split(|c: char| !c.is_ascii_alphabetic())
            .filter(|w| !w.is_empty())
            .map(|w| w.to_ascii_lowercase())
            .collect();
        // The last level named wins, as the last SET TRANSACTION does.
        (0..words.len())
            .rev()
            .find_map(|i| match words[i].as_str() {
                "serializable" => Some(Isolation::Serializable),
                "repeatable" => Some(Isolation::RepeatableRead),
                "committed" | "uncommitted" => Some(Isolation::ReadCommitted),
                _ => None,
            })
    }
}

/// A savepoint command that names no active savepoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoSuchSavepoint(pub String);

impl TxnState {
    pub fn begin(text: String, implicit: bool) -> TxnState {
        TxnState::Open(OpenTxn {
            begin: text,
            characteristics: Vec::new(),
            implicit,
            enlisted: BTreeSet::new(),
            written: BTreeSet::new(),
            savepoints: Vec::new(),
            snapshot: false,
            cut: None,
            changed_session: false,
            own_types: Vec::new(),
            time: None,
            timed: BTreeSet::new(),
            timed_late: BTreeSet::new(),
        })
    }

    /// ReadyForQuery status byte.
    pub fn status(&self) -> u8 {
        match self {
            TxnState::Idle => b'I',
            TxnState::Open(t) | TxnState::Failed(t) if t.implicit => b'I',
            TxnState::Open(_) => b'T',
            TxnState::Failed(_) => b'E',
        }
    }

    /// Shards with an open transaction.
    pub fn enlisted(&self) -> BTreeSet<usize> {
        match self {
            TxnState::Idle => BTreeSet::new(),
            TxnState::Open(t) | TxnState::Failed(t) => t.enlisted.clone(),
        }
    }

    /// Whether `shard` has joined the open transaction.
    pub fn has_enlisted(&self, shard: usize) -> bool {
        matches!(self, TxnState::Open(t) | TxnState::Failed(t) if t.enlisted.contains(&shard))
    }

    /// After an error. An explicit transaction waits for the client's ROLLBACK; an implicit
    /// one is rolled back by the session at the end of its statement or Sync.
    pub fn fail(&mut self) {
        *self = match std::mem::replace(self, TxnState::Idle) {
            TxnState::Open(t) | TxnState::Failed(t) => TxnState::Failed(t),
            TxnState::Idle => TxnState::Idle,
        };
    }

    /// An implicit transaction that failed: the session must roll it back.
    pub fn failed_implicit(&self) -> bool {
        matches!(self, TxnState::Failed(t) if t.implicit)
    }

    pub fn note_write(&mut self, shard: usize) {
        if let TxnState::Open(t) = self {
            t.written.insert(shard);
        }
    }
}

/// The level a BEGIN / START TRANSACTION / SET TRANSACTION statement sets, if it names one.
fn level_set_by(statement: &str) -> Option<Isolation> {
    let lower = statement.to_ascii_lowercase();
    lower
        .contains("isolation")
        .then(|| Isolation::named_in(&lower))
        .flatten()
}

/// A savepoint name as PostgreSQL matches it: folded to lower case unless quoted.
pub fn savepoint_key(name: &str) -> String {
    match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => name.to_ascii_lowercase(),
    }
}

impl OpenTxn {
    /// BEGIN and the client's SET TRANSACTION statements.
    pub fn begin_sql(&self) -> String {
        let mut sql = self.begin.clone();
        for c in &self.characteristics {
            sql.push_str("; ");
            sql.push_str(c);
        }
        sql
    }

    /// Gives the shard the transaction's time: a SET LOCAL, which takes no snapshot (so a
    /// REPEATABLE READ transaction's snapshot is still taken by its first statement there).
    /// It follows any SET TRANSACTION and precedes the savepoints, so that no ROLLBACK TO
    /// undoes it.
    pub fn time_sql(&self) -> Option<String> {
        let time = self.time.as_ref()?;
        Some(format!(
            "SET LOCAL {} = '{time}'",
            crate::sql::clock::TIME_SETTING
        ))
    }

    /// The level this transaction runs at: the last one its BEGIN or SET TRANSACTION named,
    /// else the session's default.
    pub fn isolation(&self, default: Isolation) -> Isolation {
        self.named_isolation().unwrap_or(default)
    }

    /// The level the client's BEGIN or SET TRANSACTION named, if any did.
    pub fn named_isolation(&self) -> Option<Isolation> {
        self.characteristics
            .iter()
            .rev()
            .find_map(|c| level_set_by(c))
            .or_else(|| level_set_by(&self.begin))
    }

    /// Statements in `opening()`, each answering with one command tag.
    pub fn opening_commands(&self) -> usize {
        1 + usize::from(self.time.is_some()) + self.characteristics.len() + self.savepoints.len()
    }

    /// The text that opens this transaction on a newly enlisted shard: BEGIN, the client's SET
    /// TRANSACTION statements, the transaction's time if it has one, and every active
    /// savepoint.
    pub fn opening(&self) -> String {
        let mut sql = self.begin_sql();
        if let Some(time) = self.time_sql() {
            sql.push_str("; ");
            sql.push_str(&time);
        }
        for (_, raw) in &self.savepoints {
            sql.push_str("; SAVEPOINT ");
            sql.push_str(raw);
        }
        sql
    }

    pub fn savepoint(&mut self, raw: &str) {
        self.savepoints.push((savepoint_key(raw), raw.to_string()));
    }

    /// RELEASE: the savepoint and every later one are gone.
    pub fn release(&mut self, raw: &str) -> Result<(), NoSuchSavepoint> {
        let i = self.find(raw)?;
        self.savepoints.truncate(i);
        Ok(())
    }

    /// ROLLBACK TO: later savepoints are gone, this one stays.
    pub fn rollback_to(&mut self, raw: &str) -> Result<(), NoSuchSavepoint> {
        let i = self.find(raw)?;
        self.savepoints.truncate(i + 1);
        for shard in std::mem::take(&mut self.timed_late) {
            self.timed.remove(&shard);
        }
        Ok(())
    }

    fn find(&self, raw: &str) -> Result<usize, NoSuchSavepoint> {
        let key = savepoint_key(raw);
        self.savepoints
            .iter()
            .rposition(|(k, _)| *k == key)
            .ok_or(NoSuchSavepoint(key))
    }

    /// One-phase commit order: the written shard first (its commit is the decision), then the
    /// read-only ones.
    pub fn commit_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = self.written.iter().copied().collect();
        order.extend(
            self.enlisted
                .iter()
                .copied()
                .filter(|s| !self.written.contains(s)),
        );
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> OpenTxn {
        let TxnState::Open(t) = TxnState::begin("BEGIN".into(), false) else {
            unreachable!()
        };
        t
    }

    #[test]
    fn statuses_and_failure() {
        let mut t = TxnState::begin("BEGIN".into(), false);
        assert_eq!(t.status(), b'T');
        t.fail();
        assert_eq!(t.status(), b'E');
        let mut i = TxnState::begin("BEGIN".into(), true);
        assert_eq!(i.status(), b'I');
        i.fail();
        assert!(i.failed_implicit());
        assert_eq!(i.status(), b'I');
    }

    #[test]
    fn isolation_comes_from_the_last_statement_that_names_one() {
        let rc = Isolation::ReadCommitted;
        let mut t = open();
        assert_eq!(t.isolation(rc), rc);
        assert_eq!(
            t.isolation(Isolation::Serializable),
            Isolation::Serializable
        );
        t.begin = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY".into();
        assert_eq!(t.isolation(rc), Isolation::RepeatableRead);
        t.characteristics.push("set transaction read write".into());
        assert_eq!(t.isolation(rc), Isolation::RepeatableRead);
        t.characteristics
            .push("SET TRANSACTION ISOLATION LEVEL READ UNCOMMITTED".into());
        assert_eq!(t.isolation(Isolation::Serializable), rc);
        assert_eq!(
            Isolation::named_in("serializable"),
            Some(Isolation::Serializable)
        );
        assert_eq!(Isolation::named_in("read committed"), Some(rc));
        assert_eq!(Isolation::named_in("default"), None);
    }

    #[test]
    fn written_shards_commit_first() {
        let mut t = open();
        t.enlisted.extend([0, 1, 2]);
        t.written.insert(2);
        assert_eq!(t.commit_order(), vec![2, 0, 1]);
    }

    #[test]
    fn savepoints_replay_and_unwind_like_postgres() {
        let mut t = open();
        assert_eq!(t.opening(), "BEGIN");
        assert_eq!(t.opening_commands(), 1);
        t.time = Some("2026-12-04 22:26:22.698738+00".into());
        let time = "SET LOCAL shardgate.transaction_time = '2026-12-04 22:26:22.698738+00'";
        t.savepoint("a");
        t.savepoint("\"B\"");
        t.savepoint("a");
        assert_eq!(
            t.opening(),
            format!("BEGIN; {time}; SAVEPOINT a; SAVEPOINT \"B\"; SAVEPOINT a")
        );
        assert_eq!(t.opening_commands(), 5);
        // ROLLBACK TO the latest "a" keeps it.
        t.rollback_to("A").unwrap();
        assert_eq!(t.savepoints.len(), 3);
        t.release("\"B\"").unwrap();
        assert_eq!(t.opening(), format!("BEGIN; {time}; SAVEPOINT a"));
        assert_eq!(t.release("b"), Err(NoSuchSavepoint("b".into())));
    }
}
