//! The arbiters of `INSERT ... ON CONFLICT` into a sharded table that the statement's text does
//! not spell out: a constraint named (`ON CONFLICT ON CONSTRAINT name`), or every unique index
//! of the table (`ON CONFLICT DO NOTHING` without a target).
//!
//! Each row goes to its key's shard, and PostgreSQL looks for a conflicting row there only, so
//! an arbiter must include the shard key (a list of columns is judged from the text, see
//! `router::plan::conflict_target`). These are judged by the first shard's catalog, before
//! anything runs: a named constraint without the key is refused (0A000); without a target,
//! so is the statement when a unique index without the key (one the DDL checks admit because
//! the cluster's sequence fills its column, or one made on a shard directly) has every column
//! given by the INSERT as the client wrote it, since only then can the application's own values
//! meet a row on another shard. A name the catalog does not show (made in the session's open
//! transaction, or not at all) leaves the statement to the shard.
//!
//! Such an INSERT never takes the extended protocol's one-shard fast path, which sends the
//! client's messages without this look (`needs_arbiter_look`).

use super::session::{Exec, R};
use crate::error::{sqlstate, PgError};
use crate::placement::TableRule;
use crate::router::plan::last_ident;
use sqlparser::ast::{ConflictTarget, OnConflictAction, OnInsert, Statement, TableObject};

/// What an upsert leaves the catalog to tell.
enum Arbiter {
    /// `ON CONSTRAINT name`.
    Named(String),
    /// `DO NOTHING` without a target: any unique index; the columns the INSERT gives (None:
    /// every column, as without a column list).
    Any(Option<Vec<String>>),
}

impl Exec<'_> {
    /// Whether `stmt` is an upsert into a sharded table whose arbiters the catalog must tell.
    pub fn needs_arbiter_look(&self, stmt: &Statement) -> bool {
        self.upsert(stmt).is_some()
    }

    /// Ok(false) when the statement was refused (its error written for the client).
    pub async fn upsert_arbiters_kept(&mut self, stmt: &Statement) -> R<bool> {
        let Some((table, key_column, arbiter)) = self.upsert(stmt) else {
            return Ok(true);
        };
        let Some(catalog) = self.catalog else {
            return Ok(true);
        };
        let (looked, what) = match &arbiter {
            Arbiter::Named(constraint) => (
                catalog
                    .constraint_columns(&table, constraint)
                    .await
                    .map(|c| vec![c].into_iter().filter(|c| !c.is_empty()).collect()),
                format!("ON CONFLICT ON CONSTRAINT {constraint}"),
            ),
            Arbiter::Any(_) => (
                catalog
                    .unique_without_key(&table, &key_column)
                    .await
                    .map(|found| found.into_iter().map(|i| i.columns).collect()),
                "ON CONFLICT DO NOTHING".to_string(),
            ),
        };
        let indexes: Vec<Vec<String>> = match looked {
            Ok(indexes) => indexes,
            Err(e) => {
                // Without the arbiters' columns the statement could run where it is wrong.
                self.error(&PgError::error(
                    "58000",
                    format!("cannot read the arbiters of {what} on {table}: {e}"),
                ));
                return Ok(false);
            }
        };
        let holds = |columns: &Vec<String>| match &arbiter {
            Arbiter::Named(_) => columns.iter().any(|c| c.eq_ignore_ascii_case(&key_column)),
            // The application's values can meet another shard's row only where it gives them.
            Arbiter::Any(Some(given)) => !columns
                .iter()
                .all(|c| given.iter().any(|g| g.eq_ignore_ascii_case(c))),
            Arbiter::Any(None) => false,
        };
        let Some(columns) = indexes.iter().find(|c| !holds(c)) else {
            return Ok(true);
        };
        self.error(
            &PgError::error(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!(
                    "{what} on sharded table {table} would look for conflicts on one shard only: the unique columns ({}) leave out the shard key {key_column}",
                    columns.join(", ")
                ),
            )
            .with_hint(format!(
                "Rows with the same {} may sit on other shards, under another {key_column}. Include the shard key in the unique constraint and in the conflict target, or leave those columns to the sequence that fills them.",
                columns.join(", ")
            )),
        );
        Ok(false)
    }

    /// (table, key column, arbiter) of an upsert into a sharded table that names a constraint
    /// or no target.
    fn upsert(&self, stmt: &Statement) -> Option<(String, String, Arbiter)> {
        let Statement::Insert(ins) = stmt else {
            return None;
        };
        let TableObject::TableName(name) = &ins.table else {
            return None;
        };
        let Some(OnInsert::OnConflict(c)) = &ins.on else {
            return None;
        };
        let arbiter = match (&c.conflict_target, &c.action) {
            (Some(ConflictTarget::OnConstraint(constraint)), _) => {
                Arbiter::Named(last_ident(constraint))
            }
            (None, OnConflictAction::DoNothing) => Arbiter::Any(
                (!ins.columns.is_empty()).then(|| ins.columns.iter().map(last_ident).collect()),
            ),
            _ => return None,
        };
        let Some(TableRule::Sharded { key_column, .. }) = self.placement.rule(&name.to_string())
        else {
            return None;
        };
        Some((last_ident(name), key_column.clone(), arbiter))
    }
}
