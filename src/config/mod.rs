//! Configuration: the TOML file a proxy runs from.
//!
//! Owns the file format (`Config` and its sections), loading and validation. Invariants once
//! `Config::load` / `Config::from_toml` returns `Ok`: shard names and user names are unique, every
//! shard URL parsed into a `ShardTarget`, and listen addresses are valid socket addresses. Unknown
//! keys are rejected (`deny_unknown_fields`) so a typo never silently becomes a default.

mod shard_target;

pub use shard_target::{ShardHost, ShardTarget};

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
}

/// `[tls]`: TLS offered to clients.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// "disable" (default), "prefer" (TLS for clients that ask) or "require" (plaintext logins
    /// are refused).
    #[serde(default = "default_tls_mode")]
    pub mode: String,
    /// PEM certificate chain, the server's certificate first.
    #[serde(default)]
    pub cert_file: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub key_file: String,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            mode: default_tls_mode(),
            cert_file: String::new(),
            key_file: String::new(),
        }
    }
}

fn default_tls_mode() -> String {
    "disable".into()
}

/// `[routing]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Tables not declared under `[tables]`: `refuse` (default: statements that use one are
    /// refused), `reference` (a copy on every shard) or the name of the shard that holds them.
    #[serde(default = "default_undeclared")]
    pub undeclared_tables: String,
}

fn default_undeclared() -> String {
    "refuse".into()
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            undeclared_tables: default_undeclared(),
        }
    }
}

/// `[oracle]`: where `shardgate oracle` listens.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OracleConfig {
    /// Default `127.0.0.1:6440`.
    #[serde(default = "default_oracle_listen")]
    pub listen: String,
}

fn default_oracle_listen() -> String {
    "127.0.0.1:6440".into()
}

impl Default for OracleConfig {
    fn default() -> Self {
        OracleConfig {
            listen: default_oracle_listen(),
        }
    }
}

/// `[transactions]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TransactionsConfig {
    /// After the commit decision, how long COMMIT waits for an unreachable participant before
    /// answering success with a WARNING naming what recovery will finish. Default 5000.
    #[serde(default = "default_commit_wait_ms")]
    pub commit_wait_ms: u64,
    /// Seconds between recovery passes; 0 runs recovery only at start and on demand. Default 30.
    #[serde(default = "default_recovery_interval")]
    pub recovery_interval_secs: u64,
    /// Prepared transactions younger than this are left to their coordinator. Default 10.
    #[serde(default = "default_recovery_min_age")]
    pub recovery_min_age_secs: u64,
    /// Decision rows older than this, with no branch still prepared, are deleted. It must exceed
    /// the longest a coordinator can stall between PREPARE and its decision. Default 3600.
    #[serde(default = "default_decision_retention")]
    pub decision_retention_secs: u64,
    /// Default consistency of sessions: `shard` (default) or `snapshot`.
    #[serde(default = "default_consistency")]
    pub consistency: String,
    /// Gate every multi-shard commit through the oracle, so `snapshot` reads are possible.
    /// Default false (no oracle, no gate).
    #[serde(default)]
    pub snapshot: bool,
    /// `embedded` (default: the oracle runs in this proxy) or `HOST:PORT` of `shardgate oracle`.
    #[serde(default = "default_oracle")]
    pub oracle: String,
}

fn default_consistency() -> String {
    "shard".into()
}
fn default_oracle() -> String {
    "embedded".into()
}

fn default_commit_wait_ms() -> u64 {
    5000
}
fn default_recovery_interval() -> u64 {
    30
}
fn default_recovery_min_age() -> u64 {
    10
}
fn default_decision_retention() -> u64 {
    3600
}

impl Default for TransactionsConfig {
    fn default() -> Self {
        TransactionsConfig {
            commit_wait_ms: default_commit_wait_ms(),
            recovery_interval_secs: default_recovery_interval(),
            recovery_min_age_secs: default_recovery_min_age(),
            decision_retention_secs: default_decision_retention(),
            consistency: default_consistency(),
            snapshot: false,
            oracle: default_oracle(),
        }
    }
}

/// `[tables.<name>]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// Column whose value decides the shard. Required unless `reference = true`.
    #[serde(default)]
    pub shard_key: Option<String>,
    /// `bigint`, `integer`, `smallint`, `text` or `uuid`. Required with `shard_key`.
    #[serde(default)]
    pub key_type: Option<String>,
    /// A full copy on every shard. Default false.
    #[serde(default)]
    pub reference: bool,
}

