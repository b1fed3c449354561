//! A sharded table's key column, unique indexes, the foreign keys that reference it and the
//! triggers that write across the placement, after a statement that may change them on every
//! shard (DDL, procedural code): checked in the statement's own transaction, before anything
//! commits, against each shard's catalog (the judgements are `backend::key_columns`'s and
//! `backend::per_shard_constraints`'s).
//!
//! The router refuses a CREATE or ALTER TABLE it can read that would give a key column a type
//! it cannot be routed by (`router::plan::create_table`). The forms it cannot read run as
//! they are: `CREATE TABLE ... AS` and `(LIKE ...)`, whose columns come from elsewhere, an
//! ALTER with a COLLATE, code in `DO`. Checking what the statement left behind covers them all.
//! The statement's answer is held until the check passes, so that a refused statement reports
//! only its error.

use super::session::{Exec, Step, R};
use crate::error::PgError;

/// Where a held answer starts in the output, and whether output was held before.
pub struct Held {
    start: usize,
    was: bool,
}

impl Exec<'_> {
    /// Holds what the next statement answers until `key_columns_kept`.
    pub fn hold_answer(&mut self) -> Held {
        let held = Held {
            start: self.out.len(),
            was: self.hold_output,
        };
        self.hold_output = true;
        held
    }

    /// Ends `hold_answer`. After a statement that succeeded, every shard is asked in the open
    /// transaction whether a declared sharded table's key column has become one the proxy
    /// cannot route by, and whether the statement made a unique index on one, or a foreign key
    /// referencing one, that each shard would check against its own rows only, or a trigger
    /// that would write across the placement; a refusal takes the statement's answer back and
    /// fails it, which rolls back a transaction of its own and fails the client's.
    pub async fn key_columns_kept(&mut self, held: Held, step: R<Step>) -> R<Step> {
        use crate::backend::per_shard_constraints::{self as constraints, Kind};
        self.hold_output = held.was;
        let step = step?;
        if step != Step::Done {
            return Ok(step);
        }
        // A table the watch found bad already has its rows refused (`Placement::unroutable`):
        // judging it again would refuse every DDL, on any table, until it is put right.
        let known = &self.placement.unroutable;
        let wanted = |table: &str| !known.contains_key(table);
        let mut checks = vec![(
            crate::backend::key_columns::refusals_sql(&self.placement, wanted),
            crate::backend::key_columns::HINT,
        )];
        for kind in Kind::ALL {
            checks.push((
                constraints::refusals_sql(kind, &self.placement),
                kind.hint(),
            ));
        }
        let checks: Vec<(String, &str)> = checks
            .into_iter()
            .filter_map(|(sql, hint)| Some((sql?, hint)))
            .collect();
        if checks.is_empty() {
            return Ok(step);
        }
        // One Query of every check, sent to all shards before any answer is read: DDL through
        // the proxy pays one round trip for them, not one per check and shard.
        let text: Vec<&str> = checks.iter().map(|(sql, _)| sql.as_str()).collect();
        let shards: Vec<usize> = (0..self.links.len()).collect();
        let answers = self.statements_values(&shards, &text.join(";\n")).await?;
        if let Some(e) = answers.iter().find_map(|(_, error)| error.clone()) {
            self.out.truncate(held.start);
            self.out.extend_from_slice(&e.bytes);
            return Ok(Step::Failed);
        }
        for (i, (_, hint)) in checks.iter().enumerate() {
            for (shard, (statements, _)) in answers.iter().enumerate() {
                let Some(refusal) = statements.get(i).and_then(|rows| rows.first()) else {
                    continue;
                };
                self.out.truncate(held.start);
                let name = &self.placement.shard_names[shard];
                return Ok(self.error(
                    &PgError::error(
                        crate::error::sqlstate::FEATURE_NOT_SUPPORTED,
                        format!("shard {name}: {refusal}"),
                    )
                    .with_hint(*hint),
                ));
            }
        }
        Ok(step)
    }
}
