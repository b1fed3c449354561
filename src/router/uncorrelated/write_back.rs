//! Writing a subquery's answer back into its statement: the expression or derived table that
//! takes each candidate's place, the select-list name PostgreSQL would have given the item,
//! and the typed literals those replacements are made of.
//!
//! Invariant: a value is written as `CAST('text' AS type)` with the text PostgreSQL wrote for
//! it and the type (and modifier) its column had, so each shard reads back the same value.

use super::{derived, refusal, semi_join, Answer, Candidate, Kind, Site};
use crate::error::PgError;
use sqlparser::ast::{
    BinaryOperator, Expr, Ident, Query, SelectItem, SetExpr, TableFactor, UnaryOperator, Value,
    VisitMut, VisitorMut,
};
use std::ops::ControlFlow;

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
        // Rows of several columns, or arrays, which an array literal cannot hold.
        (Kind::In { .. }, Site::Expr(e))
            if answer.columns.len() > 1
                || answer.column_type(0).is_some_and(|t| t.ends_with("[]")) =>
        {
            rows_in(e, answer).map(|e| Site::Expr(Box::new(e)))
        }
        (Kind::Derived, Site::Table(t)) => {
            derived::replacement(t, answer).map(|t| Site::Table(Box::new(t)))
        }
        (_, Site::Expr(e)) => value_replacement(c.kind, e, answer).map(|e| Site::Expr(Box::new(e))),
        (_, Site::Table(_)) => Err(refusal("a derived table is answered as rows")),
    }
}

/// `x [NOT] IN (subquery)` with the subquery's rows in its place, as a derived table of
/// VALUES (`SELECT * FROM (VALUES (...), ...) AS shardgate_rows (c1, ...)`): a row compared with
/// rows keeps PostgreSQL's row comparison, its NULL logic and its operator choice per column.
fn rows_in(e: &Expr, answer: &Answer) -> Result<Expr, PgError> {
    let Expr::InSubquery { expr, negated, .. } = e else {
        return Err(refusal(
            "a subquery's answer could not be written back into the statement",
        ));
    };
    let names: Vec<String> = (1..=answer.columns.len())
        .map(|i| format!("c{i}"))
        .collect();
    let text = format!(
        "SELECT * FROM (SELECT 1) AS shardgate_rows ({})",
        names.join(", ")
    );
    let mut q = super::parse_query(&text).ok_or_else(|| {
        refusal("a subquery's answer could not be written back into the statement")
    })?;
    let SetExpr::Select(s) = q.body.as_mut() else {
        unreachable!("written as a SELECT above")
    };
    s.from[0].relation = derived::replacement(&s.from[0].relation, answer)?;
    Ok(Expr::InSubquery {
        expr: expr.clone(),
        subquery: Box::new(q),
        negated: *negated,
    })
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
                    "a subquery over several shards compared with ANY or ALL that returns arrays is not supported",
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
pub fn replace<V: VisitMut>(q: &mut V, found: &[(Site, Site, Option<String>)]) {
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

pub(super) fn parse_expr(text: &str) -> Result<Expr, PgError> {
    crate::sql::expression(text)
        .map_err(|_| refusal("a subquery's answer could not be written back into the statement"))
}
