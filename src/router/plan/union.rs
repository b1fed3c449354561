//! UNION ALL and UNION of queries over sharded tables: `SELECT ... FROM a WHERE ... UNION
//! [ALL] SELECT ... FROM b WHERE ...`.
//!
//! Each branch whose rows are each shard's own (one the proxy would merge only by
//! concatenating) gives, on every shard, that shard's part of its rows; so the whole statement
//! runs on each shard and the shards' answers together are the answer. For UNION ALL they are
//! concatenated. For UNION (a UNION on top, whatever the quantifiers below it) the answer is
//! the distinct rows of every branch, so the merge keeps one of each row, with PostgreSQL's
//! equality, as for SELECT DISTINCT. That also makes two more kinds of branch exact there: a
//! SELECT DISTINCT of its own (distinct per shard, then across shards), and a branch over
//! reference tables or constants only, which every shard returns whole and alike, provided
//! it computes nothing a server answers its own way.
//!
//! ORDER BY on output columns (by position or name) and LIMIT/OFFSET are merged: pushed down
//! for UNION ALL, applied after the merge's DISTINCT for UNION. Refused: a branch without a
//! sharded table under UNION ALL (every shard would return its rows), a branch the proxy must
//! merge itself (aggregates, its own ORDER BY/LIMIT), INTERSECT and EXCEPT (equal rows of two
//! branches may sit on different shards).

use super::*;
use crate::router::aggregate::{AggColumn, AggSpec};
use sqlparser::ast::{DataType, SetOperator, SetQuantifier};
use std::collections::BTreeSet;

/// The plan of such a statement; None when it is not one.
pub(super) fn plan_union(q: &Query, placement: &Placement, params: &Params) -> Option<Plan> {
    if q.with.is_some() || q.fetch.is_some() || !q.locks.is_empty() {
        return None;
    }
    let SetExpr::SetOperation {
        op: SetOperator::Union,
        set_quantifier,
        ..
    } = q.body.as_ref()
    else {
        return None;
    };
    let distinct = match set_quantifier {
        SetQuantifier::All => false,
        SetQuantifier::None | SetQuantifier::Distinct => true,
        _ => return None,
    };
    let mut branches = Vec::new();
    collect(q.body.as_ref(), distinct, &mut branches)?;
    let mut shards = BTreeSet::new();
    for body in &branches {
        let mut branch = q.clone();
        *branch.body = (*body).clone();
        branch.order_by = None;
        branch.limit_clause = None;
        if relations(&branch, placement).sharded.is_empty() {
            if !distinct {
                return Some(refuse(
                    "a UNION ALL branch without a sharded table over several shards is not supported: every shard would return its rows",
                    "Run that part as its own query, or use UNION, which keeps one of each row.",
                ));
            }
            if let Some(refusal) = differs_between_shards(&branch, placement, params) {
                return Some(refusal);
            }
            continue;
        }
        match plan_query(&branch, placement, params) {
            Plan::Scatter {
                shards: some,
                merge,
                ..
            } if merge == MergeSpec::default() || (distinct && only_distinct(&merge)) => {
                shards.extend(some)
            }
            Plan::Shard { shard, .. } => {
                shards.insert(shard);
            }
            Plan::Reject(e) => return Some(Plan::Reject(e)),
            _ => {
                return Some(refuse(
                    "a UNION branch that is merged across shards (aggregates, its own ORDER BY or LIMIT) is not supported",
                    "Run that part as its own query.",
                ))
            }
        }
    }
    let shards: Vec<usize> = shards.into_iter().collect();
    match shards.as_slice() {
        [one] => {
            return Some(Plan::Shard {
                shard: *one,
                write: false,
            })
        }
        // Every branch reads alike on every shard.
        [] => {
            return Some(Plan::Shard {
                shard: HOME,
                write: false,
            })
        }
        _ => {}
    }
    if !distinct {
        return Some(concatenated(q, shards, params));
    }
    let width = match output_width(branches[0]) {
        Some(w) => w,
        None => {
            return Some(refuse(
                "SELECT * in a UNION over several shards is not supported",
                "Name the columns of the first branch.",
            ))
        }
    };
    let mut merge = MergeSpec {
        order: match order(q) {
            Ok(keys) => keys,
            Err(refusal) => return Some(*refusal),
        },
        aggregate: Some(AggSpec {
            columns: vec![AggColumn::Group; width],
            ..AggSpec::default()
        }),
        ..MergeSpec::default()
    };
    (merge.limit, merge.offset) = match limit_and_offset(q, params) {
        Ok(both) => both,
        Err(refusal) => return Some(*refusal),
    };
    // A shard's first rows need not be among the first distinct ones: all is merged.
    let mut rewritten = q.clone();
    rewritten.order_by = None;
    rewritten.limit_clause = None;
    merge.picks = keep_used_params(&mut rewritten, params.values.len());
    Some(Plan::Scatter {
        shards,
        sql: rewritten.to_string(),
        merge,
    })
}

