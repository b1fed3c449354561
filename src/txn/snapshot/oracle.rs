//! The timestamp oracle service: hands out timestamps and runs the gate (docs/snapshot.md). The same
//! service runs embedded in a proxy or standalone (`shardgate oracle`, see `server`).
//!
//! Invariants:
//! - A timestamp is issued only below the high-water mark persisted on the first shard
//!   (`shardgate.oracle_state`), so timestamps keep increasing across restarts.
//! - Before any grant, the service rebuilds the commit windows it cannot know about: every
//!   prepared transaction of ours on any shard is an open window on its shards and its decider,
//!   held until no branch of that gid is prepared any more (recovery or its proxy finished it).
//!   A proxy that dies while holding a window leaves it held the same way (`orphan`).
//! - A request that is abandoned while waiting (its session ended) is withdrawn, so it cannot
//!   block the queue.

use super::clock::{now_ms, Clock};
use super::gate::{Class, GateCore};
use crate::backend::control;
use crate::config::ShardTarget;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

struct State {
    clock: Clock,
    gate: GateCore,
    wakers: HashMap<u64, oneshot::Sender<()>>,
    /// Windows held for a gid until it has no prepared branch left, by gid.
    orphaned: HashMap<String, u64>,
}

pub struct OracleService {
    state: Mutex<State>,
    shards: Vec<ShardTarget>,
    timeout: Duration,
    /// Serializes high-water writes, and keeps the connection they use.
    persisting: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
    /// A background high-water write is under way.
    raising: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for OracleService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OracleService")
    }
}

const STATE_SQL: &str = "CREATE TABLE IF NOT EXISTS shardgate.oracle_state (id int PRIMARY KEY, high_water bigint NOT NULL)";

