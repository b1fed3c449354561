//! Which aggregate calls belong to a query's own level, and so make it an aggregate query.
//!
//! PostgreSQL evaluates an aggregate written inside a subquery over the subquery's rows, except
//! when its arguments name outer columns only (`SELECT (SELECT max(a.x)) FROM a` aggregates
//! `a`, and answers one row). The proxy cannot always tell which level an unqualified column
//! belongs to without the schema, so only a call it can place for certain is left to the
//! subquery: one that names no column (`count(*)`), or a column qualified by a name the outer
//! FROM does not use. Every other call counts as the outer query's, which at worst makes it
//! plan as an aggregate and be refused. Window calls always belong to the level they are
//! written in.

use super::*;
use sqlparser::ast::{Function, Visit, Visitor};

/// Whether an aggregate or window call of `select`'s own level is in `node`.
pub(crate) fn has_own_aggregate_or_window<V: Visit>(
    node: &V,
    select: &Select,
    placement: &Placement,
) -> bool {
    let mut walk = Walk {
        outer: from_names(select),
        placement,
        depth: 0,
    };
    node.visit(&mut walk).is_break()
}

/// The names the FROM list's relations go by: table names and aliases.
fn from_names(select: &Select) -> Vec<String> {
    let mut names = Vec::new();
    for twj in &select.from {
        for factor in std::iter::once(&twj.relation).chain(twj.joins.iter().map(|j| &j.relation)) {
            match factor {
                TableFactor::Table { name, alias, .. } => {
                    names.push(last_ident(name).to_lowercase());
                    names.extend(alias.iter().map(|a| a.name.value.to_lowercase()));
                }
                TableFactor::Derived { alias, .. } | TableFactor::TableFunction { alias, .. } => {
                    names.extend(alias.iter().map(|a| a.name.value.to_lowercase()));
                }
                // Anything else could name anything: every call inside a subquery counts.
                _ => names.push(String::new()),
            }
        }
    }
    names
}

struct Walk<'a> {
    outer: Vec<String>,
    placement: &'a Placement,
    /// Subqueries entered.
    depth: usize,
}

impl Walk<'_> {
    /// Whether a call inside a subquery is surely the subquery's own.
    fn inner_level(&self, f: &Function) -> bool {
        if f.over.is_some() {
            return true;
        }
        if self.outer.iter().any(String::is_empty) {
            return false;
        }
        let mut columns = 0;
        let mut inner = false;
        let _ = sqlparser::ast::visit_expressions(&f.args, |e: &Expr| {
            match e {
                Expr::Identifier(_) => columns += 1,
                Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                    columns += 1;
                    let qualifier = parts[parts.len() - 2].value.to_lowercase();
                    inner |= !self.outer.contains(&qualifier);
                }
                _ => {}
            }
            ControlFlow::<()>::Continue(())
        });
        // The FILTER clause's columns decide as its arguments' do.
        let _ = f.filter.as_ref().map(|w| {
            sqlparser::ast::visit_expressions(w.as_ref(), |e: &Expr| {
                if let Expr::Identifier(_) | Expr::CompoundIdentifier(_) = e {
                    columns += 1;
                }
                ControlFlow::<()>::Continue(())
            })
        });
        columns == 0 || inner
    }
}

impl Visitor for Walk<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
        self.depth += 1;
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        match e {
            Expr::Function(f)
                if may_combine_rows(f, self.placement)
                    && (self.depth == 0 || !self.inner_level(f)) =>
            {
                ControlFlow::Break(())
            }
            _ => ControlFlow::Continue(()),
        }
    }
}