/// A set operation whose shards' answers are disjoint parts of the answer: run on `shards`,
/// put together, ordered on output columns, with LIMIT/OFFSET pushed down as offset+limit.
pub(super) fn concatenated(q: &Query, shards: Vec<usize>, params: &Params) -> Plan {
    if let [one] = shards.as_slice() {
        return Plan::Shard {
            shard: *one,
            write: false,
        };
    }
    let mut merge = MergeSpec {
        order: match order(q) {
            Ok(keys) => keys,
            Err(refusal) => return *refusal,
        },
        ..MergeSpec::default()
    };
    (merge.limit, merge.offset) = match limit_and_offset(q, params) {
        Ok(both) => both,
        Err(refusal) => return *refusal,
    };
    let mut rewritten = q.clone();
    if q.limit_clause.is_some() {
        rewritten.limit_clause = pushed_limit_clause(merge.limit, merge.offset);
        merge.picks = keep_used_params(&mut rewritten, params.values.len());
    }
    Plan::Scatter {
        shards,
        sql: rewritten.to_string(),
        merge,
    }
}

/// The branches, nested unions flattened: under UNION ALL only UNION ALL, as a UNION below
/// it is its own distinct set; under UNION either. None for any other set operation.
fn collect<'a>(body: &'a SetExpr, distinct: bool, out: &mut Vec<&'a SetExpr>) -> Option<()> {
    match body {
        SetExpr::SetOperation {
            op: SetOperator::Union,
            set_quantifier,
            left,
            right,
        } => {
            let fits = match set_quantifier {
                SetQuantifier::All => true,
                SetQuantifier::None | SetQuantifier::Distinct => distinct,
                _ => false,
            };
            if !fits {
                return None;
            }
            collect(left, distinct, out)?;
            collect(right, distinct, out)
        }
        SetExpr::SetOperation { .. } => None,
        SetExpr::Select(_) => {
            out.push(body);
            Some(())
        }
        // A parenthesized operand with nothing of its own, as Django writes every branch.
        SetExpr::Query(inner) if bare(inner) => collect(inner.body.as_ref(), distinct, out),
        _ => None,
    }
}

/// A branch's merge that only keeps one of each row (SELECT DISTINCT, or GROUP BY of every
/// output column without aggregates): the UNION's own DISTINCT does the same across shards.
fn only_distinct(merge: &MergeSpec) -> bool {
    let Some(spec) = &merge.aggregate else {
        return false;
    };
    spec.columns.iter().all(|c| *c == AggColumn::Group)
        && spec.having.is_none()
        && !spec.single_group
        && merge.hidden == 0
        && merge.order.is_empty()
        && merge.limit.is_none()
        && merge.offset == 0
        && merge.distinct_on == 0
        && merge.picks.is_none()
}

