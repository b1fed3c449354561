//! INTERSECT, EXCEPT and other trees of set operations whose rows carry the shard key, as
//! Django's `qs.difference(other)` and `qs.intersection(other)` over one model select its
//! primary key in every branch.
//!
//! When every branch returns, at one same position, the shard key of its FROM list's first
//! table (keys of one type), equal rows have equal keys, and the rows of a key, in every
//! branch, all live on that key's shard. So any set operation of the branches, restricted to
//! one key, is the same operation of each branch's rows of that key: each shard computes the
//! whole statement over its keys, and the shards' answers are disjoint parts of the answer,
//! put together, ordered and cut as for UNION ALL. Each branch must return each shard's own
//! rows (no aggregate, DISTINCT, ORDER BY or LIMIT merged across shards), name its columns (a
//! `*` would move the key's position), and read no join that could make that key NULL.

use super::*;
use sqlparser::ast::{SetOperator, SetQuantifier};

/// The plan of such a statement; None when it is not one.
pub(super) fn plan_keyed(q: &Query, placement: &Placement, params: &Params) -> Option<Plan> {
    if q.with.is_some() || q.fetch.is_some() || !q.locks.is_empty() {
        return None;
    }
    let mut leaves = Vec::new();
    leaves_of(q.body.as_ref(), &mut leaves)?;
    let mut common: Option<BTreeSet<usize>> = None;
    let mut key_type = None;
    let mut shards = BTreeSet::new();
    for select in leaves {
        let (names, column, ty) = super::windows::first_table_key(select, placement)?;
        if *key_type.get_or_insert(ty) != ty {
            return None;
        }
        let mut at = BTreeSet::new();
        for (i, item) in select.projection.iter().enumerate() {
            match item {
                SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                    if is_column(e, &names, &column) {
                        at.insert(i);
                    }
                }
                _ => return None,
            }
        }
        let kept: BTreeSet<usize> = match common {
            None => at,
            Some(c) => c.intersection(&at).copied().collect(),
        };
        if kept.is_empty() {
            return None;
        }
        common = Some(kept);
        let mut branch = q.clone();
        *branch.body = SetExpr::Select(Box::new(select.clone()));
        branch.order_by = None;
        branch.limit_clause = None;
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
            _ => return None,
        }
    }
    let shards: Vec<usize> = shards.into_iter().collect();
    Some(super::union::concatenated(q, shards, params))
}

/// The SELECTs of a tree of UNION, INTERSECT and EXCEPT (ALL or not); None for anything else.
fn leaves_of<'a>(body: &'a SetExpr, out: &mut Vec<&'a Select>) -> Option<()> {
    match body {
        SetExpr::SetOperation {
            op: SetOperator::Union | SetOperator::Intersect | SetOperator::Except,
            set_quantifier: SetQuantifier::All | SetQuantifier::None | SetQuantifier::Distinct,
            left,
            right,
        } => {
            leaves_of(left, out)?;
            leaves_of(right, out)
        }
        SetExpr::Select(select) => {
            out.push(select);
            Some(())
        }
        // A parenthesized operand with nothing of its own.
        SetExpr::Query(inner) if bare(inner) => leaves_of(inner.body.as_ref(), out),
        _ => None,
    }
}
