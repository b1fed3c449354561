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

use super::plan::{cte_names, relations};
use super::subquery::derived_rows::derived_top_tables;
use super::subquery::{per_row_exprs, tied_subqueries, top_tables};
use crate::error::{sqlstate, PgError};
use crate::placement::Placement;
use sqlparser::ast::{
    BinaryOperator, Expr, Ident, ObjectNamePart, Query, SelectItem, SetExpr, TableFactor,
    UnaryOperator, Value, Visit, VisitMut, Visitor, VisitorMut,
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
    let kept = tied(q, placement);
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
fn occurrences(q: &Query, e: &Expr) -> usize {
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

/// What takes the candidate's place, given its answer.
pub fn replacement(c: &Candidate, answer: &Answer) -> Result<Site, PgError> {
    match (&c.kind, &c.site) {
        (Kind::Exists { negated }, _) => {
            // Found rows: true, unless negated.
            Ok(Site::Expr(Box::new(Expr::value(Value::Boolean(
                answer.rows.is_empty() == *negated,
            )))))
        }
        (Kind::SemiJoin { negated }, _) => {
            let texts: Vec<Option<String>> = answer
                .rows
                .iter()
                .map(|r| r.first().cloned().flatten())
                .collect();
            semi_join::replacement(&c.query, *negated, &texts).map(|e| Site::Expr(Box::new(e)))
        }
        (Kind::FirstOfRow, _) => {
            let Some(ty) = answer.column_type(1).filter(|t| !t.ends_with("[]")) else {
                return Err(refusal(
                    "a first value per reference row of a type the proxy cannot write back as an array element is not supported",
                ));
            };
            if !answer.collations.is_empty() {
                return Err(refusal(
                    "a first value per reference row under a collation other than its type's is not supported",
                ));
            }
            let column = |i: usize| -> Vec<Option<String>> {
                answer
                    .rows
                    .iter()
                    .map(|r| r.get(i).cloned().flatten())
                    .collect()
            };
            semi_join::value_of_row(&c.query, &ty, &column(0), &column(1))
                .map(|e| Site::Expr(Box::new(e)))
        }
        (Kind::Derived, Site::Table(t)) => {
            derived::replacement(t, answer).map(|t| Site::Table(Box::new(t)))
        }
        (_, Site::Expr(e)) => value_replacement(c.kind, e, answer).map(|e| Site::Expr(Box::new(e))),
        (_, Site::Table(_)) => Err(refusal("a derived table is answered as rows")),
    }
}

fn value_replacement(kind: Kind, expr: &Expr, answer: &Answer) -> Result<Expr, PgError> {
    let [(_, oid, _)] = answer.columns.as_slice() else {
        return Err(refusal(
            "a subquery over several shards that returns other than one column is not supported",
        ));
    };
    let Some(ty) = answer.column_type(0) else {
        return Err(refusal(format!(
            "a subquery over several shards whose column is of a type the proxy cannot name on every shard (OID {oid}) is not supported"
        )));
    };
    let column = || answer.rows.iter().map(|r| r.first().cloned().flatten());
    // The column's own collation, where it differs from its type's. A subquery's output
    // column carries its collation into the statement as an implicit one, which a COLLATE
    // written beside the value would make explicit (and win over the other side's): so the
    // value is selected under it, as the subquery selected it.
    let collation = answer
        .collations
        .iter()
        .find(|(c, _)| *c == 0)
        .map(|(_, name)| name.as_str());
    let collated = |text: String| match collation {
        Some(c) => format!("(SELECT {text} COLLATE {c})"),
        None => text,
    };
    let text = match kind {
        Kind::Scalar => match answer.rows.len() {
            0 => collated(format!("CAST(NULL AS {ty})")),
            1 => collated(typed(column().next().flatten().as_deref(), &ty)),
            _ => {
                // Two rows: PostgreSQL's own error, where it would evaluate the subquery.
                let two: Vec<String> = column()
                    .take(2)
                    .map(|v| match collation {
                        Some(c) => format!("({} COLLATE {c})", typed(v.as_deref(), &ty)),
                        None => format!("({})", typed(v.as_deref(), &ty)),
                    })
                    .collect();
                format!(
                    "(SELECT v FROM (VALUES {}) AS shardgate_rows (v))",
                    two.join(", ")
                )
            }
        },
        Kind::In { .. } | Kind::Compared => {
            if ty.ends_with("[]") {
                return Err(refusal(
                    "a subquery over several shards compared with IN, ANY or ALL that returns arrays is not supported",
                ));
            }
            let values: Vec<Option<String>> = column().collect();
            let array = format!("CAST({} AS {ty}[])", quoted(&array_text(&values)));
            match collation {
                // In an expression, not a subquery alone, which ANY would compare row by row.
                Some(_) => format!("COALESCE({})", collated(array)),
                None => array,
            }
        }
        Kind::Exists { .. } | Kind::Derived | Kind::SemiJoin { .. } | Kind::FirstOfRow => {
            unreachable!("answered by `replacement`")
        }
    };
    let value = parse_expr(&text)?;
    Ok(match (&kind, expr) {
        (Kind::In { negated }, Expr::InSubquery { expr, .. }) => {
            let any = Expr::AnyOp {
                left: expr.clone(),
                compare_op: BinaryOperator::Eq,
                right: Box::new(value),
                is_some: false,
            };
            if *negated {
                Expr::UnaryOp {
                    op: UnaryOperator::Not,
                    expr: Box::new(Expr::Nested(Box::new(any))),
                }
            } else {
                any
            }
        }
        (Kind::Compared, Expr::AnyOp { .. } | Expr::AllOp { .. }) => {
            let mut e = expr.clone();
            if let Expr::AnyOp { right, .. } | Expr::AllOp { right, .. } = &mut e {
                **right = value;
            }
            e
        }
        _ => value,
    })
}

/// The column name PostgreSQL gives a select-list item that is the candidate alone.
pub fn item_name(c: &Candidate, answer: &Answer) -> Option<String> {
    match c.kind {
        Kind::Scalar => answer.columns.first().map(|(name, _, _)| name.clone()),
        // The value's column, after the row's text.
        Kind::FirstOfRow => answer.columns.get(1).map(|(name, _, _)| name.clone()),
        Kind::Exists { negated: false } | Kind::SemiJoin { negated: false } => {
            Some("exists".into())
        }
        // NOT EXISTS is ?column?; its replacement, a bare boolean, would be "bool".
        Kind::Exists { negated: true } | Kind::SemiJoin { negated: true } => {
            Some("?column?".into())
        }
        // `x IN (...)` and `x op ANY (...)` are named ?column? as their replacements are; a
        // derived table is no select-list item.
        Kind::In { .. } | Kind::Compared | Kind::Derived => None,
    }
}

/// `q` with each `(site, replacement, item name)` put in place: wherever the expression or
/// derived table occurs, and a select-list item that is the expression alone keeps
/// PostgreSQL's name for it.
pub fn replace(q: &mut Query, found: &[(Site, Site, Option<String>)]) {
    struct Put<'a>(&'a [(Site, Site, Option<String>)]);
    impl VisitorMut for Put<'_> {
        type Break = ();
        fn pre_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
            if let SetExpr::Select(s) = q.body.as_mut() {
                for item in &mut s.projection {
                    let SelectItem::UnnamedExpr(e) = item else {
                        continue;
                    };
                    let mut bare = &*e;
                    while let Expr::Nested(inner) = bare {
                        bare = inner;
                    }
                    let named = self
                        .0
                        .iter()
                        .find(|(o, _, _)| matches!(o, Site::Expr(o) if **o == *bare));
                    if let Some((_, _, Some(name))) = named {
                        *item = SelectItem::ExprWithAlias {
                            expr: e.clone(),
                            alias: Ident::with_quote('"', name.clone()),
                        };
                    }
                }
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            put_in(self.0, e, |s| match s {
                Site::Expr(e) => Some(&**e),
                Site::Table(_) => None,
            });
            ControlFlow::Continue(())
        }
        fn pre_visit_table_factor(&mut self, t: &mut TableFactor) -> ControlFlow<()> {
            put_in(self.0, t, |s| match s {
                Site::Table(t) => Some(&**t),
                Site::Expr(_) => None,
            });
            ControlFlow::Continue(())
        }
    }
    let _ = q.visit(&mut Put(found));
}

