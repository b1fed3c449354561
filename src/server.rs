//! A running proxy: the listener, the accept loop, building the shared context, start-up checks
//! and shutdown.
//!
//! `Proxy::start` refuses to start when a shard cannot be reached, naming it, because a proxy
//! that accepts clients it cannot serve only moves the failure somewhere harder to see.

use crate::auth::UserDirectory;
use crate::backend;
use crate::client::cancel::CancelRegistry;
use crate::config::{Config, ShardTarget};
use crate::frontend::{self, ProxyContext};
use crate::start_progress::reported;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{error, info};

/// Errors that stop a proxy from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    ShardUnreachable(String),
}

/// A started proxy. Dropping it does not stop it; call `shutdown`.
pub struct Proxy {
    pub local_addr: SocketAddr,
    ctx: Arc<ProxyContext>,
    stop: Arc<crate::shutdown::Sender>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Each shard's pool figures, as SHOW POOLS gives them.
    pub fn pool_stats(&self) -> Vec<crate::pool::PoolStats> {
        self.ctx.pools.shards.iter().map(|p| p.stats()).collect()
    }

    /// Checks every shard, binds the listener and starts accepting clients.
    pub async fn start(config: &Config) -> Result<Proxy, StartError> {
        let users = UserDirectory::from_config(&config.users).map_err(StartError::Config)?;
        let placement = config.placement().map_err(StartError::Config)?;
        let mut ctx = ProxyContext {
            shards: config.shard_targets(),
            live: crate::reload::Live::new(config, placement, users),
            cancel: CancelRegistry::default(),
            connect_timeout: Duration::from_secs(config.server.connect_timeout_secs),
            max_message_bytes: config.server.max_message_bytes,
            text_order_c: false,
            pinned_settings: vec![],
            txn: crate::txn::TxnContext::new(
                &config.transactions,
                config.shard_targets(),
                Duration::from_secs(config.server.connect_timeout_secs),
            ),
            clients: Default::default(),
            pause: Default::default(),
            client_tls: crate::client::tls::ClientTls::from_config(&config.tls)
                .map_err(StartError::Config)?,
            admission: crate::frontend::admission::Admission::new(
                config.server.max_client_connections,
                config.server.max_pending_startups,
            ),
            auth_throttle: crate::auth::throttle::Throttle::default(),
            health: Arc::new(crate::backend::health::Health::new(config.shards.len())),
            key_columns: Default::default(),
            catalog: crate::backend::catalog::Catalog::new(
                config.shard_targets(),
                Duration::from_secs(config.server.connect_timeout_secs),
            ),
            key_blocks: Default::default(),
            pools: crate::pool::Pools::new(
                &config.shard_targets(),
                &config.pool,
                Duration::from_secs(config.server.connect_timeout_secs),
            ),
        };
        raise_open_files_limit();
        crate::failpoint::validate().map_err(StartError::Config)?;
        for shard in &ctx.shards {
            // Registered at zero so the series exists before the first error.
            metrics::counter!(crate::metrics::BACKEND_CONNECT_ERRORS, "shard" => shard.name.clone()).absolute(0);
        }
        reported("checking that every shard answers", check_shards(&ctx)).await?;
        if ctx.shards.len() > 1 {
            use crate::backend::same_database::{check, SameDatabase};
            let twice = check(&ctx.shards, ctx.connect_timeout);
            reported("checking that no database is listed as two shards", twice)
                .await
                .map_err(|e| match e {
                    SameDatabase::Unreachable(e) => StartError::ShardUnreachable(e),
                    SameDatabase::Twice(e) => StartError::Config(e),
                })?;
            for shard in &ctx.shards {
                let prepare = crate::txn::schema::prepare_shard(shard, ctx.connect_timeout);
                reported(
                    format!("creating shardgate's tables on shard {}", shard.name),
                    prepare,
                )
                .await
                .map_err(StartError::ShardUnreachable)?;
            }
            let adopt = adopt_recorded_placement(&ctx, config);
            reported("reading the placement recorded on the shards", adopt).await?;
            let keys = check_key_columns(&ctx);
            reported("checking the key columns of sharded tables", keys).await?;
            let placement = ctx.live.placement();
            let judged = crate::backend::per_shard_constraints::warn_of_existing(
                &ctx.shards,
                ctx.connect_timeout,
                &placement,
            );
            reported("looking for constraints each shard checks alone", judged)
                .await
                .map_err(StartError::ShardUnreachable)?;
            let functions = crate::backend::own_functions::read(&ctx.shards, ctx.connect_timeout);
            let functions = reported("reading the shards' own functions", functions)
                .await
                .map_err(StartError::ShardUnreachable)?;
            ctx.live.set_functions(functions);
        }
        ctx.text_order_c = true;
        for shard in &ctx.shards {
            let order = text_order_is_c(shard, ctx.connect_timeout);
            ctx.text_order_c &=
                reported(format!("reading shard {}'s collation", shard.name), order).await;
        }
        ctx.pinned_settings = reported(
            "reading the shards' settings",
            crate::backend::output_settings::pinned(&ctx.shards, ctx.connect_timeout),
        )
        .await
        .map_err(|e| match e {
            crate::backend::output_settings::Unsettled::Unreachable(e) => {
                StartError::ShardUnreachable(e)
            }
            crate::backend::output_settings::Unsettled::Refused(e) => StartError::Config(e),
        })?;
        if !ctx.pinned_settings.is_empty() {
            tracing::warn!(
                settings = ?ctx.pinned_settings,
                "the shards differ in settings that decide how values are written; several-shard \
                 sessions start with the first shard's values on every shard"
            );
        }
        if ctx.shards.len() > 1 && config.transactions.snapshot {
            ctx.txn.oracle = Some(if config.transactions.oracle == "embedded" {
                crate::txn::snapshot::client::Oracle::Embedded(
                    reported(
                        "starting the timestamp oracle",
                        crate::txn::snapshot::oracle::OracleService::start(
                            ctx.shards.clone(),
                            ctx.connect_timeout,
                        ),
                    )
                    .await
                    .map_err(StartError::ShardUnreachable)?,
                )
            } else {
                crate::txn::snapshot::client::Oracle::Remote(std::sync::Arc::new(
                    crate::txn::snapshot::client::Remote::new(
                        config.transactions.oracle.clone(),
                        ctx.connect_timeout,
                    ),
                ))
            });
        }
        let ctx = Arc::new(ctx);
        let listener = TcpListener::bind(&config.server.listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: config.server.listen.clone(),
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Listen {
            addr: config.server.listen.clone(),
            source,
        })?;
        let (stop, stop_rx) = crate::shutdown::channel();
        let stop = Arc::new(stop);
        let hurry = stop.clone();
        let recovery = (ctx.shards.len() > 1)
            .then(|| tokio::spawn(crate::txn::recovery::background(ctx.clone())));
        let probing = config.server.health_check_interval_secs > 0;
        let every = Duration::from_secs(config.server.health_check_interval_secs);
        let health = probing.then(|| {
            tokio::spawn(crate::backend::health::run(
                ctx.health.clone(),
                ctx.shards.clone(),
                every,
                ctx.connect_timeout,
            ))
        });
        let keys = (probing && ctx.shards.len() > 1).then(|| {
            let live = ctx.clone();
            tokio::spawn(crate::backend::key_columns::watch(
                ctx.key_columns.clone(),
                ctx.shards.clone(),
                every,
                ctx.connect_timeout,
                {
                    let live = live.clone();
                    move || live.live.placement()
                },
                move |tables| live.live.set_unroutable(tables),
            ))
        });
        let aggregates = (probing && ctx.shards.len() > 1).then(|| {
            let live = ctx.clone();
            tokio::spawn(crate::backend::own_functions::watch(
                ctx.shards.clone(),
                every,
                ctx.connect_timeout,
                move |found| live.live.set_functions(found),
            ))
        });
        let me = crate::backend::proxy_registry::Me::new(
            local_addr.to_string(),
            config.placement.refresh_interval_secs,
        );
        let deadlocks = (ctx.shards.len() > 1).then(|| {
            tokio::spawn(crate::txn::deadlock::watch(
                me.id.clone(),
                ctx.shards.clone(),
                ctx.cancel.clone(),
                ctx.connect_timeout,
            ))
        });
        // The first look before the first client: a proxy that starts during a slot move's
        // cut-over holds from its first session on.
        let placement = if ctx.shards.len() > 1 {
            let adopting = ctx.clone();
            let mut follower = crate::moves::follow::Follower::new(
                ctx.shards.clone(),
                me.clone(),
                ctx.connect_timeout,
                ctx.live.placement().version,
                crate::moves::follow::Proxy {
                    pause: ctx.pause.clone(),
                    clients: ctx.clients.clone(),
                    adopt: Box::new(move |recorded| {
                        info!(
                            version = recorded.version,
                            "routing by the cluster's new placement"
                        );
                        metrics::gauge!(crate::metrics::PLACEMENT_VERSION)
                            .set(recorded.version as f64);
                        adopting.live.adopt_slots(recorded);
                    }),
                },
            );
            reported("looking for a slot move in progress", follower.look()).await;
            Some(tokio::spawn(follower.run()))
        } else {
            None
        };
        let accepting = ctx.clone();
        let task = tokio::spawn(async move {
            accept_loop(listener, accepting.clone(), stop_rx, hurry).await;
            let registered = placement.is_some();
            for background in [recovery, health, keys, aggregates, deadlocks, placement]
                .into_iter()
                .flatten()
            {
                background.abort();
            }
            // A stopped proxy leaves the registry at once, so a slot move does not wait for
            // it to age out.
            if registered {
                crate::backend::proxy_registry::leave(
                    &accepting.shards,
                    &me.id,
                    accepting.connect_timeout,
                )
                .await;
            }
        });
        info!(%local_addr, shards = config.shards.len(), "shardgate listening");
        Ok(Proxy {
            local_addr,
            ctx,
            stop,
            task,
        })
    }

