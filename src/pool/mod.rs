//! Server connections per shard, shared by the sessions of a several-shard cluster.
//!
//! A shard's pool hands out at most `size` connections at once (a semaphore permit travels with
//! each one), keeps returned ones idle, most recently used first, and closes them when they have
//! been idle or alive too long. A session waiting for a connection gets a clear error once the
//! checkout timeout passes, never an endless wait.
//!
//! Invariant: a connection is idle in the pool only outside any transaction, with nothing left
//! to read, and with the settings named by its `settings` fingerprint (see `settings`). Whoever
//! cannot promise that drops the connection instead of returning it; PostgreSQL then cleans up.

mod list_setting;
pub mod names;
pub mod pins;
pub mod sequences;
pub mod settings;

use crate::backend::{self, ShardReader, ShardStream, ShardWriter};
use crate::config::{PoolConfig, PoolMode, ShardTarget};
use crate::error::{sqlstate, PgError};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Named statements a connection may have received before it is retired: sessions in
/// transaction mode leave theirs behind (a Close reaches only the connections a session holds
/// at the time), so this bounds what a shard keeps per connection.
const MAX_NAMED_PARSES: u64 = 2000;

/// Every connection's id, unique in the process, so that "prepared on connection N" cannot be
/// confused with another connection.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The startup parameter that tells a shard which placement version a session routes by, so
/// that the shard's placement fence can refuse the writes of a session that has not seen a
/// newer one (see `backend::placement_store`). A startup parameter is the connection's reset
/// value, so a client's RESET ALL or DISCARD ALL keeps it.
pub const PLACEMENT_VERSION_PARAMETER: &str = "shardgate.placement_version";

/// Every pool of the process, whose gauges are set when metrics are read: a checkout and a
/// return happen per transaction, a scrape every few seconds.
static LIVE: Mutex<Vec<Weak<ShardPool>>> = Mutex::new(Vec::new());

fn publish_all() {
    if let Ok(mut live) = LIVE.lock() {
        live.retain(|pool| match pool.upgrade() {
            Some(p) => {
                p.publish();
                true
            }
            None => false,
        });
    }
}

/// One pool per shard, in shard order.
#[derive(Debug)]
pub struct Pools {
    pub mode: PoolMode,
    pub shards: Vec<Arc<ShardPool>>,
}

impl Pools {
    pub fn new(shards: &[ShardTarget], config: &PoolConfig, connect_timeout: Duration) -> Pools {
        let pools: Vec<Arc<ShardPool>> = shards
            .iter()
            .map(|t| {
                let mut pool = ShardPool::new(t.clone(), config, connect_timeout);
                pool.reads_strings = shards.len() > 1;
                Arc::new(pool)
            })
            .collect();
        for p in &pools {
            p.publish();
            spawn_reaper(Arc::downgrade(p));
        }
        if let Ok(mut live) = LIVE.lock() {
            live.extend(pools.iter().map(Arc::downgrade));
        }
        crate::metrics::refresh_before_render(publish_all);
        Pools {
            mode: config.mode,
            shards: pools,
        }
    }
}

#[derive(Debug)]
pub struct ShardPool {
    pub target: ShardTarget,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Idle>>,
    pub size: usize,
    checkout_timeout: Duration,
    idle_timeout: Duration,
    lifetime: Duration,
    connect_timeout: Duration,
    waiting: AtomicUsize,
    gauges: Gauges,
    /// Several shards: statements are routed by reading their text, so a connection must read
    /// plain strings as the proxy does (see `router::plan::string_syntax`).
    reads_strings: bool,
}

/// Whether a new connection's reported standard_conforming_strings is on (a server that does
/// not report it is taken to be on, as PostgreSQL has been since 9.1).
fn strings_read_as_the_proxy_reads_them(parameters: &[(String, String)]) -> bool {
    parameters
        .iter()
        .find(|(name, _)| name == crate::router::plan::string_syntax::NAME)
        .is_none_or(|(_, value)| value == "on")
}