/// `node` replaced by what takes the place of the first site equal to it (`pick` reads a site
/// as a node of its kind).
fn put_in<T: PartialEq + Clone>(
    found: &[(Site, Site, Option<String>)],
    node: &mut T,
    pick: impl Fn(&Site) -> Option<&T>,
) {
    let replacement = found
        .iter()
        .find(|(o, _, _)| pick(o) == Some(&*node))
        .and_then(|(_, r, _)| pick(r));
    if let Some(r) = replacement {
        *node = r.clone();
    }
}

/// A built-in type as a cast names it, with the modifier its column had (`numeric(10,2)`,
/// `varchar(20)`, `char(3)`, `timestamp(3)`), which a client's prepared statement keeps as
/// part of its result type.
pub fn type_text(oid: u32, typmod: i32) -> Option<String> {
    // The integer types by their SQL keywords, which name nothing else and which the planner
    // reads a shard key through (`id = CAST('7' AS BIGINT)` goes to one shard).
    let keyword = match oid {
        21 => Some("SMALLINT"),
        23 => Some("INTEGER"),
        20 => Some("BIGINT"),
        1005 => Some("SMALLINT[]"),
        1007 => Some("INTEGER[]"),
        1016 => Some("BIGINT[]"),
        _ => None,
    };
    if let Some(k) = keyword {
        return Some(k.to_string());
    }
    let name = crate::sql::builtin_types::name_of(oid)?;
    let modifier = match oid {
        1700 if typmod >= 4 => {
            let (precision, scale) = (((typmod - 4) >> 16) & 0xffff, (typmod - 4) & 0xffff);
            if scale <= precision {
                format!("({precision},{scale})")
            } else {
                String::new()
            }
        }
        1042 | 1043 if typmod >= 4 => format!("({})", typmod - 4),
        // time, timestamp, timestamptz, timetz: the fractional digits; bit, varbit: the length.
        1083 | 1114 | 1184 | 1266 | 1560 | 1562 if typmod >= 0 => format!("({typmod})"),
        _ => String::new(),
    };
    Some(format!("pg_catalog.{name}{modifier}"))
}

