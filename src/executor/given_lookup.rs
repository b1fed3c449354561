//! The look an INSERT must make on every shard for values it gives a sequence-filled column
//! that a unique index without the shard key holds (see `given_values`, which builds and runs
//! it): the lock, and one request per index, built from the statement's own values.

use crate::backend::catalog::UniqueIndex;
use crate::error::{sqlstate, PgError};
use crate::protocol::build;
use crate::router::params::Params;
use crate::router::plan::keep_used_params;
use bytes::{Bytes, BytesMut};
use sqlparser::ast::{Expr, Ident, Parens, Value};

/// The first key of the advisory locks that order writers of given values ("SV").
const GIVEN_LOCK_CLASS: i32 = 0x5356;

/// The lock writers of given values into `table` (its name without schema or quotes) take on
/// every shard: an INSERT and a COPY into one table must take the same one.
pub(super) fn lock_for(table: &str) -> String {
    format!(
        "SELECT pg_catalog.pg_advisory_xact_lock({GIVEN_LOCK_CLASS}, pg_catalog.hashtext('{}'))",
        table.to_lowercase().replace('\'', "''")
    )
}

/// The most `nextval` calls that move a sequence past a given value; a value further ahead is
/// refused, with a hint to move the sequence first.
pub(super) const MOST_ADVANCE: i64 = 1_000_000;

/// What an INSERT must do on every shard before its rows are written (see the module comment),
/// and what an UPDATE, or an upsert's DO UPDATE, must do after (see `given_update`).
#[derive(Debug, Clone)]
pub struct GivenValues {
    pub(super) lock: String,
    /// Before the write: each names a row holding a given value under another key. The shards
    /// other than the first take their lock with the first.
    pub(super) checks: Vec<Check>,
    /// After the write, when it changed rows: each names the rows holding a value set.
    pub(super) after: Vec<Check>,
    /// The sequences moved past the values set, once `after` found no duplicate.
    pub(super) moved: Vec<(String, i64)>,
}

impl GivenValues {
    /// An INSERT's looks before its write and its upsert's after it, as one (both for one
    /// table, under one lock).
    pub(super) fn joined(before: Option<Self>, after: Option<Self>) -> Option<Self> {
        match (before, after) {
            (Some(mut b), Some(a)) => {
                b.after = a.after;
                b.moved = a.moved;
                Some(b)
            }
            (b, a) => b.or(a),
        }
    }
}

/// The look for one unique index's given values: a request whose rows name a value found.
#[derive(Debug, Clone)]
pub(super) struct Check {
    pub(super) index: UniqueIndex,
    pub(super) request: Bytes,
    /// The same look with the bound values written in, for the proxy's own connection, whose
    /// snapshot is taken after the lock (None when a value has no text the proxy can write).
    pub(super) fresh: Option<String>,
}

/// Whether the look can compute exactly the value the shard will write.
fn fixed(e: &Expr) -> bool {
    match e {
        Expr::Value(_) | Expr::TypedString { .. } => true,
        Expr::Nested(inner)
        | Expr::UnaryOp { expr: inner, .. }
        | Expr::Cast { expr: inner, .. } => fixed(inner),
        _ => false,
    }
}

/// Whether a VALUES item is `DEFAULT` (or missing): the column's default, or for a sequence
/// column the proxy's value, fills it.
pub(super) fn is_default(e: Option<&Expr>) -> bool {
    matches!(e, Some(Expr::Identifier(Ident { value, quote_style: None, .. }))
        if value.eq_ignore_ascii_case("default"))
}

fn is_null(e: &Expr) -> bool {
    matches!(e, Expr::Value(v) if v.value == Value::Null)
}