/// The pool's series, looked up once: checkouts happen per transaction.
struct Gauges {
    active: metrics::Gauge,
    idle: metrics::Gauge,
    waiting: metrics::Gauge,
    wait: metrics::Histogram,
    timeouts: metrics::Counter,
}

impl std::fmt::Debug for Gauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gauges")
    }
}

impl Gauges {
    fn new(shard: &str) -> Gauges {
        let shard = shard.to_string();
        Gauges {
            active: metrics::gauge!(crate::metrics::POOL_ACTIVE, "shard" => shard.clone()),
            idle: metrics::gauge!(crate::metrics::POOL_IDLE, "shard" => shard.clone()),
            waiting: metrics::gauge!(crate::metrics::POOL_WAITING, "shard" => shard.clone()),
            wait: metrics::histogram!(crate::metrics::POOL_CHECKOUT_WAIT, "shard" => shard.clone()),
            timeouts: metrics::counter!(crate::metrics::POOL_CHECKOUT_TIMEOUTS, "shard" => shard),
        }
    }
}

struct Idle {
    conn: Pooled,
    /// When it has been idle too long (None: never). Deadlines, not start times, so that the
    /// check on every checkout is a comparison rather than a subtraction of clock readings.
    until: Option<Instant>,
}

/// A connection out of the pool: its socket, and what the session needs to know about it (the
/// lease, reached through `Deref`).
pub struct Pooled {
    pub stream: ShardStream,
    lease: Lease,
}

/// Everything about a checked-out connection but its socket, including the pool permit; a relay
/// that reads and writes the socket in two halves holds it on its own (see `Pooled::split`).
#[derive(Debug)]
pub struct Lease {
    /// The shard's BackendKeyData, for cancel requests.
    pub key: (i32, i32),
    /// What the shard announced at login (ParameterStatus).
    pub parameters: Vec<(String, String)>,
    /// Unique per physical connection.
    pub id: u64,
    /// Fingerprint of the session settings this connection carries (see `settings`).
    pub settings: u64,
    /// Named statements sent to it so far (see `MAX_NAMED_PARSES`).
    pub named_parses: u64,
    /// When its lifetime ends (None: never): it is closed when next returned or found idle.
    retire_at: Option<Instant>,
    /// The placement version it was tagged with at login (0: none).
    placement_version: i64,
    /// Held while checked out: the pool's limit is on connections in use.
    permit: Option<OwnedSemaphorePermit>,
}

impl std::ops::Deref for Pooled {
    type Target = Lease;
    fn deref(&self) -> &Lease {
        &self.lease
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Lease {
        &mut self.lease
    }
}

impl Pooled {
    /// The socket, for a relay that drives it itself, and the rest.
    pub fn into_parts(self) -> (ShardStream, Lease) {
        (self.stream, self.lease)
    }

    /// The socket's halves, for a relay that reads and writes concurrently, and the rest.
    pub fn split(self) -> (ShardReader, ShardWriter, Lease) {
        let (r, w) = self.stream.into_split();
        (r, w, self.lease)
    }
}

impl Lease {
    /// The connection whole again; None when the halves are not one socket's.
    pub fn reunite(self, r: ShardReader, w: ShardWriter) -> Option<Pooled> {
        Some(Pooled {
            stream: r.reunite(w)?,
            lease: self,
        })
    }

    /// Statements prepared on the connection are gone (DISCARD ALL, DEALLOCATE ALL): it
    /// counts as a new connection, so that no session takes one of its statements for
    /// still there.
    pub fn renumber(&mut self) {
        self.id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    }
}

/// Pool figures for SHOW POOLS and the gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub active: usize,
    pub idle: usize,
    pub waiting: usize,
    pub size: usize,
}

impl std::fmt::Debug for Pooled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pooled")
            .field("id", &self.id)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Idle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.conn.fmt(f)
    }
}

