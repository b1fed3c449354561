//! `nextval()` and `setval()` called inside a statement, where the statement runs on a shard
//! whose copy of the sequence is not the one drawn from.
//!
//! A statement on a sharded table runs on the shards of its rows, and each shard would call
//! its own copy of the sequence, not the first shard's, whose copy is the cluster's (see
//! `key_sequence`): values the cluster has handed out already, or a move it never sees. An
//! `INSERT ... VALUES` gets values drawn from the cluster's sequence in place of each call, as
//! if the client had given them (SQLAlchemy writes a column with a `Sequence` as `VALUES
//! (nextval('lines_id_seq'), ...)`); `given_values` then judges them as any value given. Any
//! other such call is refused.
//!
//! A statement on other tables runs on every copy (a write of a reference table), on the one
//! shard its tables live on, or on the first shard (reads of reference tables, no table). Each
//! call there is right when its sequence is drawn from where the statement runs (as the
//! first shard's catalog tells, see `sequence_moves`): a reference table's write calling that
//! table's sequence, whose copies its writers keep alike. Otherwise the cluster's sequence in
//! an INSERT's VALUES is drawn as above, and the rest refused: a write of a reference table
//! calling the cluster's sequence on each copy would give each copy its own value.
//!
//! The calls alone (`SELECT nextval(...)`) are `sequence_moves`'s, and a setval over a table's
//! rows `sequence_reset`'s.

use super::sequence_moves::{sequence_call, SequenceRoute};
use super::session::{Exec, R};
use crate::error::{sqlstate, PgError};
use crate::placement::{Placement, TableRule, HOME};
use crate::router::params::Params;
use crate::router::plan::{relations, tables_written, unnamed_arguments};
use sqlparser::ast::{
    CastKind, DataType, Expr, ObjectName, ObjectNamePart, SetExpr, Statement, Value,
};
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
    crate::sql::first_expression(node, sequence_function)
}

/// Where a statement without a sharded table runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Runs {
    /// The first shard: reads of reference tables, statements without a table.
    Home,
    /// Every shard, as a write of a reference table.
    EveryCopy,
    /// The one shard (not the first) its tables live on.
    Shard(usize),
}

impl Runs {
    fn of(stmt: &Statement, placement: &Placement) -> Runs {
        let reference =
            |t: &&ObjectName| matches!(placement.rule(&t.to_string()), Some(TableRule::Reference));
        if tables_written(stmt).iter().any(reference) {
            return Runs::EveryCopy;
        }
        match relations(stmt, placement).pinned_shard() {
            Some(shard) if shard != HOME => Runs::Shard(shard),
            _ => Runs::Home,
        }
    }

    /// Whether a statement running here calls the copy of a sequence drawn from as `route`.
    fn calls_the_copy(self, route: &SequenceRoute) -> bool {
        match (self, route) {
            (Runs::Home, SequenceRoute::Home) => true,
            (Runs::EveryCopy, SequenceRoute::Copies(_)) => true,
            (Runs::Shard(a), SequenceRoute::Shard(b)) => a == *b,
            _ => false,
        }
    }
}

