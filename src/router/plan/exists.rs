//! A SELECT without FROM whose every item tests whether a query over sharded tables has rows:
//! `SELECT EXISTS (SELECT 1 FROM accounts WHERE owner = $1) AS anon_1`, as SQLAlchemy's
//! `exists()` asks.
//!
//! Rows exist when they exist on some shard, so each shard answers for its own rows and the
//! merge ORs the answers (ANDs them for NOT EXISTS), as it combines bool_or and bool_and. The
//! inner query must be one whose rows are each shard's own rows: one the proxy would merge
//! only by ordering and limiting. An aggregate, DISTINCT or OFFSET merged in the proxy asks
//! about rows no single shard has (`EXISTS (SELECT 1 FROM t HAVING count(*) > 5)`), and is
//! refused.

use super::*;
use crate::router::aggregate::{AggColumn, AggSpec};
use std::collections::BTreeSet;

/// The plan of such a SELECT; None when the statement is not one.
pub(super) fn plan_exists(q: &Query, placement: &Placement, params: &Params) -> Option<Plan> {
    if !bare(q) {
        return None;
    }
    let SetExpr::Select(select) = q.body.as_ref() else {
        return None;
    };
    let plain = select.from.is_empty()
        && select.selection.is_none()
        && select.distinct.is_none()
        && ungrouped(select);
    if !plain {
        return None;
    }
    let mut shards = BTreeSet::new();
    let mut columns = Vec::new();
    for item in &select.projection {
        let (SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. }) = item else {
            return None;
        };
        let Expr::Exists { subquery, negated } = e else {
            return None;
        };
        match plan_query(subquery, placement, params) {
            Plan::Shard { shard, .. } => {
                shards.insert(shard);
            }
            Plan::Scatter {
                shards: some,
                merge,
                ..
            } if merge.aggregate.is_none() && merge.offset == 0 => shards.extend(some),
            Plan::Reject(e) => return Some(Plan::Reject(e)),
            _ => return None,
        }
        columns.push(if *negated {
            AggColumn::Min
        } else {
            AggColumn::Max
        });
    }
    Some(match shards.into_iter().collect::<Vec<_>>().as_slice() {
        [one] => Plan::Shard {
            shard: *one,
            write: false,
        },
        many => Plan::Scatter {
            shards: many.to_vec(),
            sql: q.to_string(),
            merge: MergeSpec {
                aggregate: Some(AggSpec {
                    columns,
                    having: None,
                    single_group: true,
                    count_groups: false,
                }),
                ..Default::default()
            },
        },
    })
}
