//! Configuration: the TOML file a proxy runs from.
//!
//! Owns the file format (`Config` and its sections), loading and validation. Invariants once
//! `Config::load` / `Config::from_toml` returns `Ok`: shard names and user names are unique, every
//! shard URL parsed into a `ShardTarget`, and listen addresses are valid socket addresses. Unknown
//! keys are rejected (`deny_unknown_fields`) so a typo never silently becomes a default.
//!
//! This file holds `Config`, the shard list, loading and the checks across sections; each
//! section's keys and defaults live in the file named after it.

mod pool;
mod server;
mod shard_target;
pub mod shard_tls;
mod tables;
#[cfg(test)]
mod tests;
mod transactions;

pub use crate::auth::{AuthMethod, UserConfig};
pub use pool::{PoolConfig, PoolMode};
pub use server::*;
pub use shard_target::{ShardHost, ShardTarget, MAX_SHARD_NAME};
pub use tables::*;
pub use transactions::*;

use crate::placement::{KeyType, Placement, SlotTable, TableRule};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;

/// Errors from reading or validating a config file. Each one names the key or shard at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config: {0}")]
    Parse(String),
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// The whole config file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Client-facing listener.
    #[serde(default)]
    pub server: ServerConfig,
    /// Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Who may connect to the proxy. At least one entry is required.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// The PostgreSQL servers behind the proxy, in order. At least one is required.
    #[serde(default)]
    pub shards: Vec<ShardConfig>,
    /// Sharded and reference tables, by table name. Default: none.
    #[serde(default)]
    pub tables: BTreeMap<String, TableConfig>,
    /// Slot table pinning. Default: derived from the shard names.
    #[serde(default)]
    pub placement: PlacementConfig,
    /// Where tables the config does not declare live.
    #[serde(default)]
    pub routing: RoutingConfig,
    /// Distributed commit and recovery.
    #[serde(default)]
    pub transactions: TransactionsConfig,
    /// The standalone oracle (`shardgate oracle`).
    #[serde(default)]
    pub oracle: OracleConfig,
    /// TLS for clients.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Server connections shared by sessions (several shards).
    #[serde(default)]
    pub pool: PoolConfig,
}

/// `[[shards]]`
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShardConfig {
    /// Unique shard name, used in logs, metrics and error messages.
    pub name: String,
    /// `postgres://user:password@host:port/dbname`; host may be a Unix socket directory.
    #[serde(serialize_with = "serialize_redacted_url")]
    pub url: String,
}

impl std::fmt::Debug for ShardConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardConfig")
            .field("name", &self.name)
            .field("url", &shard_target::redact_url(&self.url))
            .finish()
    }
}