impl ShardPool {
    fn new(target: ShardTarget, config: &PoolConfig, connect_timeout: Duration) -> ShardPool {
        let gauges = Gauges::new(&target.name);
        ShardPool {
            target,
            permits: Arc::new(Semaphore::new(config.size)),
            idle: Mutex::new(Vec::new()),
            size: config.size,
            checkout_timeout: Duration::from_secs_f64(config.checkout_timeout_secs),
            idle_timeout: Duration::from_secs_f64(config.idle_timeout_secs),
            lifetime: Duration::from_secs_f64(config.lifetime_secs),
            connect_timeout,
            waiting: AtomicUsize::new(0),
            gauges,
            reads_strings: false,
        }
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            active: self.size - self.permits.available_permits(),
            idle: self.idle.lock().map(|i| i.len()).unwrap_or(0),
            waiting: self.waiting.load(Ordering::Relaxed),
            size: self.size,
        }
    }

    fn publish(&self) {
        let s = self.stats();
        self.gauges.active.set(s.active as f64);
        self.gauges.idle.set(s.idle as f64);
        self.gauges.waiting.set(s.waiting as f64);
    }

    /// A connection for a session: an idle one that is still open, or a new one. `extra` are
    /// startup parameters for a new connection (session mode passes the client's; transaction
    /// mode none, since the connection will serve many clients). `placement_version` is the
    /// version the session routes by; the connection carries it (0 for none: one shard).
    pub async fn checkout(
        &self,
        extra: &[(String, String)],
        placement_version: i64,
    ) -> Result<Pooled, PgError> {
        // A free permit is taken at once, without arming the timeout or reading the clock:
        // checkouts happen per transaction.
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => {
                self.gauges.wait.record(0.0);
                Ok(Ok(p))
            }
            Err(_) => {
                let started = Instant::now();
                self.waiting.fetch_add(1, Ordering::Relaxed);
                self.publish();
                let p = tokio::time::timeout(
                    self.checkout_timeout,
                    self.permits.clone().acquire_owned(),
                )
                .await;
                self.waiting.fetch_sub(1, Ordering::Relaxed);
                self.gauges.wait.record(started.elapsed().as_secs_f64());
                p
            }
        };
        let permit = match permit {
            Ok(Ok(p)) => p,
            // The semaphore is never closed; a timeout is the only way here.
            _ => {
                self.gauges.timeouts.increment(1);
                self.publish();
                return Err(PgError::fatal(
                    sqlstate::TOO_MANY_CONNECTIONS,
                    format!(
                        "no connection to shard {} became free within {:.1} s (the pool holds {})",
                        self.target.name,
                        self.checkout_timeout.as_secs_f64(),
                        self.size
                    ),
                )
                .with_hint(
                    "Other clients hold every server connection in open transactions: raise [pool] size, \
                     shorten those transactions, or see SHOW POOLS and SHOW CLIENTS on the admin console.",
                ));
            }
        };
        let reused = if extra.is_empty() {
            self.take_idle(placement_version)
        } else {
            None
        };
        let conn = match reused {
            Some(mut c) => {
                c.permit = Some(permit);
                Ok(c)
            }
            None => self.open(extra, permit, placement_version).await,
        };
        conn
    }

    /// The most recently returned idle connection that is still usable. One tagged with
    /// another placement version is closed: after a change, the old version's go.
    fn take_idle(&self, placement_version: i64) -> Option<Pooled> {
        let now = Instant::now();
        loop {
            let mut idle = self.idle.lock().ok()?.pop()?;
            if self.reusable(&mut idle, now, placement_version) {
                return Some(idle.conn);
            }
        }
    }

    /// `checkout` when it needs no wait and the connection no settings: a free permit and an
    /// idle connection that carries `settings` already. None leaves the pool as it was (but
    /// for stale connections closed), and the caller takes the `checkout` path; the relay
    /// checks out once per transaction, and this spares it that path's futures.
    pub fn checkout_now(&self, placement_version: i64, settings: u64) -> Option<Pooled> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        let now = Instant::now();
        loop {
            let mut idle = {
                let mut list = self.idle.lock().ok()?;
                if list.last()?.conn.settings != settings {
                    return None;
                }
                list.pop()?
            };
            if self.reusable(&mut idle, now, placement_version) {
                self.gauges.wait.record(0.0);
                idle.conn.permit = Some(permit);
                return Some(idle.conn);
            }
        }
    }

    /// Whether an idle connection may serve again: within its idle time and lifetime, of the
    /// placement version asked for, and still open.
    fn reusable(&self, idle: &mut Idle, now: Instant, placement_version: i64) -> bool {
        before(now, idle.until)
            && before(now, idle.conn.retire_at)
            && idle.conn.placement_version == placement_version
            && still_open(&mut idle.conn.stream)
    }

    async fn open(
        &self,
        extra: &[(String, String)],
        permit: OwnedSemaphorePermit,
        placement_version: i64,
    ) -> Result<Pooled, PgError> {
        let mut params = extra.to_vec();
        if placement_version > 0 {
            params.push((
                PLACEMENT_VERSION_PARAMETER.to_string(),
                placement_version.to_string(),
            ));
        }
        match backend::connect(&self.target, &params, self.connect_timeout).await {
            Ok(c) if self.reads_strings && !strings_read_as_the_proxy_reads_them(&c.parameters) => {
                metrics::counter!(crate::metrics::BACKEND_CONNECT_ERRORS, "shard" => self.target.name.clone())
                    .increment(1);
                tracing::error!(shard = %self.target.name, "the shard has standard_conforming_strings off; connection refused");
                Err(crate::router::plan::string_syntax::shard_refusal(
                    &self.target.name,
                ))
            }
            Ok(c) => Ok(Pooled {
                stream: c.stream,
                lease: Lease {
                    key: c.key,
                    parameters: c.parameters,
                    id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                    settings: settings::DEFAULTS,
                    named_parses: 0,
                    retire_at: Instant::now().checked_add(self.lifetime),
                    placement_version,
                    permit: Some(permit),
                },
            }),
            Err(e) => {
                metrics::counter!(crate::metrics::BACKEND_CONNECT_ERRORS, "shard" => self.target.name.clone())
                    .increment(1);
                tracing::warn!(shard = %self.target.name, "shard login failed: {e}");
                Err(crate::backend::shard_login_error(e))
            }
        }
    }

    /// Back from a session that left it outside any transaction with nothing unread.
    pub fn put(&self, mut conn: Pooled) {
        // The permit goes only once the connection is in the idle list: a checkout that got
        // the permit earlier would find the list empty and open one connection too many.
        let permit = conn.permit.take();
        let now = Instant::now();
        if conn.named_parses < MAX_NAMED_PARSES && before(now, conn.retire_at) {
            let until = now.checked_add(self.idle_timeout);
            if let Ok(mut idle) = self.idle.lock() {
                idle.push(Idle { conn, until });
            }
        }
        drop(permit);
    }

    /// A checked-out connection that is being closed instead of returned.
    pub fn discard(&self, conn: Pooled) {
        drop(conn);
        self.publish();
    }

    /// A lease that is being closed instead of returned (its halves are dropped too).
    pub fn discard_lease(&self, lease: Lease) {
        drop(lease);
        self.publish();
    }

    /// Closes idle connections past the idle timeout or their lifetime.
    fn reap(&self) {
        let now = Instant::now();
        if let Ok(mut idle) = self.idle.lock() {
            idle.retain(|i| before(now, i.until) && before(now, i.conn.retire_at));
        }
        self.publish();
    }
}

/// Whether `now` is before `deadline` (None: a deadline that never comes).
fn before(now: Instant, deadline: Option<Instant>) -> bool {
    deadline.is_none_or(|d| now < d)
}

/// Whether an idle connection is still open and silent. Anything it sent while idle (a FATAL
/// before the server closed it, a notice) means it is not worth keeping.
fn still_open(stream: &mut ShardStream) -> bool {
    use futures_util::FutureExt;
    use tokio::io::AsyncReadExt;
    let mut probe = [0u8; 64];
    stream.read(&mut probe).now_or_never().is_none()
}

fn spawn_reaper(pool: Weak<ShardPool>) {
    tokio::spawn(async move {
        loop {
            let every = match pool.upgrade() {
                Some(p) => {
                    (p.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(30))
                }
                None => return,
            };
            tokio::time::sleep(every).await;
            match pool.upgrade() {
                Some(p) => p.reap(),
                None => return,
            }
        }
    });
}
