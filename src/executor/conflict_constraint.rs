//! `INSERT ... ON CONFLICT ON CONSTRAINT name` into a sharded table.
//!
//! Each row goes to its key's shard, and PostgreSQL looks for a conflicting row there only, so
//! an upsert's arbiter must include the shard key (see `router::plan::conflict_target`, which
//! judges a list of columns from the text). A constraint named instead of its columns is
//! judged here, by its columns in the first shard's catalog: without the key it is refused
//! (0A000) before anything runs. A name the catalog does not know (made in the session's open
//! transaction, or not at all) leaves the statement to the shard, which knows it or answers
//! that it does not exist.
//!
//! Such an INSERT never takes the extended protocol's one-shard fast path, which sends the
//! client's messages without this look (`names_conflict_constraint`).

use super::session::{Exec, R};
use crate::error::{sqlstate, PgError};
use crate::placement::TableRule;
use crate::router::plan::last_ident;
use sqlparser::ast::{ConflictTarget, ObjectName, OnInsert, Statement, TableObject};

impl Exec<'_> {
    /// Whether `stmt` is an INSERT into a sharded table whose ON CONFLICT names a constraint.
    pub fn names_conflict_constraint(&self, stmt: &Statement) -> bool {
        self.conflict_constraint(stmt).is_some()
    }

    /// Ok(false) when the statement was refused (its error written for the client).
    pub async fn conflict_constraint_kept(&mut self, stmt: &Statement) -> R<bool> {
        let Some((table, constraint, key_column)) = self.conflict_constraint(stmt) else {
            return Ok(true);
        };
        let Some(catalog) = self.catalog else {
            return Ok(true);
        };
        let columns = match catalog.constraint_columns(&table, &constraint).await {
            Ok(columns) => columns,
            Err(e) => {
                // Without its columns the statement could run where it is wrong: refused.
                self.error(&PgError::error(
                    "58000",
                    format!("cannot read the columns of constraint {constraint} to place an upsert: {e}"),
                ));
                return Ok(false);
            }
        };
        if columns.is_empty() || columns.iter().any(|c| c.eq_ignore_ascii_case(&key_column)) {
            return Ok(true);
        }
        self.error(
            &PgError::error(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!(
                    "ON CONFLICT ON CONSTRAINT {constraint} on sharded table {table} would look for conflicts on one shard only: the constraint's columns ({}) leave out the shard key {key_column}",
                    columns.join(", ")
                ),
            )
            .with_hint(format!(
                "Rows with the same {} may sit on other shards, under another {key_column}. Include the shard key in the constraint and in the conflict target, or update by the shard key.",
                columns.join(", ")
            )),
        );
        Ok(false)
    }

    /// (table, constraint, key column) of an INSERT into a sharded table with ON CONFLICT ON
    /// CONSTRAINT.
    fn conflict_constraint(&self, stmt: &Statement) -> Option<(String, String, String)> {
        let Statement::Insert(ins) = stmt else {
            return None;
        };
        let TableObject::TableName(name) = &ins.table else {
            return None;
        };
        let Some(OnInsert::OnConflict(c)) = &ins.on else {
            return None;
        };
        let Some(ConflictTarget::OnConstraint(constraint)) = &c.conflict_target else {
            return None;
        };
        let Some(TableRule::Sharded { key_column, .. }) = self.placement.rule(&name.to_string())
        else {
            return None;
        };
        Some((
            last_ident(name),
            last_ident(constraint as &ObjectName),
            key_column.clone(),
        ))
    }
}