/// `CAST('value' AS type)`, or a NULL of the type.
pub(super) fn typed(value: Option<&str>, ty: &str) -> String {
    match value {
        Some(v) => format!("CAST({} AS {ty})", quoted(v)),
        None => format!("CAST(NULL AS {ty})"),
    }
}

/// A string literal of `v` that reads the same whatever `standard_conforming_strings` is.
pub(super) fn quoted(v: &str) -> String {
    if v.contains('\\') {
        format!("E'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", v.replace('\'', "''"))
    }
}

/// An array's text form (`{"a","b",NULL}`) of the values, each quoted as array input reads it.
pub fn array_text(values: &[Option<String>]) -> String {
    let elements: Vec<String> = values
        .iter()
        .map(|v| match v {
            None => "NULL".to_string(),
            Some(v) => format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")),
        })
        .collect();
    format!("{{{}}}", elements.join(","))
}

/// The query `text` holds, when it is one query the parser reads.
pub fn parse_query(text: &str) -> Option<Query> {
    match Parser::parse_sql(&PostgreSqlDialect {}, text).ok()?.pop()? {
        sqlparser::ast::Statement::Query(q) => Some(*q),
        _ => None,
    }
}

pub(super) fn parse_expr(text: &str) -> Result<Expr, PgError> {
    crate::sql::expression(text)
        .map_err(|_| refusal("a subquery's answer could not be written back into the statement"))
}