/// The integer a sequence column's given value `e` stands for, as PostgreSQL reads an integer
/// literal, string or bound parameter: Some(None) for NULL, None when the proxy cannot tell.
pub(super) fn integer(e: &Expr, params: &Params) -> Option<Option<i64>> {
    use sqlparser::ast::UnaryOperator::{Minus, Plus};
    match e {
        Expr::Value(v) => match &v.value {
            Value::Null => Some(None),
            Value::Number(n, _) => n.parse().ok().map(Some),
            Value::SingleQuotedString(s) => s.trim().parse().ok().map(Some),
            Value::Placeholder(p) => {
                let n: usize = p.strip_prefix('$')?.parse().ok()?;
                match params.values.get(n.checked_sub(1)?)? {
                    None => Some(None),
                    Some(_) => params.constant(n)?.parse().ok().map(Some),
                }
            }
            _ => None,
        },
        Expr::Nested(inner) | Expr::Cast { expr: inner, .. } => integer(inner, params),
        Expr::UnaryOp { op: Minus, expr } => match integer(expr, params)? {
            Some(v) => v.checked_neg().map(Some),
            None => Some(None),
        },
        Expr::UnaryOp { op: Plus, expr } => integer(expr, params),
        _ => None,
    }
}

/// PostgreSQL's error for `values` of `index` met twice.
pub(super) fn duplicate(index: &UniqueIndex, values: &str) -> PgError {
    PgError::error(
        "23505",
        format!(
            "duplicate key value violates unique constraint \"{}\"",
            index.name
        ),
    )
    .with_detail(format!(
        "Key ({})=({values}) already exists.",
        index.columns.join(", ")
    ))
}

/// An INSERT's VALUES rows as one unique index (without the shard key) sees them.
pub(super) struct Over<'a> {
    /// The index's columns, by position in the INSERT's rows.
    pub(super) at: &'a [usize],
    /// Which of them the sequence fills.
    pub(super) seq: Option<usize>,
    /// The shard key's position in the rows, when the INSERT gives it.
    pub(super) key: Option<usize>,
    /// The INSERT's column names as written.
    pub(super) written: &'a [String],
}

/// What the rows give the index.
#[derive(Debug, PartialEq)]
pub(super) enum RowsLook {
    /// The conditions a row on some shard meets when it holds a given value under another key
    /// (one per row that gives every column a value), and the sequence column's values.
    Matches(Vec<String>, Vec<i64>),
    /// A value computed by an expression.
    Computed(Box<Expr>),
    /// Two rows give the same values under different keys: written on two shards, neither
    /// would see the other (the values, as the error's detail shows them).
    Twice(String),
}

impl Over<'_> {
    /// The look on one shard: the first row meeting any of `matches`, its index values as
    /// text.
    pub(super) fn select(&self, table: &str, matches: &[String]) -> String {
        let shown: Vec<String> = self
            .at
            .iter()
            .map(|&k| format!("({})::pg_catalog.text", self.written[k]))
            .collect();
        format!(
            "SELECT pg_catalog.concat_ws(', ', {}) FROM {table} WHERE {} LIMIT 1",
            shown.join(", "),
            matches.join(" OR ")
        )
    }

    pub(super) fn rows(&self, rows: &[Parens<Vec<Expr>>], params: &Params) -> RowsLook {
        let cols: Vec<&str> = self.at.iter().map(|&k| self.written[k].as_str()).collect();
        let (mut matches, mut seq_values) = (Vec::new(), Vec::new());
        let mut seen: Vec<(Vec<String>, Option<String>)> = Vec::new();
        for row in rows {
            let values: Vec<&Expr> = self.at.iter().filter_map(|&k| row.get(k)).collect();
            if values.len() != self.at.len() || values.iter().any(|e| is_default(Some(e))) {
                continue;
            }
            if let Some(e) = values.iter().find(|e| !fixed(e)) {
                return RowsLook::Computed(Box::new((*e).clone()));
            }
            if values.iter().any(|e| is_null(e)) {
                continue;
            }
            let mut same: Vec<String> = values.iter().map(|e| e.to_string()).collect();
            if let Some(i) = self.seq {
                match integer(values[i], params) {
                    Some(Some(v)) => {
                        seq_values.push(v);
                        same[i] = v.to_string();
                    }
                    // NULL meets no row (and a key column refuses it anyway).
                    Some(None) => continue,
                    None => return RowsLook::Computed(Box::new(values[i].clone())),
                }
            }
            // A row with the same values under the same key lives on the new row's own shard,
            // whose index (and an upsert's arbiter) judges it as PostgreSQL would.
            let key = self
                .key
                .and_then(|k| row.get(k))
                .filter(|key| fixed(key))
                .map(|key| key.to_string());
            if seen.iter().any(|(v, k)| *v == same && *k != key) {
                return RowsLook::Twice(same.join(", "));
            }
            let tuple: Vec<String> = values.iter().map(|e| e.to_string()).collect();
            let equal = format!("({}) = ({})", cols.join(", "), tuple.join(", "));
            matches.push(match (&key, self.key) {
                (Some(key), Some(k)) => {
                    format!("({equal} AND {} IS DISTINCT FROM ({key}))", self.written[k])
                }
                _ => format!("({equal})"),
            });
            seen.push((same, key));
        }
        RowsLook::Matches(matches, seq_values)
    }
}