/// What to do with a statement's sequence calls.
#[derive(Debug, PartialEq)]
enum Calls {
    /// None that runs on a shard other than the first.
    None,
    /// An INSERT ... VALUES whose calls are all `nextval` of a named sequence, only in its
    /// rows: how many of each to draw.
    Draw(BTreeMap<String, usize>),
    /// Refused: the function called.
    Refused(&'static str),
    /// A statement on tables that are not sharded, which runs as `runs`: each call (the
    /// function, the call) is right where its sequence is drawn from there; otherwise as
    /// `elsewhere` says, which is what a statement on a sharded table would get.
    Placed {
        runs: Runs,
        calls: Vec<(&'static str, Expr)>,
        elsewhere: Box<Calls>,
    },
}

fn calls(stmt: &Statement, placement: &Placement) -> Calls {
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
    if !relations(stmt, placement).sharded.is_empty() {
        return drawn_or_refused(stmt, called);
    }
    // Without reference tables or tables on one shard, every sequence is the first shard's,
    // where such a statement runs; a call alone is `sequence_moves`'s.
    if !placement.has_copies_or_pins() || sequence_call(stmt).is_some() {
        return Calls::None;
    }
    let mut every = Vec::new();
    let _ = sqlparser::ast::visit_expressions(stmt, |e: &Expr| {
        if let Some(f) = sequence_function(e) {
            every.push((f, e.clone()));
        }
        ControlFlow::<()>::Continue(())
    });
    Calls::Placed {
        runs: Runs::of(stmt, placement),
        calls: every,
        elsewhere: Box::new(drawn_or_refused(stmt, called)),
    }
}

/// The calls of a statement that runs where its sequences are not drawn from (`called`: the
/// first): drawn in an INSERT's VALUES, refused elsewhere.
fn drawn_or_refused(stmt: &Statement, called: &'static str) -> Calls {
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

/// Whether the statement calls a sequence function the proxy must look at each time it runs:
/// such a statement leaves the extended fast path for `Exec::nextval_drawn`, and is never
/// routed by its shape. `sql`: its text, read first (see `may_call_sequence`).
pub fn looked_at(sql: &str, stmt: &Statement, placement: &Placement) -> bool {
    may_call_sequence(sql) && calls(stmt, placement) != Calls::None
}

impl Exec<'_> {
    /// The statement with its `nextval` calls replaced by values drawn from the cluster's
    /// sequences (see the module comment): Ok(None) when it has none to replace, Err when it
    /// was refused, its error written for the client. `params` and `types`: the client's
    /// bound values and declared types, which may name a sequence.
    pub(super) async fn nextval_drawn(
        &mut self,
        stmt: &Statement,
        params: &Params,
        types: &[u32],
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
                    .with_hint(HINT),
                );
                return Ok(Err(()));
            }
            Calls::Draw(draws) => draws,
            Calls::Placed {
                runs,
                calls,
                elsewhere,
            } => match self.placed(runs, &calls, &elsewhere, params, types).await? {
                Ok(draws) => draws,
                Err(()) => return Ok(Err(())),
            },
        };
        if draws.is_empty() {
            return Ok(Ok(None));
        }
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

    /// The calls of a statement on tables that are not sharded, each judged by where its
    /// sequence is drawn from (the first shard's catalog tells, once per sequence): the ones
    /// to draw from the cluster's copy in its place, or Err when one was refused.
    async fn placed(
        &mut self,
        runs: Runs,
        calls: &[(&'static str, Expr)],
        elsewhere: &Calls,
        params: &Params,
        types: &[u32],
    ) -> R<Result<BTreeMap<String, usize>, ()>> {
        let mut routes: BTreeMap<String, SequenceRoute> = BTreeMap::new();
        let mut draws: BTreeMap<String, usize> = BTreeMap::new();
        for (f, call) in calls {
            let Expr::Function(function) = call else {
                continue;
            };
            let Some(&named) = unnamed_arguments(function)
                .as_deref()
                .and_then(<[_]>::first)
            else {
                continue;
            };
            let key = named.to_string();
            let route = match routes.get(&key) {
                Some(route) => route,
                None if names_a_column(named) => {
                    self.refuse_placed(f, &key, runs, Why::Column);
                    return Ok(Err(()));
                }
                None => match self.sequence_route(named, params, types).await? {
                    Ok(route) => routes.entry(key.clone()).or_insert(route),
                    Err(()) => return Ok(Err(())),
                },
            };
            // On every copy, the copies' own sequences stay alike only when called in one
            // order: an INSERT's VALUES; rows an UPDATE or a SELECT visits come in each copy's.
            if runs.calls_the_copy(route) {
                if runs == Runs::EveryCopy && !matches!(elsewhere, Calls::Draw(_)) {
                    self.refuse_placed(f, &key, runs, Why::RowOrder);
                    return Ok(Err(()));
                }
                continue;
            }
            // The cluster's sequence, in an INSERT's rows: drawn, as on a sharded table.
            match (elsewhere, route, named_sequence(call)) {
                (Calls::Draw(_), SequenceRoute::Home, Some(name)) if *f == "nextval" => {
                    *draws.entry(name).or_default() += 1;
                }
                _ => {
                    let route = route_text(route, &self.placement);
                    self.refuse_placed(f, &key, runs, Why::DrawnFrom(route));
                    return Ok(Err(()));
                }
            }
        }
        Ok(Ok(draws))
    }

    fn refuse_placed(&mut self, f: &str, sequence: &str, runs: Runs, why: Why) {
        let runs = match runs {
            Runs::Home => "on the first shard alone".to_string(),
            Runs::EveryCopy => "on every copy of a reference table".to_string(),
            Runs::Shard(s) => format!("on shard {} alone", self.placement.shard_names[s]),
        };
        let (why, detail) = match why {
            Why::Column => ("a column names the sequence".to_string(), DRAW_APART),
            Why::DrawnFrom(route) => (format!("the sequence is drawn from {route}"), DRAW_APART),
            Why::RowOrder => (
                "outside an INSERT's VALUES each copy calls it in the order it visits its rows".to_string(),
                "The copies' own sequences stay alike, but each copy would give a row another value.",
            ),
        };
        self.error(
            &PgError::error(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!("{f}({sequence}) in this statement is not supported: the statement runs {runs}, and {why}"),
            )
            .with_detail(detail)
            .with_hint(HINT),
        );
    }
}

/// Why a call in a statement on tables that are not sharded is refused.
enum Why {
    /// The sequence is named by a column.
    Column,
    /// It is drawn from elsewhere: where, in words.
    DrawnFrom(String),
    /// On every copy, in an order each copy takes its own way.
    RowOrder,
}

const DRAW_APART: &str = "Each shard the statement runs on would call its own copy of the sequence, and the copies would draw apart.";

const HINT: &str = "Draw the values first through the proxy (SELECT nextval('a_sequence')) and pass them, or leave the column to its DEFAULT; INSERT ... VALUES (nextval('a_sequence'), ...) is supported.";

/// Where a sequence drawn from as `route` is, in words.
fn route_text(route: &SequenceRoute, placement: &Placement) -> String {
    match route {
        SequenceRoute::Home => "the first shard's copy".to_string(),
        SequenceRoute::Copies(table) => format!("each copy of reference table {table}"),
        SequenceRoute::Shard(s) => format!("shard {}", placement.shard_names[*s]),
    }
}

/// Whether an expression naming a sequence reads a column, which only the statement's rows
/// can tell.
fn names_a_column(e: &Expr) -> bool {
    crate::sql::first_expression(e, |e| {
        matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_)).then_some(())
    })
    .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLES: &str = "[tables.lines]\nshard_key = \"account_id\"\nkey_type = \"bigint\"\n[tables.refs]\nreference = true\n";

