//! Planning one statement for a cluster of several shards: run it on one shard, scatter it and
//! merge, broadcast it, handle it as session or transaction control, answer it in the proxy, or
//! refuse it with a reason. The planner only decides; `executor` carries plans out.
//!
//! Refusals are deliberate: a statement whose rows could be on several shards in a way the
//! merger cannot reproduce exactly gets SQLSTATE 0A000 with a hint, never a guess. A write on
//! several shards is a `Plan::Write`, which the executor runs as one distributed transaction.
//!
//! This file holds the plans and `plan`, which dispatches on the kind of statement; `query`
//! places reads, `scatter` plans reads of several shards and their merge, `write` plans
//! writes, `create_table` checks a sharded table's columns, `unparsed` what the text alone
//! decides, `unroutable` refuses statements on the rows of a table whose key column went bad
//! on a shard, `signal` the calls that signal a session of the proxy's, `string_syntax` the
//! refusal of non-standard strings, `copies` what keeps a reference table's copies alike,
//! `kept_rows` the aggregates over a reference table's rows kept by an outer join that combine
//! exactly, `reading_functions` the refusal of calls of functions that read sharded tables,
//! `writing_functions` the calls of functions that may write, which make a read a write,
//! `text_scope` where merged text may take its collation from, `key_guard` the assignments to a
//! sharded table's key, `conflict_target` the ON CONFLICT targets that would look on one shard,
//! `writing_query` the queries that write (WITH ... INSERT, a WITH list holding a write).

use super::keys::{keys_in, literal_key, strip, KeySet};
use super::params::Params;
use crate::error::{sqlstate, PgError};
use crate::placement::{KeyType, KeyValue, Placement, TableRule};
use crate::sql::is_catalog_relation;
use sqlparser::ast::{
    Expr, FromTable, Ident, LimitClause, ObjectName, ObjectNamePart, OrderByKind, OrderBySort,
    Query, Select, SelectItem, SetExpr, Statement, TableFactor, TableObject, TableWithJoins,
    UpdateTableFromKind, Value,
};
use std::collections::BTreeSet;
use std::ops::ControlFlow;

mod aggregate_level;
mod calls;
mod conflict_target;
mod copies;
mod create_table;
mod distinct_count;
mod exists;
mod inline_ctes;
mod kept_rows;
mod key_guard;
mod keyed_sets;
mod numbering;
pub use numbering::{NumberKind, Numbering};
mod query;
mod reading_functions;
mod renamed_columns;
mod scatter;
mod signal;
pub mod string_syntax;
mod table_only;
#[cfg(test)]
pub(crate) mod tests;
mod text_scope;
mod union;
mod unparsed;
mod unroutable;
mod windows;
mod write;
mod writing_functions;
mod writing_query;

pub(crate) use aggregate_level::has_own_aggregate_or_window;
pub(crate) use calls::*;
pub(crate) use copies::{differing_besides_the_clock, rows_picked_by_order};
pub(crate) use inline_ctes::inlined as ctes_inlined;
pub(crate) use query::*;
pub(crate) use scatter::*;
pub use text_scope::TextScope;
pub use unparsed::*;
pub(crate) use write::*;
pub(crate) use writing_functions::calls_writing_function;
pub(crate) use writing_query::tables_written;

pub use crate::placement::HOME;

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
    /// `pg_cancel_backend` or `pg_terminate_backend` of a pid the proxy minted: the proxy
    /// signals its own session and answers in a column of this name.
    Signal {
        kind: crate::sql::signal_call::SignalKind,
        pid: i32,
        column: String,
    },
    /// Code the proxy cannot read (DO, CALL): on every shard, refused afterwards if it wrote
    /// rows of a sharded table (they would be written on every shard).
    Procedural,
    /// Text sqlparser cannot read and whose first words name no statement the proxy knows.
    /// A shard checks its syntax (a syntax error gets the server's own answer); otherwise it is
    /// refused (`unrecognised`).
    Unrecognised,
}

impl Plan {
    /// The shards a read of several shards reaches (a scatter, or a COPY of a query's rows),
    /// each of which runs the statement on its own: empty for any other plan.
    pub fn read_shards(&self) -> &[usize] {
        match self {
            Plan::Scatter { shards, .. } => shards,
            Plan::Copy(super::copy::CopyPlan::Out { shards, .. }) if shards.len() > 1 => shards,
            _ => &[],
        }
    }
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
    /// The slot table the session routes by: its version and each shard's slots.
    Placement,
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
            AdminCmd::Placement => Some(vec!["version", "shard", "slots", "ranges"]),
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
    /// DISTINCT ON: the first this many sort keys are its expressions, and the merge keeps the
    /// first row of each run of rows equal in them (each shard sent its own first per value).
    pub distinct_on: usize,
    /// The client's parameters (0-based) the shards' text uses, in its numbering `$1, $2, ...`,
    /// when the rewrite dropped some (a bound LIMIT or HAVING value the merge applies). None:
    /// every parameter, as bound.
    pub picks: Option<Vec<usize>>,
    /// What the merge needs to know which collations the text it compares is under.
    pub text: TextScope,
    /// `count(...) OVER ()` select items: each shard counts its own rows, and the merge writes
    /// the sum of the shards' counts in every row.
    pub totals: Vec<TotalColumn>,
    /// `row_number()`, `rank()` and `dense_rank()` over the whole ordered result: the merge
    /// numbers the rows as they pass in the sort order.
    pub numbers: Vec<Numbering>,
    /// One shard that runs another text than the scatter's, returning the same columns: the
    /// shard that adds the reference rows an outer join keeps unmatched (see
    /// `uncorrelated::unmatched`).
    pub shard_text: Option<(usize, String)>,
}

