//! Values an UPDATE (or an upsert's DO UPDATE) sets, itself, to a column the cluster's sequence
//! fills where a unique index without the shard key holds that column: the UPDATE counterpart
//! of `given_values`.
//!
//! Each shard checks such an index against its own rows only, so `UPDATE lines SET id = 1
//! WHERE account_id = 2` would leave two rows with id 1 when another shard holds one, and
//! `SET id = 7 WHERE note = 'x'` one on every shard with such a row. Which rows an UPDATE
//! changes is known only once it ran (none, one, or rows on several shards), so its
//! transaction
//!
//! 1. takes the table's lock on every shard before the write, the first shard first (the lock
//!    INSERTs and COPYs of given values take, so all of them take turns);
//! 2. after the write, when it changed rows, asks every shard for the rows holding the value
//!    (their index columns; a NULL never conflicts). The same values on two shards fail the
//!    statement as PostgreSQL would (23505), and nothing of it is kept; a shard's own index
//!    has judged its own rows. Where the snapshot may predate the lock, the proxy's own
//!    connection looks too, as for an INSERT;
//! 3. moves the sequence past the value (see `given_values`).
//!
//! The value must be a constant or a bound parameter, read once by the proxy and written into
//! the look. `DEFAULT` is refused: each shard's own copy of the sequence would compute it. An
//! upsert's `excluded.id` is the INSERT's own value, judged by the INSERT's look.

use super::given_lookup::{duplicate, integer, is_default, lock_for, Check, GivenValues};
use super::session::{Exec, Step, R};
use crate::error::{sqlstate, PgError};
use crate::placement::TableRule;
use crate::protocol::build;
use crate::router::params::Params;
use crate::router::plan::{last_ident, HOME};
use bytes::BytesMut;
use sqlparser::ast::{
    AssignmentTarget, Expr, Ident, ObjectName, OnConflict, OnConflictAction, OnInsert, Statement,
    TableFactor, TableObject,
};
use std::collections::HashMap;

/// The columns an UPDATE assigns, by name, with the value (None inside a tuple target).
type Assigned<'s> = Vec<(String, Option<&'s Expr>)>;

/// The sharded table an UPDATE, or an upsert's DO UPDATE, writes, its key column and what it
/// assigns.
fn sharded_update<'s>(
    stmt: &'s Statement,
    rule: impl Fn(&str) -> Option<String>,
) -> Option<(&'s ObjectName, String, Assigned<'s>)> {
    let (name, assignments) = match stmt {
        Statement::Update(u) => match &u.table.relation {
            TableFactor::Table { name, .. } => (name, &u.assignments),
            _ => return None,
        },
        Statement::Insert(ins) => match (&ins.table, &ins.on) {
            (
                TableObject::TableName(name),
                Some(OnInsert::OnConflict(OnConflict {
                    action: OnConflictAction::DoUpdate(d),
                    ..
                })),
            ) => (name, &d.assignments),
            _ => return None,
        },
        _ => return None,
    };
    let key_column = rule(&name.to_string())?;
    let mut assigned = Vec::new();
    for a in assignments {
        match &a.target {
            AssignmentTarget::ColumnName(c) => assigned.push((last_ident(c), Some(&a.value))),
            AssignmentTarget::Tuple(cs) => {
                assigned.extend(cs.iter().map(|c| (last_ident(c), None)))
            }
        }
    }
    // Only the key is set: no sequence column can be (the key is never one of those looked at).
    if assigned
        .iter()
        .all(|(c, _)| c.eq_ignore_ascii_case(&key_column))
    {
        return None;
    }
    Some((name, key_column, assigned))
}

/// Whether `e` is `excluded.column`: in an upsert's DO UPDATE, the INSERT's own value.
fn is_excluded(e: &Expr, column: &str) -> bool {
    matches!(e, Expr::CompoundIdentifier(parts)
        if parts.len() == 2
            && parts[0].value.eq_ignore_ascii_case("excluded")
            && parts[1].value.eq_ignore_ascii_case(column))
}

