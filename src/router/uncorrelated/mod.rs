//! Subqueries over sharded tables that no shard can answer alone and that refer to nothing
//! outside themselves: the executor runs each first as a query of its own (merged over the
//! shards like any other) and the statement then runs with the answer in the subquery's place.
//!
//! - a scalar subquery becomes its value as a typed literal, `NULL` of its type when it found
//!   no row, and a subquery over those rows when it found several (so that PostgreSQL raises
//!   "more than one row returned by a subquery" where it would have evaluated it);
//! - `x [NOT] IN (subquery)`, `x op ANY/ALL (subquery)` compare with an array literal of its
//!   values, which keeps PostgreSQL's operator choice and its NULL logic (and an empty set);
//! - `[NOT] EXISTS (subquery)` becomes true or false;
//! - a derived table that limits its rows (`FROM (SELECT ... ORDER BY ... LIMIT 10) s`) or
//!   combines them across shards (grouped, aggregated or DISTINCT other than by the key)
//!   becomes a VALUES list of them (`derived`); so does a table whose rows a window of the
//!   query around it needs from every shard (`sql::window_rows`), under the table's name.
//!
//! "Refers to nothing outside": every qualified column names a table of the subquery itself.
//! An unqualified name PostgreSQL resolves inside first, so a subquery that runs alone means
//! what it meant inside the statement; one whose name belonged to the outer query fails alone
//! with 42703 or 42P01, and the executor then refuses the statement as before.
//!
//! Invariant: a replacement is always of the type the subquery's column had (a built-in type,
//! written `pg_catalog.` qualified, or one the database created, by its schema-qualified name)
//! under the collation the column's values had, and carries the value as PostgreSQL wrote it
//! as text, which its input reads back as the same value under the same session settings.

mod derived;
pub mod equality_exists;
pub mod semi_join;
pub mod unmatched;
mod write_back;

pub use write_back::{array_text, item_name, replace, replacement, type_text};
use write_back::{parse_expr, quoted};

use super::plan::{cte_names, relations};
use super::subquery::derived_rows::derived_top_tables;
use super::subquery::{per_row_exprs, tied_subqueries, top_tables};
use crate::error::{sqlstate, PgError};
use crate::placement::Placement;
use sqlparser::ast::{
    Expr, Ident, ObjectNamePart, Query, SetExpr, Statement, TableFactor, Value, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use std::collections::HashSet;
use std::ops::ControlFlow;

/// Whether the planner refused a statement for a subquery that the executor may answer by
/// running it first.
pub fn answered_first(refusal: &PgError) -> bool {
    refusal.message == super::subquery::UNTIED
        || refusal.message == super::subquery::UNTIED_NOT_IN
        || refusal.message == super::subquery::FED_IN_ORDER
        || refusal.message == super::subquery::WINDOW_ROWS
}

/// Whether `q`, with its CTEs put in place, is an aggregate over an ordered derived table
/// that, answered first, leaves nothing else to read (see `sql::row_order::fed_in_order`), or
/// windows over one table's rows read first (`sql::window_rows`): one read, so a READ
/// COMMITTED transaction block may have it answered first too.
pub fn one_read_when_answered_first(q: &Query, placement: &Placement) -> bool {
    crate::sql::row_order::reads_only_its_fed_table(&ctes_inlined(q.clone()))
        || crate::sql::window_rows::read_first(q, &|n| is_sharded(placement, n)).is_some()
}

fn is_sharded(placement: &Placement, name: &sqlparser::ast::ObjectName) -> bool {
    matches!(
        placement.rule(&name.to_string()),
        Some(crate::placement::TableRule::Sharded { .. })
    )
}

/// Whether the executor may answer a statement the planner refused in parts: subqueries
/// first (`answered_first`), or the reference rows an outer join keeps unmatched
/// (`unmatched`); or after reading what its GROUP BY names mean
/// (`aggregate::group_names`).
pub fn answered_in_parts(refusal: &PgError) -> bool {
    answered_first(refusal)
        || unmatched::refused_for_kept_rows(refusal)
        || super::aggregate::group_names::unresolved(refusal)
}

/// How the statement uses a subquery's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `(SELECT ...)` as a value.
    Scalar,
    /// `[NOT] EXISTS (...)`.
    Exists { negated: bool },
    /// `x [NOT] IN (...)`.
    In { negated: bool },
    /// `x op ANY (...)` or `x op ALL (...)`.
    Compared,
    /// A derived table in FROM.
    Derived,
    /// `[NOT] EXISTS (...)` correlated to the row of a reference table, read as the reference
    /// rows some shard matches (see `semi_join`); the candidate's query reads them.
    SemiJoin { negated: bool },
    /// `(SELECT x ... ORDER BY ... LIMIT 1)` correlated to the row of a reference table, read
    /// as each matched reference row's first value (see `semi_join::first_values`).
    FirstOfRow,
}

