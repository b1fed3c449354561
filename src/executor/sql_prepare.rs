//! SQL-level prepared statements (`PREPARE`, `EXECUTE`, `DEALLOCATE`) on several shards.
//!
//! The proxy keeps them itself, per session: a statement prepared on one shard could not run on
//! the shard an EXECUTE's arguments route it to. PREPARE also prepares the statement on the home
//! shard (PostgreSQL analyses it there, so a missing table or a type error is reported at
//! PREPARE, as directly), and stores it. In session mode the home shard keeps it, and describes
//! `EXECUTE name`; in transaction mode its connections are shared, so it is deallocated there
//! at once, and a Parse of `EXECUTE name(...)` becomes a Parse of the statement itself
//! (`inline_execute`). So nothing ties the session to a connection. EXECUTE puts each argument
//! in place of its `$n`, cast to the declared type, and plans the result like any statement, so
//! the key in an argument routes it.
//! DEALLOCATE of a name the proxy does not hold goes to the shards (a protocol-level statement
//! of the same namespace), and EXECUTE of such a name runs the statement the client prepared
//! through the protocol, read back from the home shard.

use super::session::state::SqlPrepared;
use super::session::{Exec, Step, R};
use crate::error::{sqlstate, PgError};
use crate::protocol::build;
use crate::protocol::message::{ClientMessage, Kind, Parse};
use crate::protocol::Frame;
use crate::router::params::Params;
use crate::router::plan::{plan, Plan, PreparedCmd, HOME};
use sqlparser::ast::{visit_expressions_mut, DataType, Expr, Statement, Value};
use std::ops::ControlFlow;
use std::sync::Arc;