/// The look on one shard for the rows of `table` whose `column` holds `value`: their index
/// columns as the error's detail shows them, rows with a NULL among them left out.
fn look(table: &str, columns: &[String], column: &str, value: i64) -> String {
    let quoted: Vec<String> = columns
        .iter()
        .map(|c| Ident::with_quote('"', c).to_string())
        .collect();
    let shown: Vec<String> = quoted
        .iter()
        .map(|c| format!("{c}::pg_catalog.text"))
        .collect();
    let present: Vec<String> = quoted.iter().map(|c| format!("{c} IS NOT NULL")).collect();
    format!(
        "SELECT pg_catalog.concat_ws(', ', {}) FROM {table} WHERE {} OPERATOR(pg_catalog.=) {value} AND {}",
        shown.join(", "),
        Ident::with_quote('"', column),
        present.join(" AND ")
    )
}

/// The values found on more than one shard, given each shard's (shard, values).
fn on_two_shards(found: &[(usize, String)]) -> Option<&str> {
    let mut first_seen: HashMap<&str, usize> = HashMap::new();
    for (shard, value) in found {
        match first_seen.get(value.as_str()) {
            Some(s) if s != shard => return Some(value),
            Some(_) => {}
            None => {
                first_seen.insert(value, *shard);
            }
        }
    }
    None
}

/// The refusal of a value the look cannot read as the shard will write it.
fn not_fixed(what: &str, column: &str, table: &str, index: &str, hint: &str) -> PgError {
    PgError::error(
        sqlstate::FEATURE_NOT_SUPPORTED,
        format!("UPDATE cannot set {column} of sharded table {table} to {what}"),
    )
    .with_detail(format!(
        "Unique index \"{index}\" leaves out the shard key, so a value set for {column} must be looked for on every shard."
    ))
    .with_hint(hint.to_string())
}

