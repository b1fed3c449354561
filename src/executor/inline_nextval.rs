//! `nextval()` and `setval()` called inside a statement that reads or writes a sharded table.
//!
//! Such a statement runs on the shards of its rows, and each shard would call its own copy of
//! the sequence, not the first shard's, whose copy is the cluster's (see `key_sequence`): values
//! the cluster has handed out already, or a move it never sees. An `INSERT ... VALUES` gets
//! values drawn from the cluster's sequence in place of each call, as if the client had given
//! them (SQLAlchemy writes a column with a `Sequence` as `VALUES (nextval('lines_id_seq'),
//! ...)`); `given_values` then judges them as any value given. Any other such call is refused.
//! The calls alone (`SELECT nextval(...)`) are `sequence_moves`'s, and a setval over a table's
//! rows `sequence_reset`'s.

use super::session::{Exec, R};
use crate::error::{sqlstate, PgError};
use crate::router::plan::{relations, unnamed_arguments};
use sqlparser::ast::{CastKind, DataType, Expr, ObjectNamePart, SetExpr, Statement, Value};
use std::collections::BTreeMap;
use std::ops::ControlFlow;

/// Whether the text may call a sequence function: the cheap test, asked on the extended fast
/// path for every Bind, before any tree is visited.
pub fn may_call_sequence(sql: &str) -> bool {
    let b = sql.as_bytes();
    memchr::memchr2_iter(b'v', b'V', b).any(|i| {
        let word = |from: usize, w: &[u8]| {
            i >= from
                && b.get(i - from..i - from + w.len())
                    .is_some_and(|s| s.eq_ignore_ascii_case(w))
        };
        word(4, b"nextval") || word(3, b"setval")
    })
}

/// The name of the sequence function `e` calls, if it calls `nextval` or `setval`.
fn sequence_function(e: &Expr) -> Option<&'static str> {
    let Expr::Function(f) = e else {
        return None;
    };
    match f.name.0.last() {
        Some(ObjectNamePart::Identifier(i)) if i.value.eq_ignore_ascii_case("nextval") => {
            Some("nextval")
        }
        Some(ObjectNamePart::Identifier(i)) if i.value.eq_ignore_ascii_case("setval") => {
            Some("setval")
        }
        _ => None,
    }
}