    /// As `start`, with the operator's HTTP endpoint on `[metrics] listen` (unless empty):
    /// metrics, health and readiness (see `http`). What the binary and the demo run.
    pub async fn start_with_endpoint(config: &Config) -> Result<Proxy, String> {
        let listen = &config.metrics.listen;
        let addr: Option<SocketAddr> = if listen.is_empty() {
            None
        } else {
            Some(listen.parse().map_err(|e| format!("metrics.listen: {e}"))?)
        };
        // Before the proxy starts, so that nothing it records is lost; also without an
        // endpoint, for the admin console's SHOW STATS.
        let handle = crate::metrics::install_recorder()?;
        crate::metrics::spawn_upkeep(handle.clone());
        let proxy = Proxy::start(config).await.map_err(|e| e.to_string())?;
        if let Some(addr) = addr {
            let local = crate::http::serve(addr, handle, proxy.readiness()).await?;
            info!(%local, "metrics, health and readiness at /metrics, /healthz, /readyz");
        }
        Ok(proxy)
    }

    /// The config file that SIGHUP and the admin console's RELOAD read.
    pub fn set_config_path(&self, path: std::path::PathBuf) {
        self.ctx.live.set_source(path);
    }

    /// Reads the config file again and applies what a running proxy can change (see
    /// `reload`). On any error the running config stays as it was.
    pub async fn reload(&self) -> Result<crate::reload::Reloaded, String> {
        let ctx = &self.ctx;
        ctx.live.reload(&ctx.shards, ctx.connect_timeout).await
    }

