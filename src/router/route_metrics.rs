//! Counters of the routes that planned statements take (`shardgate_statements_total` by route
//! kind, `shardgate_queries_total` by shard). The handles are made once per session, so noting
//! a statement is a few atomic adds and no label lookup.

use crate::metrics::{QUERIES, STATEMENTS_BY_ROUTE};
use metrics::Counter;

/// Per-session handles for statements on multi-shard clusters, created once at connect so
/// recording a statement is an atomic add.
pub struct RouteMetrics {
    single: Counter,
    several: Counter,
    all: Counter,
    broadcast: Counter,
    session: Counter,
    proxy: Counter,
    per_shard: Vec<Counter>,
}

impl RouteMetrics {
    pub fn new(shard_names: &[String]) -> RouteMetrics {
        let kind = |k: &'static str| metrics::counter!(STATEMENTS_BY_ROUTE, "route" => k);
        RouteMetrics {
            single: kind("single"),
            several: kind("several"),
            all: kind("all"),
            broadcast: kind("broadcast"),
            session: kind("session"),
            proxy: kind("proxy"),
            per_shard: shard_names
                .iter()
                .map(|n| metrics::counter!(QUERIES, "shard" => n.clone()))
                .collect(),
        }
    }

    /// Counts a planned statement by route kind (`single`, `several`, `all`, `broadcast`,
    /// `session`, `proxy`) and, for the shards it reaches, by shard.
    pub fn note(&self, plan: &super::plan::Plan) {
        use super::plan::Plan;
        let n = self.per_shard.len();
        let every = |c: &Counter| {
            c.increment(1);
            self.per_shard.iter().for_each(|s| s.increment(1));
        };
        match plan {
            Plan::Shard { shard, .. } => {
                self.single.increment(1);
                if let Some(c) = self.per_shard.get(*shard) {
                    c.increment(1);
                }
            }
            Plan::Write { parts, .. } => {
                if parts.len() == n {
                    &self.all
                } else {
                    &self.several
                }
                .increment(1);
                parts
                    .iter()
                    .filter_map(|(s, _)| self.per_shard.get(*s))
                    .for_each(|c| c.increment(1));
            }
            Plan::Scatter { shards, .. }
            | Plan::Copy(super::copy::CopyPlan::Out { shards, .. }) => {
                if shards.len() == n {
                    &self.all
                } else {
                    &self.several
                }
                .increment(1);
                shards
                    .iter()
                    .filter_map(|s| self.per_shard.get(*s))
                    .for_each(|c| c.increment(1));
            }
            Plan::Broadcast { .. } | Plan::Procedural => every(&self.broadcast),
            Plan::Copy(super::copy::CopyPlan::In(_)) => self.all.increment(1),
            Plan::Session => every(&self.session),
            Plan::Txn(_)
            | Plan::Admin(_)
            | Plan::Reject(_)
            | Plan::Unrecognised
            | Plan::Prepared(_)
            | Plan::Signal { .. }
            | Plan::Cursor(_) => self.proxy.increment(1),
        }
    }
}