/// The refusal of a given value the look cannot compute as the shard will.
pub(super) fn computed(e: &Expr, table: &str, index: &UniqueIndex, key_column: &str) -> PgError {
    PgError::error(
        sqlstate::FEATURE_NOT_SUPPORTED,
        format!(
            "a computed value ({e}) for {} of sharded table {table} cannot be checked against the other shards' rows",
            index.columns.join(", ")
        ),
    )
    .with_detail(format!(
        "Unique index \"{}\" leaves out the shard key {key_column}, so a value given for it must be looked for on every shard.",
        index.name
    ))
    .with_hint("Give a constant or a parameter, or leave the column to its sequence (DEFAULT).")
}

/// `sql` with each parameter written in as a literal: a text value as sent (in binary, one
/// declared or described as text), a binary integer in decimal, NULL; None for another binary
/// value (its text is the type's to tell).
pub(super) fn with_literals(sql: &str, params: &Params) -> Option<String> {
    if params.values.is_empty() {
        return Some(sql.to_string());
    }
    let mut stmt =
        sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, sql)
            .ok()?
            .pop()?;
    let mut written = true;
    let _ = sqlparser::ast::visit_expressions_mut(&mut stmt, |e| {
        if let Expr::Value(v) = e {
            if let Value::Placeholder(p) = &v.value {
                let n: Option<usize> = p.strip_prefix('$').and_then(|n| n.parse().ok());
                let value = n.and_then(|n| match params.values.get(n.checked_sub(1)?)? {
                    None => Some(Value::Null),
                    Some(_) if params.format_of(n - 1) == 0 => {
                        params.text(n).map(Value::SingleQuotedString)
                    }
                    Some(_) => params.constant(n).map(Value::SingleQuotedString),
                });
                match value {
                    Some(value) => v.value = value,
                    None => written = false,
                }
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    written.then(|| stmt.to_string())
}

/// The request that runs `sql` with the client's bound values it uses (a Query without any).
pub(super) fn request(sql: &str, params: &Params, types: &[u32]) -> Option<Bytes> {
    if params.values.is_empty() {
        let mut q = BytesMut::new();
        build::query(sql, &mut q);
        return Some(q.freeze());
    }
    let mut stmt =
        sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, sql)
            .ok()?
            .pop()?;
    let picks = keep_used_params(&mut stmt, params.values.len());
    // Every shard gets the same request: a type of the application's own has another OID on
    // each, so it is left to the shard to infer from the column.
    let builtin = |o: u32| {
        if crate::backend::catalog::type_oids::is_user(o) {
            0
        } else {
            o
        }
    };
    let (params, types): (Params, Vec<u32>) = match &picks {
        Some(p) => (
            params.pick(p),
            p.iter()
                .map(|&i| builtin(types.get(i).copied().unwrap_or(0)))
                .collect(),
        ),
        None => (params.clone(), types.iter().map(|&o| builtin(o)).collect()),
    };
    Some(super::rebind::rebind(
        &stmt.to_string(),
        &params,
        &types,
        &[],
        false,
        true,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expr(sql: &str) -> Expr {
        crate::sql::expression(sql).unwrap()
    }

    fn bound(values: &[Option<&[u8]>], formats: &[i16]) -> Params {
        Params {
            values: values
                .iter()
                .map(|v| v.map(bytes::Bytes::copy_from_slice))
                .collect(),
            formats: formats.to_vec(),
            types: Default::default(),
        }
    }

    #[test]
    fn integers_read_as_postgresql_reads_them() {
        let none = Params::default();
        for (sql, want) in [
            ("42", Some(Some(42))),
            ("'42'", Some(Some(42))),
            ("' 7 '", Some(Some(7))),
            ("-(5)", Some(Some(-5))),
            ("'9'::int8", Some(Some(9))),
            ("NULL", Some(None)),
            ("'4.5'", None),
            ("4.0", None),
            ("1 + 1", None),
        ] {
            assert_eq!(integer(&expr(sql), &none), want, "{sql}");
        }
        let params = bound(&[Some(b"12"), Some(&7i32.to_be_bytes()), None], &[0, 1, 0]);
        assert_eq!(integer(&expr("$1"), &params), Some(Some(12)));
        assert_eq!(integer(&expr("$2::int4"), &params), Some(Some(7)));
        assert_eq!(integer(&expr("$3"), &params), Some(None));
        assert_eq!(integer(&expr("$4"), &params), None);
    }

    fn rows(sql: &str) -> Vec<Parens<Vec<Expr>>> {
        let stmt = sqlparser::parser::Parser::parse_sql(
            &sqlparser::dialect::PostgreSqlDialect {},
            &format!("insert into lines (id, account_id, note) values {sql}"),
        )
        .unwrap()
        .pop()
        .unwrap();
        let sqlparser::ast::Statement::Insert(ins) = stmt else {
            unreachable!()
        };
        let sqlparser::ast::SetExpr::Values(v) = *ins.source.unwrap().body else {
            unreachable!()
        };
        v.rows
    }

    #[test]
    fn rows_under_their_own_key_are_left_to_their_shard() {
        let written: Vec<String> = ["id", "account_id", "note"].map(String::from).to_vec();
        let over = Over {
            at: &[0],
            seq: Some(0),
            key: Some(1),
            written: &written,
        };
        let none = Params::default();
        assert_eq!(
            over.rows(
                &rows("(5, 1, 'a'), (DEFAULT, 2, 'b'), (NULL, 3, 'c'), ('6', 4, 'd')"),
                &none
            ),
            RowsLook::Matches(
                vec![
                    "((id) = (5) AND account_id IS DISTINCT FROM (1))".to_string(),
                    "((id) = ('6') AND account_id IS DISTINCT FROM (4))".to_string(),
                ],
                vec![5, 6]
            )
        );
        // The same id twice: under one key it is the shard's to refuse; under two, the
        // rows would go to two shards.
        assert!(matches!(
            over.rows(&rows("(5, 1, 'a'), (5, 1, 'b')"), &none),
            RowsLook::Matches(_, _)
        ));
        assert_eq!(
            over.rows(&rows("(5, 1, 'a'), ('5', 2, 'b')"), &none),
            RowsLook::Twice("5".to_string())
        );
        assert!(matches!(
            over.rows(&rows("(5 + 1, 1, 'a')"), &none),
            RowsLook::Computed(_)
        ));
    }

    #[test]
    fn only_values_the_look_computes_alike_are_fixed() {
        for sql in ["1", "$1", "'a'::text", "-$2", "(3)", "DATE '2024-01-01'"] {
            assert!(fixed(&expr(sql)), "{sql}");
        }
        for sql in ["random()", "nextval('s')", "1 + $1", "(SELECT 1)"] {
            assert!(!fixed(&expr(sql)), "{sql}");
        }
    }
}
