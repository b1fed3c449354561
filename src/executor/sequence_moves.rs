//! `SELECT setval(sequence, value [, is_called])` and `SELECT nextval(sequence)` through the
//! proxy: sent where the tables the sequence fills draw from it.
//!
//! A sequence filling a sharded table's column is the cluster's on the first shard (see
//! `key_sequence`), so the calls run there, as every statement without a table does. Three
//! things must follow from a setval there that a single server gets for free:
//!
//! - This proxy's cache of drawn values is dropped: values drawn before the move would
//!   otherwise still be handed out (an application resetting a sequence to 1 after emptying a
//!   table, as Django's `reset_sequences` does, would get the old values, not 1), and once the
//!   sequence reached them again they would be handed out twice.
//! - A move back to a value at or below one a sharded table already holds is refused. On one
//!   server each later INSERT reaching a held value fails with 23505; here the rows go to the
//!   shard of their key, whose index does not see the other shards' rows, and most would be
//!   written beside the row holding their value.
//!
//! Other tables draw from a shard's own copy of the sequence, and a call on the first shard
//! would move a copy nobody draws from, or one copy of several:
//!
//! - A sequence filling a reference table's column has a copy on every shard, each drawn from
//!   by that shard's copy of the table (writers take turns, so they stay alike): either call
//!   runs on every shard, as a write of that table, or the copies would hand out different
//!   values from then on.
//! - A sequence filling only columns of tables that live on one other shard
//!   (`undeclared_tables` set to a shard) moves there.
//!
//! The sequence and the value are read by the first shard itself (the call's own arguments,
//! bound as the client bound them, in the client's transaction), the values in use on every
//! shard in the client's transaction (and as committed when its snapshot may be older).

use super::session::{Exec, Step, R};
use crate::error::{sqlstate, PgError};
use crate::placement::{Placement, TableRule};
use crate::router::params::Params;
use crate::router::plan::{last_ident, lone_call, unnamed_arguments, HOME};
use sqlparser::ast::{Expr, Ident, Statement};

/// A Query that is one call moving a sequence, alone, without a FROM (as pg_dump's restores,
/// ORMs' sequence resets and applications drawing an id send them): its arguments.
pub enum SequenceCall<'a> {
    /// `setval(sequence, value [, is_called])`.
    Set(Vec<&'a Expr>),
    /// `nextval(sequence)`.
    Next(&'a Expr),
}

/// Where a sequence call runs.
#[derive(Debug, PartialEq, Eq)]
pub enum SequenceRoute {
    /// The first shard, as any statement without a table.
    Home,
    /// Every shard, as a write of this reference table.
    Copies(String),
    /// The one shard the tables it fills live on.
    Shard(usize),
}

/// Where a move leaves a sequence, as the first shard reads it: one line
/// `sequence|next value handed out|increment`.
pub(super) struct MoveTo<'a> {
    pub(super) sequence: &'a str,
    pub(super) next: i64,
    pub(super) increment: i64,
}

impl<'a> MoveTo<'a> {
    pub(super) fn read(line: &'a str) -> Option<MoveTo<'a>> {
        // From the right: a quoted sequence name may hold the separator.
        let mut parts = line.rsplitn(3, '|');
        let increment = parts.next()?.parse().ok()?;
        let next = parts.next()?.parse().ok()?;
        Some(MoveTo {
            sequence: parts.next()?,
            next,
            increment,
        })
    }
}

pub fn sequence_call(stmt: &Statement) -> Option<SequenceCall<'_>> {
    let Statement::Query(q) = stmt else {
        return None;
    };
    let f = lone_call(q)?;
    let args = unnamed_arguments(f)?;
    let name = last_ident(&f.name);
    if name.eq_ignore_ascii_case("setval") && (2..=3).contains(&args.len()) {
        Some(SequenceCall::Set(args))
    } else if name.eq_ignore_ascii_case("nextval") && args.len() == 1 {
        Some(SequenceCall::Next(args[0]))
    } else {
        None
    }
}

