//! Recovery of in-doubt distributed transactions: fence, then resolve (docs/transactions.md).
//!
//! For every prepared transaction with our gid prefix, old enough that its coordinator should be
//! done with it: on the decider shard, `INSERT ... outcome 'a' ON CONFLICT (gid) DO NOTHING`, then
//! read the row. A coordinator still inside its decision holds the row's unique-index entry, so
//! the INSERT waits for it and then sees its outcome; a coordinator that has not decided yet is
//! fenced out (its own INSERT will fail on the 'a' row, so it aborts). Every prepared branch then
//! follows the row's outcome.
//!
//! Invariants: a branch is committed only if its decision row says 'c'; a branch that another
//! recoverer or the coordinator resolved first is skipped (42704), so any number of proxies may
//! run this at once. A decision row is deleted only when no branch of any gid is prepared on any
//! shard and it is older than `decision_retention`, which must exceed any coordinator stall.

use super::gid;
use crate::backend::control;
use crate::config::{ShardTarget, TransactionsConfig};
use crate::failpoint;
use std::collections::BTreeMap;
use std::time::Duration;
use tracing::{info, warn};

#[derive(Debug, Clone)]
pub struct Options {
    pub min_age: Duration,
    pub retention: Duration,
    pub interval: Duration,
    pub connect_timeout: Duration,
}

impl Options {
    pub fn from_config(c: &TransactionsConfig, connect_timeout: Duration) -> Options {
        Options {
            min_age: Duration::from_secs(c.recovery_min_age_secs),
            retention: Duration::from_secs(c.decision_retention_secs),
            interval: Duration::from_secs(c.recovery_interval_secs),
            connect_timeout,
        }
    }
}

/// What one prepared branch became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub gid: String,
    pub shard: String,
    /// `commit`, `rollback`, or `gone` (resolved by someone else first).
    pub outcome: &'static str,
}

/// The result of one pass.
#[derive(Debug, Default)]
pub struct Report {
    pub resolved: Vec<Resolution>,
    /// Gids left for a later pass: too young, or a shard involved was unreachable.
    pub skipped: Vec<String>,
    pub errors: Vec<String>,
    /// When the first gid skipped for its age becomes old enough to resolve.
    pub next_eligible: Option<Duration>,
}

struct Branches {
    decider: String,
    shards: Vec<usize>,
    /// Seconds since its most recent branch was prepared.
    age: f64,
}

/// One recovery pass over every shard.
pub async fn run(shards: &[ShardTarget], opts: &Options) -> Report {
    let mut report = Report::default();
    let mut clients = Vec::with_capacity(shards.len());
    for s in shards {
        match control::connect(s, opts.connect_timeout).await {
            Ok(c) => clients.push(Some(c)),
            Err(e) => {
                report.errors.push(e);
                clients.push(None);
            }
        }
    }
    let mut gids: BTreeMap<String, Branches> = BTreeMap::new();
    for (i, client) in clients.iter().enumerate() {
        let Some(client) = client else { continue };
        let rows = match client
            .query(
                "SELECT gid, extract(epoch FROM now() - prepared)::float8 \
                 FROM pg_prepared_xacts WHERE database = current_database() AND gid LIKE 'sg\\_%'",
                &[],
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                report.errors.push(format!(
                    "shard {}: {}",
                    shards[i].name,
                    control::describe(&e)
                ));
                continue;
            }
        };
        for row in rows {
            let g: String = row.get(0);
            let age: f64 = row.get(1);
            let Some(decider) = gid::decider(&g) else {
                continue;
            };
            let b = gids.entry(g.clone()).or_insert_with(|| Branches {
                decider: decider.to_string(),
                shards: Vec::new(),
                age: f64::INFINITY,
            });
            b.shards.push(i);
            b.age = b.age.min(age);
        }
    }
    metrics::gauge!(crate::metrics::IN_DOUBT).set(gids.len() as f64);
    let all_listed = report.errors.is_empty();
    for (g, b) in &gids {
        let wait = opts.min_age.as_secs_f64() - b.age;
        if wait > 0.0 {
            report.skipped.push(g.clone());
            let wait = Duration::from_secs_f64(wait);
            report.next_eligible = Some(report.next_eligible.map_or(wait, |w| w.min(wait)));
            continue;
        }
        let Some(d) = shards.iter().position(|s| s.name == b.decider) else {
            report.errors.push(format!(
                "prepared transaction {g} names decider shard {:?}, which is not in the config; resolve it by hand",
                b.decider
            ));
            continue;
        };
        let Some(decider) = &clients[d] else {
            report.skipped.push(g.clone());
            continue;
        };
        failpoint::hit(failpoint::RECOVERY_BEFORE_FENCE).await;
        let outcome = match fence(decider, g).await {
            Ok(o) => o,
            Err(e) => {
                report
                    .errors
                    .push(format!("fence of {g} on {}: {e}", b.decider));
                continue;
            }
        };
        for &s in &b.shards {
            let Some(client) = &clients[s] else { continue };
            let verb = if outcome == 'c' { "COMMIT" } else { "ROLLBACK" };
            let sql = format!("{verb} PREPARED {}", gid::literal(g));
            let result = match client.batch_execute(&sql).await {
                Ok(()) => {
                    if outcome == 'c' {
                        "commit"
                    } else {
                        "rollback"
                    }
                }
                Err(e) if control::code(&e) == Some("42704") => "gone",
                Err(e) => {
                    report.errors.push(format!(
                        "{verb} PREPARED {g} on {}: {}",
                        shards[s].name,
                        control::describe(&e)
                    ));
                    continue;
                }
            };
            if result != "gone" {
                metrics::counter!(crate::metrics::RECOVERY_RESOLUTIONS, "outcome" => result)
                    .increment(1);
                info!(gid = %g, shard = %shards[s].name, outcome = result, "recovery resolved a prepared transaction");
            }
            report.resolved.push(Resolution {
                gid: g.clone(),
                shard: shards[s].name.clone(),
                outcome: result,
            });
            failpoint::hit(failpoint::RECOVERY_BETWEEN_RESOLUTIONS).await;
        }
    }
    if all_listed {
        let prepared: Vec<String> = gids.keys().cloned().collect();
        for (i, client) in clients.iter().enumerate() {
            let Some(client) = client else { continue };
            if let Err(e) = collect_garbage(client, &prepared, opts.retention).await {
                report
                    .errors
                    .push(format!("shard {}: cleaning decisions: {e}", shards[i].name));
            }
        }
    }
    for e in &report.errors {
        warn!("recovery: {e}");
    }
    report
}