impl MergeSpec {
    /// The text `shard` runs: the scatter's `sql`, or its own.
    pub fn text_for<'a>(&'a self, shard: usize, sql: &'a str) -> &'a str {
        match &self.shard_text {
            Some((s, text)) if *s == shard => text,
            _ => sql,
        }
    }
}

/// Where a `count(...) OVER ()` item is among the client's columns: its place from the first,
/// or, after a `*` whose width only the shards' answer tells, from the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotalColumn {
    FromStart(usize),
    FromEnd(usize),
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

/// An output column, by 1-based position or by name (resolved against the RowDescription).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortColumn {
    Position(usize),
    Name(String),
}

fn refuse(message: impl Into<String>, hint: impl Into<String>) -> Plan {
    Plan::Reject(PgError::error(sqlstate::FEATURE_NOT_SUPPORTED, message).with_hint(hint))
}

/// What can be refused from the statement alone, before parameters are bound: a read or write of
/// a table that is not declared. Key-dependent decisions wait for Bind.
pub fn check_at_parse(stmt: &Statement, placement: &Placement) -> Option<PgError> {
    if let Some(Plan::Reject(e)) = misread_refusal(stmt, placement) {
        return Some(e);
    }
    if let Some(Plan::Reject(e)) = reads_sequence_values(stmt) {
        return Some(e);
    }
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

/// `currval()` and `lastval()` read what `nextval()` left on one server connection. Over several
/// shards the proxy fills sequence columns itself, from its own connection, and pools the
/// session's: no connection holds this session's values, and either function would answer
/// with another connection's, or the first shard's when the sequence lives elsewhere.
fn reads_sequence_values(stmt: &Statement) -> Option<Plan> {
    let mut found = None;
    let _ = sqlparser::ast::visit_expressions(stmt, |e: &Expr| {
        if let Expr::Function(f) = e {
            if let Some(ObjectNamePart::Identifier(i)) = f.name.0.last() {
                found = ["currval", "lastval"]
                    .into_iter()
                    .find(|n| i.value.eq_ignore_ascii_case(n));
                if found.is_some() {
                    return ControlFlow::Break(());
                }
            }
        }
        ControlFlow::Continue(())
    });
    found.map(|f| {
        refuse(
            format!("{f}() is not supported on several shards"),
            "shardgate fills sequence columns itself and shares server connections, so no shard \
             keeps this session's last nextval(). Use INSERT ... RETURNING, or keep the value \
             nextval() returned.",
        )
    })
}

/// Where text merged or written back from `stmt`'s rows may take its collation from.
pub fn text_scope(stmt: &Statement, placement: &Placement) -> TextScope {
    text_scope::of(stmt, placement)
}

/// The refusal of a statement whose tables the parser reads otherwise than PostgreSQL
/// (`table_only`, `renamed_columns`), where the planner routes by them. DDL holding a query
/// (`CREATE VIEW ... AS SELECT ... FROM ONLY t`) goes to every shard as written.
fn misread_refusal(stmt: &Statement, placement: &Placement) -> Option<Plan> {
    let routed = matches!(
        stmt,
        Statement::Query(_)
            | Statement::Insert(_)
            | Statement::Update(_)
            | Statement::Delete(_)
            | Statement::Merge(_)
            | Statement::Copy { .. }
            | Statement::Declare { .. }
            | Statement::Prepare { .. }
            | Statement::Explain { .. }
    );
    if !routed {
        return None;
    }
    table_only::refusal(stmt).or_else(|| renamed_columns::refusal(stmt, placement))
}

/// Plans one parsed statement.
pub fn plan(stmt: &Statement, placement: &Placement, params: &Params) -> Plan {
    if let Some(refusal) = misread_refusal(stmt, placement) {
        return refusal;
    }
    let mut planned = plan_statement(stmt, placement, params);
    match &mut planned {
        Plan::Scatter { merge, .. } if *merge != MergeSpec::default() => {
            merge.text = text_scope::of(stmt, placement);
        }
        // A read that calls a function writing on its shard writes there.
        Plan::Shard { write, .. } if !*write && calls_writing_function(stmt, placement) => {
            *write = true;
        }
        _ => {}
    }
    if placement.unroutable.is_empty() {
        return planned;
    }
    unroutable::gate(stmt, placement, planned)
}

fn plan_statement(stmt: &Statement, placement: &Placement, params: &Params) -> Plan {
    match key_guard::guard(stmt, placement) {
        key_guard::Guard::None => plan_unguarded(stmt, placement, params),
        key_guard::Guard::Guarded(guarded) => {
            key_guard::as_write(plan_unguarded(&guarded, placement, params), &guarded)
        }
        key_guard::Guard::Refused(refusal) => *refusal,
    }
}

fn plan_unguarded(stmt: &Statement, placement: &Placement, params: &Params) -> Plan {
    if let Some(refusal) = reads_sequence_values(stmt) {
        return refusal;
    }
    if let Some(refusal) = reading_functions::refusal(stmt, placement) {
        return refusal;
    }
    if let Some(refusal) = writing_functions::reference_refusal(stmt, placement) {
        return refusal;
    }
    match stmt {
        Statement::Query(q) => {
            signal::signal_plan(q, params).unwrap_or_else(|| plan_query(q, placement, params))
        }
        Statement::Insert(ins) => plan_insert(ins, placement, params),
        Statement::Update(up) => {
            let TableFactor::Table { name, alias, .. } = &up.table.relation else {
                return refuse(
                    "UPDATE of this form is not supported on several shards",
                    "Update one table by its shard key.",
                );
            };
            let from = match &up.from {
                Some(UpdateTableFromKind::AfterSet(f) | UpdateTableFromKind::BeforeSet(f)) => {
                    f.as_slice()
                }
                None => &[][..],
            };
            let alias = alias.as_ref().map(|a| &a.name);
            let joined = match joined_to_write(
                name,
                alias,
                &up.table.joins,
                from,
                up.selection.as_ref(),
                placement,
            ) {
                Ok(n) => n,
                Err(refusal) => return *refusal,
            };
            plan_write_where(
                name,
                alias,
                joined,
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
            let using = del.using.as_deref().unwrap_or_default();
            let alias = alias.as_ref().map(|a| &a.name);
            let joined =
                match joined_to_write(name, alias, joins, using, del.selection.as_ref(), placement)
                {
                    Ok(n) => n,
                    Err(refusal) => return *refusal,
                };
            plan_write_where(
                name,
                alias,
                joined,
                del.selection.as_ref(),
                placement,
                params,
                stmt,
            )
        }
        Statement::CreateTable(ct) if ct.temporary => plan_unparsed("create temporary table"),
        Statement::CreateTable(ct) => copies::check_definition(&ct.name, stmt, placement)
            .unwrap_or_else(|| create_table::plan_create_table(ct, placement)),
        Statement::CreateView(cv) => create_table::plan_create_view(cv, placement),
        Statement::CreateIndex(ci) => create_table::plan_create_index(ci, placement),
        // PostgreSQL refuses DROP DATABASE inside a transaction block.
        Statement::Drop {
            object_type: sqlparser::ast::ObjectType::Database,
            ..
        } => Plan::Broadcast {
            transactional: false,
        },
        Statement::AlterTable(at) => copies::check_definition(&at.name, stmt, placement)
            .unwrap_or_else(|| create_table::plan_alter_table(at, placement)),
        Statement::Drop { .. }
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
            // A write whose key assignments are guarded (`key_guard`) on one shard: planned as
            // written there, which runs nothing. ANALYZE would run the unguarded text.
            Plan::Write {
                parts, sum: true, ..
            } if parts.len() == 1 && !*analyze => Plan::Shard {
                shard: parts[0].0,
                write: false,
            },
            // A reference-table write: every copy plans alike, and ANALYZE runs it on every
            // copy, as the write itself would; the client sees one copy's plan.
            Plan::Write {
                parts,
                sum: false,
                serialize,
                ..
            } if parts.len() == placement.shard_names.len() => {
                if *analyze {
                    match serialize {
                        Some(table) => on_every_copy(placement, &stmt.to_string(), &table),
                        None => on_every_shard(placement, stmt, false),
                    }
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
pub(super) fn folded(i: &Ident) -> String {
    match i.quote_style {
        None => i.value.to_lowercase(),
        Some(_) => i.value.clone(),
    }
}

/// A query with no WITH, ORDER BY, LIMIT, FETCH or locking clause around its body.
pub(crate) fn bare(q: &Query) -> bool {
    q.with.is_none()
        && q.order_by.is_none()
        && q.limit_clause.is_none()
        && q.fetch.is_none()
        && q.locks.is_empty()
}

/// A SELECT with no GROUP BY (of any form) and no HAVING.
pub(crate) fn ungrouped(select: &Select) -> bool {
    select.having.is_none()
        && matches!(&select.group_by, sqlparser::ast::GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty())
}

/// The function a select item calls, named or not: `count(*)`, `row_number() OVER (...) AS n`.
pub(super) fn item_call(item: &SelectItem) -> Option<&sqlparser::ast::Function> {
    match item {
        SelectItem::UnnamedExpr(Expr::Function(f))
        | SelectItem::ExprWithAlias {
            expr: Expr::Function(f),
            ..
        } => Some(f),
        _ => None,
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