/// Whether the statement must be looked at each time it runs (never routed by its shape nor
/// on the extended fast path): every setval (alone or over a table's rows), and a nextval
/// where a sequence could fill a table that is not sharded.
pub fn looked_at_each_time(stmt: &Statement, placement: &Placement) -> bool {
    match sequence_call(stmt) {
        Some(SequenceCall::Set(_)) => true,
        Some(SequenceCall::Next(_)) => placement.has_copies_or_pins(),
        None => super::sequence_reset::from_rows(stmt, placement).is_some(),
    }
}

/// Whether the statement moves a sequence: a call alone, or a setval over a table's rows
/// (see `sequence_reset`).
pub fn moves_sequence(stmt: &Statement, placement: &Placement) -> bool {
    sequence_call(stmt).is_some() || super::sequence_reset::from_rows(stmt, placement).is_some()
}

/// Where a call on a sequence filling these tables runs (see the module comment).
fn route_for(tables: &[(&str, Option<&TableRule>)]) -> SequenceRoute {
    if let Some((table, _)) = tables
        .iter()
        .find(|(_, rule)| matches!(rule, Some(TableRule::Reference)))
    {
        return SequenceRoute::Copies(last_ident_of(table));
    }
    let mut shards = tables.iter().map(|(_, rule)| match rule {
        Some(TableRule::Pinned { shard }) => Some(*shard),
        _ => None,
    });
    match shards.next() {
        Some(Some(first)) if first != HOME && shards.all(|s| s == Some(first)) => {
            SequenceRoute::Shard(first)
        }
        _ => SequenceRoute::Home,
    }
}

/// A table's name without its schema or quotes, as a reference table's writers lock it.
fn last_ident_of(table: &str) -> String {
    table
        .rsplit('.')
        .next()
        .unwrap_or(table)
        .trim_matches('"')
        .to_lowercase()
}

/// The first shard's reading of a setval call's arguments: the sequence (as `regclass` prints
/// it), the next value it would hand out, and its increment, as one line `seq|next|increment`.
fn reading(args: &[&Expr]) -> String {
    let called = args
        .get(2)
        .map_or("true".to_string(), |c| format!("({c})::pg_catalog.bool"));
    format!(
        "SELECT s::pg_catalog.text OPERATOR(pg_catalog.||) '|' OPERATOR(pg_catalog.||) \
         (CASE WHEN {called} THEN v OPERATOR(pg_catalog.+) q.seqincrement ELSE v END)::pg_catalog.text \
         OPERATOR(pg_catalog.||) '|' OPERATOR(pg_catalog.||) q.seqincrement::pg_catalog.text \
         FROM (SELECT ({})::pg_catalog.regclass AS s, ({})::pg_catalog.int8 AS v) a \
         JOIN pg_catalog.pg_sequence q ON q.seqrelid OPERATOR(pg_catalog.=) a.s",
        args[0], args[1]
    )
}

/// The columns the sequence `named` (an expression giving its name) fills, as `table|column`:
/// those it belongs to (serial, identity) and those whose default calls it.
fn users(named: &str) -> String {
    let sequence = format!("({named})::pg_catalog.regclass");
    format!(
        "SELECT d.refobjid::pg_catalog.regclass::pg_catalog.text OPERATOR(pg_catalog.||) '|' OPERATOR(pg_catalog.||) a.attname \
         FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_attribute a \
           ON a.attrelid OPERATOR(pg_catalog.=) d.refobjid AND a.attnum OPERATOR(pg_catalog.=) d.refobjsubid \
         WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass \
           AND d.objid OPERATOR(pg_catalog.=) {sequence} \
           AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass \
           AND d.deptype IN ('a', 'i') \
         UNION \
         SELECT ad.adrelid::pg_catalog.regclass::pg_catalog.text OPERATOR(pg_catalog.||) '|' OPERATOR(pg_catalog.||) a.attname \
         FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_attrdef ad \
           ON d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND d.objid OPERATOR(pg_catalog.=) ad.oid \
         JOIN pg_catalog.pg_attribute a \
           ON a.attrelid OPERATOR(pg_catalog.=) ad.adrelid AND a.attnum OPERATOR(pg_catalog.=) ad.adnum \
         WHERE d.refobjid OPERATOR(pg_catalog.=) {sequence} \
           AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass"
    )
}