impl Exec<'_> {
    /// Whether `stmt` may be an UPDATE setting a sequence column other than its table's key,
    /// or one of a table whose sequence columns this proxy has not learnt yet: it must not
    /// take the extended protocol's one-shard fast path, which would send it without the look.
    pub fn may_set_sequence_value(&self, stmt: &Statement) -> bool {
        let rule = |t: &str| match self.placement.rule(t) {
            Some(TableRule::Sharded { key_column, .. }) => Some(key_column.clone()),
            _ => None,
        };
        let Some((name, key_column, assigned)) = sharded_update(stmt, rule) else {
            return false;
        };
        let Some(blocks) = self.key_blocks else {
            return false;
        };
        let known = blocks.columns.lock().unwrap_or_else(|p| p.into_inner());
        let Some(sequences) = known.get(&name.to_string()) else {
            return true;
        };
        sequences.iter().any(|s| {
            !s.column.eq_ignore_ascii_case(&key_column)
                && assigned
                    .iter()
                    .any(|(c, _)| c.eq_ignore_ascii_case(&s.column))
        })
    }

    /// What `stmt`, an UPDATE setting a sequence-filled column held unique without the shard
    /// key, must do around its write (see the module comment); None for any other statement.
    /// Err when it was refused (its error written for the client).
    pub async fn given_update(
        &mut self,
        stmt: &Statement,
        params: &Params,
    ) -> R<Result<Option<GivenValues>, ()>> {
        let placement = self.placement.clone();
        let rule = |t: &str| match placement.rule(t) {
            Some(TableRule::Sharded { key_column, .. }) => Some(key_column.clone()),
            _ => None,
        };
        let Some((name, key_column, assigned)) = sharded_update(stmt, rule) else {
            return Ok(Ok(None));
        };
        let table = name.to_string();
        let sequences: Vec<_> = self
            .sequence_columns(&table)
            .await?
            .into_iter()
            .filter(|s| {
                !s.column.eq_ignore_ascii_case(&key_column)
                    && assigned
                        .iter()
                        .any(|(c, _)| c.eq_ignore_ascii_case(&s.column))
            })
            .collect();
        if sequences.is_empty() {
            return Ok(Ok(None));
        }
        let indexes = match self.indexes_without_key(name, &key_column).await {
            Ok(Some(found)) => found,
            Ok(None) => return Ok(Ok(None)),
            Err(()) => return Ok(Err(())),
        };
        let (mut checks, mut moved) = (Vec::new(), Vec::new());
        for index in indexes.iter().filter(|i| !i.expression) {
            let Some(seq) = sequences.iter().find(|s| {
                index
                    .columns
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(&s.column))
            }) else {
                continue;
            };
            let column = &seq.column;
            let value = assigned
                .iter()
                .find(|(c, _)| c.eq_ignore_ascii_case(column))
                .and_then(|(_, v)| *v);
            let refusal =
                |what: &str, hint: &str| not_fixed(what, column, &table, &index.name, hint);
            let value = match value {
                // The row the INSERT proposed: its value is the proxy's or one given, which
                // the INSERT's own look has judged (see `given_values`).
                Some(e) if is_excluded(e, column) => continue,
                None => Err(refusal(
                    "values of a row expression",
                    &format!("Set {column} on its own: SET {column} = <value>."),
                )),
                Some(e) if is_default(Some(e)) => Err(refusal(
                    "DEFAULT",
                    &format!(
                        "Draw a value through the proxy (SELECT nextval('{}')) and set that.",
                        seq.sequence.replace('\'', "''")
                    ),
                )),
                Some(e) => match integer(e, params) {
                    Some(Some(v)) => Ok(v),
                    // NULL conflicts with nothing.
                    Some(None) => continue,
                    None => Err(refusal(
                        &format!("a computed value ({e})"),
                        "Give a constant or a parameter.",
                    )),
                },
            };
            let value = match value {
                Ok(v) => v,
                Err(e) => {
                    self.error(&e);
                    return Ok(Err(()));
                }
            };
            let sql = look(&table, &index.columns, column, value);
            let mut request = BytesMut::new();
            build::query(&sql, &mut request);
            checks.push(Check {
                index: index.clone(),
                request: request.freeze(),
                fresh: Some(sql),
            });
            if !moved.iter().any(|(s, v)| *s == seq.sequence && *v == value) {
                moved.push((seq.sequence.clone(), value));
            }
        }
        if checks.is_empty() {
            return Ok(Ok(None));
        }
        Ok(Ok(Some(GivenValues {
            lock: lock_for(&last_ident(name)),
            checks: Vec::new(),
            after: checks,
            moved,
        })))
    }

    /// Before a write that looks only after it: `given`'s lock on every shard, the first shard
    /// first.
    pub async fn lock_everywhere(&mut self, given: &GivenValues) -> R<Step> {
        if self.lock_first(given).await?.is_none() {
            return Ok(Step::Failed);
        }
        let mut lock = BytesMut::new();
        build::query(&given.lock, &mut lock);
        let others: Vec<usize> = (0..self.links.len()).filter(|&s| s != HOME).collect();
        for &s in &others {
            self.links[s].send(&lock).await?;
        }
        let mut failure = None;
        for &s in &others {
            if let Some(e) = self.quiet_until_ready(s).await? {
                failure.get_or_insert(e);
            }
        }
        if let Some(e) = failure {
            self.own_error(&e);
            return Ok(Step::Failed);
        }
        Ok(Step::Done)
    }

    /// After a write that changed rows: the looks of `given.after` on every shard, then each
    /// sequence moved past its value. Failed with the client's error written.
    pub async fn look_after_write(&mut self, given: &GivenValues) -> R<Step> {
        let fresh = self.needs_fresh_look().await?;
        let shards: Vec<usize> = (0..self.links.len()).collect();
        for check in &given.after {
            for &s in &shards {
                self.links[s].send(&check.request).await?;
            }
            let (mut found, mut failure) = (Vec::new(), None);
            for &s in &shards {
                let (values, error) = self.values_until_ready(s).await?;
                failure = failure.or(error);
                found.extend(values.into_iter().map(|v| (s, v)));
            }
            if let Some(e) = failure {
                self.own_error(&e);
                return Ok(Step::Failed);
            }
            if let (true, Some(sql), Some(catalog)) = (fresh, &check.fresh, self.catalog) {
                for &s in &shards {
                    match catalog.texts_of(s, sql).await {
                        Ok(values) => found.extend(values.into_iter().flatten().map(|v| (s, v))),
                        Err(e) => {
                            return Ok(self.error(&PgError::error(
                                "58000",
                                format!("cannot look for the values set: {e}"),
                            )))
                        }
                    }
                }
            }
            if let Some(values) = on_two_shards(&found) {
                return Ok(self.error(&duplicate(&check.index, values)));
            }
        }
        for (sequence, value) in &given.moved {
            if self.advance_past(sequence, &[*value]).await? == Step::Failed {
                return Ok(Step::Failed);
            }
        }
        Ok(Step::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> Statement {
        sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, sql)
            .unwrap()
            .pop()
            .unwrap()
    }

    fn assigned(sql: &str) -> Option<Vec<(String, Option<String>)>> {
        let stmt = parse(sql);
        let rule = |t: &str| (t == "lines").then(|| "account_id".to_string());
        sharded_update(&stmt, rule).map(|(_, _, a)| {
            a.into_iter()
                .map(|(c, v)| (c, v.map(|e| e.to_string())))
                .collect()
        })
    }

    #[test]
    fn only_updates_of_sharded_tables_setting_more_than_the_key_are_read() {
        assert_eq!(
            assigned("UPDATE lines SET id = 5, note = $1 WHERE account_id = 2"),
            Some(vec![
                ("id".into(), Some("5".into())),
                ("note".into(), Some("$1".into()))
            ])
        );
        assert_eq!(
            assigned("UPDATE lines l SET (id, note) = (5, 'x')"),
            Some(vec![("id".into(), None), ("note".into(), None)])
        );
        assert_eq!(
            assigned("INSERT INTO lines (account_id) VALUES (1) ON CONFLICT (account_id, note) DO UPDATE SET id = excluded.id"),
            Some(vec![("id".into(), Some("excluded.id".into()))])
        );
        assert_eq!(
            assigned("INSERT INTO lines (account_id) VALUES (1) ON CONFLICT DO NOTHING"),
            None
        );
        assert_eq!(assigned("UPDATE lines SET account_id = 3"), None);
        assert_eq!(assigned("UPDATE other SET id = 5"), None);
        assert_eq!(assigned("DELETE FROM lines WHERE id = 5"), None);
    }

    #[test]
    fn only_the_proposed_rows_own_value_is_excluded() {
        let e = |sql: &str| crate::sql::expression(sql).unwrap();
        assert!(is_excluded(&e("excluded.id"), "id"));
        assert!(is_excluded(&e("EXCLUDED.\"Id\""), "id"));
        assert!(!is_excluded(&e("excluded.other"), "id"));
        assert!(!is_excluded(&e("lines.id"), "id"));
        assert!(!is_excluded(&e("excluded.id + 1"), "id"));
    }

    #[test]
    fn the_look_names_the_index_columns_of_rows_holding_the_value() {
        assert_eq!(
            look("lines", &["id".into(), "Code".into()], "id", -4),
            "SELECT pg_catalog.concat_ws(', ', \"id\"::pg_catalog.text, \"Code\"::pg_catalog.text) \
             FROM lines WHERE \"id\" OPERATOR(pg_catalog.=) -4 AND \"id\" IS NOT NULL AND \"Code\" IS NOT NULL"
        );
    }

    #[test]
    fn a_value_is_a_duplicate_only_on_two_shards() {
        let found = |v: &[(usize, &str)]| -> Vec<(usize, String)> {
            v.iter().map(|(s, x)| (*s, x.to_string())).collect()
        };
        assert_eq!(on_two_shards(&found(&[(0, "5"), (0, "5")])), None);
        assert_eq!(on_two_shards(&found(&[(0, "5, a"), (1, "5, b")])), None);
        assert_eq!(on_two_shards(&found(&[(0, "5"), (2, "5")])), Some("5"));
        assert_eq!(on_two_shards(&found(&[])), None);
    }
}