/// Where a subquery sits in the statement, and what takes its place.
#[derive(Debug, Clone, PartialEq)]
pub enum Site {
    Expr(Box<Expr>),
    Table(Box<TableFactor>),
}

impl std::fmt::Display for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Site::Expr(e) => e.fmt(f),
            Site::Table(t) => t.fmt(f),
        }
    }
}

/// A subquery the executor answers first.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The expression or derived table as the statement holds it (replaced wherever it
    /// occurs).
    pub site: Site,
    /// The query to run alone (an EXISTS's with LIMIT 1).
    pub query: Query,
    pub kind: Kind,
}

/// What a subquery returned: each column's name, type OID and modifier, and its rows as text.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub columns: Vec<(String, u32, i32)>,
    pub rows: Vec<Vec<Option<String>>>,
    /// The columns' types `type_text` does not know (created in the database, or built-in
    /// types outside its table), by OID (as the first shard numbers them, which the columns'
    /// OIDs are) and schema-qualified name, which every shard resolves to its own OID for the
    /// same type.
    pub named_types: Vec<(u32, String)>,
    /// Each column's table OID and attribute number, as the first shard numbers them, when it
    /// comes straight from a table's column (0 otherwise).
    pub origins: Vec<(u32, i16)>,
    /// The columns whose values compare under a collation other than their type's, and that
    /// collation as a COLLATE clause names it: a derived table's rows written back carry it.
    pub collations: Vec<(usize, String)>,
}

impl Answer {
    /// Column `i`'s type as a cast names it (`None`: a type whose name is not known).
    pub fn column_type(&self, i: usize) -> Option<String> {
        let &(_, oid, typmod) = self.columns.get(i)?;
        type_text(oid, typmod).or_else(|| {
            self.named_types
                .iter()
                .find(|(o, _)| *o == oid)
                .map(|(_, name)| name.clone())
        })
    }
}

/// A reading statement with its WITH queries put in place as the derived tables they stand
/// for (as PostgreSQL itself plans a CTE read once), so that one of them is answered first as
/// a derived table; the statement as it was when they cannot be.
pub fn ctes_inlined(q: Query) -> Query {
    let writes = matches!(
        q.body.as_ref(),
        SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_)
    );
    if q.with.is_none() || writes {
        return q;
    }
    super::plan::ctes_inlined(&q).unwrap_or(q)
}

/// The subqueries of `q` that read sharded tables, refer to nothing outside themselves, and
/// are not already answered by each shard (tied to the outer table by the shard key), in the
/// order they appear; the outermost only (one inside them is answered when it runs alone).
pub fn candidates(q: &Query, placement: &Placement) -> Vec<Candidate> {
    candidates_among(q, tied(q, placement), placement)
}

/// Whether `stmt` is a write whose subqueries may be answered first: an UPDATE, a DELETE, or
/// an INSERT whose rows are VALUES (an INSERT ... SELECT reads its source first instead).
pub fn answers_write_subqueries(stmt: &Statement) -> bool {
    match stmt {
        Statement::Update(_) | Statement::Delete(_) => true,
        Statement::Insert(i) => i
            .source
            .as_deref()
            .is_some_and(|s| matches!(s.body.as_ref(), sqlparser::ast::SetExpr::Values(_))),
        _ => false,
    }
}