impl Exec<'_> {
    /// Before a sequence call runs (see the module comment): where it runs, or Err when it
    /// was refused, its error written for the client.
    pub async fn sequence_call_checked(
        &mut self,
        stmt: &Statement,
        params: &Params,
        types: &[u32],
    ) -> R<Result<SequenceRoute, ()>> {
        match sequence_call(stmt) {
            Some(SequenceCall::Set(args)) => self.setval_checked(&args, params, types).await,
            Some(SequenceCall::Next(named)) if self.placement.has_copies_or_pins() => {
                self.sequence_route(named, params, types).await
            }
            _ => Ok(Ok(SequenceRoute::Home)),
        }
    }

    /// Where the sequence `named` (an expression giving its name, bound as the client bound
    /// it) is drawn from: the route a call of it alone takes. Err when the first shard could
    /// not tell, its error (the call's own: no such sequence) written for the client.
    pub(super) async fn sequence_route(
        &mut self,
        named: &Expr,
        params: &Params,
        types: &[u32],
    ) -> R<Result<SequenceRoute, ()>> {
        let Some(request) = super::given_lookup::request(&users(&named.to_string()), params, types)
        else {
            return Ok(Ok(SequenceRoute::Home));
        };
        self.columns_filled(request).await
    }

    /// The route for the columns (`table|column` lines) that `request` reads on the first
    /// shard, in the client's transaction: an error there is the one the call itself would
    /// get (its sequence does not exist).
    async fn columns_filled(&mut self, request: bytes::Bytes) -> R<Result<SequenceRoute, ()>> {
        Ok(match self.read_in_transaction(HOME, &request).await? {
            Ok(columns) => Ok(self.route_of(&columns)),
            Err(()) => Err(()),
        })
    }

    fn route_of(&self, columns: &[String]) -> SequenceRoute {
        let tables: Vec<(&str, Option<&TableRule>)> = columns
            .iter()
            .filter_map(|c| c.rsplit_once('|'))
            .map(|(table, _)| (table, self.placement.rule(table)))
            .collect();
        route_for(&tables)
    }

    /// The lines `request` reads on `shard`, in the client's transaction; Err with the
    /// shard's error written for the client.
    pub(super) async fn read_in_transaction(
        &mut self,
        shard: usize,
        request: &bytes::Bytes,
    ) -> R<Result<Vec<String>, ()>> {
        if self.enlist(shard).await? == Step::Failed {
            return Ok(Err(()));
        }
        self.links[shard].send(request).await?;
        let (read, error) = self.values_until_ready(shard).await?;
        if let Some(e) = error {
            self.own_error(&e);
            return Ok(Err(()));
        }
        Ok(Ok(read))
    }

    async fn setval_checked(
        &mut self,
        args: &[&Expr],
        params: &Params,
        types: &[u32],
    ) -> R<Result<SequenceRoute, ()>> {
        if let Some(blocks) = self.key_blocks {
            blocks.forget();
        }
        let Some(request) = super::given_lookup::request(&reading(args), params, types) else {
            return Ok(Ok(SequenceRoute::Home));
        };
        let read = match self.read_in_transaction(HOME, &request).await? {
            Ok(read) => read,
            Err(()) => return Ok(Err(())),
        };
        // No line: not a sequence, and the call fails on the first shard as it would anyway.
        let Some(move_to) = read.first().and_then(|l| MoveTo::read(l)) else {
            return Ok(Ok(SequenceRoute::Home));
        };
        Ok(match self.kept_past_use(&move_to, "setval").await? {
            Ok(columns) => Ok(self.route_of(&columns)),
            Err(()) => Err(()),
        })
    }

    /// Refuses (Err, the error written) a move of a sequence back to or below a value a
    /// sharded table it fills holds; otherwise the columns it fills (`table|column`).
    pub(super) async fn kept_past_use(
        &mut self,
        to: &MoveTo<'_>,
        statement: &str,
    ) -> R<Result<Vec<String>, ()>> {
        let (columns, error) = self
            .query_values(HOME, &users(&crate::sql::string_literal(to.sequence)))
            .await?;
        if let Some(e) = error {
            self.own_error(&e);
            return Ok(Err(()));
        }
        // A sequence counting down is not drawn from by the proxy.
        let sharded: Vec<(String, String)> = columns
            .iter()
            .filter_map(|c| c.rsplit_once('|'))
            .filter(|(table, _)| {
                to.increment > 0
                    && matches!(self.placement.rule(table), Some(TableRule::Sharded { .. }))
            })
            .map(|(t, c)| (t.to_string(), c.to_string()))
            .collect();
        for (table, column) in sharded {
            let Ok(most) = self.most_in_use(&table, &column).await? else {
                return Ok(Err(()));
            };
            if let Some(most) = most.filter(|&m| m >= to.next) {
                let (sequence, next) = (to.sequence, to.next);
                let e = PgError::error(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    format!("{statement} would move sequence {sequence} back to {next}, at or below {column} {most} that sharded table {table} holds"),
                )
                .with_detail("The proxy gives the sequence's values to rows on every shard, and no shard's index sees the other shards' rows: values handed out again would be written beside the rows that hold them, where PostgreSQL raises 23505 at each.")
                .with_hint(format!(
                    "Move it past the values in use: SELECT setval({}, {most});",
                    crate::sql::string_literal(sequence)
                ));
                self.error(&e);
                return Ok(Err(()));
            }
        }
        Ok(Ok(columns))
    }

    /// The largest value of `column` in `table` over every shard, as the client's transaction
    /// sees it (its own rows counted, rows it deleted not); in REPEATABLE READ or under a
    /// snapshot cut, whose snapshot may predate later commits, as committed too. Err when a
    /// read failed, its error written for the client.
    async fn most_in_use(&mut self, table: &str, column: &str) -> R<Result<Option<i64>, ()>> {
        let sql = format!(
            "SELECT pg_catalog.max({})::pg_catalog.text FROM {table}",
            Ident::with_quote('"', column)
        );
        let mut q = bytes::BytesMut::new();
        crate::protocol::build::query(&sql, &mut q);
        let request = q.freeze();
        let mut most = None;
        for s in 0..self.links.len() {
            match self.read_in_transaction(s, &request).await? {
                Ok(read) => most = most.max(read.first().and_then(|v| v.parse().ok())),
                Err(()) => return Ok(Err(())),
            }
        }
        if !self.needs_fresh_look().await? {
            return Ok(Ok(most));
        }
        let Some(catalog) = self.catalog else {
            return Ok(Ok(most));
        };
        for s in 0..self.links.len() {
            match catalog.texts_of(s, &sql).await {
                Ok(found) => {
                    let here = found.into_iter().flatten().next();
                    most = most.max(here.and_then(|v| v.parse().ok()));
                }
                Err(e) => {
                    self.error(&PgError::error(
                        "58000",
                        format!("cannot read the values {table} holds: {e}"),
                    ));
                    return Ok(Err(()));
                }
            }
        }
        Ok(Ok(most))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(sql: &str) -> Statement {
        sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, sql)
            .unwrap()
            .pop()
            .unwrap()
    }

    /// The call read from `sql`: its function and arguments.
    fn call(sql: &str) -> Option<(&'static str, Vec<String>)> {
        let text = |a: &[&Expr]| a.iter().map(|e| e.to_string()).collect();
        match sequence_call(&parsed(sql))? {
            SequenceCall::Set(a) => Some(("setval", text(&a))),
            SequenceCall::Next(a) => Some(("nextval", text(&[a]))),
        }
    }

    #[test]
    fn only_a_call_alone_is_read() {
        assert_eq!(
            call("SELECT setval('lines_id_seq', 5)"),
            Some(("setval", vec!["'lines_id_seq'".into(), "5".into()]))
        );
        assert_eq!(
            call("SELECT pg_catalog.setval(pg_get_serial_sequence('\"lines\"', 'id'), 1, false)"),
            Some((
                "setval",
                vec![
                    "pg_get_serial_sequence('\"lines\"', 'id')".into(),
                    "1".into(),
                    "false".into()
                ]
            ))
        );
        assert_eq!(
            call("select setval($1, $2) as v"),
            Some(("setval", vec!["$1".into(), "$2".into()]))
        );
        assert_eq!(
            call("SELECT pg_catalog.NEXTVAL('refs_id_seq'::regclass)"),
            Some(("nextval", vec!["'refs_id_seq'::REGCLASS".into()]))
        );
        assert_eq!(call("SELECT setval('s', 5), 1"), None);
        assert_eq!(call("SELECT setval('s', max(id)) FROM lines"), None);
        assert_eq!(call("SELECT setval('s')"), None);
        assert_eq!(call("SELECT nextval('s', 2)"), None);
        assert_eq!(call("SELECT currval('s')"), None);
        assert_eq!(call("SELECT nextval('s') FROM generate_series(1, 3)"), None);
    }

    #[test]
    fn the_reading_asks_for_the_next_value_after_the_call() {
        let stmt = parsed("SELECT setval('s', 5, false)");
        let Some(SequenceCall::Set(args)) = sequence_call(&stmt) else {
            panic!("a setval");
        };
        let sql = reading(&args);
        assert!(sql.contains("CASE WHEN (false)::pg_catalog.bool"), "{sql}");
        assert!(
            sql.contains("('s')::pg_catalog.regclass AS s, (5)::pg_catalog.int8 AS v"),
            "{sql}"
        );
    }

    #[test]
    fn a_call_runs_where_the_tables_it_fills_draw() {
        let (reference, sharded) = (
            TableRule::Reference,
            TableRule::Sharded {
                key_column: "id".into(),
                key_type: crate::placement::KeyType::Integer,
            },
        );
        let (pinned, pinned_home) = (
            TableRule::Pinned { shard: 2 },
            TableRule::Pinned { shard: HOME },
        );
        assert_eq!(route_for(&[]), SequenceRoute::Home);
        assert_eq!(route_for(&[("t", Some(&sharded))]), SequenceRoute::Home);
        assert_eq!(route_for(&[("t", None)]), SequenceRoute::Home);
        assert_eq!(
            route_for(&[("t", Some(&sharded)), ("public.\"Refs\"", Some(&reference))]),
            SequenceRoute::Copies("refs".into())
        );
        assert_eq!(
            route_for(&[("p", Some(&pinned)), ("q", Some(&pinned))]),
            SequenceRoute::Shard(2)
        );
        assert_eq!(
            route_for(&[("p", Some(&pinned)), ("r", Some(&reference))]),
            SequenceRoute::Copies("r".into())
        );
        // Drawn from on two shards: no one shard is right, and the first is where it was.
        assert_eq!(
            route_for(&[("p", Some(&pinned)), ("t", Some(&sharded))]),
            SequenceRoute::Home
        );
        assert_eq!(route_for(&[("p", Some(&pinned_home))]), SequenceRoute::Home);
    }
}