/// Refuses a branch without a sharded table that some shard could answer its own way: one
/// reading the catalog (each server has its own OIDs and objects), calling a function not
/// known to depend on its arguments alone, or naming an object through a reg* type.
fn differs_between_shards(branch: &Query, placement: &Placement, params: &Params) -> Option<Plan> {
    if let Some(name) = tables_read(branch)
        .iter()
        .map(ToString::to_string)
        .find(|n| is_catalog_relation(n))
    {
        return Some(refuse(
            format!("a UNION branch reading {name} over several shards is not supported: each shard has its own catalog"),
            "Run that part as its own query.",
        ));
    }
    let found = super::copies::differing_value(branch).or_else(|| {
        crate::sql::first_expression(branch, |e: &Expr| match e {
            Expr::Function(f) => (!crate::sql::pure_functions::is_pure(&f.name))
                .then(|| crate::sql::clock::call_as_written(&f.name)),
            Expr::Cast { data_type, .. } if names_an_object(data_type) => {
                Some(format!("::{data_type}"))
            }
            Expr::TypedString(t) if names_an_object(&t.data_type) => Some(t.data_type.to_string()),
            _ => None,
        })
    });
    if let Some(what) = found {
        return Some(refuse(
            format!("a UNION branch without a sharded table computing {what} over several shards is not supported: each shard could answer it its own way"),
            "Run that part as its own query, or compute the value in the application.",
        ));
    }
    match plan_query(branch, placement, params) {
        Plan::Reject(e) => Some(Plan::Reject(e)),
        Plan::Shard { shard: HOME, .. } if relations(branch, placement).only_reference() => None,
        _ => Some(refuse(
            "a UNION branch over tables that live on one shard, beside sharded tables, is not supported",
            "Run that part as its own query.",
        )),
    }
}

/// Types whose values are catalog OIDs, different on every server.
fn names_an_object(t: &DataType) -> bool {
    let name = t.to_string().to_ascii_lowercase();
    name.starts_with("reg") || name == "oid"
}

/// The number of columns a branch returns; None when a wildcard leaves it to the shards.
fn output_width(branch: &SetExpr) -> Option<usize> {
    let SetExpr::Select(select) = branch else {
        return None;
    };
    select
        .projection
        .iter()
        .all(|i| {
            matches!(
                i,
                SelectItem::UnnamedExpr(_) | SelectItem::ExprWithAlias { .. }
            )
        })
        .then_some(select.projection.len())
}

/// The merge's sort keys: output columns by position or name, as PostgreSQL allows for a
/// set operation.
fn order(q: &Query) -> Result<Vec<SortKey>, Box<Plan>> {
    let Some(ob) = &q.order_by else {
        return Ok(Vec::new());
    };
    let OrderByKind::Expressions(exprs) = &ob.kind else {
        return Err(Box::new(refuse(
            "ORDER BY ALL is not supported",
            "Order by output columns.",
        )));
    };
    let mut keys = Vec::new();
    for oe in exprs {
        let (descending, nulls_first) = sort_direction(oe)?;
        let column = match &oe.expr {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => match n.parse::<usize>() {
                    Ok(p) if p >= 1 => SortColumn::Position(p),
                    _ => {
                        return Err(Box::new(Plan::Reject(PgError::error(
                            "42P10",
                            format!("ORDER BY position {n} is not in select list"),
                        ))))
                    }
                },
                _ => return Err(Box::new(order_by_expression())),
            },
            // Unquoted names fold to lower case, as the columns the shards describe.
            Expr::Identifier(id) if id.quote_style.is_none() => {
                SortColumn::Name(id.value.to_lowercase())
            }
            Expr::Identifier(id) => SortColumn::Name(id.value.clone()),
            _ => return Err(Box::new(order_by_expression())),
        };
        keys.push(SortKey {
            column,
            descending,
            nulls_first,
            bytewise: false,
        });
    }
    Ok(keys)
}

fn order_by_expression() -> Plan {
    refuse(
        "ORDER BY of a UNION over several shards must name output columns",
        "Order by a column's position or name.",
    )
}
