//! Planning one statement for a cluster of several shards: run it on one shard, scatter it and
//! merge, broadcast it, handle it as session or transaction control, answer it in the proxy, or
//! refuse it with a reason. The planner only decides; `executor` carries plans out.
//!
//! Refusals are deliberate: a statement whose rows could be on several shards in a way the
//! merger cannot reproduce exactly gets SQLSTATE 0A000 with a hint, never a guess. A write on
//! several shards is a `Plan::Write`, which the executor runs as one distributed transaction.

use super::keys::{keys_in, literal_key, strip, KeySet};
use super::params::Params;
use crate::error::{sqlstate, PgError};
use crate::placement::{KeyType, KeyValue, Placement, TableRule};
use crate::sql::is_catalog_relation;
use sqlparser::ast::{
    AssignmentTarget, Expr, FromTable, Ident, LimitClause, ObjectName, ObjectNamePart, OrderByKind,
    OrderBySort, Query, Select, SelectItem, SetExpr, Statement, TableFactor, TableObject,
    TableWithJoins, Value,
};
use std::collections::BTreeSet;
use std::ops::ControlFlow;

/// The shard that answers statements every shard would answer alike.
pub const HOME: usize = 0;

/// What to do with a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Run as written on one shard.
    Shard {
        shard: usize,
        write: bool,
    },
    /// Run `sql` on these shards and merge the results.
    Scatter {
        shards: Vec<usize>,
        sql: String,
        merge: MergeSpec,
    },
    /// A write on several shards, atomic as one distributed transaction. Each shard runs its
    /// own text (a multi-row INSERT sends each shard only its rows). `sum`: the command tag
    /// counts every shard's rows (sharded tables) rather than one copy's (reference tables).
    Write {
        parts: Vec<(usize, String)>,
        sum: bool,
        /// A split INSERT whose rows hold parameters: for each part, the client's parameters
        /// it uses (0-based), in the order its text numbers them `$1, $2, ...`. Empty: every
        /// part takes the client's parameters unchanged.
        picks: Vec<Vec<usize>>,
        /// A reference-table write: this table's writers take turns (see `executor::write`).
        serialize: Option<String>,
        /// A split INSERT ... RETURNING: the part (index in `parts`) of each row, in the
        /// client's order, so its returned rows come back in that order. Empty: as they come.
        row_order: Vec<usize>,
    },
    /// Run on every shard (DDL); `transactional`: it may run inside a transaction block.
    Broadcast {
        transactional: bool,
    },
    /// Session settings (SET, RESET, DISCARD ...): every shard.
    Session,
    Txn(TxnCmd),
    Admin(AdminCmd),
    Reject(PgError),
    /// Cursors (see `router::cursor`).
    Cursor(super::cursor::CursorCmd),
    /// COPY streamed through the proxy (see `router::copy`).
    Copy(super::copy::CopyPlan),
    /// SQL-level PREPARE / EXECUTE / DEALLOCATE, which the proxy keeps itself (see
    /// `executor::sql_prepare`).
    Prepared(PreparedCmd),
    /// Code the proxy cannot read (DO, CALL): on every shard, refused afterwards if it wrote
    /// rows of a sharded table (they would be written on every shard).
    Procedural,
    /// Text sqlparser cannot read and whose first words name no statement the proxy knows.
    /// A shard checks its syntax (a syntax error gets the server's own answer); otherwise it is
    /// refused (`unrecognised`).
    Unrecognised,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreparedCmd {
    /// `PREPARE name [(types)] AS statement`: the types as written, the statement's text.
    Prepare {
        name: String,
        types: Vec<String>,
        body: String,
    },
    /// `EXECUTE name [(args)]`: each argument expression as text.
    Execute { name: String, args: Vec<String> },
    /// `DEALLOCATE [PREPARE] name`, or ALL (None).
    Deallocate(Option<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnCmd {
    /// BEGIN / START TRANSACTION, with the text to replay on each shard as it enlists.
    Begin(String),
    Commit,
    Rollback,
    /// SAVEPOINT, RELEASE and ROLLBACK TO, with the name as the client wrote it.
    Savepoint(String),
    Release(String),
    RollbackTo(String),
    /// `SET TRANSACTION ...` (not SNAPSHOT): replayed after BEGIN on every shard the transaction
    /// reaches.
    SetTransaction(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCmd {
    Route {
        table: String,
        key: String,
    },
    /// Run a recovery pass now and list what it resolved.
    Recover,
    /// `SET shardgate.<name> = <value>` (the name without the prefix).
    Set {
        name: String,
        value: String,
    },
    /// `SHOW shardgate.<name>`.
    Show {
        name: String,
    },
}

impl AdminCmd {
    /// The columns of the rows the proxy answers with (None: a command without rows).
    pub fn columns(&self) -> Option<Vec<&str>> {
        match self {
            AdminCmd::Route { .. } => Some(vec!["table", "key", "slot", "shard"]),
            AdminCmd::Recover => Some(vec!["gid", "shard", "outcome"]),
            AdminCmd::Show { name } => Some(vec![match name.as_str() {
                "consistency" => "shardgate.consistency",
                "snapshot_scope" => "shardgate.snapshot_scope",
                "snapshot_ts" => "shardgate.snapshot_ts",
                _ => "shardgate",
            }]),
            AdminCmd::Set { .. } => None,
        }
    }
}

/// How to merge scattered results.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MergeSpec {
    pub order: Vec<SortKey>,
    pub limit: Option<u64>,
    pub offset: u64,
    /// Sort columns the shards return after the client's columns, removed before rows are sent.
    pub hidden: usize,
    /// Combine per-group partial aggregates (GROUP BY, aggregates, DISTINCT).
    pub aggregate: Option<super::aggregate::AggSpec>,
    /// The client's parameters (0-based) the shards' text uses, in its numbering `$1, $2, ...`,
    /// when the rewrite dropped some (a bound LIMIT or HAVING value the merge applies). None:
    /// every parameter, as bound.
    pub picks: Option<Vec<usize>>,
}

/// Renumbers the parameters `q` still uses as `$1, $2, ...` when a rewrite dropped some of the
/// `bound` ones (PostgreSQL refuses a Bind with more values than the statement uses); returns
/// which of the client's parameters to bind, or None when all are used.
pub(crate) fn keep_used_params<V>(q: &mut V, bound: usize) -> Option<Vec<usize>>
where
    V: sqlparser::ast::Visit + sqlparser::ast::VisitMut,
{
    let number = |e: &Expr| match e {
        Expr::Value(v) => match &v.value {
            Value::Placeholder(p) => p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()),
            _ => None,
        },
        _ => None,
    };
    let mut used = BTreeSet::new();
    let _ = sqlparser::ast::visit_expressions(&*q, |e: &Expr| {
        used.extend(number(e));
        ControlFlow::<()>::Continue(())
    });
    if used.len() == bound {
        return None;
    }
    let order: Vec<usize> = used.into_iter().collect();
    let _ = sqlparser::ast::visit_expressions_mut(q, |e: &mut Expr| {
        if let Some(n) = number(e) {
            if let (Expr::Value(v), Some(i)) = (&mut *e, order.iter().position(|&o| o == n)) {
                v.value = Value::Placeholder(format!("${}", i + 1));
            }
        }
        ControlFlow::<()>::Continue(())
    });
    Some(order.into_iter().map(|n| n - 1).collect())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    pub column: SortColumn,
    pub descending: bool,
    pub nulls_first: bool,
    /// Sorted with an explicit `COLLATE "C"` (or POSIX, ucs_basic): code-point order whatever
    /// the database's collation, which the merge reproduces by comparing bytes.
    pub bytewise: bool,
}

/// `COLLATE "C"`, `"POSIX"` or `ucs_basic` on a sort expression: Some(true). Another explicit
/// collation: Some(false), which the merge cannot reproduce. None: no COLLATE.
pub(crate) fn explicit_collation(e: &Expr) -> Option<bool> {
    let Expr::Collate { collation, .. } = e else {
        return None;
    };
    let name = match collation.0.last() {
        Some(ObjectNamePart::Identifier(i)) => i.value.clone(),
        _ => collation.to_string(),
    };
    Some(matches!(
        name.to_ascii_lowercase().as_str(),
        "c" | "posix" | "ucs_basic"
    ))
}

/// The refusal of ORDER BY with a collation other than C over several shards.
pub(crate) fn other_collation(e: &Expr) -> PgError {
    PgError::error(
        sqlstate::FEATURE_NOT_SUPPORTED,
        format!("ORDER BY {e} over several shards: the merge cannot order by that collation"),
    )
    .with_hint(
        "The merge orders text by code point: sort with COLLATE \"C\", or sort in the application.",
    )
}

/// An output column, by 1-based position or by name (resolved against the RowDescription).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortColumn {
    Position(usize),
    Name(String),
}

fn refuse(message: impl Into<String>, hint: impl Into<String>) -> Plan {
    Plan::Reject(PgError::error(sqlstate::FEATURE_NOT_SUPPORTED, message).with_hint(hint))
}

/// The same statement on every shard (a reference table keeps a full copy on each; `sum` is
/// false for one).
fn on_every_shard(placement: &Placement, stmt: &Statement, sum: bool) -> Plan {
    let text = stmt.to_string();
    Plan::Write {
        parts: (0..placement.shard_names.len())
            .map(|s| (s, text.clone()))
            .collect(),
        sum,
        picks: Vec::new(),
        serialize: if sum { None } else { written_table(stmt) },
        row_order: Vec::new(),
    }
}

/// The table an INSERT, UPDATE or DELETE (or EXPLAIN of one) writes.
fn written_table(stmt: &Statement) -> Option<String> {
    match stmt {
        Statement::Insert(ins) => match &ins.table {
            TableObject::TableName(n) => Some(last_ident(n).to_lowercase()),
            _ => None,
        },
        Statement::Update(up) => match &up.table.relation {
            TableFactor::Table { name, .. } => Some(last_ident(name).to_lowercase()),
            _ => None,
        },
        Statement::Delete(del) => match &del.from {
            FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => {
                match t.first().map(|t| &t.relation) {
                    Some(TableFactor::Table { name, .. }) => Some(last_ident(name).to_lowercase()),
                    _ => None,
                }
            }
        },
        Statement::Explain { statement, .. } => written_table(statement),
        _ => None,
    }
}

/// `SHOW shardgate.*`: answered by the proxy, recognised before parsing (sqlparser would take
/// it for an ordinary SHOW).
pub fn is_admin(sql: &str) -> bool {
    let mut words = sql.split_whitespace();
    matches!(words.next(), Some(w) if w.eq_ignore_ascii_case("show"))
        && words
            .next()
            .is_some_and(|w| w.to_ascii_lowercase().starts_with("shardgate."))
}

/// Plans SQL text that sqlparser could not parse, by its leading keywords.
pub fn plan_unparsed(sql: &str) -> Plan {
    // Leading keywords describe one statement; a text holding several is split by the caller,
    // and never routed by its first word.
    if crate::sql::split_statements(sql).len() > 1 {
        return Plan::Reject(
            PgError::error(
                "42601",
                "shardgate could not analyse this text of several statements",
            )
            .with_hint("Send the statements one at a time, or as one simple Query that PostgreSQL's syntax allows."),
        );
    }
    let words: Vec<String> = sql
        .split(|c: char| c.is_whitespace() || c == ';')
        .filter(|w| !w.is_empty())
        .take(3)
        .map(|w| w.to_ascii_lowercase())
        .collect();
    let w = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    // The savepoint name as written (quoted names keep their case).
    let raw_last = || {
        sql.trim()
            .trim_end_matches(';')
            .split_whitespace()
            .last()
            .unwrap_or("")
            .to_string()
    };
    if w(0) == "show" && w(1).starts_with("shardgate.") {
        return plan_admin(sql);
    }
    if let Some(set) = plan_set(sql) {
        return set;
    }
    match (w(0), w(1)) {
        ("begin" | "start", _) => {
            Plan::Txn(TxnCmd::Begin(sql.trim().trim_end_matches(';').to_string()))
        }
        ("commit" | "end", "prepared") | ("rollback", "prepared") | ("prepare", "transaction") => {
            refuse(
                "client-issued two-phase commit commands are not supported on several shards",
                "shardgate coordinates commits across shards itself.",
            )
        }
        ("commit" | "end", _) => Plan::Txn(TxnCmd::Commit),
        ("rollback", "to") => Plan::Txn(TxnCmd::RollbackTo(raw_last())),
        ("rollback" | "abort", _) => Plan::Txn(TxnCmd::Rollback),
        ("savepoint", _) => Plan::Txn(TxnCmd::Savepoint(raw_last())),
        ("release", _) => Plan::Txn(TxnCmd::Release(raw_last())),
        ("set", "transaction") if is_set_transaction(sql) => Plan::Txn(TxnCmd::SetTransaction(
            sql.trim().trim_end_matches(';').to_string(),
        )),
        ("fetch" | "move" | "close", _) => {
            super::cursor::plan_words(sql).unwrap_or(Plan::Unrecognised)
        }
        ("declare", _) => refuse(
            "shardgate could not read this cursor's query, so it cannot choose its shards",
            "Declare the cursor for a query without the syntax shardgate cannot read, or run the query without a cursor.",
        ),
        ("set" | "reset" | "discard" | "deallocate" | "lock", _) => Plan::Session,
        // A table-less SELECT sqlparser cannot read is the same on every shard.
        ("select", "") => Plan::Shard {
            shard: HOME,
            write: false,
        },
        (first, _) => super::utility::at_home(first)
            .or_else(|| super::utility::plan_keywords(&[w(0), w(1), w(2)]))
            .unwrap_or(Plan::Unrecognised),
    }
}

/// The refusal of a statement that is valid SQL but that the proxy cannot analyse.
pub fn unrecognised() -> PgError {
    PgError::error(
        sqlstate::FEATURE_NOT_SUPPORTED,
        "shardgate could not analyse this statement, so it cannot choose a shard for it",
    )
    .with_hint("Statements that cannot be routed are refused rather than guessed; run it directly on each shard.")
}

/// `SET TRANSACTION <modes>`; not SET TRANSACTION SNAPSHOT (a shard's own snapshot id, which
/// means nothing on the others) nor SET SESSION CHARACTERISTICS (a plain session setting).
fn is_set_transaction(sql: &str) -> bool {
    let words: Vec<String> = sql
        .split_whitespace()
        .take(3)
        .map(|w| w.to_ascii_lowercase())
        .collect();
    words.len() == 3 && words[0] == "set" && words[1] == "transaction" && words[2] != "snapshot"
}

/// `SET client_encoding` / `SET NAMES` to an encoding other than UTF-8: refused. The proxy reads
/// every statement to route it, and reads them as UTF-8; with another encoding a non-ASCII
/// character would be misread or break the session.
fn other_client_encoding(sql: &str) -> Option<Plan> {
    let words: Vec<String> = sql
        .split(|c: char| c.is_whitespace() || c == '=' || c == ';')
        .filter(|w| !w.is_empty())
        .map(|w| w.to_ascii_lowercase())
        .collect();
    let mut rest = words.iter().map(String::as_str).peekable();
    if rest.next() != Some("set") {
        return None;
    }
    if matches!(rest.peek(), Some(&"session" | &"local")) {
        rest.next();
    }
    let value = match rest.next() {
        Some("names") => rest.next(),
        Some("client_encoding") => match rest.next() {
            Some("to") => rest.next(),
            other => other,
        },
        _ => return None,
    }?;
    if is_utf8_name(value) || value.trim_matches('\'') == "default" {
        return None;
    }
    Some(Plan::Reject(
        PgError::error(
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("client encoding {value} is not supported on several shards"),
        )
        .with_hint("shardgate reads statements as UTF-8 to route them: use client_encoding UTF8 and convert in the application."),
    ))
}

/// UTF8 under any of the names PostgreSQL accepts for it (`UTF8`, `'utf-8'`, `unicode`).
pub fn is_utf8_name(value: &str) -> bool {
    let v: String = value
        .trim_matches(|c| c == '\'' || c == '"')
        .chars()
        .filter(|c| *c != '-' && *c != '_')
        .collect::<String>()
        .to_ascii_lowercase();
    v == "utf8" || v == "unicode"
}

/// `SET shardgate.<name> = <value>` / `TO <value>`: the proxy's own settings.
fn plan_set(sql: &str) -> Option<Plan> {
    if let Some(refusal) = other_client_encoding(sql) {
        return Some(refusal);
    }
    let text = sql.trim().trim_end_matches(';');
    let rest = text
        .get(..4)
        .filter(|w| w.eq_ignore_ascii_case("set "))
        .map(|_| text[4..].trim_start())?;
    let rest = rest
        .get(..8)
        .filter(|w| w.eq_ignore_ascii_case("session "))
        .map_or(rest, |_| rest[8..].trim_start());
    let (name, value) = rest.split_once(|c: char| c == '=' || c.is_whitespace())?;
    let name = name.trim().to_ascii_lowercase();
    let name = name.strip_prefix("shardgate.")?.to_string();
    let value = value.trim();
    let value = value
        .get(..3)
        .filter(|w| w.eq_ignore_ascii_case("to "))
        .map_or(value, |_| value[3..].trim())
        .trim_start_matches('=')
        .trim()
        .to_string();
    Some(Plan::Admin(AdminCmd::Set { name, value }))
}

fn plan_admin(sql: &str) -> Plan {
    let parts: Vec<&str> = sql
        .split_whitespace()
        .map(|p| p.trim_end_matches(';'))
        .collect();
    match parts.get(1).map(|s| s.to_ascii_lowercase()).as_deref() {
        Some("shardgate.route") if parts.len() == 4 => Plan::Admin(AdminCmd::Route {
            table: parts[2].to_string(),
            key: parts[3].trim_matches('\'').to_string(),
        }),
        Some("shardgate.recover") if parts.len() == 2 => Plan::Admin(AdminCmd::Recover),
        Some(var) if parts.len() == 2 => Plan::Admin(AdminCmd::Show {
            name: var.trim_start_matches("shardgate.").to_string(),
        }),
        _ => refuse(
            "unknown shardgate command",
            "Try: SHOW shardgate.route <table> <key>, or SHOW shardgate.recover",
        ),
    }
}

/// Names of every CTE defined anywhere in the statement (they are not tables).
fn cte_names<V: sqlparser::ast::Visit>(node: &V) -> Vec<String> {
    struct Ctes(Vec<String>);
    impl sqlparser::ast::Visitor for Ctes {
        type Break = ();
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            if let Some(w) = &q.with {
                self.0.extend(
                    w.cte_tables
                        .iter()
                        .map(|c| c.alias.name.value.to_ascii_lowercase()),
                );
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = Ctes(Vec::new());
    let _ = node.visit(&mut v);
    v.0
}

/// What can be refused from the statement alone, before parameters are bound: a read or write of
/// a table that is not declared. Key-dependent decisions wait for Bind.
pub fn check_at_parse(stmt: &Statement, placement: &Placement) -> Option<PgError> {
    if !matches!(
        stmt,
        Statement::Query(_) | Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_)
    ) {
        return None;
    }
    let ctes = cte_names(stmt);
    let found = tables_read(stmt).into_iter().find_map(|name| {
        let text = name.to_string();
        (placement.rule(&text).is_none()
            && !is_catalog_relation(&text)
            && !ctes.contains(&last_ident(&name).to_ascii_lowercase()))
        .then_some(text)
    });
    match found.map(|t| undeclared(&t)) {
        Some(Plan::Reject(e)) => Some(e),
        _ => None,
    }
}

/// Plans one parsed statement.
pub fn plan(stmt: &Statement, placement: &Placement, params: &Params) -> Plan {
    match stmt {
        Statement::Query(q) => plan_query(q, placement, params),
        Statement::Insert(ins) => plan_insert(ins, placement, params),
        Statement::Update(up) => {
            let TableFactor::Table { name, alias, .. } = &up.table.relation else {
                return refuse(
                    "UPDATE of this form is not supported on several shards",
                    "Update one table by its shard key.",
                );
            };
            if up.from.is_some() || !up.table.joins.is_empty() {
                return refuse(
                    "UPDATE ... FROM is not supported on several shards",
                    "Update one table by its shard key.",
                );
            }
            if let Some(TableRule::Sharded { key_column, .. }) = placement.rule(&name.to_string()) {
                let moves_key = up.assignments.iter().any(|a| match &a.target {
                    AssignmentTarget::ColumnName(c) => {
                        last_ident(c).eq_ignore_ascii_case(key_column)
                    }
                    AssignmentTarget::Tuple(cs) => cs
                        .iter()
                        .any(|c| last_ident(c).eq_ignore_ascii_case(key_column)),
                });
                if moves_key {
                    return refuse(
                        format!("UPDATE may not change the shard key {key_column} of {name}"),
                        "The row would belong on another shard. DELETE it and INSERT it with the new key instead.",
                    );
                }
            }
            plan_write_where(
                name,
                alias.as_ref().map(|a| &a.name),
                up.selection.as_ref(),
                placement,
                params,
                stmt,
            )
        }
        Statement::Delete(del) => {
            let tables = match &del.from {
                FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
            };
            let [TableWithJoins {
                relation: TableFactor::Table { name, alias, .. },
                joins,
            }] = tables.as_slice()
            else {
                return refuse(
                    "DELETE of this form is not supported on several shards",
                    "Delete from one table by its shard key.",
                );
            };
            if !joins.is_empty() || del.using.is_some() {
                return refuse(
                    "DELETE ... USING is not supported on several shards",
                    "Delete from one table by its shard key.",
                );
            }
            plan_write_where(
                name,
                alias.as_ref().map(|a| &a.name),
                del.selection.as_ref(),
                placement,
                params,
                stmt,
            )
        }
        Statement::CreateTable(ct) if ct.temporary => plan_unparsed("create temporary table"),
        Statement::CreateTable(ct) => {
            if let Some(TableRule::Sharded {
                key_column,
                key_type,
            }) = placement.rule(&ct.name.to_string())
            {
                for col in &ct.columns {
                    let text = col.to_string().to_ascii_uppercase();
                    if !(text.contains("SERIAL")
                        || text.contains("AS IDENTITY")
                        || text.contains("NEXTVAL("))
                    {
                        continue;
                    }
                    let is_key = col.name.value.eq_ignore_ascii_case(key_column);
                    // The proxy fills such a column from one sequence on the first shard (see
                    // executor::key_sequence); a key must be an integer key to be routed by it.
                    let integer_key = !is_key || *key_type == KeyType::Integer;
                    if integer_key && !text.contains("GENERATED ALWAYS") {
                        continue;
                    }
                    let (message, hint) = if integer_key {
                        (
                            format!("column {} of sharded table {} is GENERATED ALWAYS, which forbids the value shardgate gives it from the cluster's one sequence", col.name, ct.name),
                            "Use serial, bigserial or GENERATED BY DEFAULT AS IDENTITY.",
                        )
                    } else {
                        (
                            format!("the shard key {} of {} takes values from a sequence, but its key_type is not an integer type", col.name, ct.name),
                            "Declare an integer key_type, or give text and uuid keys in the INSERT.",
                        )
                    };
                    return refuse(message, hint);
                }
            }
            Plan::Broadcast {
                transactional: true,
            }
        }
        Statement::CreateIndex(ci) => Plan::Broadcast {
            transactional: !ci.concurrently,
        },
        // PostgreSQL refuses DROP DATABASE inside a transaction block.
        Statement::Drop {
            object_type: sqlparser::ast::ObjectType::Database,
            ..
        } => Plan::Broadcast {
            transactional: false,
        },
        Statement::AlterTable { .. }
        | Statement::Drop { .. }
        | Statement::CreateView { .. }
        | Statement::CreateSchema { .. }
        | Statement::CreateSequence { .. }
        | Statement::CreateType { .. }
        | Statement::CreateExtension { .. }
        | Statement::CreateFunction { .. }
        | Statement::AlterIndex { .. }
        | Statement::Truncate { .. }
        | Statement::Comment { .. }
        | Statement::Grant { .. }
        | Statement::Revoke { .. } => Plan::Broadcast {
            transactional: true,
        },
        Statement::Set(_) => {
            let text = stmt.to_string();
            if is_set_transaction(&text) {
                return Plan::Txn(TxnCmd::SetTransaction(text));
            }
            plan_set(&text).unwrap_or(Plan::Session)
        }
        Statement::Discard { .. } => Plan::Session,
        Statement::Copy { .. } => super::copy::plan_copy(stmt, placement),
        Statement::Merge(_) => refuse(
            "MERGE is not supported on several shards",
            "Write by key instead: INSERT ... ON CONFLICT DO UPDATE, or UPDATE and INSERT.",
        ),
        Statement::Declare { .. } => super::cursor::plan_declare(stmt, placement, params),
        Statement::Fetch { .. } | Statement::Close { .. } => {
            super::cursor::plan_words(&stmt.to_string()).unwrap_or(Plan::Unrecognised)
        }
        Statement::Prepare {
            name,
            data_types,
            statement,
        } => Plan::Prepared(PreparedCmd::Prepare {
            name: folded(name),
            types: data_types.iter().map(|t| t.to_string()).collect(),
            body: statement.to_string(),
        }),
        Statement::Execute {
            name: Some(name),
            parameters,
            immediate: false,
            into,
            using,
            ..
        } if into.is_empty() && using.is_empty() => Plan::Prepared(PreparedCmd::Execute {
            name: match name.0.last() {
                Some(ObjectNamePart::Identifier(i)) => folded(i),
                _ => name.to_string(),
            },
            args: parameters.iter().map(|e| e.to_string()).collect(),
        }),
        Statement::Deallocate { name, .. } => Plan::Prepared(PreparedCmd::Deallocate(
            (!(name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all")))
                .then(|| folded(name)),
        )),
        Statement::ShowVariable { variable } => {
            let name = variable
                .iter()
                .map(|i| i.value.to_ascii_lowercase())
                .collect::<Vec<_>>()
                .join(" ");
            if name.starts_with("shardgate.") {
                plan_admin(&format!("show {name}"))
            } else {
                Plan::Shard {
                    shard: HOME,
                    write: false,
                }
            }
        }
        Statement::StartTransaction { .. } => Plan::Txn(TxnCmd::Begin(stmt.to_string())),
        Statement::Commit { chain: false, .. } => Plan::Txn(TxnCmd::Commit),
        Statement::Rollback {
            chain: false,
            savepoint: None,
        } => Plan::Txn(TxnCmd::Rollback),
        Statement::Rollback {
            chain: false,
            savepoint: Some(name),
        } => Plan::Txn(TxnCmd::RollbackTo(name.to_string())),
        Statement::Savepoint { name } => Plan::Txn(TxnCmd::Savepoint(name.to_string())),
        Statement::ReleaseSavepoint { name } => Plan::Txn(TxnCmd::Release(name.to_string())),
        Statement::Explain {
            statement, analyze, ..
        } => match plan(statement, placement, params) {
            Plan::Shard { shard, write } if !(*analyze && write) => Plan::Shard { shard, write },
            // A reference-table write: every copy plans alike, and ANALYZE runs it on every
            // copy, as the write itself would; the client sees one copy's plan.
            Plan::Write {
                parts, sum: false, ..
            } if parts.len() == placement.shard_names.len() => {
                if *analyze {
                    on_every_shard(placement, stmt, false)
                } else {
                    Plan::Shard {
                        shard: HOME,
                        write: false,
                    }
                }
            }
            _ => refuse(
                "EXPLAIN of a statement that is not single-shard is not supported",
                "EXPLAIN it with a shard-key condition, or on a shard directly.",
            ),
        },
        _ => plan_unparsed(&stmt.to_string()),
    }
}

/// An identifier as PostgreSQL names it: unquoted ones fold to lower case.
fn folded(i: &Ident) -> String {
    match i.quote_style {
        None => i.value.to_lowercase(),
        Some(_) => i.value.clone(),
    }
}

pub(crate) fn last_ident(name: &ObjectName) -> String {
    match name.0.last() {
        Some(ObjectNamePart::Identifier(i)) => i.value.clone(),
        _ => name.to_string(),
    }
}

/// A column reference `col`, `alias.col` or `table.col` naming `column` of the table seen as
/// `names` (its alias or table name).
pub(crate) fn is_column(e: &Expr, names: &[String], column: &str) -> bool {
    match e {
        Expr::Identifier(i) => i.value.eq_ignore_ascii_case(column),
        Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
            let col = &parts[parts.len() - 1];
            let qual = &parts[parts.len() - 2];
            col.value.eq_ignore_ascii_case(column)
                && names.iter().any(|n| n.eq_ignore_ascii_case(&qual.value))
        }
        _ => false,
    }
}

fn shards_for(placement: &Placement, keys: &[KeyValue]) -> Vec<usize> {
    let set: BTreeSet<usize> = keys.iter().map(|k| placement.shard_of(k)).collect();
    set.into_iter().collect()
}

fn plan_write_where(
    name: &ObjectName,
    alias: Option<&Ident>,
    selection: Option<&Expr>,
    placement: &Placement,
    params: &Params,
    stmt: &Statement,
) -> Plan {
    let verb = match stmt {
        Statement::Update(_) => "UPDATE",
        _ => "DELETE",
    };
    match placement.rule(&name.to_string()) {
        Some(TableRule::Reference) => on_every_shard(placement, stmt, false),
        Some(TableRule::Pinned { shard }) => on_pinned_shard(stmt, placement, *shard, true),
        None if is_catalog_relation(&name.to_string()) => refuse(
            format!("{verb} of catalog {name} through shardgate"),
            "Run it on each shard directly.",
        ),
        None => undeclared(&name.to_string()),
        Some(TableRule::Sharded {
            key_column,
            key_type,
        }) => {
            let mut names = vec![last_ident(name)];
            if let Some(a) = alias {
                names.push(a.value.clone());
            }
            let is_key = |e: &Expr| is_column(e, &names, key_column);
            let keys = match selection {
                None => KeySet::Any,
                Some(w) => match keys_in(w, &is_key, *key_type, params) {
                    Ok(k) => k,
                    Err(e) => return Plan::Reject(PgError::error("22P02", e)),
                },
            };
            match keys {
                KeySet::Values(vs) => match shards_for(placement, &vs).as_slice() {
                    [] => Plan::Shard {
                        shard: HOME,
                        write: true,
                    },
                    [one] => Plan::Shard {
                        shard: *one,
                        write: true,
                    },
                    several => {
                        let text = stmt.to_string();
                        Plan::Write {
                            parts: several.iter().map(|&s| (s, text.clone())).collect(),
                            sum: true,
                            picks: Vec::new(),
                            serialize: None,
                            row_order: Vec::new(),
                        }
                    }
                },
                KeySet::Any => on_every_shard(placement, stmt, true),
            }
        }
    }
}

pub(crate) fn undeclared(name: &str) -> Plan {
    refuse(
        format!("table {name} is not declared, and this cluster has several shards"),
        format!("Declare it in the config as [tables.{name}] with shard_key and key_type, or with reference = true, and reload the proxy (SIGHUP)."),
    )
}

fn plan_insert(ins: &sqlparser::ast::Insert, placement: &Placement, params: &Params) -> Plan {
    let TableObject::TableName(name) = &ins.table else {
        return refuse(
            "INSERT into a table function is not supported",
            "Insert into a table.",
        );
    };
    match placement.rule(&name.to_string()) {
        Some(TableRule::Reference) => {
            on_every_shard(placement, &Statement::Insert(ins.clone()), false)
        }
        Some(TableRule::Pinned { shard }) => on_pinned_shard(ins, placement, *shard, true),
        None => undeclared(&name.to_string()),
        Some(TableRule::Sharded {
            key_column,
            key_type,
        }) => {
            let Some(source) = &ins.source else {
                return refuse(
                    "INSERT without VALUES is not supported on a sharded table",
                    "Use INSERT ... VALUES.",
                );
            };
            let SetExpr::Values(values) = source.body.as_ref() else {
                return plan_insert_select(
                    ins, name, source, key_column, *key_type, placement, params,
                );
            };
            if ins.columns.is_empty() {
                return refuse(
                    format!("INSERT into sharded table {name} needs a column list"),
                    format!("Name the columns, including the shard key {key_column}: INSERT INTO {name} ({key_column}, ...) VALUES ..."),
                );
            }
            let Some(key_idx) = ins
                .columns
                .iter()
                .position(|c| last_ident(c).eq_ignore_ascii_case(key_column))
            else {
                return refuse(
                    format!("INSERT into sharded table {name} must give the shard key {key_column}"),
                    "The shard key decides where the row lives. A key from a sequence (serial, bigserial, GENERATED BY DEFAULT AS IDENTITY on an integer key) is filled in by shardgate; other defaults could collide across shards.",
                );
            };
            // Each row's shard; a NULL key goes home, where the table's constraints judge it as
            // PostgreSQL would.
            let mut row_shards = Vec::with_capacity(values.rows.len());
            for row in &values.rows {
                let Some(e) = row.get(key_idx) else {
                    return Plan::Reject(PgError::error(
                        "42601",
                        "INSERT has more target columns than expressions",
                    ));
                };
                match literal_key(e, *key_type, params) {
                    Ok(Some(Some(k))) => row_shards.push(placement.shard_of(&k)),
                    Ok(Some(None)) => row_shards.push(HOME),
                    Ok(None) => {
                        return refuse(
                            format!("the shard key {key_column} must be a constant or a parameter"),
                            "shardgate computes the shard from the value itself; pass it as a literal or $n.",
                        )
                    }
                    Err(e) => return Plan::Reject(PgError::error("22P02", e)),
                }
            }
            let distinct: BTreeSet<usize> = row_shards.iter().copied().collect();
            match distinct.len() {
                0 => Plan::Shard {
                    shard: HOME,
                    write: true,
                },
                1 => Plan::Shard {
                    shard: row_shards[0],
                    write: true,
                },
                _ => split_insert(ins, &row_shards, &distinct),
            }
        }
    }
}

/// A multi-row INSERT whose rows belong on several shards: each shard gets only its own rows.
fn split_insert(
    ins: &sqlparser::ast::Insert,
    row_shards: &[usize],
    shards: &BTreeSet<usize>,
) -> Plan {
    let mut picks = Vec::new();
    let parts = shards
        .iter()
        .map(|&shard| {
            let mut part = ins.clone();
            if let Some(source) = &mut part.source {
                if let SetExpr::Values(values) = source.body.as_mut() {
                    let rows = std::mem::take(&mut values.rows);
                    values.rows = rows
                        .into_iter()
                        .zip(row_shards)
                        .filter(|(_, s)| **s == shard)
                        .map(|(r, _)| r)
                        .collect();
                    picks.push(renumber_parameters(values));
                }
            }
            (shard, Statement::Insert(part).to_string())
        })
        .collect();
    // Parameters only matter where the rows have some.
    if picks.iter().all(Vec::is_empty) {
        picks.clear();
    }
    // RETURNING rows come back in the client's row order, as from one server.
    let row_order = if ins.returning.is_some() {
        let index: Vec<usize> = shards.iter().copied().collect();
        row_shards
            .iter()
            .map(|s| index.iter().position(|x| x == s).unwrap_or(0))
            .collect()
    } else {
        Vec::new()
    };
    Plan::Write {
        parts,
        sum: true,
        picks,
        serialize: None,
        row_order,
    }
}

/// Numbers the parameters of the rows `$1, $2, ...` in order of first use, so that a shard sees
/// only parameters its rows use (PostgreSQL cannot type a parameter that no row mentions);
/// returns the client's parameter (0-based) behind each new number.
fn renumber_parameters(rows: &mut sqlparser::ast::Values) -> Vec<usize> {
    let mut picked: Vec<usize> = Vec::new();
    let _ = sqlparser::ast::visit_expressions_mut(rows, |e: &mut Expr| {
        if let Expr::Value(v) = e {
            if let Value::Placeholder(p) = &mut v.value {
                if let Some(n) = p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
                    if n > 0 {
                        let i = match picked.iter().position(|&o| o == n - 1) {
                            Some(i) => i,
                            None => {
                                picked.push(n - 1);
                                picked.len() - 1
                            }
                        };
                        *p = format!("${}", i + 1);
                    }
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
    picked
}

/// INSERT ... SELECT into a sharded table runs only where it is correct on one shard: the source
/// reads one shard, and the inserted key is a co-located source table's own shard key, so every
/// row it produces belongs on that same shard.
fn plan_insert_select(
    ins: &sqlparser::ast::Insert,
    name: &ObjectName,
    source: &Query,
    key_column: &str,
    key_type: KeyType,
    placement: &Placement,
    params: &Params,
) -> Plan {
    let refused = || {
        refuse(
            format!("INSERT ... SELECT into sharded table {name} must read one shard and insert that shard's own keys"),
            format!("Select from a table sharded like {name} with a condition on its shard key, and insert its shard key as {key_column}; otherwise rows would land on the wrong shard."),
        )
    };
    let SetExpr::Select(select) = source.body.as_ref() else {
        return refused();
    };
    let Some(key_idx) = ins
        .columns
        .iter()
        .position(|c| last_ident(c).eq_ignore_ascii_case(key_column))
    else {
        return refused();
    };
    let key_expr = match select.projection.get(key_idx) {
        Some(SelectItem::UnnamedExpr(e)) | Some(SelectItem::ExprWithAlias { expr: e, .. }) => {
            strip(e)
        }
        _ => return refused(),
    };
    // The key must be a sharded source table's key column of the same type.
    let own_key = select
        .from
        .iter()
        .flat_map(|t| std::iter::once(&t.relation).chain(t.joins.iter().map(|j| &j.relation)))
        .any(|f| {
            let TableFactor::Table {
                name: src,
                alias,
                args: None,
                ..
            } = f
            else {
                return false;
            };
            match placement.rule(&src.to_string()) {
                Some(TableRule::Sharded {
                    key_column: k,
                    key_type: t,
                }) if *t == key_type => {
                    let mut names = vec![last_ident(src)];
                    if let Some(a) = alias {
                        names.push(a.name.value.clone());
                    }
                    is_column(key_expr, &names, k)
                }
                _ => false,
            }
        });
    match plan_query(source, placement, params) {
        Plan::Shard { shard, .. } if own_key => Plan::Shard { shard, write: true },
        Plan::Reject(e) => Plan::Reject(e),
        _ => refused(),
    }
}

/// Relations of a query and how each is placed.
pub(crate) struct Relations {
    pub sharded: Vec<(String, KeyType, String)>, // (table, key type, key column)
    reference: usize,
    /// Shards of the tables that live on one shard (undeclared tables, see `TableRule::Pinned`).
    pinned: BTreeSet<usize>,
    undeclared: Option<String>,
}

pub(crate) fn relations<V: sqlparser::ast::Visit>(q: &V, placement: &Placement) -> Relations {
    let mut r = Relations {
        sharded: Vec::new(),
        reference: 0,
        pinned: BTreeSet::new(),
        undeclared: None,
    };
    let cte_names = cte_names(q);
    for name in &tables_read(q) {
        let text = name.to_string();
        if is_catalog_relation(&text) || cte_names.contains(&last_ident(name).to_ascii_lowercase())
        {
            continue;
        }
        match placement.rule(&text) {
            Some(TableRule::Sharded {
                key_column,
                key_type,
            }) => r.sharded.push((text, *key_type, key_column.clone())),
            Some(TableRule::Reference) => r.reference += 1,
            Some(TableRule::Pinned { shard }) => {
                r.pinned.insert(*shard);
            }
            None => {
                if r.undeclared.is_none() {
                    r.undeclared = Some(text)
                }
            }
        }
    }
    r
}

/// A statement on a table that lives on one shard: it runs there, provided every other table
/// it uses is there too (a reference table, or one on the same shard).
fn on_pinned_shard<V: sqlparser::ast::Visit>(
    stmt: &V,
    placement: &Placement,
    shard: usize,
    write: bool,
) -> Plan {
    let rels = relations(stmt, placement);
    if let Some(name) = rels.undeclared {
        return undeclared(&name);
    }
    if let Some((table, _, _)) = rels.sharded.first() {
        return refuse(
            format!(
                "sharded table {table} cannot be combined with tables that live on shard {} only",
                placement.shard_names[shard]
            ),
            "Undeclared tables live on one shard (routing.undeclared_tables): join them with reference tables, or declare them.",
        );
    }
    if rels.pinned.len() > 1 {
        return refuse(
            "these tables live on different shards",
            "Declare them as reference tables, or keep undeclared tables on one shard.",
        );
    }
    Plan::Shard { shard, write }
}

/// The tables (and views) a statement names. A function called in FROM (`generate_series(1, 3)`,
/// `json_each(...)`) is not one, though sqlparser parses it as a table with arguments: it runs
/// wherever the statement runs, as a function in the select list does.
fn tables_read<V: sqlparser::ast::Visit>(q: &V) -> Vec<ObjectName> {
    #[derive(Default)]
    struct Tables {
        names: Vec<ObjectName>,
        /// The relation about to be visited is a function's name.
        function_next: bool,
    }
    impl sqlparser::ast::Visitor for Tables {
        type Break = ();
        fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
            self.function_next = matches!(t, TableFactor::Table { args: Some(_), .. });
            ControlFlow::Continue(())
        }
        fn pre_visit_relation(&mut self, name: &ObjectName) -> ControlFlow<()> {
            if !std::mem::take(&mut self.function_next) {
                self.names.push(name.clone());
            }
            ControlFlow::Continue(())
        }
    }
    let mut tables = Tables::default();
    let _ = sqlparser::ast::Visit::visit(q, &mut tables);
    tables.names
}

pub(crate) fn plan_query(q: &Query, placement: &Placement, params: &Params) -> Plan {
    let rels = relations(q, placement);
    if let Some(name) = rels.undeclared {
        return undeclared(&name);
    }
    if let Some(&shard) = rels.pinned.first() {
        return on_pinned_shard(q, placement, shard, false);
    }
    if rels.sharded.is_empty() {
        if rels.reference == 0 && calls_set_config(q) {
            // set_config() changes session state: every shard must see it, like SET.
            return Plan::Session;
        }
        // Catalog, reference tables and table-less queries read the same on every shard.
        return Plan::Shard {
            shard: HOME,
            write: false,
        };
    }
    let SetExpr::Select(select) = q.body.as_ref() else {
        return refuse(
            "UNION, INTERSECT and EXCEPT over sharded tables are not supported",
            "Run each part as its own query.",
        );
    };
    if q.with.is_some() {
        return refuse(
            "WITH queries over sharded tables are not supported yet",
            "Inline the CTE or query each shard key separately.",
        );
    }
    // Sharded tables of the top-level FROM, with the names they are referred to by.
    let top = super::subquery::top_tables(select, placement);
    // Subqueries in WHERE tied to those tables by the shard key run on each shard as written.
    let tied = match super::subquery::tied_in_where(select, &top, placement) {
        Ok(n) => n,
        Err(refusal) => return *refusal,
    };
    // `SELECT ... FROM (subquery) s`, whose rows are each shard's rows (SQLAlchemy's count()).
    if top.is_empty() && tied == 0 {
        if let Some(shards) = super::subquery::derived_shards(select, &rels, placement, params) {
            return match shards.as_slice() {
                [one] => Plan::Shard {
                    shard: *one,
                    write: !q.locks.is_empty(),
                },
                _ => plan_scatter(q, select, shards, params, placement),
            };
        }
    }
    if top.len().checked_add(tied) != Some(rels.sharded.len()) {
        return refuse(
            "a sharded table inside a subquery is not supported here",
            "A subquery over a sharded table runs on each shard when it is in WHERE and tied to the outer table by the shard key: EXISTS (... WHERE inner.key = outer.key) or outer.key IN (SELECT inner.key ...). Otherwise join co-located tables on their shard keys.",
        );
    }
    if top.len() > 1 {
        if let Some(reason) = colocation_problem(select, &top) {
            return refuse(reason, "Join sharded tables only on their shard keys (tables with the same key type are co-located), or join with reference tables.");
        }
    }
    let mut keys = KeySet::Any;
    if let Some(w) = &select.selection {
        for (names, ty, col) in &top {
            let is_key = |e: &Expr| is_column(e, names, col);
            match keys_in(w, &is_key, *ty, params) {
                Ok(KeySet::Any) => {}
                Ok(found) => {
                    keys = found;
                    break;
                }
                Err(e) => return Plan::Reject(PgError::error("22P02", e)),
            }
        }
    }
    let for_update = !q.locks.is_empty();
    let shards = match keys {
        KeySet::Values(vs) => shards_for(placement, &vs),
        KeySet::Any => (0..placement.shard_names.len()).collect(),
    };
    match shards.as_slice() {
        [] => Plan::Shard {
            shard: HOME,
            write: for_update,
        },
        [one] => Plan::Shard {
            shard: *one,
            write: for_update,
        },
        _ => plan_scatter(q, select, shards, params, placement),
    }
}

/// The AND-connected conditions of `e`.
pub(crate) fn collect_and<'a>(e: &'a Expr, out: &mut Vec<&'a Expr>) {
    match e {
        Expr::Nested(i) => collect_and(i, out),
        Expr::BinaryOp {
            left,
            op: sqlparser::ast::BinaryOperator::And,
            right,
        } => {
            collect_and(left, out);
            collect_and(right, out);
        }
        other => out.push(other),
    }
}

/// Every pair of sharded tables must be connected by equalities of their key columns.
pub(crate) fn colocation_problem(
    select: &Select,
    top: &[(Vec<String>, KeyType, String)],
) -> Option<String> {
    if top.iter().any(|t| t.1 != top[0].1) {
        return Some(
            "a join of tables sharded on keys of different types runs across shards".into(),
        );
    }
    let mut conjuncts: Vec<&Expr> = Vec::new();
    if let Some(w) = &select.selection {
        collect_and(w, &mut conjuncts);
    }
    for twj in &select.from {
        for j in &twj.joins {
            use sqlparser::ast::{JoinConstraint, JoinOperator as J};
            let c = match &j.join_operator {
                J::Join(c)
                | J::Inner(c)
                | J::Left(c)
                | J::LeftOuter(c)
                | J::Right(c)
                | J::RightOuter(c)
                | J::FullOuter(c) => c,
                _ => {
                    return Some("this kind of join is not supported across sharded tables".into())
                }
            };
            if let JoinConstraint::On(e) = c {
                collect_and(e, &mut conjuncts);
            }
        }
    }
    // Union-find over the sharded tables by key equalities.
    let mut parent: Vec<usize> = (0..top.len()).collect();
    fn find(p: &mut Vec<usize>, i: usize) -> usize {
        if p[i] != i {
            let r = find(p, p[i]);
            p[i] = r;
        }
        p[i]
    }
    for c in conjuncts {
        if let Expr::BinaryOp {
            left,
            op: sqlparser::ast::BinaryOperator::Eq,
            right,
        } = c
        {
            let side = |e: &Expr| {
                top.iter().position(|(names, _, col)| {
                    matches!(strip(e), Expr::CompoundIdentifier(_))
                        && is_column(strip(e), names, col)
                })
            };
            if let (Some(a), Some(b)) = (side(left), side(right)) {
                let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
                parent[ra] = rb;
            }
        }
    }
    let root = find(&mut parent, 0);
    (1..top.len())
        .any(|i| find(&mut parent, i) != root)
        .then(|| {
            "a join of sharded tables that is not on their shard keys runs across shards"
                .to_string()
        })
}

const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
    "json_agg",
    "jsonb_agg",
    "json_object_agg",
    "jsonb_object_agg",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "bit_and",
    "bit_or",
    "xmlagg",
    "percentile_cont",
    "percentile_disc",
    "mode",
];

fn has_aggregate_or_window(items: &[SelectItem]) -> bool {
    let mut found = false;
    for item in items {
        let _ = sqlparser::ast::visit_expressions(item, |e: &Expr| {
            if let Expr::Function(f) = e {
                let name = f.name.to_string().to_ascii_lowercase();
                let bare = name.rsplit('.').next().unwrap_or(&name);
                if f.over.is_some() || AGGREGATES.contains(&bare) {
                    found = true;
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        });
    }
    found
}

fn plan_scatter(
    q: &Query,
    select: &Select,
    shards: Vec<usize>,
    params: &Params,
    placement: &Placement,
) -> Plan {
    if has_window(&select.projection) {
        return refuse(
            "window functions over several shards are not supported",
            "Add a shard-key condition so the query runs on one shard.",
        );
    }
    let grouped = select.distinct.is_some()
        || !matches!(&select.group_by, sqlparser::ast::GroupByExpr::Expressions(e, _) if e.is_empty())
        || select.having.is_some()
        || has_aggregate_or_window(&select.projection);
    // Grouped by a shard key (or DISTINCT over one), each shard holds whole groups: its rows
    // are final, and only their order and LIMIT are merged, as for plain rows.
    if grouped && !super::subquery::grouped_by_key(q, placement) {
        if q.fetch.is_some() {
            return refuse(
                "FETCH FIRST over several shards is not supported",
                "Use LIMIT.",
            );
        }
        return match limit_and_offset(q, params) {
            Ok((limit, offset)) => {
                super::aggregate::plan_aggregate(q, select, shards, limit, offset, params)
            }
            Err(p) => *p,
        };
    }
    if q.fetch.is_some() {
        return refuse(
            "FETCH FIRST over several shards is not supported",
            "Use LIMIT.",
        );
    }
    let mut merge = MergeSpec::default();
    let mut rewritten = q.clone();
    let mut changed = false;
    let has_wildcard = select.projection.iter().any(|i| {
        matches!(
            i,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
        )
    });
    let mut hidden_items: Vec<SelectItem> = Vec::new();
    if let Some(ob) = &q.order_by {
        let OrderByKind::Expressions(exprs) = &ob.kind else {
            return refuse("ORDER BY ALL is not supported", "List the sort columns.");
        };
        for oe in exprs {
            let (descending, nulls_first) = match sort_direction(oe) {
                Ok(d) => d,
                Err(p) => return *p,
            };
            if explicit_collation(&oe.expr) == Some(false) {
                return Plan::Reject(other_collation(&oe.expr));
            }
            let column = match sort_column(&oe.expr, &select.projection) {
                Some(SortColumn::Name(n)) if has_wildcard => SortColumn::Name(n),
                Some(SortColumn::Position(p)) => SortColumn::Position(p),
                _ => {
                    // Not among the client's columns: the shards return it after them.
                    let alias = Ident::new(format!("__shardgate_sort_{}", hidden_items.len()));
                    hidden_items.push(SelectItem::ExprWithAlias {
                        expr: oe.expr.clone(),
                        alias,
                    });
                    if has_wildcard {
                        SortColumn::Name(format!("__shardgate_sort_{}", hidden_items.len() - 1))
                    } else {
                        SortColumn::Position(select.projection.len() + hidden_items.len())
                    }
                }
            };
            // PostgreSQL's default: NULLS LAST for ASC, NULLS FIRST for DESC.
            merge.order.push(SortKey {
                column,
                descending,
                nulls_first,
                bytewise: explicit_collation(&oe.expr) == Some(true),
            });
        }
    }
    if !hidden_items.is_empty() {
        merge.hidden = hidden_items.len();
        if let SetExpr::Select(sel) = rewritten.body.as_mut() {
            sel.projection.extend(hidden_items);
        }
        changed = true;
    }
    if let Some(LimitClause::LimitOffset {
        limit,
        offset,
        limit_by,
    }) = &q.limit_clause
    {
        if !limit_by.is_empty() {
            return refuse("LIMIT BY is not supported", "Use LIMIT.");
        }
        let num = |e: &Expr| count_constant(e, params);
        merge.limit = match limit {
            None => None,
            Some(e) => match num(e) {
                Some(n) => Some(n),
                None => {
                    return refuse(
                        "LIMIT over several shards must be a constant",
                        "Use a literal LIMIT, or a bound parameter.",
                    )
                }
            },
        };
        merge.offset = match offset {
            None => 0,
            Some(o) => match num(&o.value) {
                Some(n) => n,
                None => {
                    return refuse(
                        "OFFSET over several shards must be a constant",
                        "Use a literal OFFSET.",
                    )
                }
            },
        };
        // Each shard returns at most offset + limit rows; the merge applies both again.
        rewritten.limit_clause = merge.limit.map(|l| LimitClause::LimitOffset {
            limit: Some(Expr::value(Value::Number(
                (l + merge.offset).to_string(),
                false,
            ))),
            offset: None,
            limit_by: vec![],
        });
        changed = true;
    } else if q.limit_clause.is_some() {
        return refuse(
            "this LIMIT form is not supported over several shards",
            "Use LIMIT n OFFSET m.",
        );
    }
    let sql = if changed {
        merge.picks = keep_used_params(&mut rewritten, params.values.len());
        rewritten.to_string()
    } else {
        q.to_string()
    };
    Plan::Scatter { shards, sql, merge }
}

fn calls_set_config(q: &Query) -> bool {
    let mut found = false;
    let _ = sqlparser::ast::visit_expressions(q, |e: &Expr| {
        if let Expr::Function(f) = e {
            if last_ident(&f.name).eq_ignore_ascii_case("set_config") {
                found = true;
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    found
}

fn has_window(items: &[SelectItem]) -> bool {
    let mut found = false;
    for item in items {
        let _ = sqlparser::ast::visit_expressions(item, |e: &Expr| {
            if matches!(e, Expr::Function(f) if f.over.is_some()) {
                found = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        });
    }
    found
}

/// A LIMIT or OFFSET count: a literal, or a bound parameter in text or binary format.
fn count_constant(e: &Expr, params: &Params) -> Option<u64> {
    match strip(e) {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse().ok(),
            Value::Placeholder(p) => params
                .constant(p.strip_prefix('$')?.parse().ok()?)?
                .parse()
                .ok(),
            _ => None,
        },
        _ => None,
    }
}

/// Constant LIMIT and OFFSET (literals or bound parameters).
fn limit_and_offset(q: &Query, params: &Params) -> Result<(Option<u64>, u64), Box<Plan>> {
    let num = |e: &Expr| count_constant(e, params);
    match &q.limit_clause {
        None => Ok((None, 0)),
        Some(LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) if limit_by.is_empty() => {
            let limit = match limit {
                None => None,
                Some(e) => Some(num(e).ok_or_else(|| {
                    Box::new(refuse(
                        "LIMIT over several shards must be a constant",
                        "Use a literal LIMIT.",
                    ))
                })?),
            };
            let offset = match offset {
                None => 0,
                Some(o) => num(&o.value).ok_or_else(|| {
                    Box::new(refuse(
                        "OFFSET over several shards must be a constant",
                        "Use a literal OFFSET.",
                    ))
                })?,
            };
            Ok((limit, offset))
        }
        Some(_) => Err(Box::new(refuse(
            "this LIMIT form is not supported over several shards",
            "Use LIMIT n OFFSET m.",
        ))),
    }
}

/// ASC/DESC and where NULLs go (PostgreSQL's default: last for ASC, first for DESC).
pub(crate) fn sort_direction(oe: &sqlparser::ast::OrderByExpr) -> Result<(bool, bool), Box<Plan>> {
    let descending = match oe.options.sort {
        None | Some(OrderBySort::Asc) => false,
        Some(OrderBySort::Desc) => true,
        Some(OrderBySort::Using(_)) => {
            return Err(Box::new(refuse(
                "ORDER BY ... USING over several shards is not supported",
                "Use ASC or DESC.",
            )))
        }
    };
    Ok((descending, oe.options.nulls_first.unwrap_or(descending)))
}

fn sort_column(e: &Expr, projection: &[SelectItem]) -> Option<SortColumn> {
    if let Expr::Value(v) = e {
        if let Value::Number(n, _) = &v.value {
            return n.parse().ok().filter(|p| *p >= 1).map(SortColumn::Position);
        }
    }
    let text = e.to_string();
    for (i, item) in projection.iter().enumerate() {
        match item {
            SelectItem::ExprWithAlias { alias, .. } if matches!(e, Expr::Identifier(id) if id.value == alias.value) => {
                return Some(SortColumn::Position(i + 1))
            }
            SelectItem::ExprWithAlias { expr, .. } | SelectItem::UnnamedExpr(expr)
                if expr.to_string() == text =>
            {
                return Some(SortColumn::Position(i + 1))
            }
            _ => {}
        }
    }
    // A plain column (possibly behind `*`): found by name in the result's RowDescription.
    match e {
        Expr::Identifier(i) => Some(SortColumn::Name(column_name(i))),
        Expr::CompoundIdentifier(parts) => parts.last().map(|i| SortColumn::Name(column_name(i))),
        _ => None,
    }
}

fn column_name(i: &Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_ascii_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn placement() -> Placement {
        let mut text = String::from("[[users]]\nname=\"a\"\nauth=\"trust\"\n");
        for i in 0..3 {
            text.push_str(&format!(
                "[[shards]]\nname=\"s{i}\"\nurl=\"postgres://u@h/db\"\n"
            ));
        }
        text.push_str(
            "[tables.accounts]\nshard_key=\"id\"\nkey_type=\"bigint\"\n\
             [tables.ledger]\nshard_key=\"account_id\"\nkey_type=\"bigint\"\n\
             [tables.users]\nshard_key=\"name\"\nkey_type=\"text\"\n\
             [tables.countries]\nreference=true\n",
        );
        Config::from_toml(&text).unwrap().placement().unwrap()
    }

    fn plan_sql(sql: &str) -> Plan {
        let stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        plan(&stmts[0], &placement(), &Params::default())
    }

    fn shard_of(id: i64) -> usize {
        placement().shard_of(&KeyValue::Integer(id))
    }

    fn code(p: &Plan) -> &str {
        match p {
            Plan::Reject(e) => e.code,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn point_reads_and_writes_go_to_the_owner() {
        assert_eq!(
            plan_sql("select * from accounts where id = 42"),
            Plan::Shard {
                shard: shard_of(42),
                write: false
            }
        );
        assert_eq!(
            plan_sql("update accounts set v = 1 where id = 42 and v > 0"),
            Plan::Shard {
                shard: shard_of(42),
                write: true
            }
        );
        assert_eq!(
            plan_sql("delete from accounts a where a.id = 42"),
            Plan::Shard {
                shard: shard_of(42),
                write: true
            }
        );
        assert_eq!(
            plan_sql("insert into accounts (id, v) values (42, 1)"),
            Plan::Shard {
                shard: shard_of(42),
                write: true
            }
        );
        assert_eq!(
            plan_sql("select * from accounts where id = 42 for update"),
            Plan::Shard {
                shard: shard_of(42),
                write: true
            }
        );
    }

    #[test]
    fn reads_without_a_key_scatter_with_limit_pushed_down() {
        let Plan::Scatter { shards, sql, merge } =
            plan_sql("select id, v from accounts order by v desc, 1 limit 5 offset 2")
        else {
            panic!()
        };
        assert_eq!(shards, vec![0, 1, 2]);
        assert!(sql.ends_with("LIMIT 7"), "{sql}");
        assert_eq!((merge.limit, merge.offset), (Some(5), 2));
        assert_eq!(
            merge.order[0],
            SortKey {
                column: SortColumn::Position(2),
                descending: true,
                nulls_first: true,
                bytewise: false,
            }
        );
        assert_eq!(merge.order[1].column, SortColumn::Position(1));
        let Plan::Scatter { merge, .. } = plan_sql("select * from accounts order by v") else {
            panic!()
        };
        assert_eq!(merge.order[0].column, SortColumn::Name("v".into()));
    }

    #[test]
    fn in_lists_pick_the_owning_shards() {
        let ids: Vec<i64> = (1..50).collect();
        let owners: BTreeSet<usize> = ids.iter().map(|&i| shard_of(i)).collect();
        let list = ids
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        match plan_sql(&format!("select * from accounts where id in ({list})")) {
            Plan::Scatter { shards, .. } => {
                assert_eq!(shards, owners.into_iter().collect::<Vec<_>>())
            }
            Plan::Shard { .. } => assert_eq!(owners.len(), 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn joins_colocated_or_with_reference_tables_stay_on_one_shard() {
        assert_eq!(
            plan_sql("select * from accounts a join ledger l on l.account_id = a.id join countries c on c.code = a.cc where a.id = 7"),
            Plan::Shard { shard: shard_of(7), write: false }
        );
        assert_eq!(
            code(&plan_sql(
                "select * from accounts a join ledger l on l.note = a.name"
            )),
            "0A000"
        );
        assert_eq!(
            code(&plan_sql(
                "select * from accounts a join users u on u.name = a.id::text"
            )),
            "0A000"
        );
        assert_eq!(
            plan_sql("select * from countries"),
            Plan::Shard {
                shard: HOME,
                write: false
            }
        );
    }

    #[test]
    fn refusals() {
        for sql in [
            "update accounts set id = 5 where id = 4",
            "insert into accounts values (1)",
            "insert into accounts (v) values (1)",
            "insert into accounts (id) select account_id from ledger",
            "insert into accounts (id) select id + 1 from accounts where id = 5",
            "insert into accounts (id) select 7 from countries",
            "select * from nosuch",
            "select * from accounts where id not in (select account_id from ledger)",
            "select * from accounts a where exists (select 1 from ledger l where l.amount = a.id)",
            "select * from accounts where id in (select account_id from ledger limit 3)",
            "select * from accounts a where exists (select 1 from users u where u.name = a.v)",
            "select (select count(*) from ledger l where l.account_id = a.id) from accounts a",
            "create table accounts (id bigint primary key, n bigint generated always as identity)",
            "create table accounts (id bigint generated always as identity)",
            "create table users (name text primary key default nextval('s')::text)",
        ] {
            assert_eq!(code(&plan_sql(sql)), "0A000", "{sql}");
        }
        // Subqueries tied to the outer table by the shard key run on each shard as written.
        for sql in [
            "select * from accounts where id in (select account_id from ledger)",
            "select * from accounts a where exists (select 1 from ledger l where l.account_id = a.id and l.amount > 0)",
            "select * from accounts a where not exists (select 1 from ledger l where a.id = l.account_id)",
        ] {
            assert!(
                matches!(plan_sql(sql), Plan::Scatter { ref merge, .. } if *merge == MergeSpec::default()),
                "{sql}"
            );
        }
        assert!(matches!(
            plan_sql("select * from accounts a where a.id = 5 and exists (select 1 from ledger l where l.account_id = a.id)"),
            Plan::Shard { shard, .. } if shard == shard_of(5)
        ));
        // A sequence on an integer key is filled in by the proxy (see executor::key_sequence).
        for sql in [
            "create table accounts (id bigserial primary key)",
            "create table accounts (id bigint generated by default as identity primary key)",
            "create table ledger (id bigserial primary key, account_id bigint)",
        ] {
            assert!(matches!(plan_sql(sql), Plan::Broadcast { .. }), "{sql}");
        }
    }

    #[test]
    fn writes_on_several_shards_are_split_per_shard() {
        let Plan::Write {
            parts, sum: true, ..
        } = plan_sql(
            "insert into accounts (id, v) values (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd'), (5, 'e'), (6, 'f')",
        ) else {
            panic!("a split insert")
        };
        assert!(parts.len() > 1);
        let mut rows = 0;
        for (shard, sql) in &parts {
            let stmt = &Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap()[0];
            // Each part holds exactly the rows its shard owns.
            assert_eq!(
                plan(stmt, &placement(), &Params::default()),
                Plan::Shard {
                    shard: *shard,
                    write: true
                },
                "{sql}"
            );
            rows += sql.matches("), (").count() + 1;
        }
        assert_eq!(rows, 6);
        let Plan::Write {
            parts, sum: true, ..
        } = plan_sql("update accounts set v = 0")
        else {
            panic!("an update everywhere")
        };
        assert_eq!(parts.len(), 3);
        let Plan::Write {
            parts, sum: false, ..
        } = plan_sql("insert into countries (code) values ('x')")
        else {
            panic!("a reference write counts one copy")
        };
        assert_eq!(parts.len(), 3);
        assert!(matches!(
            plan_sql("delete from accounts where id in (1, 2, 3, 4, 5, 6)"),
            Plan::Write { sum: true, .. }
        ));
    }

    #[test]
    fn shardgate_settings_are_answered_by_the_proxy() {
        for sql in [
            "set shardgate.consistency = 'snapshot'",
            "SET shardgate.consistency TO snapshot",
            "set session shardgate.consistency='snapshot'",
        ] {
            let value = match plan_sql(sql) {
                Plan::Admin(AdminCmd::Set { name, value }) if name == "consistency" => value,
                other => panic!("{sql}: {other:?}"),
            };
            assert_eq!(value.trim_matches('\''), "snapshot", "{sql}");
        }
        assert_eq!(plan_sql("set work_mem = '4MB'"), Plan::Session);
        assert_eq!(
            plan_unparsed("SHOW shardgate.snapshot_ts"),
            Plan::Admin(AdminCmd::Show {
                name: "snapshot_ts".into()
            })
        );
    }

    #[test]
    fn savepoints_are_transaction_commands() {
        assert_eq!(
            plan_sql("savepoint a"),
            Plan::Txn(TxnCmd::Savepoint("a".into()))
        );
        assert_eq!(
            plan_sql("release savepoint a"),
            Plan::Txn(TxnCmd::Release("a".into()))
        );
        assert_eq!(
            plan_sql("rollback to savepoint \"A\""),
            Plan::Txn(TxnCmd::RollbackTo("\"A\"".into()))
        );
        assert_eq!(
            plan_unparsed("ROLLBACK TO b;"),
            Plan::Txn(TxnCmd::RollbackTo("b".into()))
        );
    }

    #[test]
    fn insert_select_only_within_one_shard() {
        assert_eq!(
            plan_sql("insert into ledger (account_id, v) select a.id, a.v from accounts a where a.id = 42"),
            Plan::Shard { shard: shard_of(42), write: true }
        );
    }

    #[test]
    fn aggregates_rewrite_avg_and_push_nothing_down() {
        let Plan::Scatter { sql, merge, .. } = plan_sql(
            "select v, avg(x) from accounts group by v having count(*) > 2 order by 2 desc limit 3",
        ) else {
            panic!()
        };
        assert_eq!(sql, "SELECT v, sum(x) AS avg, count(x) AS __shardgate_count_1, sum((x) * 1::FLOAT8) AS __shardgate_fsum_1, count(*) AS __shardgate_extra_2 FROM accounts GROUP BY v");
        let spec = merge.aggregate.unwrap();
        use super::super::aggregate::AggColumn::*;
        assert_eq!(
            spec.columns,
            vec![
                Group,
                Avg {
                    count: 2,
                    float_sum: Some(3)
                },
                AvgCount,
                AvgFloatSum,
                Count
            ]
        );
        assert_eq!((merge.limit, merge.hidden), (Some(3), 3));
        let Plan::Scatter { sql, merge, .. } =
            plan_sql("select count(distinct v), count(*) from accounts")
        else {
            panic!()
        };
        assert_eq!(sql, "SELECT count(DISTINCT v), count(*), v AS __shardgate_distinct_0 FROM accounts GROUP BY v");
        let spec = merge.aggregate.unwrap();
        assert_eq!(
            spec.columns,
            vec![CountDistinct { values: 2 }, Count, DistinctValue]
        );
        assert!(spec.single_group);
        for sql in [
            "select sum(distinct v) from accounts",
            "select count(distinct (v, x)) filter (where x > 1) from accounts",
            "select sum(x) + 1 from accounts",
            "select v from accounts group by v having sum(x) > min(y)",
        ] {
            assert_eq!(code(&plan_sql(sql)), "0A000", "{sql}");
        }
    }

    #[test]
    fn ddl_session_and_transactions() {
        assert_eq!(
            plan_sql("create table accounts (id bigint primary key, v int)"),
            Plan::Broadcast {
                transactional: true
            }
        );
        assert_eq!(
            plan_sql("create index concurrently i on accounts (v)"),
            Plan::Broadcast {
                transactional: false
            }
        );
        assert_eq!(
            plan_sql("drop database if exists other"),
            Plan::Broadcast {
                transactional: false
            }
        );
        assert_eq!(plan_sql("set search_path = x"), Plan::Session);
        assert_eq!(
            plan_sql("select set_config('search_path', 'x', false)"),
            Plan::Session
        );
        assert_eq!(plan_sql("commit"), Plan::Txn(TxnCmd::Commit));
        assert!(matches!(
            plan_sql("begin isolation level repeatable read"),
            Plan::Txn(TxnCmd::Begin(_))
        ));
        assert_eq!(
            plan_unparsed("SHOW shardgate.route accounts 42"),
            Plan::Admin(AdminCmd::Route {
                table: "accounts".into(),
                key: "42".into()
            })
        );
    }
}
