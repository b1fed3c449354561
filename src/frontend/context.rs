//! What every session of a proxy shares (`ProxyContext`): the shards, the pools, the
//! transaction context, the registries of clients and cancel keys, and what a reload changes.
//! `server` builds it once at start; sessions only read it, apart from the registries.

use crate::client::cancel::CancelRegistry;
use crate::config::ShardTarget;
use std::sync::Arc;
use std::time::Duration;

/// What every session shares. Read-only after start, except the cancel registry and what a
/// reload changes (`live`).
#[derive(Debug)]
pub struct ProxyContext {
    pub shards: Vec<ShardTarget>,
    /// Tables and users, which a reload may change.
    pub live: crate::reload::Live,
    pub cancel: CancelRegistry,
    pub connect_timeout: Duration,
    pub max_message_bytes: usize,
    /// The shards' database sorts text bytewise (C/POSIX collation); checked at start.
    pub text_order_c: bool,
    /// Settings several-shard sessions start with on every shard, where the shards' own
    /// differ (see `backend::output_settings`); read at start.
    pub pinned_settings: Vec<(String, String)>,
    /// Distributed commit and recovery.
    pub txn: crate::txn::TxnContext,
    /// Who is connected (the admin console's SHOW CLIENTS, and PAUSE).
    pub clients: crate::admin::clients::Clients,
    /// PAUSE / RESUME.
    pub pause: std::sync::Arc<crate::admin::pause::Pause>,
    /// TLS offered to clients (`[tls]`).
    pub client_tls: crate::client::tls::ClientTls,
    /// Client limit and the startup queue.
    pub admission: super::admission::Admission,
    /// Failed-login throttling.
    pub auth_throttle: crate::auth::throttle::Throttle,
    /// What the health probes last saw of each shard.
    pub health: Arc<crate::backend::health::Health>,
    /// Whether a shard holds a sharded table, made there directly, that cannot be routed by.
    pub key_columns: Arc<crate::backend::key_columns::Verdict>,
    /// Catalog facts about shards (type OIDs, column collations), on control connections.
    pub catalog: crate::backend::catalog::Catalog,
    /// Key values drawn from sequences for sharded tables (see `executor::key_sequence`).
    pub key_blocks: crate::executor::key_blocks::KeyBlocks,
    /// Server connections shared by several-shard sessions.
    pub pools: crate::pool::Pools,
}

/// Recovery runs from the proxy's context without knowing the rest of it.
impl AsRef<crate::txn::TxnContext> for ProxyContext {
    fn as_ref(&self) -> &crate::txn::TxnContext {
        &self.txn
    }
}
