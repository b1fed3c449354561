//! Per-shard health: a background probe that keeps one control connection to each shard and
//! runs `SELECT 1` on it every interval, with the connect timeout as its deadline.
//!
//! A shard is down after two probes in a row fail (one slow probe on a busy server is not enough),
//! and up again after one succeeds. The state serves three purposes: operators see
//! `shardgate_shard_up{shard}` and a log line at each change; a client logging in while a shard
//! is down is told so at once (`08001`, naming the shard) instead of waiting out the connect
//! timeout; and a session waiting for that shard's answer gives up on it (`08006`). A shard
//! busy with a long query still answers the probe, so only a stopped, wedged or unreachable one
//! releases its waiting sessions: no fixed timeout has to guess how long queries may run.

use crate::config::ShardTarget;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// Failed probes in a row that mark a shard down.
const FAILURES_TO_DOWN: u32 = 2;

#[derive(Debug)]
pub struct Health {
    up: Vec<watch::Sender<bool>>,
}

impl Health {
    /// Every shard starts up: the proxy checked them all before accepting clients.
    pub fn new(shards: usize) -> Health {
        Health {
            up: (0..shards).map(|_| watch::channel(true).0).collect(),
        }
    }

    pub fn is_up(&self, shard: usize) -> bool {
        self.up.get(shard).is_none_or(|u| *u.borrow())
    }

    /// A receiver that sees the shard's state change (a session waits on it beside its reads).
    pub fn watch(&self, shard: usize) -> Option<watch::Receiver<bool>> {
        self.up.get(shard).map(|u| u.subscribe())
    }

    /// The first shard of `shards` known to be down.
    pub fn first_down<'a>(&self, shards: &'a [ShardTarget]) -> Option<&'a str> {
        (0..shards.len())
            .find(|&i| !self.is_up(i))
            .map(|i| shards[i].name.as_str())
    }

    fn set(&self, shard: usize, name: &str, up: bool) {
        metrics::gauge!(crate::metrics::SHARD_UP, "shard" => name.to_string()).set(if up {
            1.0
        } else {
            0.0
        });
        if self.up[shard].send_replace(up) != up {
            if up {
                info!(shard = %name, "shard is answering again");
            } else {
                warn!(shard = %name, "shard failed its health probe; new logins are refused until it answers");
            }
        }
    }
}

/// Probes every shard every `interval`, for as long as the proxy runs.
pub async fn run(
    health: Arc<Health>,
    shards: Vec<ShardTarget>,
    interval: Duration,
    timeout: Duration,
) {
    let probes = shards.into_iter().enumerate().map(|(i, shard)| {
        let health = health.clone();
        async move {
            let mut client: Option<tokio_postgres::Client> = None;
            let mut failures = 0;
            loop {
                tokio::time::sleep(interval).await;
                let ok = tokio::time::timeout(timeout, probe(&shard, &mut client, timeout))
                    .await
                    .unwrap_or(false);
                if ok {
                    failures = 0;
                    health.set(i, &shard.name, true);
                } else {
                    client = None;
                    failures += 1;
                    if failures >= FAILURES_TO_DOWN {
                        health.set(i, &shard.name, false);
                    }
                }
            }
        }
    });
    futures_util::future::join_all(probes).await;
}

async fn probe(
    shard: &ShardTarget,
    client: &mut Option<tokio_postgres::Client>,
    timeout: Duration,
) -> bool {
    if client.as_ref().is_none_or(|c| c.is_closed()) {
        *client = super::control::connect(shard, timeout).await.ok();
    }
    match client {
        Some(c) => c.simple_query("select 1").await.is_ok(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_changes_are_kept_per_shard() {
        let h = Health::new(3);
        let mut watching = h.watch(2).unwrap();
        assert!(h.is_up(2));
        h.set(2, "s2", false);
        assert!(!h.is_up(2) && h.is_up(0));
        assert!(watching.has_changed().unwrap() && !*watching.borrow_and_update());
        h.set(2, "s2", true);
        assert!(h.is_up(2));
    }
}
