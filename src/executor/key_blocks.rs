//! The proxy's shared cache of values drawn from sequences, and what it learnt of each table's
//! sequence columns (see `key_sequence`, which hands them out to INSERTs).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// A column of a sharded table whose values come from a sequence on the first shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SequenceColumn {
    pub(in crate::executor) column: String,
    /// Schema-qualified, as `pg_get_serial_sequence` or the column default names it.
    pub(in crate::executor) sequence: String,
    /// The column's size in bytes (2, 4 or 8 for the integer types), for binary COPY.
    pub(in crate::executor) width: i16,
    /// Found only in the session's own transaction (created there and not committed yet): its
    /// values are drawn there too, since the proxy's connection cannot see the sequence.
    pub(in crate::executor) local: bool,
}

/// The proxy's shared cache of drawn values (by sequence), and what it learnt of each table.
#[derive(Debug, Default)]
pub struct KeyBlocks {
    pub(in crate::executor) values: Mutex<HashMap<String, VecDeque<i64>>>,
    pub(in crate::executor) columns: Mutex<HashMap<String, Vec<SequenceColumn>>>,
}

impl KeyBlocks {
    /// After DDL: tables may have been dropped and made again with other sequences.
    pub fn forget(&self) {
        self.columns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    pub(in crate::executor) fn take(&self, sequence: &str, n: usize) -> Option<Vec<i64>> {
        let mut values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        let cached = values.get_mut(sequence)?;
        (cached.len() >= n).then(|| cached.drain(..n).collect())
    }

    /// Values an INSERT gave its column itself: handed out later, they would meet its row.
    pub(in crate::executor) fn drop_values(&self, sequence: &str, given: &[i64]) {
        if let Some(cached) = self
            .values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(sequence)
        {
            cached.retain(|v| !given.contains(v));
        }
    }

    pub(in crate::executor) fn add(&self, sequence: &str, drawn: Vec<i64>) {
        self.values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(sequence.to_string())
            .or_default()
            .extend(drawn);
    }
}
