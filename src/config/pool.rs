//! `[pool]`: how sessions share server connections, one pool per shard.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// A client holds server connections only while a transaction is open, and only on the
    /// shards it touches.
    Transaction,
    /// A client holds one connection per shard from login to logout.
    Session,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// "transaction" (default) or "session".
    #[serde(default = "default_mode")]
    pub mode: PoolMode,
    /// Server connections per shard. Default 20.
    #[serde(default = "default_size")]
    pub size: usize,
    /// Seconds a client waits for a free connection before it gets an error. Default 30.
    #[serde(default = "default_checkout_timeout")]
    pub checkout_timeout_secs: f64,
    /// Seconds an unused server connection stays open. Default 600.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: f64,
    /// Seconds a server connection lives before it is replaced (when next returned). Default 3600.
    #[serde(default = "default_lifetime")]
    pub lifetime_secs: f64,
}

fn default_mode() -> PoolMode {
    PoolMode::Transaction
}
fn default_size() -> usize {
    20
}
fn default_checkout_timeout() -> f64 {
    30.0
}
fn default_idle_timeout() -> f64 {
    600.0
}
fn default_lifetime() -> f64 {
    3600.0
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            mode: default_mode(),
            size: default_size(),
            checkout_timeout_secs: default_checkout_timeout(),
            idle_timeout_secs: default_idle_timeout(),
            lifetime_secs: default_lifetime(),
        }
    }
}

impl PoolConfig {
    /// What is wrong with the section, if anything.
    pub fn problem(&self) -> Option<String> {
        if self.size == 0 {
            return Some("pool.size must be at least 1".into());
        }
        for (name, v) in [
            ("pool.checkout_timeout_secs", self.checkout_timeout_secs),
            ("pool.idle_timeout_secs", self.idle_timeout_secs),
            ("pool.lifetime_secs", self.lifetime_secs),
        ] {
            if !(v.is_finite() && v > 0.0 && v < 1e9) {
                return Some(format!("{name} must be a positive number of seconds"));
            }
        }
        None
    }
}
