//! The `[server]`, `[server.tls]` and `[metrics]` sections: where the proxy listens, its
//! limits and timeouts, client TLS, and the Prometheus endpoint.

use super::*;

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

pub(super) fn default_tls_mode() -> String {
    "disable".into()
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

pub(super) fn default_listen() -> String {
    "127.0.0.1:6432".into()
}

pub(super) fn default_metrics_listen() -> String {
    "127.0.0.1:9930".into()
}

pub(super) fn default_max_message_bytes() -> usize {
    64 << 20
}

pub(super) fn default_connect_timeout() -> u64 {
    5
}

pub(super) fn default_health_check_interval() -> u64 {
    5
}

pub(super) fn default_max_client_connections() -> usize {
    1000
}

pub(super) fn default_startup_timeout() -> u64 {
    60
}

pub(super) fn default_shutdown_timeout() -> u64 {
    30
}

pub(super) fn default_max_pending_startups() -> usize {
    128
}

pub(super) fn default_worker_threads() -> usize {
    1
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