    fn placement() -> Placement {
        crate::config::Config::three_shards(TABLES)
            .placement()
            .unwrap()
    }

    fn parsed(sql: &str) -> Statement {
        sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, sql)
            .unwrap()
            .pop()
            .unwrap()
    }

    fn read(sql: &str) -> Calls {
        calls(&parsed(sql), &placement())
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
        // A call alone is `sequence_moves`'s.
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

    #[test]
    fn without_a_sharded_table_each_call_is_judged_where_the_statement_runs() {
        let placed = |sql: &str, placement: &Placement| match calls(&parsed(sql), placement) {
            Calls::Placed {
                runs,
                calls,
                elsewhere,
            } => (runs, calls.len(), *elsewhere),
            other => panic!("{sql}: {other:?}"),
        };
        let draw = |s: &str| Calls::Draw([(s.to_string(), 1)].into_iter().collect());
        assert_eq!(
            placed(
                "insert into refs (name, code) values ('a', nextval('lines_id_seq'))",
                &placement()
            ),
            (Runs::EveryCopy, 1, draw("lines_id_seq"))
        );
        assert_eq!(
            placed(
                "with w as (select 1) update refs set code = nextval('lines_id_seq')",
                &placement()
            ),
            (Runs::EveryCopy, 1, Calls::Refused("nextval"))
        );
        assert_eq!(
            placed(
                "select nextval('refs_id_seq'), setval('s', 1) from generate_series(1, 3)",
                &placement()
            ),
            (Runs::Home, 2, Calls::Refused("nextval"))
        );
        let pinned = crate::config::Config::three_shards(&format!(
            "{TABLES}[routing]\nundeclared_tables = \"s2\"\n"
        ))
        .placement()
        .unwrap();
        assert_eq!(
            placed("insert into t (v) values (nextval('s'))", &pinned).0,
            Runs::Shard(2)
        );
        assert_eq!(
            placed("select nextval('s') from refs", &pinned).0,
            Runs::Home
        );
        // Where the sequence is drawn from decides.
        assert!(Runs::EveryCopy.calls_the_copy(&SequenceRoute::Copies("refs".into())));
        assert!(!Runs::EveryCopy.calls_the_copy(&SequenceRoute::Home));
        assert!(!Runs::Home.calls_the_copy(&SequenceRoute::Copies("refs".into())));
        assert!(Runs::Shard(2).calls_the_copy(&SequenceRoute::Shard(2)));
        assert!(!Runs::Shard(2).calls_the_copy(&SequenceRoute::Home));
        assert!(names_a_column(&Expr::Identifier("seq".into())));
        assert!(!names_a_column(&parsed_expr(
            "pg_get_serial_sequence('t', 'id')"
        )));
    }

    fn parsed_expr(sql: &str) -> Expr {
        crate::sql::expression(sql).unwrap()
    }
}
