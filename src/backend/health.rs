//! Per-shard health: a background probe that keeps one control connection to each shard and
//! runs `SELECT 1` on it every interval, with the connect timeout as its deadline.
//!
//! The state is advisory and one interval old at worst. It serves two purposes: operators see
//! `shardgate_shard_up{shard}` and a log line at each change, and a client logging in while a
//! shard is known to be down is told so at once (`08001`, naming the shard) instead of waiting
//! out the connect timeout against a server that does not answer.

use crate::config::ShardTarget;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

#[derive(Debug)]
pub struct Health {
    up: Vec<AtomicBool>,
}

impl Health {
    /// Every shard starts up: the proxy checked them all before accepting clients.
    pub fn new(shards: usize) -> Health {
        Health {
            up: (0..shards).map(|_| AtomicBool::new(true)).collect(),
        }
    }

    pub fn is_up(&self, shard: usize) -> bool {
        self.up.get(shard).is_none_or(|u| u.load(Ordering::Relaxed))
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
        if self.up[shard].swap(up, Ordering::Relaxed) != up {
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
            loop {
                tokio::time::sleep(interval).await;
                let ok = tokio::time::timeout(timeout, probe(&shard, &mut client, timeout))
                    .await
                    .unwrap_or(false);
                if !ok {
                    client = None;
                }
                health.set(i, &shard.name, ok);
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
        assert!(h.is_up(2));
        h.set(2, "s2", false);
        assert!(!h.is_up(2) && h.is_up(0));
        h.set(2, "s2", true);
        assert!(h.is_up(2));
    }
}
