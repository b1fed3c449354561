//! The names of the aggregate and window functions the shards define beyond PostgreSQL's own
//! (`CREATE AGGREGATE`, extensions), which the planner must know: over several shards an
//! aggregate is combined from each shard's partial result or refused, and a call it did not
//! recognise would reach the client as one partial result per shard.
//!
//! Read from every shard's catalog at start and at each health-check interval (on control
//! connections, here), and by a session after its DDL, in the DDL's own transaction
//! (`executor::aggregate_names`). Names only, lower-cased, whatever the schema or arguments:
//! the planner then treats any call by such a name as an aggregate, which can only make it
//! refuse more, never answer wrongly.

use super::control;
use crate::config::ShardTarget;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio_postgres::Client;

/// One row per name. Everything named in pg_catalog, as a session's search_path may hold look-alikes.
pub const SQL: &str = "SELECT DISTINCT pg_catalog.lower(p.proname::pg_catalog.text) \
    FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) p.pronamespace \
    WHERE p.prokind OPERATOR(pg_catalog.=) ANY ('{a,w}'::pg_catalog.\"char\"[]) \
    AND n.nspname OPERATOR(pg_catalog.<>) 'pg_catalog'";

/// The names on every shard, together. Err: a shard could not be asked.
pub async fn read(shards: &[ShardTarget], timeout: Duration) -> Result<BTreeSet<String>, String> {
    let mut clients: Vec<Option<Client>> = shards.iter().map(|_| None).collect();
    read_on(&mut clients, shards, timeout).await
}

/// As `read`, on control connections kept in `clients` (one per shard, opened where missing
/// and dropped after an error).
async fn read_on(
    clients: &mut [Option<Client>],
    shards: &[ShardTarget],
    timeout: Duration,
) -> Result<BTreeSet<String>, String> {
    let mut names = BTreeSet::new();
    for (shard, client) in shards.iter().zip(clients.iter_mut()) {
        if client.is_none() {
            *client = Some(control::connect(shard, timeout).await?);
        }
        let Some(asking) = client.as_ref() else {
            continue;
        };
        match tokio::time::timeout(timeout, asking.simple_query(SQL)).await {
            Ok(Ok(rows)) => names.extend(rows.iter().filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(String::from),
                _ => None,
            })),
            failed => {
                let why = match failed {
                    Ok(Err(e)) => control::describe(&e),
                    _ => "no answer within the connect timeout".to_string(),
                };
                *client = None;
                return Err(format!(
                    "shard {}: could not read its aggregate functions: {why}",
                    shard.name
                ));
            }
        }
    }
    Ok(names)
}

/// Reads the names again every `interval`, for as long as the proxy runs, and hands them to
/// `publish`: aggregates created on a shard directly, behind the proxy, are seen here. A shard
/// that cannot be asked leaves the last names standing (the health probes report it).
pub async fn watch(
    shards: Vec<ShardTarget>,
    interval: Duration,
    timeout: Duration,
    publish: impl Fn(BTreeSet<String>),
) {
    let mut clients: Vec<Option<Client>> = shards.iter().map(|_| None).collect();
    loop {
        tokio::time::sleep(interval).await;
        match read_on(&mut clients, &shards, timeout).await {
            Ok(names) => publish(names),
            Err(e) => tracing::debug!("aggregate functions not read: {e}"),
        }
    }
}