/// The candidates of an UPDATE's or DELETE's subqueries, or of an INSERT ... VALUES's (see
/// `candidates`). Those tied to the written table by the shard key are not among them: each
/// names the written table.
pub fn write_candidates(stmt: &Statement, placement: &Placement) -> Vec<Candidate> {
    if answers_write_subqueries(stmt) {
        candidates_among(stmt, Vec::new(), placement)
    } else {
        Vec::new()
    }
}

/// The candidates of `q` but the subqueries `kept`, which each shard answers as written.
fn candidates_among<V: Visit>(q: &V, kept: Vec<Expr>, placement: &Placement) -> Vec<Candidate> {
    struct Walk<'a> {
        placement: &'a Placement,
        kept: Vec<Expr>,
        /// CTE names of the whole statement: a subquery reading one reads the CTE, which it
        /// would not see alone.
        ctes: Vec<String>,
        /// The candidate being walked through (its insides are answered with it).
        inside: Option<*const ()>,
        /// Ordered derived tables whose rows an aggregate of the query around them reads in
        /// the order they come (see `sql::row_order::fed_in_order`).
        fed_in_order: Vec<*const ()>,
        /// Tables whose rows a window of the query around them needs read first, with the
        /// query that reads them (see `sql::window_rows`).
        windowed: Vec<(*const (), Query)>,
        found: Vec<Candidate>,
        /// For each query entered, its one table when that is a reference table (see
        /// `semi_join::reference_row`).
        rows: Vec<Option<(String, String)>>,
    }
    impl Visitor for Walk<'_> {
        type Break = ();
        fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.rows.pop();
            ControlFlow::Continue(())
        }
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            self.rows.push(semi_join::reference_row(q, self.placement));
            if let Some(t) = crate::sql::row_order::fed_in_order(q) {
                self.fed_in_order.push(t as *const TableFactor as *const ());
            }
            let placement = self.placement;
            if let Some((t, read)) =
                crate::sql::window_rows::read_first(q, &|n| is_sharded(placement, n))
            {
                // Only where the planner asks for it: windows partitioned by the key are
                // computed by each shard, and need no rows read first.
                let planned = super::plan::plan(
                    &sqlparser::ast::Statement::Query(Box::new(q.clone())),
                    placement,
                    &super::params::Params::default(),
                );
                if matches!(&planned, super::plan::Plan::Reject(e)
                    if e.message == super::subquery::WINDOW_ROWS)
                {
                    self.windowed
                        .push((t as *const TableFactor as *const (), read));
                }
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if self.inside.is_some() {
                return ControlFlow::Continue(());
            }
            let Some((query, kind)) = subquery_of(e) else {
                return ControlFlow::Continue(());
            };
            if relations(query, self.placement).sharded.is_empty()
                || self.kept.contains(e)
                || reads_any(query, &self.ctes)
            {
                return ControlFlow::Continue(());
            }
            if !self_contained(query) {
                // Correlated: only an EXISTS or a first value over a reference table's row
                // is read in parts.
                let Some(Some(row)) = self.rows.last() else {
                    return ControlFlow::Continue(());
                };
                let read = match kind {
                    Kind::Exists { negated } => semi_join::matched(query, row, self.placement)
                        .map(|q| (q, Kind::SemiJoin { negated })),
                    Kind::Scalar => semi_join::first_values(query, row, self.placement)
                        .map(|q| (q, Kind::FirstOfRow)),
                    _ => None,
                };
                if let Some((query, kind)) = read {
                    self.inside = Some(e as *const Expr as *const ());
                    let site = Site::Expr(Box::new(e.clone()));
                    if !self.found.iter().any(|c| c.site == site) {
                        self.found.push(Candidate { site, query, kind });
                    }
                }
                return ControlFlow::Continue(());
            }
            self.inside = Some(e as *const Expr as *const ());
            self.push(Site::Expr(Box::new(e.clone())), query, kind);
            ControlFlow::Continue(())
        }
        fn post_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if self.inside == Some(e as *const Expr as *const ()) {
                self.inside = None;
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
            if self.inside.is_some() {
                return ControlFlow::Continue(());
            }
            let at = t as *const TableFactor as *const ();
            let fed = self.fed_in_order.contains(&at);
            let windowed = self
                .windowed
                .iter()
                .find(|(w, _)| *w == at)
                .map(|(_, read)| read.clone());
            let merged = derived::merged(t, self.placement);
            let Some(query) = merged
                .or_else(|| {
                    fed.then(|| crate::sql::row_order::derived_query(t))
                        .flatten()
                })
                .cloned()
                .or(windowed)
            else {
                return ControlFlow::Continue(());
            };
            let query = &query;
            if relations(query, self.placement).sharded.is_empty()
                || !self_contained(query)
                || reads_any(query, &self.ctes)
            {
                return ControlFlow::Continue(());
            }
            self.inside = Some(t as *const TableFactor as *const ());
            self.push(Site::Table(Box::new(t.clone())), query, Kind::Derived);
            ControlFlow::Continue(())
        }
        fn post_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
            if self.inside == Some(t as *const TableFactor as *const ()) {
                self.inside = None;
            }
            ControlFlow::Continue(())
        }
    }
    impl Walk<'_> {
        fn push(&mut self, site: Site, query: &Query, kind: Kind) {
            if self.found.iter().any(|c| c.site == site) {
                return;
            }
            if let Some(query) = standalone(query, kind) {
                self.found.push(Candidate { site, query, kind });
            }
        }
    }
    let mut walk = Walk {
        placement,
        kept,
        ctes: cte_names(q),
        inside: None,
        fed_in_order: Vec::new(),
        windowed: Vec::new(),
        found: Vec::new(),
        rows: Vec::new(),
    };
    let _ = q.visit(&mut walk);
    // A reading of a correlated subquery holds for the reference row of the query it was
    // found in; its answer goes wherever the same text stands, so the text must stand once.
    let mut found = walk.found;
    found.retain(|c| match (&c.kind, &c.site) {
        (Kind::SemiJoin { .. } | Kind::FirstOfRow, Site::Expr(e)) => occurrences(q, e) == 1,
        _ => true,
    });
    found
}