    /// Fast stop: stops accepting and ends every session now (clients get SQLSTATE 57P01).
    pub async fn shutdown(self) {
        self.begin_stop(false);
        self.stopped().await;
    }

    /// Starts stopping, `graceful`ly or fast (see `shutdown`); `stopped` waits for the end.
    pub fn begin_stop(&self, graceful: bool) {
        use crate::shutdown::Phase;
        let phase = if graceful {
            Phase::Draining
        } else {
            Phase::Now
        };
        crate::shutdown::advance(&self.stop, phase);
    }

    /// For `/readyz`: not stopping, no shard failing its health probes, and every sharded
    /// table's key column one the proxy can route by.
    pub fn readiness(&self) -> crate::http::Readiness {
        let (ctx, stop) = (self.ctx.clone(), self.stop.subscribe());
        Arc::new(move || {
            if *stop.borrow() != crate::shutdown::Phase::Running {
                return Err("stopping".into());
            }
            if let Some(shard) = ctx.health.first_down(&ctx.shards) {
                return Err(format!("shard {shard} is not answering its health probes"));
            }
            match ctx.key_columns.refusal() {
                Some(refusal) => Err(refusal),
                None => Ok(()),
            }
        })
    }

    /// Something that can turn a graceful stop in progress into a fast one.
    pub fn stopper(&self) -> Arc<crate::shutdown::Sender> {
        self.stop.clone()
    }