/// The sequence a `nextval('name')` or `nextval('name'::regclass)` call names by a constant.
fn named_sequence(e: &Expr) -> Option<String> {
    let Expr::Function(f) = e else {
        return None;
    };
    let [arg] = unnamed_arguments(f)?[..] else {
        return None;
    };
    let literal = match arg {
        Expr::Cast {
            kind: CastKind::DoubleColon | CastKind::Cast,
            expr,
            data_type: DataType::Regclass,
            ..
        } => expr.as_ref(),
        other => other,
    };
    match literal {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// The first sequence function `node` calls, by name.
fn first_call<V: sqlparser::ast::Visit>(node: &V) -> Option<&'static str> {
    let mut found = None;
    let _ = sqlparser::ast::visit_expressions(node, |e: &Expr| match sequence_function(e) {
        Some(name) => {
            found = Some(name);
            ControlFlow::Break(())
        }
        None => ControlFlow::Continue(()),
    });
    found
}

/// What to do with a statement's sequence calls.
#[derive(Debug, PartialEq, Eq)]
enum Calls {
    /// None that runs on a shard other than the first.
    None,
    /// An INSERT ... VALUES whose calls are all `nextval` of a named sequence, only in its
    /// rows: how many of each to draw.
    Draw(BTreeMap<String, usize>),
    /// Refused: the function called.
    Refused(&'static str),
}

fn calls(stmt: &Statement, placement: &crate::placement::Placement) -> Calls {
    // DDL calls nothing as it runs: a column's DEFAULT nextval(...) is the proxy's to fill
    // (see `key_sequence`).
    if !matches!(
        stmt,
        Statement::Query(_) | Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_)
    ) {
        return Calls::None;
    }
    let Some(called) = first_call(stmt) else {
        return Calls::None;
    };
    if relations(stmt, placement).sharded.is_empty() {
        return Calls::None;
    }
    let Statement::Insert(ins) = stmt else {
        return Calls::Refused(called);
    };
    let rows = match ins.source.as_deref().map(|q| q.body.as_ref()) {
        Some(SetExpr::Values(v)) if ins.source.as_ref().is_some_and(|q| q.with.is_none()) => {
            &v.rows
        }
        _ => return Calls::Refused(called),
    };
    // Calls anywhere but in the rows (RETURNING, ON CONFLICT) stay refused.
    if let Some(elsewhere) = first_call(&ins.returning).or_else(|| first_call(&ins.on)) {
        return Calls::Refused(elsewhere);
    }
    let mut draws: BTreeMap<String, usize> = BTreeMap::new();
    let mut refused = None;
    let _ = sqlparser::ast::visit_expressions(rows, |e: &Expr| {
        match (sequence_function(e), named_sequence(e)) {
            (Some("nextval"), Some(name)) => *draws.entry(name).or_default() += 1,
            (Some(other), _) => {
                refused = Some(other);
                return ControlFlow::Break(());
            }
            _ => {}
        }
        ControlFlow::Continue(())
    });
    match refused {
        Some(f) => Calls::Refused(f),
        None => Calls::Draw(draws),
    }
}

/// Whether the statement calls a sequence function where a shard other than the first would
/// run it: such a statement leaves the extended fast path for `Exec::nextval_drawn`.
pub fn runs_on_shards(stmt: &Statement, placement: &crate::placement::Placement) -> bool {
    calls(stmt, placement) != Calls::None
}

impl Exec<'_> {
    /// The statement with its `nextval` calls replaced by values drawn from the cluster's
    /// sequences (see the module comment): Ok(None) when it has none to replace, Err when it
    /// was refused, its error written for the client.
    pub(super) async fn nextval_drawn(
        &mut self,
        stmt: &Statement,
    ) -> R<Result<Option<Statement>, ()>> {
        let draws = match calls(stmt, &self.placement) {
            Calls::None => return Ok(Ok(None)),
            Calls::Refused(f) => {
                self.error(
                    &PgError::error(
                        sqlstate::FEATURE_NOT_SUPPORTED,
                        format!("{f}() in a statement on a sharded table is not supported"),
                    )
                    .with_detail("The statement runs on the shards of its rows, and each would call its own copy of the sequence, not the cluster's on the first shard.")
                    .with_hint("Draw the values first through the proxy (SELECT nextval('a_sequence')) and pass them, or leave the column to its DEFAULT; INSERT ... VALUES (nextval('a_sequence'), ...) is supported."),
                );
                return Ok(Err(()));
            }
            Calls::Draw(draws) => draws,
        };
        let mut drawn: BTreeMap<String, std::vec::IntoIter<i64>> = BTreeMap::new();
        for (sequence, n) in draws {
            let values = match self.draw(&sequence, n, false).await? {
                Some(v) => Some(v),
                // Made in the open transaction, where only the session's connection sees it.
                None => self.draw(&sequence, n, true).await?,
            };
            match values.filter(|v| v.len() == n) {
                Some(v) => {
                    drawn.insert(sequence, v.into_iter());
                }
                None => {
                    self.error(&PgError::error(
                        sqlstate::FEATURE_NOT_SUPPORTED,
                        format!("cannot draw values of sequence {sequence} on the first shard"),
                    ));
                    return Ok(Err(()));
                }
            }
        }
        let mut with_values = stmt.clone();
        let Statement::Insert(ins) = &mut with_values else {
            return Ok(Ok(None));
        };
        let Some(source) = ins.source.as_mut() else {
            return Ok(Ok(None));
        };
        let _ = sqlparser::ast::visit_expressions_mut(source.body.as_mut(), |e: &mut Expr| {
            if let Some(v) = named_sequence(e)
                .filter(|_| sequence_function(e) == Some("nextval"))
                .and_then(|name| drawn.get_mut(&name)?.next())
            {
                *e = Expr::value(Value::Number(v.to_string(), false));
            }
            ControlFlow::<()>::Continue(())
        });
        Ok(Ok(Some(with_values)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement() -> crate::placement::Placement {
        crate::config::Config::three_shards(
            "[tables.lines]\nshard_key = \"account_id\"\nkey_type = \"bigint\"\n[tables.refs]\nreference = true\n",
        )
        .placement()
        .unwrap()
    }

    fn read(sql: &str) -> Calls {
        let stmt =
            sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, sql)
                .unwrap()
                .pop()
                .unwrap();
        calls(&stmt, &placement())
    }

    #[test]
    fn the_text_is_read_before_the_tree() {
        assert!(may_call_sequence("insert into t values (NEXTVAL('s'))"));
        assert!(may_call_sequence("select pg_catalog.setval('s', 1)"));
        assert!(!may_call_sequence("select next_val from t"));
    }

    #[test]
    fn nextval_in_the_rows_of_an_insert_is_drawn_and_the_rest_refused() {
        let draws = |pairs: &[(&str, usize)]| {
            Calls::Draw(pairs.iter().map(|(s, n)| (s.to_string(), *n)).collect())
        };
        assert_eq!(
            read("insert into lines (id, account_id) values (nextval('lines_id_seq'), 1), (nextval('public.lines_id_seq'::regclass), 2), (pg_catalog.nextval('lines_id_seq'), 3)"),
            draws(&[("lines_id_seq", 2), ("public.lines_id_seq", 1)])
        );
        assert_eq!(
            read("insert into lines (id, account_id, note) values (1, 2, nextval('other')::text)"),
            draws(&[("other", 1)])
        );
        for (sql, f) in [
            (
                "insert into lines (id, account_id) values (nextval($1), 1)",
                "nextval",
            ),
            (
                "insert into lines (id, account_id) values (setval('s', 5), 1)",
                "setval",
            ),
            (
                "insert into lines (id, account_id) values (1, 2) returning nextval('s')",
                "nextval",
            ),
            (
                "insert into lines (id, account_id) select nextval('s'), 1",
                "nextval",
            ),
            (
                "update lines set id = nextval('s') where account_id = 1",
                "nextval",
            ),
            ("select nextval('s') from lines", "nextval"),
            ("delete from lines where id = nextval('s')", "nextval"),
            (
                "select setval('s', 5) from lines where account_id = 1",
                "setval",
            ),
        ] {
            assert_eq!(read(sql), Calls::Refused(f), "{sql}");
        }
        // No sharded table: the statement runs where its tables are whole.
        assert_eq!(
            read("insert into refs values (nextval('refs_id_seq'), 'a')"),
            Calls::None
        );
        assert_eq!(read("select nextval('s')"), Calls::None);
        assert_eq!(
            read("insert into lines (id, account_id) values (1, 2)"),
            Calls::None
        );
        // DDL: a DEFAULT calls nothing as the statement runs.
        for sql in [
            "alter table lines alter column note set default nextval('s')::text",
            "create table lines2 (id bigint default nextval('s'), account_id bigint)",
        ] {
            assert_eq!(read(sql), Calls::None, "{sql}");
        }
    }
}