/// `[placement]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementConfig {
    /// Shard name → slot ranges (`"0-340,512-600"`), covering slots 0..1023 exactly once.
    /// `shardgate slots --config FILE` prints the derived table in this form, to pin it.
    #[serde(default)]
    pub slots: Option<BTreeMap<String, String>>,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address clients connect to. Default `127.0.0.1:6432`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Largest message a client may send, in bytes. Default 64 MiB (PostgreSQL allows 1 GiB;
    /// a proxy that buffers a whole statement should not).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Seconds to wait for a shard connection to be established. Default 5.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Threads running client sessions. Default 1: a relay does little work per message, and on
    /// machines shared with PostgreSQL one thread avoids cross-thread wake-ups; raise it when the
    /// proxy has cores of its own.
    #[serde(default = "default_worker_threads")]
    pub worker_threads: usize,
    /// Client connections served at once, logged in or logging in. Default 1000. One more gets
    /// `FATAL 53300` and is closed.
    #[serde(default = "default_max_client_connections")]
    pub max_client_connections: usize,
    /// Seconds a client has to finish its startup and authentication. Default 60 (PostgreSQL's
    /// `authentication_timeout`).
    #[serde(default = "default_startup_timeout")]
    pub startup_timeout_secs: u64,
    /// Seconds a graceful stop (SIGTERM) lets open transactions run before it ends every
    /// session. Default 30.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout_secs: u64,
    /// Connections allowed to be in startup or authentication at once. Default 128. When one more
    /// arrives, the one that has been waiting longest is closed: a real client logs in within
    /// milliseconds, so a flood of half-open connections evicts itself, not the clients.
    #[serde(default = "default_max_pending_startups")]
    pub max_pending_startups: usize,
    /// Seconds a shard may stay silent while the proxy waits for its answer before the session
    /// gives up on it (`08006`, the session ends and its shard connections are closed). Default
    /// 0: no fixed limit; the health probes release sessions waiting on a shard that stopped
    /// answering.
    #[serde(default)]
    pub shard_response_timeout_secs: u64,
    /// Seconds between health probes of each shard (`SELECT 1` on a kept connection). Default 5;
    /// 0 turns probing off. Two failed probes in a row mark a shard down: sessions waiting on it
    /// end with `08006`, and logins are refused at once with `08001` naming it.
    #[serde(default = "default_health_check_interval")]
    pub health_check_interval_secs: u64,
}

/// `[metrics]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the Prometheus `/metrics` endpoint. Default `127.0.0.1:9930`; empty disables it.
    #[serde(default = "default_metrics_listen")]
    pub listen: String,
}

/// How a user proves who they are to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    /// SCRAM-SHA-256 (the default, as in PostgreSQL 14+).
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// MD5 challenge-response; needs a plain password or an `md5...` hash in `password`.
    Md5,
    /// No password.
    Trust,
}

/// `[[users]]`
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// User name clients log in with.
    pub name: String,
    /// Plain password, a `SCRAM-SHA-256$...` verifier or an `md5...` hash. Not needed for trust.
    #[serde(default, skip_serializing)]
    pub password: Option<String>,
    /// `scram-sha-256` (default), `md5` or `trust`.
    #[serde(default = "default_auth")]
    pub auth: AuthMethod,
    /// This user's sessions start in this consistency (`shard` or `snapshot`) instead of
    /// `transactions.consistency`; a startup option or SET still changes it.
    #[serde(default)]
    pub consistency: Option<String>,
    /// May use the admin console (database `shardgate`).
    #[serde(default)]
    pub admin: bool,
}

// Hand-written so a password can never reach a log line through `{:?}`.
impl std::fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("auth", &self.auth)
            .field("consistency", &self.consistency)
            .field("admin", &self.admin)
            .finish()
    }
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