    /// Returns when a stop has ended every session.
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

/// Routes by the slot table the cluster records rather than the file's (see
/// `placement::record`), recording the file's on the cluster's first start.
async fn adopt_recorded_placement(ctx: &ProxyContext, config: &Config) -> Result<(), StartError> {
    use crate::backend::placement_store::{establish, EstablishError};
    let file = ctx.live.placement().slots.clone();
    let pinned = config.placement.slots.is_some();
    let decision = establish(&ctx.shards, &file, pinned, ctx.connect_timeout)
        .await
        .map_err(|e| match e {
            EstablishError::Shard(e) => StartError::ShardUnreachable(e),
            EstablishError::Refused(e) => StartError::Config(e),
        })?;
    if !decision.write.is_empty() {
        tracing::info!(
            version = decision.current.version,
            shards = decision.write.len(),
            "recorded the cluster's placement on shards that lacked it"
        );
    }
    if decision.current.table != file {
        tracing::info!(
            version = decision.current.version,
            "routing by the cluster's recorded slot table, which differs from the one the config derives"
        );
    }
    for name in &decision.empty {
        tracing::warn!(
            shard = %name,
            "shard owns no slots: it holds no rows of sharded tables until slots are moved to it"
        );
    }
    metrics::gauge!(crate::metrics::PLACEMENT_VERSION).set(decision.current.version as f64);
    ctx.live.adopt_slots(decision.current);
    Ok(())
}

/// Refuses to start on a sharded table whose key column a shard holds with a type or
/// collation the proxy cannot route by (see `backend::key_columns`).
async fn check_key_columns(ctx: &ProxyContext) -> Result<(), StartError> {
    use crate::backend::key_columns::{check, KeyColumns};
    let placement = ctx.live.placement();
    check(&ctx.shards, ctx.connect_timeout, &placement, |_| true)
        .await
        .map_err(|e| match e {
            KeyColumns::Unreachable(e) => StartError::ShardUnreachable(e),
            KeyColumns::Refused(e) => StartError::Config(e),
        })
}

async fn check_shards(ctx: &ProxyContext) -> Result<(), StartError> {
    for shard in &ctx.shards {
        let conn = backend::connect(shard, &[], ctx.connect_timeout)
            .await
            .map_err(|e| StartError::ShardUnreachable(e.to_string()))?;
        drop(conn);
        info!(shard = %shard.name, target = %shard.describe(), "shard reachable");
    }
    Ok(())
}

/// Whether the shard's database orders text by code point, which the merge relies on for text
/// sort keys: the C and POSIX locales, and C.UTF-8 (glibc orders it by code point, which for
/// UTF-8 is byte order), all from the libc provider. Any failure to find out counts as "no":
/// merges on text are then refused.
async fn text_order_is_c(shard: &ShardTarget, timeout: Duration) -> bool {
    let Ok(client) = backend::control::connect(shard, timeout).await else {
        return false;
    };
    match client
        .query_one(
            "select datcollate::text, datlocprovider::text, pg_encoding_to_char(encoding) \
             from pg_database where datname = current_database()",
            &[],
        )
        .await
    {
        Ok(row) => code_point_order(
            &row.get::<_, String>(0),
            &row.get::<_, String>(1),
            &row.get::<_, String>(2),
        ),
        Err(_) => false,
    }
}

/// Whether a database with this collation, locale provider and encoding orders text by code
/// point (byte order of its encoding).
fn code_point_order(collate: &str, provider: &str, encoding: &str) -> bool {
    if provider != "c" {
        return false;
    }
    match collate {
        "C" | "POSIX" => true,
        "C.UTF-8" | "C.utf8" => encoding == "UTF8",
        _ => false,
    }
}

async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<ProxyContext>,
    mut stop: crate::shutdown::Receiver,
    hurry: Arc<crate::shutdown::Sender>,
) {
    let mut sessions = tokio::task::JoinSet::new();
    let session_stop = stop.clone();
    let mut backoff = AcceptBackoff::default();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    backoff.succeeded();
                    match ctx.admission.admit() {
                        Some(admitted) => {
                            sessions.spawn(frontend::handle_client(ctx.clone(), socket, peer, session_stop.clone(), admitted));
                        }
                        None => {
                            sessions.spawn(frontend::refuse_client(socket, peer));
                        }
                    }
                }
                Err(e) => {
                    // Usually EMFILE: sleep, longer each time, and log once in a while instead
                    // of once per attempt.
                    metrics::counter!(crate::metrics::ACCEPT_ERRORS).increment(1);
                    let pause = backoff.failed(&e);
                    tokio::time::sleep(pause).await;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            _ = crate::shutdown::requested(&mut stop) => break,
        }
    }
    drop(listener);
    let draining = *stop.borrow() == crate::shutdown::Phase::Draining;
    if draining {
        info!(
            sessions = sessions.len(),
            timeout_secs = ctx.live.timeouts().shutdown.as_secs(),
            "stopping: open transactions may finish"
        );
        tokio::select! {
            _ = tokio::time::timeout(ctx.live.timeouts().shutdown, all_ended(&mut sessions)) => {}
            _ = crate::shutdown::now(&mut stop) => {}
        }
        if !sessions.is_empty() {
            info!(
                sessions = sessions.len(),
                "stopping now: ending the sessions still open"
            );
            crate::shutdown::advance(&hurry, crate::shutdown::Phase::Now);
        }
    }
    // Sessions see the same signal and close themselves; give them a moment to say why.
    let _ = tokio::time::timeout(Duration::from_secs(5), all_ended(&mut sessions)).await;
}

