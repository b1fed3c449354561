//! DO blocks and CALL (`Plan::Procedural`): code the proxy cannot read.
//!
//! It runs on every shard inside one distributed transaction (the client's, or its own), as DDL
//! does, which is right for what such code is used for: schema changes, reference-table upkeep,
//! notices. A row it wrote to a sharded table would have been written on every shard, though,
//! and what it read of one would be each shard's part only (a reference row computed from it
//! would differ between copies). So each shard counts, before and after the code in the same
//! request, the rows of sharded tables its transaction has inserted, updated or deleted and the
//! scans it has made of them (`pg_stat_xact_user_tables`); any change refuses the statement,
//! and the transaction's rollback takes the rows back. The client sees the home shard's answer
//! (a CALL's output row, its notices). Before the code runs, it takes the writers' turn of
//! every declared reference table, as a write of one takes that table's.

use super::session::{Exec, Step, R};
use crate::error::{sqlstate, PgError};
use crate::placement::{Placement, TableRule};
use crate::protocol::{build, inspect};
use crate::router::plan::HOME;
use bytes::BytesMut;

/// Rows of the sharded tables this transaction has written, and scans it has made of them, on
/// one shard; None when no table is sharded (nothing to guard).
fn written_rows_query(placement: &Placement) -> Option<String> {
    let mut names: Vec<String> = placement
        .tables
        .iter()
        .filter(|(_, rule)| matches!(rule, TableRule::Sharded { .. }))
        .map(|(name, _)| crate::sql::string_literal(name))
        .collect();
    if names.is_empty() {
        return None;
    }
    names.sort();
    Some(format!(
        "SELECT coalesce(pg_catalog.sum(n_tup_ins OPERATOR(pg_catalog.+) n_tup_upd \
         OPERATOR(pg_catalog.+) n_tup_del OPERATOR(pg_catalog.+) seq_scan \
         OPERATOR(pg_catalog.+) coalesce(idx_scan, 0)), 0) \
         FROM pg_catalog.pg_stat_xact_user_tables \
         WHERE relname OPERATOR(pg_catalog.=) ANY (ARRAY[{}]::pg_catalog.name[])",
        names.join(", ")
    ))
}

/// The declared reference tables, as their writers name their turns, sorted.
fn reference_tables(placement: &Placement) -> Vec<String> {
    let mut names: Vec<String> = placement
        .tables
        .iter()
        .filter(|(_, rule)| matches!(rule, TableRule::Reference))
        .map(|(name, _)| name.to_lowercase())
        .collect();
    names.sort();
    names.dedup();
    names
}

impl Exec<'_> {
    pub async fn procedural(&mut self, sql: &str) -> R<Step> {
        let own = self.own_implicit();
        let held = self.hold_answer();
        let step = self.procedural_everywhere(sql).await;
        let step = self.key_columns_kept(held, step).await?;
        let step = self.learn_functions(step).await?;
        self.end_own_implicit(own, step).await
    }

    async fn procedural_everywhere(&mut self, sql: &str) -> R<Step> {
        let all: Vec<usize> = (0..self.links.len()).collect();
        for &s in &all {
            self.txn.note_write(s);
            if self.enlist(s).await? == Step::Failed {
                return Ok(Step::Failed);
            }
        }
        // Code that writes a reference table writes each copy itself: it takes every reference
        // table's writers' turn first (in one order), so that its writes and other writers'
        // reach the copies in the same order and a serial hands out the same values on each.
        let turns = reference_tables(&self.placement);
        if !turns.is_empty() {
            let names: Vec<&str> = turns.iter().map(String::as_str).collect();
            let turn = super::write::reference_turn(&names);
            if let Some(err) = self.run_quiet(HOME, &turn).await? {
                self.shard_error(&err);
                return Ok(Step::Failed);
            }
        }
        let code = sql.trim().trim_end_matches(';');
        let guard = written_rows_query(&self.placement);
        let (text, prefix, code_index) = match &guard {
            Some(g) => (
                format!("{g};\n{code};\n{g}"),
                g.chars().count() as u64 + 2,
                1,
            ),
            None => (code.to_string(), 0, 0),
        };
        let mut q = BytesMut::new();
        build::query(&text, &mut q);
        for &s in &all {
            self.links[s].send(&q).await?;
        }
        let mut failed = false;
        let mut wrote_sharded = false;
        // The home shard's answer, held until every shard's counts are in.
        let mut answer = BytesMut::new();
        for &s in &all {
            // Which statement of the request is answering: the counts bracket the code.
            let mut index = 0;
            let mut counts: Vec<String> = Vec::new();
            loop {
                let f = self.links[s].recv().await?;
                match f.tag {
                    b'Z' => break,
                    b'E' => {
                        if !failed {
                            if s == HOME {
                                self.shard_error_after(&f, prefix);
                            } else {
                                self.shard_error(&f);
                            }
                        }
                        failed = true;
                    }
                    b'D' if index != code_index => {
                        if let Some(Some(v)) = inspect::data_row_column(f.body(), 0) {
                            counts.push(String::from_utf8_lossy(v).into_owned());
                        }
                    }
                    b'C' | b'I' => {
                        if s == HOME && index == code_index {
                            answer.extend_from_slice(&f.bytes);
                        }
                        index += 1;
                    }
                    b'T' if index != code_index => {}
                    _ if s == HOME && index == code_index => answer.extend_from_slice(&f.bytes),
                    _ => {}
                }
            }
            if counts.len() == 2 && counts[0] != counts[1] {
                wrote_sharded = true;
            }
        }
        if failed {
            return Ok(Step::Failed);
        }
        if wrote_sharded {
            let verb = code
                .split_whitespace()
                .next()
                .unwrap_or("DO")
                .to_uppercase();
            return Ok(self.error(
                &PgError::error(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    format!("{verb} read or wrote rows of a sharded table, which every shard would do with its own rows"),
                )
                .with_hint("shardgate runs DO and CALL on every shard, for schema changes and reference tables. Read and write sharded rows with plain statements, which are routed and merged."),
            ));
        }
        self.out.extend_from_slice(&answer);
        Ok(Step::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::KeyType;
    use std::collections::HashMap;

    #[test]
    fn only_sharded_tables_are_guarded() {
        let mut tables = HashMap::new();
        tables.insert("countries".to_string(), TableRule::Reference);
        let mut p = Placement {
            tables,
            slots: crate::placement::SlotTable::derive(&["a".to_string(), "b".to_string()]),
            shard_names: vec!["a".into(), "b".into()],
            undeclared: None,
            version: 0,
            unroutable: Default::default(),
            aggregates: Default::default(),
            function_words: Default::default(),
            function_writes: Default::default(),
        };
        assert_eq!(written_rows_query(&p), None);
        p.tables.insert(
            "o'brien".to_string(),
            TableRule::Sharded {
                key_column: "id".into(),
                key_type: KeyType::Integer,
            },
        );
        let q = written_rows_query(&p).unwrap();
        assert!(
            q.ends_with("ANY (ARRAY['o''brien']::pg_catalog.name[])"),
            "{q}"
        );
    }
}
