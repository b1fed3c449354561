//! Values a COPY FROM STDIN gives a sequence-filled column that a unique index of its own
//! holds without the shard key (`id serial PRIMARY KEY` on a table sharded by `account_id`):
//! the COPY counterpart of `given_values`, for imports and restores that carry their ids.
//!
//! While the COPY runs, every shard connection is busy taking rows, so the look comes after
//! the rows are written, in the same transaction, before it commits: under the same lock as an
//! INSERT's, each shard is asked for a row holding one of the given values under a key other
//! than the one the COPY gave it (a row of another writer, or one of this COPY's on another
//! shard); one found fails the COPY with 23505, and nothing is kept. Rows under the same key
//! are on one shard, whose index judged them as they were written. Then the sequence moves
//! past the largest value given. Only an index on that one column is looked at: a value is
//! compared whole, and an index of several columns would need them all.

use super::given_lookup::{lock_for, request, with_literals, Check, GivenValues};
use super::session::{Exec, Step, R};
use crate::backend::catalog::UniqueIndex;
use crate::error::PgError;
use crate::placement::KeyValue;
use crate::router::copy::CopyIn;
use crate::router::params::Params;
use sqlparser::ast::Ident;

/// The look a COPY owes: its column, where rows carry it, and what to ask afterwards.
pub struct CopyGiven {
    /// The field of each row holding the value.
    pub at: usize,
    index: UniqueIndex,
    sequence: String,
    table: String,
    column: String,
    key_column: String,
}

/// A key as PostgreSQL's `key::text` writes it.
fn key_text(key: &KeyValue) -> String {
    match key {
        KeyValue::Integer(v) => v.to_string(),
        KeyValue::Text(s) => s.clone(),
        KeyValue::Uuid(b) => {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            format!(
                "{}-{}-{}-{}-{}",
                &hex[..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..]
            )
        }
    }
}

/// An array literal of `items`, each element quoted.
fn array_literal<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = items
        .map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", quoted.join(","))
}

impl Exec<'_> {
    /// The look a COPY into `plan`'s table with these `columns` (as the rows carry them) owes,
    /// if it gives a sequence column a unique index of its own holds without `key_column`;
    /// Err when the catalog could not tell (the error written for the client).
    pub async fn copy_given(
        &mut self,
        plan: &CopyIn,
        columns: &[String],
        key_column: &str,
    ) -> R<Result<Option<CopyGiven>, ()>> {
        let Some(at) = self
            .sequence_columns(&plan.table)
            .await?
            .into_iter()
            .filter(|s| !s.column.eq_ignore_ascii_case(key_column))
            .find_map(|s| {
                let at = columns
                    .iter()
                    .position(|c| c.eq_ignore_ascii_case(&s.column))?;
                Some((at, s))
            })
        else {
            return Ok(Ok(None));
        };
        let (at, sequence) = at;
        let Some(catalog) = self.catalog else {
            return Ok(Ok(None));
        };
        let bare = plan.table.rsplit('.').next().unwrap_or(&plan.table);
        let indexes = match catalog
            .unique_without_key(bare.trim_matches('"'), key_column)
            .await
        {
            Ok(found) => found,
            Err(e) => {
                self.error(&PgError::error(
                    "58000",
                    format!("cannot read the unique indexes of {}: {e}", plan.table),
                ));
                return Ok(Err(()));
            }
        };
        let Some(index) = indexes.into_iter().find(|i| {
            !i.expression
                && i.columns.len() == 1
                && i.columns[0].eq_ignore_ascii_case(&sequence.column)
        }) else {
            return Ok(Ok(None));
        };
        Ok(Ok(Some(CopyGiven {
            at,
            index,
            table: plan.table.clone(),
            column: sequence.column.clone(),
            sequence: sequence.sequence,
            key_column: key_column.to_string(),
        })))
    }

    /// After the COPY wrote its rows, `rows` (each row's given value and key): the look on
    /// every shard, then the sequence moved past them.
    pub async fn copy_given_look(
        &mut self,
        given: &CopyGiven,
        rows: &[(i64, KeyValue)],
    ) -> R<Step> {
        if rows.is_empty() {
            return Ok(Step::Done);
        }
        let column = Ident::with_quote('"', &given.column).to_string();
        let key = Ident::with_quote('"', &given.key_column).to_string();
        let sql = format!(
            "SELECT t.{column}::pg_catalog.text FROM {} t \
             JOIN (SELECT pg_catalog.unnest($1::pg_catalog.int8[]) AS v, \
                          pg_catalog.unnest($2::pg_catalog.text[]) AS k) AS g \
             ON t.{column} OPERATOR(pg_catalog.=) g.v \
             WHERE t.{key}::pg_catalog.text IS DISTINCT FROM g.k LIMIT 1",
            given.table
        );
        let values: Vec<String> = rows.iter().map(|(v, _)| v.to_string()).collect();
        let keys: Vec<String> = rows.iter().map(|(_, k)| key_text(k)).collect();
        let params = Params {
            values: [
                array_literal(values.iter().map(String::as_str)),
                array_literal(keys.iter().map(String::as_str)),
            ]
            .into_iter()
            .map(|a| Some(bytes::Bytes::from(a)))
            .collect(),
            formats: Vec::new(),
            types: Default::default(),
        };
        let Some(look) = request(&sql, &params, &[]) else {
            return Ok(self.error(&PgError::error(
                crate::error::sqlstate::INTERNAL_ERROR,
                "could not build the look for the COPY's given values",
            )));
        };
        let bare = given.table.rsplit('.').next().unwrap_or(&given.table);
        let claim = GivenValues {
            lock: lock_for(bare.trim_matches('"')),
            checks: vec![Check {
                index: given.index.clone(),
                request: look,
                fresh: with_literals(&sql, &params),
            }],
            after: Vec::new(),
            moved: Vec::new(),
        };
        if self.claim_given_values(&claim).await? == Step::Failed {
            return Ok(Step::Failed);
        }
        let values: Vec<i64> = rows.iter().map(|(v, _)| *v).collect();
        self.advance_past(&given.sequence, &values).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_written_as_postgresql_writes_them() {
        assert_eq!(key_text(&KeyValue::Integer(-42)), "-42");
        let uuid = KeyValue::from_text(
            crate::placement::KeyType::Uuid,
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
        )
        .unwrap();
        assert_eq!(key_text(&uuid), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
        assert_eq!(
            array_literal(["a\"b", "c\\d", "e"].into_iter()),
            r#"{"a\"b","c\\d","e"}"#
        );
    }
}