impl OracleService {
    /// Reads the high-water mark, rebuilds open windows from the shards, and starts the task
    /// that closes them.
    pub async fn start(
        shards: Vec<ShardTarget>,
        timeout: Duration,
    ) -> Result<Arc<OracleService>, String> {
        let home = control::connect(&shards[0], timeout).await?;
        home.batch_execute(STATE_SQL)
            .await
            .map_err(|e| control::describe(&e))?;
        let hw: i64 = home
            .query_opt(
                "SELECT high_water FROM shardgate.oracle_state WHERE id = 1",
                &[],
            )
            .await
            .map_err(|e| control::describe(&e))?
            .map(|r| r.get(0))
            .unwrap_or(0);
        let svc = Arc::new(OracleService {
            state: Mutex::new(State {
                clock: Clock::new(hw as u64),
                gate: GateCore::default(),
                wakers: HashMap::new(),
                orphaned: HashMap::new(),
            }),
            shards,
            timeout,
            persisting: tokio::sync::Mutex::new(Some(home)),
            raising: std::sync::atomic::AtomicBool::new(false),
        });
        for (gid, shards) in svc.prepared().await? {
            let id = svc.timestamp().await?;
            let mut st = svc.lock();
            st.gate
                .request(id, Class::Commit, shards.into_iter().collect());
            st.orphaned.insert(gid, id);
        }
        let rebuilt = svc.lock().orphaned.len();
        if rebuilt > 0 {
            tracing::info!(windows = rebuilt, "oracle: commit windows of unfinished transactions stay closed to snapshots until they are resolved");
        }
        svc.publish();
        let watcher = Arc::downgrade(&svc);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let Some(svc) = watcher.upgrade() else { return };
                svc.close_finished().await;
            }
        });
        Ok(svc)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Our prepared gids and the shards whose windows they keep open (branches and decider).
    async fn prepared(&self) -> Result<HashMap<String, BTreeSet<usize>>, String> {
        let mut out: HashMap<String, BTreeSet<usize>> = HashMap::new();
        for (i, s) in self.shards.iter().enumerate() {
            let c = control::connect(s, self.timeout).await?;
            let rows = c
                .query(
                    "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() AND gid LIKE 'sg\\_%'",
                    &[],
                )
                .await
                .map_err(|e| format!("shard {}: {}", s.name, control::describe(&e)))?;
            for r in rows {
                let gid: String = r.get(0);
                let Some(decider) = crate::txn::gid::decider(&gid) else {
                    continue;
                };
                let entry = out.entry(gid.clone()).or_default();
                entry.insert(i);
                if let Some(d) = self.shards.iter().position(|s| s.name == decider) {
                    entry.insert(d);
                }
            }
        }
        Ok(out)
    }

    /// Releases orphaned windows whose gid has no prepared branch left.
    async fn close_finished(&self) {
        if self.lock().orphaned.is_empty() {
            return;
        }
        let Ok(still) = self.prepared().await else {
            return;
        };
        let done: Vec<u64> = {
            let mut st = self.lock();
            let gone: Vec<String> = st
                .orphaned
                .keys()
                .filter(|g| !still.contains_key(*g))
                .cloned()
                .collect();
            gone.iter().filter_map(|g| st.orphaned.remove(g)).collect()
        };
        for id in done {
            self.release(id);
        }
    }

    /// A new timestamp, below the persisted high-water mark. The mark is raised in the
    /// background when a third of its window is used, so a caller waits only if timestamps
    /// outrun that write.
    pub async fn timestamp(self: &Arc<Self>) -> Result<u64, String> {
        loop {
            let want = {
                let mut st = self.lock();
                let now = now_ms();
                let want = st.clock.wanted_limit(now);
                if let Some(ts) = st.clock.next(now) {
                    drop(st);
                    metrics::counter!(crate::metrics::TIMESTAMPS).increment(1);
                    if let Some(limit) = want {
                        self.raise_in_background(limit);
                    }
                    return Ok(ts);
                }
                want.unwrap_or_else(|| st.clock.last() + super::clock::WINDOW)
            };
            self.persist(want).await?;
        }
    }

    fn raise_in_background(self: &Arc<Self>, limit: u64) {
        use std::sync::atomic::Ordering;
        if self.raising.swap(true, Ordering::SeqCst) {
            return;
        }
        let svc = self.clone();
        tokio::spawn(async move {
            if let Err(e) = svc.persist(limit).await {
                tracing::warn!("oracle: {e}");
            }
            svc.raising.store(false, Ordering::SeqCst);
        });
    }

    /// Persists `limit` as the high-water mark (if it raises it), then lets the clock use it.
    async fn persist(&self, limit: u64) -> Result<(), String> {
        let mut conn = self.persisting.lock().await;
        {
            let st = self.lock();
            if st.clock.wanted_limit(now_ms()).is_none() && st.clock.next_fits(now_ms()) {
                return Ok(());
            }
        }
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            *conn = Some(control::connect(&self.shards[0], self.timeout).await?);
        }
        let home = conn.as_ref().expect("connected above");
        let result = home
            .execute(
                "INSERT INTO shardgate.oracle_state (id, high_water) VALUES (1, $1) \
                 ON CONFLICT (id) DO UPDATE SET high_water = greatest(shardgate.oracle_state.high_water, excluded.high_water)",
                &[&(limit as i64)],
            )
            .await;
        if let Err(e) = result {
            *conn = None;
            return Err(format!(
                "cannot persist the oracle's high-water mark: {}",
                control::describe(&e)
            ));
        }
        self.lock().clock.raise_limit(limit);
        Ok(())
    }

    /// Waits for the gate (class, shards) and returns the grant's timestamp, which is also its
    /// id for `release`. Dropping the future while it waits withdraws the request.
    pub async fn acquire(
        self: &Arc<Self>,
        class: Class,
        shards: Vec<usize>,
    ) -> Result<u64, String> {
        let id = self.timestamp().await?;
        if crate::failpoint::armed(crate::failpoint::GATE_OFF) {
            return Ok(id);
        }
        let started = std::time::Instant::now();
        let rx = {
            let mut st = self.lock();
            let now = st.gate.request(id, class, shards);
            let mine = now.contains(&id);
            let rx = (!mine).then(|| {
                let (tx, rx) = oneshot::channel();
                st.wakers.insert(id, tx);
                rx
            });
            wake(&mut st, &now);
            rx
        };
        self.publish();
        if let Some(rx) = rx {
            let mut guard = Withdraw {
                svc: self,
                id: Some(id),
            };
            let _ = rx.await;
            guard.id = None;
        }
        let label = match class {
            Class::Commit => "commit",
            Class::Snapshot => "snapshot",
        };
        metrics::histogram!(crate::metrics::GATE_WAIT_SECONDS, "class" => label)
            .record(started.elapsed().as_secs_f64());
        if class == Class::Snapshot {
            metrics::counter!(crate::metrics::SNAPSHOTS).increment(1);
        }
        Ok(id)
    }

    pub fn release(&self, id: u64) {
        {
            let mut st = self.lock();
            st.wakers.remove(&id);
            let now = st.gate.release(id);
            wake(&mut st, &now);
        }
        self.publish();
    }

    /// A commit window whose holder vanished: keep it until `gid` is resolved.
    pub fn orphan(&self, id: u64, gid: String) {
        self.lock().orphaned.insert(gid, id);
    }

    fn publish(&self) {
        let open = self.lock().gate.open_windows();
        metrics::gauge!(crate::metrics::WINDOWS_OPEN).set(open as f64);
    }
}

fn wake(st: &mut State, ids: &[u64]) {
    for id in ids {
        if let Some(tx) = st.wakers.remove(id) {
            let _ = tx.send(());
        }
    }
}

/// Withdraws a waiting request whose waiter went away.
struct Withdraw<'a> {
    svc: &'a OracleService,
    id: Option<u64>,
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.svc.release(id);
        }
    }
}