/// How many times `e` stands in `q`.
fn occurrences<V: Visit>(q: &V, e: &Expr) -> usize {
    let mut n = 0;
    let _ = sqlparser::ast::visit_expressions(q, |x: &Expr| {
        if x == e {
            n += 1;
        }
        ControlFlow::<()>::Continue(())
    });
    n
}

/// Subqueries of the top SELECT's WHERE, select list and ORDER BY that each shard answers as
/// written.
fn tied(q: &Query, placement: &Placement) -> Vec<Expr> {
    let SetExpr::Select(s) = q.body.as_ref() else {
        return Vec::new();
    };
    let mut top = top_tables(s, placement);
    top.extend(derived_top_tables(s, placement).into_iter().map(|(t, _)| t));
    per_row_exprs(q, s)
        .flat_map(|e| tied_subqueries(e, &top, placement))
        .filter_map(|(e, read)| matches!(read, Ok(Some(n)) if n > 0).then_some(e))
        .collect()
}

fn subquery_of(e: &Expr) -> Option<(&Query, Kind)> {
    match e {
        Expr::Subquery(q) => Some((q, Kind::Scalar)),
        Expr::Exists { subquery, negated } => Some((subquery, Kind::Exists { negated: *negated })),
        Expr::InSubquery {
            subquery, negated, ..
        } => Some((subquery, Kind::In { negated: *negated })),
        Expr::AnyOp { right, .. } | Expr::AllOp { right, .. } => match right.as_ref() {
            Expr::Subquery(q) => Some((q, Kind::Compared)),
            _ => None,
        },
        _ => None,
    }
}

