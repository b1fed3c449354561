//! UNION ALL of queries over sharded tables: `SELECT ... FROM a WHERE ... UNION ALL SELECT
//! ... FROM b WHERE ...`.
//!
//! Each branch whose rows are each shard's own (one the proxy would merge only by
//! concatenating) gives, on every shard, that shard's part of its rows; so the whole UNION
//! ALL runs on each shard and the shards' answers together are the answer. ORDER BY on output
//! columns (by position or name) and LIMIT/OFFSET are merged as for a plain scatter. A branch
//! without a sharded table would come back from every shard, and one the proxy must merge
//! itself (aggregates, DISTINCT, its own ORDER BY/LIMIT) has no such parts: both are refused,
//! as are UNION without ALL, INTERSECT and EXCEPT.

use super::*;
use sqlparser::ast::{SetOperator, SetQuantifier};
use std::collections::BTreeSet;

/// The plan of such a statement; None when it is not one.
pub(super) fn plan_union_all(q: &Query, placement: &Placement, params: &Params) -> Option<Plan> {
    if q.with.is_some() || q.fetch.is_some() || !q.locks.is_empty() {
        return None;
    }
    let mut branches = Vec::new();
    collect(q.body.as_ref(), &mut branches)?;
    let mut shards = BTreeSet::new();
    for body in branches {
        let mut branch = q.clone();
        *branch.body = body.clone();
        branch.order_by = None;
        branch.limit_clause = None;
        if relations(&branch, placement).sharded.is_empty() {
            return Some(refuse(
                "a UNION ALL branch without a sharded table over several shards is not supported: every shard would return its rows",
                "Run that part as its own query.",
            ));
        }
        match plan_query(&branch, placement, params) {
            Plan::Scatter {
                shards: some,
                merge,
                ..
            } if merge == MergeSpec::default() => shards.extend(some),
            Plan::Shard { shard, .. } => {
                shards.insert(shard);
            }
            Plan::Reject(e) => return Some(Plan::Reject(e)),
            _ => {
                return Some(refuse(
                    "a UNION ALL branch that is merged across shards (aggregates, DISTINCT, ORDER BY or LIMIT of its own) is not supported",
                    "Run that part as its own query.",
                ))
            }
        }
    }
    let shards: Vec<usize> = shards.into_iter().collect();
    if let [one] = shards.as_slice() {
        return Some(Plan::Shard {
            shard: *one,
            write: false,
        });
    }
    let mut merge = MergeSpec::default();
    if let Some(ob) = &q.order_by {
        let OrderByKind::Expressions(exprs) = &ob.kind else {
            return None;
        };
        for oe in exprs {
            let (descending, nulls_first) = match sort_direction(oe) {
                Ok(d) => d,
                Err(p) => return Some(*p),
            };
            let column = match &oe.expr {
                Expr::Value(v) => match &v.value {
                    Value::Number(n, _) => match n.parse::<usize>() {
                        Ok(p) if p >= 1 => SortColumn::Position(p),
                        _ => {
                            return Some(Plan::Reject(PgError::error(
                                "42P10",
                                format!("ORDER BY position {n} is not in select list"),
                            )))
                        }
                    },
                    _ => return None,
                },
                // Unquoted names fold to lower case, as the columns the shards describe.
                Expr::Identifier(id) if id.quote_style.is_none() => {
                    SortColumn::Name(id.value.to_lowercase())
                }
                Expr::Identifier(id) => SortColumn::Name(id.value.clone()),
                _ => {
                    return Some(refuse(
                        "ORDER BY of a UNION ALL over several shards must name output columns",
                        "Order by a column's position or name.",
                    ))
                }
            };
            merge.order.push(SortKey {
                column,
                descending,
                nulls_first,
                bytewise: false,
            });
        }
    }
    let mut rewritten = q.clone();
    (merge.limit, merge.offset) = match limit_and_offset(q, params) {
        Ok(both) => both,
        Err(refusal) => return Some(*refusal),
    };
    if q.limit_clause.is_some() {
        rewritten.limit_clause = pushed_limit_clause(merge.limit, merge.offset);
        merge.picks = keep_used_params(&mut rewritten, params.values.len());
    }
    Some(Plan::Scatter {
        shards,
        sql: rewritten.to_string(),
        merge,
    })
}

/// The branches of a UNION ALL, nested ones flattened; None for any other set operation.
fn collect<'a>(body: &'a SetExpr, out: &mut Vec<&'a SetExpr>) -> Option<()> {
    match body {
        SetExpr::SetOperation {
            op: SetOperator::Union,
            set_quantifier: SetQuantifier::All,
            left,
            right,
        } => {
            collect(left, out)?;
            collect(right, out)
        }
        SetExpr::SetOperation { .. } => None,
        SetExpr::Select(_) => {
            out.push(body);
            Some(())
        }
        _ => None,
    }
}