fn serialize_redacted_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&shard_target::redact_url(url))
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml(&text)
    }

    /// Every setting as `section.key = value` lines' parts, passwords left out (for the admin
    /// console's SHOW CONFIG).
    pub fn settings(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Ok(value) = toml::Value::try_from(self) {
            flatten("", &value, &mut out);
        }
        out
    }

    /// Parses and validates config text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Three shards `s0` to `s2`, one trust user, and the `tables` given (TOML): the cluster
    /// that unit tests of planning and routing place rows on.
    #[cfg(test)]
    pub fn three_shards(tables: &str) -> Config {
        let mut text = String::from("[[users]]\nname=\"a\"\nauth=\"trust\"\n");
        for i in 0..3 {
            text.push_str(&format!(
                "[[shards]]\nname=\"s{i}\"\nurl=\"postgres://u@h{i}/db\"\n"
            ));
        }
        text.push_str(tables);
        Config::from_toml(&text).unwrap()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        if self.server.listen.parse::<SocketAddr>().is_err() {
            return invalid(format!(
                "server.listen = {:?} is not an address like \"127.0.0.1:6432\"",
                self.server.listen
            ));
        }
        if !self.metrics.listen.is_empty() && self.metrics.listen.parse::<SocketAddr>().is_err() {
            return invalid(format!(
                "metrics.listen = {:?} is not an address like \"127.0.0.1:9930\"",
                self.metrics.listen
            ));
        }
        match self.tls.mode.as_str() {
            "disable" => {}
            "prefer" | "require" => {
                if self.tls.cert_file.is_empty() || self.tls.key_file.is_empty() {
                    return invalid(format!(
                        "tls.mode = {:?} needs tls.cert_file and tls.key_file",
                        self.tls.mode
                    ));
                }
            }
            other => {
                return invalid(format!(
                    "tls.mode = {other:?}: expected \"disable\", \"prefer\" or \"require\""
                ))
            }
        }
        if let Some(problem) = self.pool.problem() {
            return invalid(problem);
        }
        if self.server.worker_threads == 0 {
            return invalid("server.worker_threads must be at least 1".into());
        }
        if self.server.max_client_connections == 0 {
            return invalid("server.max_client_connections must be at least 1".into());
        }
        if self.server.max_pending_startups == 0 {
            return invalid("server.max_pending_startups must be at least 1".into());
        }
        let refresh = self.placement.refresh_interval_secs;
        if !(refresh.is_finite() && refresh >= 0.05) {
            return invalid(format!(
                "placement.refresh_interval_secs = {refresh}: give at least 0.05"
            ));
        }
        if self.server.startup_timeout_secs == 0 {
            return invalid("server.startup_timeout_secs must be at least 1".into());
        }
        if self.server.max_message_bytes < 1024 {
            return invalid("server.max_message_bytes must be at least 1024".into());
        }
        if self.shards.is_empty() {
            return invalid("no [[shards]] configured: at least one shard is required".into());
        }
        let mut names = HashSet::new();
        for shard in &self.shards {
            if shard.name.is_empty() {
                return invalid("a [[shards]] entry has an empty name".into());
            }
            if shard.name.len() > MAX_SHARD_NAME {
                return invalid(format!(
                    "shard name {:?} is longer than {} bytes (it is part of transaction identifiers)",
                    shard.name,
                    MAX_SHARD_NAME
                ));
            }
            if !names.insert(shard.name.as_str()) {
                return invalid(format!("duplicate shard name {:?}", shard.name));
            }
            ShardTarget::parse(&shard.url)
                .map_err(|e| ConfigError::Invalid(format!("shard {:?}: url: {e}", shard.name)))?;
        }
        self.placement().map_err(ConfigError::Invalid)?;
        let t = &self.transactions;
        match Consistency::parse(&t.consistency) {
            None => {
                return invalid(format!(
                    "transactions.consistency = {:?}: use \"shard\" or \"snapshot\"",
                    t.consistency
                ))
            }
            Some(Consistency::Snapshot) if !t.snapshot => {
                return invalid(
                    "transactions.consistency = \"snapshot\" needs transactions.snapshot = true (the commit gate)".into(),
                )
            }
            _ => {}
        }
        if t.oracle != "embedded"
            && t.oracle.parse::<SocketAddr>().is_err()
            && !t.oracle.contains(':')
        {
            return invalid(format!(
                "transactions.oracle = {:?}: use \"embedded\" or \"HOST:PORT\" of a shardgate oracle",
                t.oracle
            ));
        }
        if self.users.is_empty() {
            return invalid("no [[users]] configured: nobody could connect".into());
        }
        let mut users = HashSet::new();
        for user in &self.users {
            if !users.insert(user.name.as_str()) {
                return invalid(format!("duplicate user name {:?}", user.name));
            }
            crate::auth::Credential::from_config(user)
                .map_err(|e| ConfigError::Invalid(format!("user {:?}: {e}", user.name)))?;
            match user.consistency.as_deref().map(Consistency::parse) {
                Some(None) => {
                    return invalid(format!(
                        "user {:?}: consistency = {:?}: use \"shard\" or \"snapshot\"",
                        user.name,
                        user.consistency.as_deref().unwrap_or_default()
                    ))
                }
                Some(Some(Consistency::Snapshot)) if !t.snapshot => {
                    return invalid(format!(
                        "user {:?}: consistency = \"snapshot\" needs transactions.snapshot = true (the commit gate)",
                        user.name
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Table rules and the slot table.
    pub fn placement(&self) -> Result<Placement, String> {
        let shard_names: Vec<String> = self.shards.iter().map(|s| s.name.clone()).collect();
        let mut tables = HashMap::new();
        for (name, t) in &self.tables {
            let rule = match (t.reference, &t.shard_key, &t.key_type) {
                (true, None, None) => TableRule::Reference,
                (true, _, _) => {
                    return Err(format!(
                        "tables.{name}: a reference table has no shard_key or key_type"
                    ))
                }
                (false, Some(col), Some(ty)) => TableRule::Sharded {
                    key_column: col.to_ascii_lowercase(),
                    key_type: KeyType::parse(ty).map_err(|e| format!("tables.{name}: {e}"))?,
                },
                (false, None, _) => {
                    return Err(format!(
                        "tables.{name}: needs shard_key (or reference = true)"
                    ))
                }
                (false, Some(_), None) => return Err(format!("tables.{name}: needs key_type")),
            };
            tables.insert(name.to_ascii_lowercase(), rule);
        }
        let slots = match &self.placement.slots {
            Some(map) => SlotTable::from_ranges(&shard_names, map)?,
            None => SlotTable::derive(&shard_names),
        };
        let undeclared = match self.routing.undeclared_tables.as_str() {
            "refuse" => None,
            "reference" => Some(TableRule::Reference),
            name => match shard_names.iter().position(|s| s == name) {
                Some(shard) => Some(TableRule::Pinned { shard }),
                None => {
                    return Err(format!(
                        "routing.undeclared_tables: {name:?} is neither \"refuse\", \"reference\" nor a shard name"
                    ))
                }
            },
        };
        Ok(Placement {
            tables,
            slots,
            shard_names,
            undeclared,
            version: 0,
            unroutable: Default::default(),
            aggregates: Default::default(),
            function_words: Default::default(),
            function_writes: Default::default(),
        })
    }

    /// The parsed connection target of every shard, in config order.
    pub fn shard_targets(&self) -> Vec<ShardTarget> {
        self.shards
            .iter()
            .map(|s| {
                let mut t = ShardTarget::parse(&s.url).expect("validated at load");
                t.name = s.name.clone();
                t
            })
            .collect()
    }

    /// A human-readable summary for `check-config`; never contains a password.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("listen: {}\n", self.server.listen));
        if self.metrics.listen.is_empty() {
            out.push_str("metrics: disabled\n");
        } else {
            out.push_str(&format!(
                "metrics: http://{}/metrics\n",
                self.metrics.listen
            ));
        }
        out.push_str(&format!("shards ({}):\n", self.shards.len()));
        for t in self.shard_targets() {
            out.push_str(&format!("  {}: {}\n", t.name, t.describe()));
        }
        if !self.tables.is_empty() {
            out.push_str(&format!("tables ({}):\n", self.tables.len()));
            for (name, t) in &self.tables {
                match (&t.shard_key, &t.key_type) {
                    (Some(k), Some(ty)) => {
                        out.push_str(&format!("  {name}: sharded by {k} ({ty})\n"))
                    }
                    _ => out.push_str(&format!("  {name}: reference (copy on every shard)\n")),
                }
            }
        }
        let pinned = if self.placement.slots.is_some() {
            "pinned"
        } else {
            "derived from shard names"
        };
        out.push_str(&format!("slot table: 1024 slots, {pinned}\n"));
        out.push_str(&format!("users ({}):\n", self.users.len()));
        for u in &self.users {
            let method = match u.auth {
                AuthMethod::ScramSha256 => "scram-sha-256",
                AuthMethod::Md5 => "md5",
                AuthMethod::Trust => "trust",
            };
            out.push_str(&format!("  {} ({method})\n", u.name));
        }
        out
    }
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut Vec<(String, String)>) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                flatten(&key(k), v, out);
            }
        }
        toml::Value::Array(items) if items.iter().all(|i| i.is_table()) => {
            for (i, item) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), item, out);
            }
        }
        toml::Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}