pub(super) fn refusal(message: impl Into<String>) -> PgError {
    PgError::error(sqlstate::FEATURE_NOT_SUPPORTED, message).with_hint(
        "Run the subquery first and write its values into the statement, or tie it to the outer table by the shard key.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::router::plan::tests::query;

    fn placement() -> Placement {
        let text = "[[users]]\nname=\"a\"\nauth=\"trust\"\n\
             [[shards]]\nname=\"s0\"\nurl=\"postgres://u@h/db\"\n\
             [[shards]]\nname=\"s1\"\nurl=\"postgres://u@h/db\"\n\
             [tables.accounts]\nshard_key=\"id\"\nkey_type=\"bigint\"\n\
             [tables.orders]\nshard_key=\"account_id\"\nkey_type=\"bigint\"\n";
        crate::config::Config::from_toml(text)
            .unwrap()
            .placement()
            .unwrap()
    }

    #[test]
    fn only_subqueries_referring_to_their_own_tables_are_run_alone() {
        assert!(self_contained(&query(
            "select max(o2.amount) from orders o2 where o2.amount > 0"
        )));
        assert!(self_contained(&query(
            "select id from accounts order by balance limit 7"
        )));
        assert!(!self_contained(&query(
            "select count(*) from orders o2 where o2.account_id = a.id"
        )));
        // A name hidden by its alias is the outer one.
        assert!(self_contained(&query(
            "select 1 from orders where orders.amount > 3"
        )));
        assert!(self_contained(&query(
            "with t as (select 1 as x) select t.x from t"
        )));
    }

    #[test]
    fn untied_subqueries_are_found_outermost_first_and_tied_ones_are_left() {
        let p = placement();
        let q = query(
            "select (select max(amount) from orders), a.id from accounts a \
             where a.id in (select account_id from orders) \
             and a.balance > (select avg(balance) from accounts where id in (select account_id from orders)) \
             and exists (select 1 from orders o where o.account_id = a.id)",
        );
        let found: Vec<String> = candidates(&q, &p)
            .iter()
            .map(|c| c.site.to_string())
            .collect();
        assert_eq!(
            found,
            vec![
                "(SELECT max(amount) FROM orders)".to_string(),
                "(SELECT avg(balance) FROM accounts WHERE id IN (SELECT account_id FROM orders))"
                    .to_string(),
            ]
        );
    }

    #[test]
    fn a_subquery_reading_a_cte_of_the_statement_is_left_in_place() {
        let q = query(
            "with accounts as (select 1 as balance) select id from orders \
             where amount > (select max(balance) from accounts) \
             and amount < (select max(amount) from orders)",
        );
        let found: Vec<String> = candidates(&q, &placement())
            .iter()
            .map(|c| c.site.to_string())
            .collect();
        assert_eq!(found, vec!["(SELECT max(amount) FROM orders)".to_string()]);
    }

    #[test]
    fn a_correlated_exists_is_read_in_parts_only_where_its_text_stands_once() {
        let p = crate::router::plan::tests::placement();
        let exists = "exists (select 1 from accounts a where a.country = c.code)";
        let once = query(&format!("select c.code from countries c where {exists}"));
        let found = candidates(&once, &p);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].kind, Kind::SemiJoin { negated: false });
        // The same text over a table of another kind: one answer would be put in both places.
        let twice = query(&format!(
            "select c.code from countries c where {exists} union select c.name from accounts c where {exists}"
        ));
        assert!(candidates(&twice, &p).is_empty());
    }

    #[test]
    fn an_exists_is_asked_for_one_row() {
        let q = query("select 1 from accounts where exists (select 1 from orders)");
        let c = candidates(&q, &placement());
        assert_eq!(c[0].query.to_string(), "SELECT 1 FROM orders LIMIT 1");
    }

    fn answer(oid: u32, typmod: i32, rows: &[Option<&str>]) -> Answer {
        Answer {
            columns: vec![("max".into(), oid, typmod)],
            rows: rows.iter().map(|v| vec![v.map(str::to_string)]).collect(),
            ..Answer::default()
        }
    }

    fn replaced(sql: &str, a: &Answer) -> String {
        let mut q = query(sql);
        let c = candidates(&q, &placement());
        let found: Vec<_> = c
            .iter()
            .map(|c| (c.site.clone(), replacement(c, a).unwrap(), item_name(c, a)))
            .collect();
        replace(&mut q, &found);
        q.to_string()
    }

    #[test]
    fn a_scalar_becomes_a_typed_literal_named_as_postgres_names_it() {
        let numeric = 1700;
        let typmod = ((12 << 16) | 2) + 4;
        assert_eq!(
            replaced(
                "select (select max(amount) from orders), id from accounts",
                &answer(numeric, typmod, &[Some("12.50")])
            ),
            "SELECT CAST('12.50' AS pg_catalog.numeric(12, 2)) AS \"max\", id FROM accounts"
        );
        assert_eq!(
            replaced(
                "select id from accounts where balance > (select max(amount) from orders)",
                &answer(numeric, -1, &[])
            ),
            "SELECT id FROM accounts WHERE balance > CAST(NULL AS pg_catalog.numeric)"
        );
        assert!(replaced(
            "select id from accounts where owner = (select owner from orders)",
            &answer(25, -1, &[Some("a"), Some("it's")])
        )
        .contains("(SELECT v FROM (VALUES (CAST('a' AS pg_catalog.text)), (CAST('it''s' AS pg_catalog.text))) AS shardgate_rows (v))"));
    }

    #[test]
    fn in_and_not_in_compare_with_an_array_of_the_values() {
        let a = answer(25, -1, &[Some("x\"y"), None, Some("a\\b")]);
        assert_eq!(
            replaced(
                "select id from accounts where owner not in (select owner from orders)",
                &a
            ),
            "SELECT id FROM accounts WHERE NOT (owner = ANY(CAST(E'{\"x\\\\\"y\",NULL,\"a\\\\\\\\b\"}' AS pg_catalog.text[])))"
        );
        assert_eq!(
            replaced(
                "select id from accounts where balance > all (select amount from orders)",
                &answer(23, -1, &[])
            ),
            "SELECT id FROM accounts WHERE balance > ALL(CAST('{}' AS INTEGER[]))"
        );
    }

    #[test]
    fn an_integer_answer_is_a_key_the_planner_routes_by() {
        let q = replaced(
            "select * from accounts where id = (select max(account_id) from orders)",
            &answer(20, -1, &[Some("7")]),
        );
        assert_eq!(q, "SELECT * FROM accounts WHERE id = CAST('7' AS BIGINT)");
        let stmt = Parser::parse_sql(&PostgreSqlDialect {}, &q)
            .unwrap()
            .remove(0);
        let planned = super::super::plan::plan(
            &stmt,
            &placement(),
            &crate::router::params::Params::default(),
        );
        assert!(
            matches!(planned, super::super::plan::Plan::Shard { .. }),
            "{planned:?}"
        );
    }

    #[test]
    fn exists_becomes_true_or_false() {
        assert_eq!(
            replaced(
                "select exists (select 1 from orders), not exists (select 1 from orders) from accounts",
                &answer(23, -1, &[Some("1")])
            ),
            "SELECT true AS \"exists\", false AS \"?column?\" FROM accounts"
        );
    }

    #[test]
    fn what_cannot_be_written_back_is_refused() {
        let q = query("select id from accounts where id in (select account_id, 1 from orders)");
        let c = &candidates(&q, &placement())[0];
        let two = Answer {
            columns: vec![("a".into(), 23, -1), ("b".into(), 23, -1)],
            ..Answer::default()
        };
        assert_eq!(replacement(c, &two).unwrap_err().code, "0A000");
        assert!(replacement(c, &answer(16390, -1, &[])).is_err());
        assert!(replacement(c, &answer(1007, -1, &[])).is_err());
    }

    #[test]
    fn a_type_created_in_the_database_is_written_by_the_name_it_was_given() {
        let mut mood = answer(16390, -1, &[Some("ok")]);
        mood.named_types = vec![(16390, "\"Odd\".\"Mood\"".into())];
        assert_eq!(
            replaced(
                "select id from accounts where m = (select max(m) from orders)",
                &mood
            ),
            "SELECT id FROM accounts WHERE m = CAST('ok' AS \"Odd\".\"Mood\")"
        );
        // An array of it compared with IN would read as one array of its elements.
        let mut moods = answer(16389, -1, &[Some("{ok}")]);
        moods.named_types = vec![(16389, "public.mood[]".into())];
        let q = query("select id from accounts where m in (select ms from orders)");
        let c = &candidates(&q, &placement())[0];
        assert_eq!(replacement(c, &moods).unwrap_err().code, "0A000");
    }

    #[test]
    fn a_value_keeps_its_columns_collation_as_an_implicit_one() {
        let mut label = answer(25, -1, &[Some("apple")]);
        label.collations = vec![(0, "pg_catalog.\"und-x-icu\"".into())];
        assert_eq!(
            replaced("select id from accounts where 'Z' < (select max(m) from orders)", &label),
            "SELECT id FROM accounts WHERE 'Z' < (SELECT CAST('apple' AS pg_catalog.text) COLLATE pg_catalog.\"und-x-icu\")"
        );
        // Under ANY, an expression: a subquery alone would be compared row by row.
        assert_eq!(
            replaced("select id from accounts where 'Z' in (select m from orders)", &label),
            "SELECT id FROM accounts WHERE 'Z' = ANY(COALESCE((SELECT CAST('{\"apple\"}' AS pg_catalog.text[]) COLLATE pg_catalog.\"und-x-icu\")))"
        );
    }

    #[test]
    fn array_text_quotes_each_element() {
        assert_eq!(
            array_text(&[Some("a,b".into()), None, Some("{".into())]),
            "{\"a,b\",NULL,\"{\"}"
        );
    }
}
