//! The session's transaction as the client sees it, over any number of shard transactions.
//!
//! Shards are enlisted lazily: the client's BEGIN (with its isolation level and access mode) is
//! replayed on a shard the first time a statement touches it. Until two-phase commit exists, at
//! most one enlisted shard may be written; commit then commits that shard first and the read-only
//! ones after it, so the commit is atomic.

use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnState {
    Idle,
    Open(OpenTxn),
    /// An error happened in an explicit transaction: only COMMIT/ROLLBACK are accepted.
    Failed(BTreeSet<usize>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenTxn {
    /// BEGIN text replayed on each shard as it enlists.
    pub begin: String,
    /// Implicit: a multi-statement simple Query outside a transaction block.
    pub implicit: bool,
    pub enlisted: BTreeSet<usize>,
    pub written: Option<usize>,
}

impl TxnState {
    pub fn begin(text: String, implicit: bool) -> TxnState {
        TxnState::Open(OpenTxn {
            begin: text,
            implicit,
            enlisted: BTreeSet::new(),
            written: None,
        })
    }

    /// ReadyForQuery status byte.
    pub fn status(&self) -> u8 {
        match self {
            TxnState::Idle => b'I',
            TxnState::Open(t) if t.implicit => b'I',
            TxnState::Open(_) => b'T',
            TxnState::Failed(_) => b'E',
        }
    }

    /// Shards with an open transaction.
    pub fn enlisted(&self) -> BTreeSet<usize> {
        match self {
            TxnState::Idle => BTreeSet::new(),
            TxnState::Open(t) => t.enlisted.clone(),
            TxnState::Failed(s) => s.clone(),
        }
    }

    /// After an error: an explicit transaction fails, an implicit one is over (rolled back).
    pub fn fail(&mut self) {
        *self = match std::mem::replace(self, TxnState::Idle) {
            TxnState::Open(t) if !t.implicit => TxnState::Failed(t.enlisted),
            TxnState::Failed(s) => TxnState::Failed(s),
            _ => TxnState::Idle,
        };
    }
}

/// Whether a write on `shard` is allowed in `txn` (at most one written shard), recording it.
pub fn note_write(txn: &mut OpenTxn, shard: usize) -> Result<(), usize> {
    match txn.written {
        Some(w) if w != shard => Err(w),
        _ => {
            txn.written = Some(shard);
            Ok(())
        }
    }
}

/// Commit order: the written shard first (its commit is the decision), then the read-only ones.
pub fn commit_order(txn: &OpenTxn) -> Vec<usize> {
    let mut order: Vec<usize> = txn.written.into_iter().collect();
    order.extend(
        txn.enlisted
            .iter()
            .copied()
            .filter(|s| Some(*s) != txn.written),
    );
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_failure() {
        let mut t = TxnState::begin("BEGIN".into(), false);
        assert_eq!(t.status(), b'T');
        t.fail();
        assert_eq!(t.status(), b'E');
        let mut i = TxnState::begin("BEGIN".into(), true);
        assert_eq!(i.status(), b'I');
        i.fail();
        assert_eq!(i, TxnState::Idle);
    }

    #[test]
    fn one_written_shard_and_it_commits_first() {
        let TxnState::Open(mut t) = TxnState::begin("BEGIN".into(), false) else {
            unreachable!()
        };
        t.enlisted.extend([0, 1, 2]);
        assert_eq!(note_write(&mut t, 2), Ok(()));
        assert_eq!(note_write(&mut t, 2), Ok(()));
        assert_eq!(note_write(&mut t, 1), Err(2));
        assert_eq!(commit_order(&t), vec![2, 0, 1]);
    }
}