/// Settles one distributed transaction now, whatever its age: fences it on its decider (a
/// coordinator that has not decided can then never commit it) and resolves its branches on
/// every shard by the outcome, which it returns ('c' or 'a'). For a slot move's cut-over whose
/// hold ran out: the proxies must know which placement holds before they go on.
pub async fn settle(shards: &[ShardTarget], g: &str, timeout: Duration) -> Result<char, String> {
    let name = gid::decider(g).ok_or_else(|| format!("{g} is not a shardgate gid"))?;
    let d = shards
        .iter()
        .position(|s| s.name == name)
        .ok_or_else(|| format!("{g} names decider shard {name:?}, which is not in the config"))?;
    let decider = control::connect(&shards[d], timeout).await?;
    let outcome = fence(&decider, g).await?;
    let verb = if outcome == 'c' { "COMMIT" } else { "ROLLBACK" };
    for shard in shards {
        let client = control::connect(shard, timeout).await?;
        match client
            .batch_execute(&format!("{verb} PREPARED {}", gid::literal(g)))
            .await
        {
            Ok(()) => {
                info!(gid = %g, shard = %shard.name, outcome = verb, "settled a prepared transaction")
            }
            Err(e) if control::code(&e) == Some("42704") => {}
            Err(e) => {
                return Err(format!(
                    "{verb} PREPARED {g} on {}: {}",
                    shard.name,
                    control::describe(&e)
                ))
            }
        }
    }
    Ok(outcome)
}

/// Fences `gid` on its decider and returns its outcome ('c' or 'a').
async fn fence(decider: &tokio_postgres::Client, gid: &str) -> Result<char, String> {
    decider
        .execute(
            "INSERT INTO shardgate.commit_record (gid, outcome) VALUES ($1, 'a') ON CONFLICT (gid) DO NOTHING",
            &[&gid],
        )
        .await
        .map_err(|e| control::describe(&e))?;
    failpoint::hit(failpoint::RECOVERY_INSIDE_FENCE).await;
    let row = decider
        .query_one(
            "SELECT outcome::text FROM shardgate.commit_record WHERE gid = $1",
            &[&gid],
        )
        .await
        .map_err(|e| control::describe(&e))?;
    let outcome: String = row.get(0);
    Ok(if outcome == "c" { 'c' } else { 'a' })
}

/// Deletes decision rows and markers older than the retention whose gid is not prepared anywhere.
async fn collect_garbage(
    client: &tokio_postgres::Client,
    prepared: &[String],
    retention: Duration,
) -> Result<(), String> {
    let secs = retention.as_secs_f64();
    client
        .execute(
            "DELETE FROM shardgate.commit_record WHERE decided_at < now() - make_interval(secs => $1) AND gid <> ALL($2)",
            &[&secs, &prepared],
        )
        .await
        .map_err(|e| control::describe(&e))?;
    client
        .execute(
            "DELETE FROM shardgate.txn_marker WHERE prepared_at < now() - make_interval(secs => $1) AND gid <> ALL($2)",
            &[&secs, &prepared],
        )
        .await
        .map_err(|e| control::describe(&e))?;
    Ok(())
}

/// Past the moment a skipped gid becomes old enough, so that the next pass sees it old enough on
/// the shard's clock too.
const ELIGIBLE_MARGIN: Duration = Duration::from_millis(100);

/// Runs recovery at start, every `interval` (when not zero), and when kicked, until the process
/// ends. `ctx` is whatever holds the proxy's transaction context (the proxy's own context).
pub async fn background<C: AsRef<super::TxnContext>>(ctx: std::sync::Arc<C>) {
    loop {
        let txn: &super::TxnContext = (*ctx).as_ref();
        let report = run(&txn.shards, &txn.recovery).await;
        if !report.resolved.is_empty() || !report.skipped.is_empty() {
            info!(
                resolved = report.resolved.len(),
                left_for_later = report.skipped.len(),
                "recovery pass"
            );
        }
        // The next pass comes at the interval, or as soon as a transaction left for being too
        // young may be resolved, whichever is first: after a crash, its locks go then.
        let interval = Some(txn.recovery.interval).filter(|i| !i.is_zero());
        let eligible = report.next_eligible.map(|d| d + ELIGIBLE_MARGIN);
        match interval.into_iter().chain(eligible).min() {
            None => txn.kick.notified().await,
            Some(wait) => tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = txn.kick.notified() => {}
            },
        }
    }
}
