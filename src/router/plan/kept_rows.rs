//! A reference table's rows kept by an outer join against a sharded table, and aggregated:
//! `ref LEFT JOIN sharded ON ... GROUP BY ref columns` with aggregates of the sharded side's
//! columns, as Django's `annotate(Count("children"))` over a reference parent writes it.
//!
//! Every shard holds the reference table whole and joins it to its own rows, so a reference
//! row matched on one shard comes back unmatched from the others, with NULLs on the sharded
//! side. Aggregates of a plain sharded-side column skip NULL inputs (count, sum, min, max, avg,
//! bool_and ...; the merge refuses the rest), so an unmatched row adds nothing to them, and each
//! group's partials combine to what one server computes. Whatever an unmatched row could change
//! is not allowed here and stays refused: `count(*)`, an argument other than a plain column of
//! the sharded side (`coalesce(a.x, 0)` is not NULL for it), and a sharded-side column anywhere
//! outside an aggregate argument (in WHERE it could keep or drop the unmatched rows, in a group
//! or the select list it would make a group per shard). Columns must be qualified: an
//! unqualified one could belong to either side.

use super::*;
use sqlparser::ast::{
    FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, JoinOperator, Visit, Visitor,
};

/// Which side of the join a column belongs to, by its qualifier.
#[derive(Clone, Copy, PartialEq)]
enum Side {
    Reference,
    Sharded,
    Unknown,
}

struct Names {
    reference: Vec<String>,
    sharded: Vec<String>,
}

impl Names {
    fn side(&self, e: &Expr) -> Side {
        let Expr::CompoundIdentifier(parts) = e else {
            return Side::Unknown;
        };
        let Some(q) = parts
            .len()
            .checked_sub(2)
            .map(|i| parts[i].value.to_lowercase())
        else {
            return Side::Unknown;
        };
        if self.reference.contains(&q) {
            Side::Reference
        } else if self.sharded.contains(&q) {
            Side::Sharded
        } else {
            Side::Unknown
        }
    }
}

/// The names a table is referred to by: its own (last part) and its alias.
fn names_of(name: &ObjectName, alias: &Option<sqlparser::ast::TableAlias>) -> Vec<String> {
    let mut out = vec![last_ident(name).to_lowercase()];
    if let Some(a) = alias {
        out.push(a.name.value.to_lowercase());
    }
    out
}

/// A table named as such (not a function, subquery or nested join), with its alias.
fn plain_table(f: &TableFactor) -> Option<(&ObjectName, &Option<sqlparser::ast::TableAlias>)> {
    match f {
        TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } => Some((name, alias)),
        _ => None,
    }
}

/// Whether this query is such an aggregation, whose partial answers combine exactly.
pub(super) fn combinable(q: &Query, select: &Select, placement: &Placement) -> bool {
    let [from] = select.from.as_slice() else {
        return false;
    };
    let Some((ref_name, ref_alias)) = plain_table(&from.relation) else {
        return false;
    };
    let [join] = from.joins.as_slice() else {
        return false;
    };
    let Some((sharded_name, sharded_alias)) = plain_table(&join.relation) else {
        return false;
    };
    if !matches!(
        join.join_operator,
        JoinOperator::Left(_) | JoinOperator::LeftOuter(_)
    ) || !matches!(
        placement.rule(&ref_name.to_string()),
        Some(TableRule::Reference)
    ) || !matches!(
        placement.rule(&sharded_name.to_string()),
        Some(TableRule::Sharded { .. })
    ) || select.distinct.is_some()
        || q.with.is_some()
    {
        return false;
    }
    let names = Names {
        reference: names_of(ref_name, ref_alias),
        sharded: names_of(sharded_name, sharded_alias),
    };
    let GroupByExpr::Expressions(groups, modifiers) = &select.group_by else {
        return false;
    };
    if !modifiers.is_empty() {
        return false;
    }
    let mut check = Check {
        names: &names,
        placement,
        inside_aggregate: 0,
        aggregates: 0,
        aliases: Vec::new(),
    };
    // The select list, HAVING and ORDER BY: aggregates of sharded columns, reference columns.
    for item in &select.projection {
        let e = match item {
            SelectItem::UnnamedExpr(e) => e,
            SelectItem::ExprWithAlias { expr, alias } => {
                check.aliases.push(alias.value.to_lowercase());
                expr
            }
            _ => return false,
        };
        if e.visit(&mut check).is_break() {
            return false;
        }
    }
    if select
        .having
        .as_ref()
        .is_some_and(|h| h.visit(&mut check).is_break())
    {
        return false;
    }
    if let Some(ob) = &q.order_by {
        let OrderByKind::Expressions(items) = &ob.kind else {
            return false;
        };
        if items.iter().any(|i| i.expr.visit(&mut check).is_break()) {
            return false;
        }
    }
    let aggregated = check.aggregates > 0;
    // WHERE and GROUP BY: reference columns only, no aggregate. A plain name there is an
    // input column first, never an output name.
    check.aggregates = 0;
    check.aliases.clear();
    let only_reference = |e: &Expr, check: &mut Check| e.visit(check).is_continue();
    if select
        .selection
        .as_ref()
        .is_some_and(|w| !only_reference(w, &mut check))
        || groups.iter().any(|g| !only_reference(g, &mut check))
        || check.aggregates > 0
    {
        return false;
    }
    // Without either, every unmatched row would come back once per shard.
    aggregated || !groups.is_empty()
}

struct Check<'a> {
    names: &'a Names,
    placement: &'a Placement,
    inside_aggregate: usize,
    aggregates: usize,
    /// Output names, which ORDER BY may use unqualified.
    aliases: Vec<String>,
}

impl Check<'_> {
    /// An aggregate call an unmatched row leaves alone: one argument, a plain sharded column.
    fn skips_unmatched(&self, f: &sqlparser::ast::Function) -> bool {
        let FunctionArguments::List(list) = &f.args else {
            return false;
        };
        let plain_column = matches!(
            list.args.as_slice(),
            [FunctionArg::Unnamed(FunctionArgExpr::Expr(e))] if self.names.side(e) == Side::Sharded
        );
        plain_column
            && list.clauses.is_empty()
            && f.over.is_none()
            && f.within_group.is_empty()
            && matches!(f.parameters, FunctionArguments::None)
    }
}

impl Visitor for Check<'_> {
    type Break = ();

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        match e {
            Expr::Function(f) if may_combine_rows(f, self.placement) => {
                if self.inside_aggregate > 0 || !self.skips_unmatched(f) {
                    return ControlFlow::Break(());
                }
                self.inside_aggregate += 1;
                self.aggregates += 1;
            }
            Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => {
                return ControlFlow::Break(())
            }
            Expr::CompoundIdentifier(_) => match self.names.side(e) {
                Side::Reference => {}
                Side::Sharded if self.inside_aggregate > 0 => {}
                _ => return ControlFlow::Break(()),
            },
            Expr::Identifier(i) if !self.aliases.contains(&i.value.to_lowercase()) => {
                return ControlFlow::Break(())
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if matches!(e, Expr::Function(f) if may_combine_rows(f, self.placement)) {
            self.inside_aggregate -= 1;
        }
        ControlFlow::Continue(())
    }
}