/// The highest `$n` in the statement.
fn placeholders(stmt: &Statement) -> usize {
    let mut most = 0;
    let mut stmt = stmt.clone();
    let _ = visit_expressions_mut(&mut stmt, |e| {
        if let Expr::Value(v) = e {
            if let Value::Placeholder(p) = &v.value {
                if let Some(n) = p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
                    most = most.max(n);
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
    most
}

/// `body` with `$n` replaced by the n-th argument (parenthesized, and cast when its type was
/// declared). Arguments are parsed expressions, so their text cannot escape their place.
fn substitute(body: &Statement, types: &[DataType], args: &[Expr]) -> Result<Statement, PgError> {
    let mut stmt = body.clone();
    let mut bad = None;
    let _ = visit_expressions_mut(&mut stmt, |e| {
        let n = match e {
            Expr::Value(v) => match &v.value {
                Value::Placeholder(p) => p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()),
                _ => None,
            },
            _ => None,
        };
        if let Some(n) = n {
            match args.get(n.wrapping_sub(1)) {
                Some(arg) => {
                    let arg = Expr::Nested(Box::new(arg.clone()));
                    *e = match types.get(n - 1) {
                        Some(t) => Expr::Cast {
                            kind: sqlparser::ast::CastKind::Cast,
                            expr: Box::new(arg),
                            data_type: t.clone(),
                            format: None,
                        },
                        None => arg,
                    };
                }
                None => bad = Some(n),
            }
        }
        ControlFlow::<()>::Continue(())
    });
    match bad {
        Some(n) => Err(PgError::error(
            "42P02",
            format!("there is no parameter ${n}"),
        )),
        None => Ok(stmt),
    }
}

/// The statement `EXECUTE name(args)` of `prepared` runs: each argument (as text) in place of
/// its parameter, cast to its declared type.
fn with_arguments(
    name: &str,
    prepared: &SqlPrepared,
    args: &[String],
) -> Result<Statement, PgError> {
    let expected = placeholders(&prepared.body).max(prepared.types.len());
    if args.len() != expected {
        return Err(PgError::error(
            "42601",
            format!("wrong number of parameters for prepared statement \"{name}\""),
        )
        .with_detail(format!(
            "Expected {expected} parameters but got {}.",
            args.len()
        )));
    }
    let types = parse_types(&prepared.types).unwrap_or_default();
    let args = if args.is_empty() {
        Vec::new()
    } else {
        parse_select_list(&format!("SELECT {}", args.join(", ")))
            .ok_or_else(crate::router::plan::unrecognised)?
    };
    substitute(&prepared.body, &types, &args)
}

/// Types and arguments read back as syntax trees (the planner stored them as text).
fn parse_types(types: &[String]) -> Option<Vec<DataType>> {
    let text = format!(
        "SELECT {}",
        types
            .iter()
            .map(|t| format!("NULL::{t}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if types.is_empty() {
        return Some(Vec::new());
    }
    let exprs = parse_select_list(&text)?;
    exprs
        .into_iter()
        .map(|e| match e {
            Expr::Cast { data_type, .. } => Some(data_type),
            _ => None,
        })
        .collect()
}

fn parse_select_list(text: &str) -> Option<Vec<Expr>> {
    let stmts =
        sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, text)
            .ok()?;
    let Some(Statement::Query(q)) = stmts.into_iter().next() else {
        return None;
    };
    let sqlparser::ast::SetExpr::Select(s) = *q.body else {
        return None;
    };
    s.projection
        .into_iter()
        .map(|item| match item {
            sqlparser::ast::SelectItem::UnnamedExpr(e) => Some(e),
            _ => None,
        })
        .collect()
}

impl Exec<'_> {
    pub async fn sql_prepared(&mut self, cmd: PreparedCmd, sql: &str) -> R<Step> {
        match cmd {
            PreparedCmd::Prepare { name, types, body } => self.prepare(name, types, &body).await,
            PreparedCmd::Execute { name, args } => self.execute_prepared(&name, &args).await,
            // The proxy's own statements are held on the home shard only, and in transaction
            // mode not even there.
            PreparedCmd::Deallocate(Some(name)) if self.sql_statements.remove(&name).is_some() => {
                if self.pool.shares() {
                    build::command_complete("DEALLOCATE", &mut self.out);
                    return Ok(Step::Done);
                }
                self.on_all(sql, &[HOME]).await
            }
            PreparedCmd::Deallocate(name) => {
                if name.is_none() {
                    self.sql_statements.clear();
                }
                // Protocol-level statements carry this session's names on the shards.
                if self.pool.shares() || name.is_some() {
                    if let Some(step) = self.pooled_deallocate(name.as_deref()) {
                        return Ok(step);
                    }
                }
                if self.pool.renames() {
                    self.pool.names.forget_all();
                }
                self.session_statement(sql).await
            }
        }
    }

    async fn prepare(&mut self, name: String, types: Vec<String>, body: &str) -> R<Step> {
        // One namespace with protocol-level statements, which carry other names on the shards
        // in transaction mode.
        if self.sql_statements.contains_key(&name) || self.pool.names.shard_name(&name).is_some() {
            return Ok(self.error(&PgError::error(
                "42P05",
                format!("prepared statement \"{name}\" already exists"),
            )));
        }
        let parsed = self.parse(body).filter(|v| v.len() == 1);
        let (Some(parsed), Some(_)) = (parsed, parse_types(&types)) else {
            return Ok(self.error(&crate::router::plan::unrecognised()));
        };
        // PostgreSQL analyses the statement at PREPARE: the home shard reports what is wrong.
        let list = if types.is_empty() {
            String::new()
        } else {
            format!("({})", types.join(", "))
        };
        // In session mode the home shard keeps it too: a Describe of `EXECUTE name` is
        // answered there, and protocol-level statements share the namespace. A shared
        // connection must not keep it, under a name another session may use.
        let prepare = if self.pool.shares() {
            let checked = crate::sql::identifier(&self.pool.names.fresh(&name));
            format!("PREPARE {checked}{list} AS {body};\nDEALLOCATE {checked}")
        } else {
            format!("PREPARE {}{list} AS {body}", crate::sql::identifier(&name))
        };
        if let Some(e) = self.run_quiet(HOME, &prepare).await? {
            self.rewritten = true;
            self.shard_error(&e);
            self.rewritten = false;
            return Ok(Step::Failed);
        }
        self.sql_statements.insert(
            name,
            SqlPrepared {
                types,
                body: parsed[0].clone(),
            },
        );
        build::command_complete("PREPARE", &mut self.out);
        Ok(Step::Done)
    }

    async fn execute_prepared(&mut self, name: &str, args: &[String]) -> R<Step> {
        let stmt = match self.executed_statement(name, args).await? {
            Ok(stmt) => stmt,
            Err(step) => return Ok(step),
        };
        let text = stmt.to_string();
        let planned = plan(&stmt, &self.placement, &Params::default());
        self.rewritten = true;
        let step = Box::pin(self.run_plan(planned, &text)).await;
        self.rewritten = false;
        step
    }

    /// The statement `EXECUTE name(args)` stands for: the prepared statement with each argument
    /// in place, ready to plan. An error is already written for the client.
    pub async fn executed_statement(
        &mut self,
        name: &str,
        args: &[String],
    ) -> R<Result<Arc<Statement>, Step>> {
        let prepared = match self.sql_statements.get(name).cloned() {
            Some(p) => p,
            None => match self.protocol_prepared(name).await? {
                Ok(Some(p)) => p,
                Ok(None) => {
                    return Ok(Err(self.error(&PgError::error(
                        "26000",
                        format!("prepared statement \"{name}\" does not exist"),
                    ))))
                }
                Err(step) => return Ok(Err(step)),
            },
        };
        let stmt = match with_arguments(name, &prepared, args) {
            Ok(s) => s,
            Err(e) => return Ok(Err(self.error(&e))),
        };
        self.fetch_insert_columns(&stmt).await?;
        let stmt = match self.rewrite_insert(&stmt, &Params::default(), &[]).await? {
            super::insert_select::Rewrite::Rewritten(rewritten) => *rewritten,
            super::insert_select::Rewrite::Failed => return Ok(Err(Step::Failed)),
            // Planned from here as one statement, it would reach the first shard's copy only.
            super::insert_select::Rewrite::OnEveryCopy(_) | super::insert_select::Rewrite::OnShard(_)
                if super::sequence_moves::moves_sequence(&stmt, &self.placement) =>
            {
                return Ok(Err(self.error(
                    &PgError::error(
                        sqlstate::FEATURE_NOT_SUPPORTED,
                        "EXECUTE of a setval or nextval of a sequence that a reference table, or a table on one shard, draws from is not supported",
                    )
                    .with_hint("Call it directly: SELECT setval(...) or SELECT nextval(...)."),
                )))
            }
            _ => stmt,
        };
        Ok(Ok(self.with_insert_columns(&Arc::new(stmt))))
    }
}

impl Exec<'_> {
    /// In transaction mode, a Parse of `EXECUTE name(args)` of a statement the session keeps
    /// becomes a Parse of that statement with the arguments in place (the Parse's own
    /// parameters stay parameters), since no shard connection holds `name`: Describe and Bind
    /// then treat it as any statement. Any other message is left as it was.
    ///
    /// PostgreSQL looks `name` up at every execution, so what was inlined is remembered, and a
    /// Bind finding `name` deallocated or prepared again since undoes it (`inlined_went_stale`).
    pub fn inline_execute(&mut self, m: &mut ClientMessage) {
        if !self.pool.shares() {
            return;
        }
        let Kind::Parse(p) = &m.kind else {
            return;
        };
        let first = crate::sql::without_leading_comments(&p.sql);
        if !first
            .get(..7)
            .is_some_and(|w| w.eq_ignore_ascii_case("execute"))
        {
            return;
        }
        let Some(sql) = self.inlined(&p.sql) else {
            return;
        };
        self.pool
            .inlined
            .insert(p.name.clone(), (p.sql.to_string(), sql.clone()));
        let parse = Parse {
            name: p.name.clone(),
            sql: sql.into(),
            param_types: p.param_types.clone(),
        };
        let mut bytes = bytes::BytesMut::new();
        parse.encode(&mut bytes);
        *m = ClientMessage {
            frame: Frame {
                tag: b'P',
                bytes: bytes.freeze(),
            },
            kind: Kind::Parse(parse),
        };
    }

    /// For a Bind of `statement`, whose Parse `inline_execute` inlined: when the statement it
    /// executes was deallocated or prepared again since, the client's text and the text it had
    /// become; the statement is then no longer taken for inlined.
    pub fn inlined_went_stale(&mut self, statement: &str) -> Option<(String, String)> {
        let (client, text) = self.pool.inlined.get(statement)?;
        if self.inlined(client).as_deref() == Some(text.as_str()) {
            return None;
        }
        self.pool.inlined.remove(statement)
    }

    /// `sql`, an EXECUTE of a statement the session keeps, with its arguments in place; None
    /// when it is not one, or its arguments do not fit (the shard then answers for it).
    fn inlined(&self, sql: &str) -> Option<String> {
        let stmts = self.parse(sql).filter(|v| v.len() == 1)?;
        let Plan::Prepared(PreparedCmd::Execute { name, args }) =
            plan(&stmts[0], &self.placement, &Params::default())
        else {
            return None;
        };
        let kept;
        let prepared = match self.sql_statements.get(&name) {
            Some(p) => p,
            None => {
                kept = self.parsed_with_known_types(&name)?;
                &kept
            }
        };
        with_arguments(&name, prepared, &args)
            .ok()
            .map(|s| s.to_string())
    }

    /// A statement the client prepared through the protocol, as a SQL-prepared one, when its
    /// text is kept and the types of its parameters are known here: it has none, or its Parse
    /// declared each, built in. The types PostgreSQL inferred for open ones are learnt from a
    /// shard only when it runs (see `parsed_statement`).
    fn parsed_with_known_types(&self, name: &str) -> Option<SqlPrepared> {
        let (text, oids) = self.pool.names.parsed(self.pool.names.shard_name(name)?)?;
        let body = self.parse(text).filter(|v| v.len() == 1)?[0].clone();
        let types: Vec<String> = oids
            .iter()
            .map(|&o| crate::sql::builtin_types::name_of(o))
            .collect::<Option<_>>()?;
        (types.len() >= placeholders(&body)).then_some(SqlPrepared { types, body })
    }
}

impl Exec<'_> {
    /// A statement the client prepared through the protocol (Parse with a name), which the home
    /// shard holds under that name: its text and the parameter types PostgreSQL settled on
    /// there, so EXECUTE runs it like a SQL-prepared one.
    async fn protocol_prepared(&mut self, name: &str) -> R<Result<Option<SqlPrepared>, Step>> {
        let shard_name = self.pool.names.shard_name(name).unwrap_or(name).to_string();
        let name = crate::sql::string_literal(&shard_name);
        // The statement first, then its parameter types in order.
        let sql = format!(
            "SELECT v FROM (SELECT 0::pg_catalog.int8 AS n, statement AS v \
             FROM pg_catalog.pg_prepared_statements WHERE name OPERATOR(pg_catalog.=) {name} \
             UNION ALL SELECT u.n, u.t::pg_catalog.text FROM pg_catalog.pg_prepared_statements, \
             pg_catalog.unnest(parameter_types) WITH ORDINALITY AS u(t, n) \
             WHERE name OPERATOR(pg_catalog.=) {name}) q ORDER BY n"
        );
        let (mut values, error) = self.query_values(HOME, &sql).await?;
        if let Some(e) = error {
            self.shard_error(&e);
            return Ok(Err(Step::Failed));
        }
        if values.is_empty() {
            // In transaction pooling the home shard's connection now may not be the one that
            // prepared it: the client's Parse says what it is.
            match self.parsed_statement(&shard_name).await? {
                Ok(Some(found)) => values = found,
                other => return Ok(other.map(|_| None)),
            }
        }
        let text = values.remove(0);
        let body = self.parse(&text).filter(|v| v.len() == 1);
        let (Some(body), Some(_)) = (body, parse_types(&values)) else {
            return Ok(Err(self.error(&crate::router::plan::unrecognised())));
        };
        Ok(Ok(Some(SqlPrepared {
            types: values,
            body: body[0].clone(),
        })))
    }
}

impl Exec<'_> {
    /// `values` (a statement's text) with the types PostgreSQL infers for its parameters when
    /// none is declared, as it did for the client's Parse: a SQL PREPARE of the same text on
    /// the home shard infers them again. Put in as written, an argument could take another
    /// type than on a direct connection (`5` for a text parameter).
    async fn inferred_types(
        &mut self,
        values: Vec<String>,
    ) -> R<Result<Option<Vec<String>>, Step>> {
        const PROBE: &str = "shardgate_types";
        if !values[0].contains('$') {
            return Ok(Ok(Some(values)));
        }
        // The text on lines of its own: a trailing `--` comment cannot swallow what follows.
        let sql = format!(
            "PREPARE {PROBE} AS\n{}\n;SELECT pg_catalog.format_type(u.t, NULL) \
             FROM pg_catalog.pg_prepared_statements, \
             pg_catalog.unnest(parameter_types) WITH ORDINALITY AS u(t, n) \
             WHERE name OPERATOR(pg_catalog.=) '{PROBE}' ORDER BY u.n;DEALLOCATE {PROBE}",
            values[0]
        );
        self.with_types_from(values, &sql).await
    }

    /// `values` followed by the type names `sql` reads on the home shard.
    async fn with_types_from(
        &mut self,
        mut values: Vec<String>,
        sql: &str,
    ) -> R<Result<Option<Vec<String>>, Step>> {
        let (types, error) = self.query_values(HOME, sql).await?;
        if let Some(e) = error {
            self.shard_error(&e);
            return Ok(Err(Step::Failed));
        }
        values.extend(types);
        Ok(Ok(Some(values)))
    }

    /// The text of the client's Parse of `shard_name` and its declared parameter types, by
    /// name (looked up on the home shard). Types left open in a Parse that declared others
    /// cannot be named, and are refused.
    async fn parsed_statement(&mut self, shard_name: &str) -> R<Result<Option<Vec<String>>, Step>> {
        let Some((text, oids)) = self
            .pool
            .names
            .parsed(shard_name)
            .map(|(t, o)| (t.to_string(), o.to_vec()))
        else {
            return Ok(Ok(None));
        };
        let values = vec![text];
        if oids.iter().all(|&o| o == 0) {
            return self.inferred_types(values).await;
        }
        if oids.contains(&0) {
            return Ok(Err(self.error(
                &PgError::error(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "EXECUTE of this statement cannot run here: it was prepared through the \
                     protocol on another server connection, with some parameter types left open",
                )
                .with_hint(
                    "Declare every parameter type in the Parse, or bind it through the protocol.",
                ),
            )));
        }
        let list: Vec<String> = oids.iter().map(u32::to_string).collect();
        let sql = format!(
            "SELECT pg_catalog.format_type(o, NULL) \
             FROM pg_catalog.unnest('{{{}}}'::pg_catalog.oid[]) WITH ORDINALITY AS u(o, n) \
             ORDER BY n",
            list.join(",")
        );
        self.with_types_from(values, &sql).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(sql: &str) -> Statement {
        sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn arguments_take_the_place_of_their_parameters_with_the_declared_type() {
        let body = statement("SELECT * FROM t WHERE id = $1 AND name = $2");
        assert_eq!(placeholders(&body), 2);
        let types = parse_types(&["bigint".into()]).unwrap();
        let args = parse_select_list("SELECT 41 + 1, 'x'").unwrap();
        let done = substitute(&body, &types, &args).unwrap();
        assert_eq!(
            done.to_string(),
            "SELECT * FROM t WHERE id = CAST((41 + 1) AS BIGINT) AND name = ('x')"
        );
    }

    #[test]
    fn a_parameter_without_an_argument_is_an_error() {
        let body = statement("SELECT $3");
        let args = parse_select_list("SELECT 1").unwrap();
        assert!(substitute(&body, &[], &args).is_err());
    }
}