fn default_listen() -> String {
    "127.0.0.1:6432".into()
}
fn default_metrics_listen() -> String {
    "127.0.0.1:9930".into()
}
fn default_max_message_bytes() -> usize {
    64 << 20
}
fn default_connect_timeout() -> u64 {
    5
}
fn default_health_check_interval() -> u64 {
    5
}
fn default_max_client_connections() -> usize {
    1000
}
fn default_startup_timeout() -> u64 {
    60
}
fn default_shutdown_timeout() -> u64 {
    30
}
fn default_max_pending_startups() -> usize {
    128
}
fn default_worker_threads() -> usize {
    1
}
fn default_auth() -> AuthMethod {
    AuthMethod::ScramSha256
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            max_message_bytes: default_max_message_bytes(),
            connect_timeout_secs: default_connect_timeout(),
            worker_threads: default_worker_threads(),
            max_client_connections: default_max_client_connections(),
            startup_timeout_secs: default_startup_timeout(),
            shutdown_timeout_secs: default_shutdown_timeout(),
            max_pending_startups: default_max_pending_startups(),
            shard_response_timeout_secs: 0,
            health_check_interval_secs: default_health_check_interval(),
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: default_metrics_listen(),
        }
    }
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
        if self.server.worker_threads == 0 {
            return invalid("server.worker_threads must be at least 1".into());
        }
        if self.server.max_client_connections == 0 {
            return invalid("server.max_client_connections must be at least 1".into());
        }
        if self.server.max_pending_startups == 0 {
            return invalid("server.max_pending_startups must be at least 1".into());
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
            if shard.name.len() > crate::txn::gid::MAX_SHARD_NAME {
                return invalid(format!(
                    "shard name {:?} is longer than {} bytes (it is part of transaction identifiers)",
                    shard.name,
                    crate::txn::gid::MAX_SHARD_NAME
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
        match crate::snapshot::Consistency::parse(&t.consistency) {
            None => {
                return invalid(format!(
                    "transactions.consistency = {:?}: use \"shard\" or \"snapshot\"",
                    t.consistency
                ))
            }
            Some(crate::snapshot::Consistency::Snapshot) if !t.snapshot => {
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
            match user.consistency.as_deref().map(crate::snapshot::Consistency::parse) {
                Some(None) => {
                    return invalid(format!(
                        "user {:?}: consistency = {:?}: use \"shard\" or \"snapshot\"",
                        user.name,
                        user.consistency.as_deref().unwrap_or_default()
                    ))
                }
                Some(Some(crate::snapshot::Consistency::Snapshot)) if !t.snapshot => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_list_every_key_and_no_password() {
        let c = Config::from_toml(
            "[[users]]\nname = \"ops\"\npassword = \"hunter2\"\nadmin = true\n\
             [[shards]]\nname = \"s0\"\nurl = \"postgres://u:shardpw@h/db\"\n\
             [tables.t]\nreference = true\n",
        )
        .unwrap();
        let settings = c.settings();
        let text = format!("{settings:?}");
        assert!(
            !text.contains("hunter2") && !text.contains("shardpw"),
            "{text}"
        );
        let get = |k: &str| {
            settings
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("users[0].admin"), Some("true"));
        assert_eq!(get("shards[0].url"), Some("postgres://u:<redacted>@h/db"));
        assert_eq!(get("tables.t.reference"), Some("true"));
        assert_eq!(get("server.listen"), Some("127.0.0.1:6432"));
    }

    const GOOD: &str = r#"
        [server]
        listen = "127.0.0.1:7000"
        [metrics]
        listen = "127.0.0.1:9931"
        [[users]]
        name = "app"
        password = "secret"
        auth = "scram-sha-256"
        [[shards]]
        name = "s0"
        url = "postgres://postgres:pw@127.0.0.1:5433/app"
        [[shards]]
        name = "s1"
        url = "postgres://postgres@%2Ftmp%2Fpg/app"
    "#;

    #[test]
    fn good_config_loads() {
        let c = Config::from_toml(GOOD).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:7000");
        assert_eq!(c.shards.len(), 2);
        assert_eq!(c.users[0].auth, AuthMethod::ScramSha256);
        let summary = c.summary();
        assert!(
            summary.contains("s0: 127.0.0.1:5433 db=app user=postgres"),
            "{summary}"
        );
        assert!(
            !summary.contains("pw") && !summary.contains("secret"),
            "{summary}"
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml(&GOOD.replace("listen = \"127.0.0.1:7000\"", "lisen = \"x\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("lisen"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let err = Config::from_toml(&GOOD.replace("name = \"s1\"", "name = 1"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("name"), "{err}");
    }

    #[test]
    fn duplicate_shard_is_named() {
        let err = Config::from_toml(&GOOD.replace("name = \"s1\"", "name = \"s0\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("duplicate shard name \"s0\""), "{err}");
    }

    #[test]
    fn bad_shard_url_is_named() {
        let err = Config::from_toml(
            &GOOD.replace("postgres://postgres:pw@127.0.0.1:5433/app", "mysql://x"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("shard \"s0\""), "{err}");
    }

    #[test]
    fn no_shards_is_an_error() {
        let err = Config::from_toml("[[users]]\nname=\"a\"\nauth=\"trust\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no [[shards]]"), "{err}");
    }

    #[test]
    fn tables_are_checked() {
        let ok = format!("{GOOD}\n[tables.accounts]\nshard_key = \"id\"\nkey_type = \"bigint\"\n[tables.countries]\nreference = true\n");
        let c = Config::from_toml(&ok).unwrap();
        let p = c.placement().unwrap();
        assert!(matches!(
            p.rule("public.accounts"),
            Some(TableRule::Sharded { .. })
        ));
        assert_eq!(p.rule("\"countries\""), Some(&TableRule::Reference));
        for (bad, needle) in [
            ("[tables.t]\nkey_type = \"bigint\"", "needs shard_key"),
            ("[tables.t]\nshard_key = \"id\"", "needs key_type"),
            (
                "[tables.t]\nshard_key = \"id\"\nkey_type = \"float\"",
                "not supported",
            ),
            (
                "[tables.t]\nreference = true\nshard_key = \"id\"",
                "reference table",
            ),
        ] {
            let err = Config::from_toml(&format!("{GOOD}\n{bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn undeclared_tables_go_where_the_config_says() {
        let rule = |value: &str| {
            let text = format!("{GOOD}\n[routing]\nundeclared_tables = \"{value}\"\n");
            Config::from_toml(&text)
                .map(|c| c.placement().unwrap().rule("django_migrations").cloned())
        };
        assert_eq!(rule("refuse").unwrap(), None);
        assert_eq!(rule("reference").unwrap(), Some(TableRule::Reference));
        let shard = &Config::from_toml(GOOD).unwrap().shards[0].name;
        assert_eq!(rule(shard).unwrap(), Some(TableRule::Pinned { shard: 0 }));
        let err = rule("nowhere").unwrap_err().to_string();
        assert!(err.contains("undeclared_tables"), "{err}");
        // Catalogs are never given the default.
        let c = Config::from_toml(&format!(
            "{GOOD}\n[routing]\nundeclared_tables = \"reference\"\n"
        ))
        .unwrap();
        assert_eq!(c.placement().unwrap().rule("pg_class"), None);
    }

    #[test]
    fn example_config_is_valid() {
        let c = Config::from_toml(include_str!("../../config/shardgate.example.toml")).unwrap();
        assert_eq!(c.shards.len(), 2);
    }

    #[test]
    fn snapshot_consistency_needs_the_gate() {
        let with = |t: &str| Config::from_toml(&format!("{GOOD}\n[transactions]\n{t}\n"));
        let e = with("consistency = \"snapshot\"").unwrap_err().to_string();
        assert!(e.contains("transactions.snapshot = true"), "{e}");
        assert!(with("consistency = \"snapshot\"\nsnapshot = true").is_ok());
        assert!(with("consistency = \"strict\"").is_err());
        let user = |line: &str, snapshot: bool| {
            Config::from_toml(&format!(
                "[[shards]]\nname=\"a\"\nurl=\"postgres://u@h/d\"\n[transactions]\nsnapshot = {snapshot}\n[[users]]\nname=\"u\"\nauth=\"trust\"\n{line}"
            ))
        };
        assert!(user("consistency = \"snapshot\"", true).is_ok());
        let e = user("consistency = \"snapshot\"", false)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("needs transactions.snapshot"), "{e}");
        assert!(user("consistency = \"strong\"", true).is_err());
        assert!(with("snapshot = true\noracle = \"oracle.internal:6440\"").is_ok());
        assert!(with("oracle = \"nowhere\"").is_err());
    }

    #[test]
    fn debug_output_hides_passwords() {
        let c = Config::from_toml(GOOD).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("secret") && !dbg.contains(":pw@"), "{dbg}");
    }
}
