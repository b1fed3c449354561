//! Routing: which shard a statement goes to.
//!
//! With one shard every statement is passed through unparsed: the session is then
//! indistinguishable from a direct connection. With several shards, statements are analysed
//! (`sql`) and, until sharded tables are configured, only statements that are the same on every
//! shard (catalog reads, session and transaction commands) may run; they go to the session's home
//! shard. Everything else is refused with SQLSTATE 0A000 rather than guessed onto one shard.
//! Decisions are cached per session by statement text, because parsing costs tens of µs.

pub mod aggregate;
pub mod copy;
pub mod cursor;
pub mod keys;
pub mod params;
pub mod plan;
pub mod subquery;
pub mod utility;

use crate::error::{sqlstate, PgError};
use crate::sql::{self, StatementClass};
use std::collections::HashMap;

/// Where a statement goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// To the session's home shard, as is.
    Home,
    /// Not runnable: answer with this error, run nothing.
    Reject(PgError),
}

const CACHE_LIMIT: usize = 1024;

/// A session's router.
#[derive(Debug)]
pub struct Router {
    shard_count: usize,
    cache: HashMap<String, Decision>,
}

impl Router {
    pub fn new(shard_count: usize) -> Router {
        Router {
            shard_count,
            cache: HashMap::new(),
        }
    }

    /// True when every statement goes to the one shard unexamined.
    pub fn is_passthrough(&self) -> bool {
        self.shard_count == 1
    }

    pub fn decide(&mut self, sql_text: &str) -> Decision {
        if self.is_passthrough() {
            return Decision::Home;
        }
        if let Some(d) = self.cache.get(sql_text) {
            return d.clone();
        }
        let decision = decide_multi_shard(sql_text);
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
        }
        self.cache.insert(sql_text.to_string(), decision.clone());
        decision
    }
}

fn decide_multi_shard(sql_text: &str) -> Decision {
    for class in sql::classify(sql_text) {
        match class {
            StatementClass::Session | StatementClass::Transaction => {}
            StatementClass::Read { relations } => {
                if let Some(user_rel) = relations.iter().find(|r| !sql::is_catalog_relation(r)) {
                    return Decision::Reject(undeclared_table(user_rel));
                }
            }
            StatementClass::Write => {
                return Decision::Reject(
                    PgError::error(
                        sqlstate::FEATURE_NOT_SUPPORTED,
                        "writes and DDL on a cluster of several shards need sharded tables, which are not configured",
                    )
                    .with_hint("Declare the table under [tables.<name>] in the config, or run against a single shard."),
                )
            }
            StatementClass::Unknown => {
                return Decision::Reject(
                    PgError::error(
                        sqlstate::FEATURE_NOT_SUPPORTED,
                        "shardgate could not analyse this statement, so it cannot choose a shard for it",
                    )
                    .with_hint("Statements that cannot be routed are refused rather than guessed; run it on a single-shard cluster or directly on each shard."),
                )
            }
        }
    }
    Decision::Home
}

fn undeclared_table(name: &str) -> PgError {
    PgError::error(
        sqlstate::FEATURE_NOT_SUPPORTED,
        format!("table {name} is not declared, and this cluster has several shards"),
    )
    .with_hint(format!(
        "Declare it in the config as [tables.{name}] with shard_key and key_type, or as reference = true."
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shard_passes_everything() {
        let mut r = Router::new(1);
        assert_eq!(r.decide("DO $$ begin end $$"), Decision::Home);
        assert_eq!(r.decide("insert into t values (1)"), Decision::Home);
    }

    #[test]
    fn several_shards_allow_only_shard_independent_statements() {
        let mut r = Router::new(2);
        assert_eq!(r.decide("select 1"), Decision::Home);
        assert_eq!(r.decide("select relname from pg_class"), Decision::Home);
        assert_eq!(r.decide("set search_path = public"), Decision::Home);
        assert_eq!(r.decide("begin"), Decision::Home);
        let Decision::Reject(e) = r.decide("select * from accounts") else {
            panic!()
        };
        assert_eq!(e.code, "0A000");
        assert!(e.message.contains("accounts"));
        assert!(matches!(
            r.decide("insert into t values (1)"),
            Decision::Reject(_)
        ));
        assert!(matches!(
            r.decide("select 1; delete from t"),
            Decision::Reject(_)
        ));
    }
}