async fn all_ended(sessions: &mut tokio::task::JoinSet<()>) {
    while sessions.join_next().await.is_some() {}
}

/// Pauses after failed accepts: 10 ms doubling to 1 s, and one log line per 5 s at most.
#[derive(Default)]
struct AcceptBackoff {
    failures: u32,
    suppressed: u64,
    last_log: Option<std::time::Instant>,
}

impl AcceptBackoff {
    fn failed(&mut self, e: &std::io::Error) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let now = std::time::Instant::now();
        if self
            .last_log
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(5))
        {
            error!(
                suppressed = self.suppressed,
                "accept failed: {e} (backing off; raise the open-files limit or lower server.max_client_connections)"
            );
            self.last_log = Some(now);
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
        Duration::from_millis(10u64 << self.failures.min(7)).min(Duration::from_secs(1))
    }

    fn succeeded(&mut self) {
        self.failures = 0;
    }
}

/// Raises the soft open-files limit to the hard limit: every client holds a socket per shard.
fn raise_open_files_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &raised);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::code_point_order;

    #[test]
    fn code_point_collations() {
        assert!(code_point_order("C", "c", "UTF8"));
        assert!(code_point_order("POSIX", "c", "SQL_ASCII"));
        assert!(code_point_order("C.UTF-8", "c", "UTF8"));
        assert!(code_point_order("C.utf8", "c", "UTF8"));
        assert!(!code_point_order("C.UTF-8", "c", "LATIN1"));
        assert!(!code_point_order("en_US.UTF-8", "c", "UTF8"));
        assert!(!code_point_order("C", "i", "UTF8"));
    }
}