/// Whether `q` has no LIMIT, or only a positive constant one without OFFSET: one an EXISTS or a
/// first value read over every shard does not notice.
fn no_limit_but_a_positive_one(q: &Query) -> bool {
    match &q.limit_clause {
        None => true,
        Some(sqlparser::ast::LimitClause::LimitOffset {
            limit: Some(Expr::Value(v)),
            offset: None,
            limit_by,
        }) => {
            limit_by.is_empty()
                && matches!(&v.value, Value::Number(n, _) if n.parse::<u64>().is_ok_and(|n| n > 0))
        }
        Some(_) => false,
    }
}

/// The query to run alone: an EXISTS needs one row at most.
fn standalone(q: &Query, kind: Kind) -> Option<Query> {
    if !matches!(kind, Kind::Exists { .. }) || q.limit_clause.is_some() || q.fetch.is_some() {
        return Some(q.clone());
    }
    let text = format!("{q} LIMIT 1");
    match Parser::parse_sql(&PostgreSqlDialect {}, &text)
        .ok()?
        .pop()?
    {
        sqlparser::ast::Statement::Query(q) => Some(*q),
        _ => None,
    }
}

/// Whether every qualified column of `q` names a table, alias or CTE of `q` itself.
pub fn self_contained(q: &Query) -> bool {
    let mut defined = HashSet::new();
    struct Names<'a> {
        defined: &'a mut HashSet<String>,
        qualifiers: Vec<String>,
    }
    impl Visitor for Names<'_> {
        type Break = ();
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            if let Some(w) = &q.with {
                for c in &w.cte_tables {
                    self.defined.insert(folded(&c.alias.name));
                }
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
            if let TableFactor::Table { name, .. } = t {
                if let Some(ObjectNamePart::Identifier(last)) = name.0.last() {
                    self.defined.insert(folded(last));
                }
            }
            let alias = match t {
                TableFactor::Table { alias, .. }
                | TableFactor::Derived { alias, .. }
                | TableFactor::TableFunction { alias, .. }
                | TableFactor::Function { alias, .. }
                | TableFactor::UNNEST { alias, .. }
                | TableFactor::NestedJoin { alias, .. } => alias.as_ref(),
                _ => None,
            };
            if let Some(a) = alias {
                self.defined.insert(folded(&a.name));
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if let Expr::CompoundIdentifier(parts) = e {
                if parts.len() >= 2 {
                    self.qualifiers.push(folded(&parts[parts.len() - 2]));
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut names = Names {
        defined: &mut defined,
        qualifiers: Vec::new(),
    };
    let _ = q.visit(&mut names);
    let qualifiers = names.qualifiers;
    qualifiers.iter().all(|q| defined.contains(q))
}

/// Whether `q` reads a relation by one of `names` (lower case), unqualified.
fn reads_any(q: &Query, names: &[String]) -> bool {
    struct Reads<'a>(&'a [String]);
    impl Visitor for Reads<'_> {
        type Break = ();
        fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
            match t {
                TableFactor::Table { name, .. } if name.0.len() == 1 => match name.0.first() {
                    Some(ObjectNamePart::Identifier(i)) if self.0.contains(&folded(i)) => {
                        ControlFlow::Break(())
                    }
                    _ => ControlFlow::Continue(()),
                },
                _ => ControlFlow::Continue(()),
            }
        }
    }
    !names.is_empty() && q.visit(&mut Reads(names)).is_break()
}

/// A name as PostgreSQL compares it: folded to lower case unless quoted.
fn folded(i: &Ident) -> String {
    match i.quote_style {
        None => i.value.to_ascii_lowercase(),
        Some(_) => i.value.clone(),
    }
}

/// The query `text` holds, when it is one query the parser reads.
pub fn parse_query(text: &str) -> Option<Query> {
    match Parser::parse_sql(&PostgreSqlDialect {}, text).ok()?.pop()? {
        sqlparser::ast::Statement::Query(q) => Some(*q),
        _ => None,
    }
}

pub(super) fn refusal(message: impl Into<String>) -> PgError {
    PgError::error(sqlstate::FEATURE_NOT_SUPPORTED, message).with_hint(
        "Run the subquery first and write its values into the statement, or tie it to the outer table by the shard key.",
    )
}

#[cfg(test)]
mod tests;
