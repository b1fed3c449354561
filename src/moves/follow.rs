//! A running proxy's part in placement changes. Every refresh interval it looks at the first
//! shard (one query, `backend::move_journal::look`): it registers (`backend::proxy_registry`),
//! takes up a newer placement version, reports the unfinished move's progress as metrics, and
//! takes part in a move's cut-over:
//!
//! - While a move is under way it looks every 50 ms, so that it notices the cut-over at once.
//! - When a cut-over is requested, it holds new transactions (sessions finish the one they are
//!   in) and, once none is open, acknowledges; then it looks every 20 ms.
//! - It lifts the hold only when it routes by the cluster's newest version: after the move is
//!   done (the new version), or given up (the old one).
//! - If the hold runs out with the move still in its cut-over (the mover died or stalled), it
//!   settles the cut-over's distributed transaction (`txn::recovery::settle`) before going on:
//!   fenced, the mover can no longer commit it, and a decided one is committed everywhere, so
//!   the proxy goes on by the placement that holds, never by one that might still change.
//!
//! Invariant: while a cut-over this proxy acknowledged is open, no session of it starts a
//! transaction, so no read or write of it can see the rows on both sides or on neither.

use crate::admin::clients::Clients;
use crate::admin::pause::{Pause, Reason};
use crate::backend::move_journal::{self, Look, State};
use crate::backend::proxy_registry::{self, Me};
use crate::backend::{control, placement_store};
use crate::config::ShardTarget;
use crate::placement::record::Recorded;
use crate::placement::HOME;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a proxy looks while it holds for a cut-over: the hold lasts until it looks again.
const HOLDING_INTERVAL: Duration = Duration::from_millis(20);
/// How often it looks while a move is under way, so that it notices the cut-over at once.
const MOVING_INTERVAL: Duration = Duration::from_millis(50);

/// What the follower acts on in its proxy.
pub struct Proxy {
    pub pause: Arc<Pause>,
    pub clients: Clients,
    pub adopt: Box<dyn Fn(Recorded) + Send + Sync>,
}

struct Hold {
    gid: String,
    since: Instant,
    acknowledged: bool,
}

pub struct Follower {
    shards: Vec<ShardTarget>,
    me: Me,
    timeout: Duration,
    known: i64,
    /// The newest version already reported as not routable, so it is logged once.
    reported: i64,
    home: Option<tokio_postgres::Client>,
    hold: Option<Hold>,
    /// The cut-over gid last settled after its hold ran out.
    settled: Option<String>,
    /// A move is under way.
    moving: bool,
    proxy: Proxy,
}

impl Follower {
    pub fn new(
        shards: Vec<ShardTarget>,
        me: Me,
        timeout: Duration,
        known: i64,
        proxy: Proxy,
    ) -> Follower {
        Follower {
            shards,
            me,
            timeout,
            known,
            reported: known,
            home: None,
            hold: None,
            settled: None,
            moving: false,
            proxy,
        }
    }

    /// Looks once. Called before the proxy accepts its first client too, so a proxy that starts
    /// during a cut-over holds from its first session on.
    pub async fn look(&mut self) {
        if self.home.as_ref().is_none_or(|c| c.is_closed()) {
            self.home = control::connect(&self.shards[HOME], self.timeout)
                .await
                .ok();
        }
        let Some(client) = &self.home else {
            if self.hold.is_some() {
                tracing::warn!("holding new transactions for a slot move's cut-over, and the first shard cannot be reached to see it end");
            }
            return;
        };
        if let Err(e) = proxy_registry::register(client, &self.me, self.known).await {
            tracing::debug!("proxy registration: {e}");
        }
        let look = match move_journal::look(client).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!("placement check: {}", control::describe(&e));
                self.home = None;
                return;
            }
        };
        self.take_up(look.newest).await;
        report_progress(&look);
        self.moving = look.active.is_some();
        match &look.active {
            Some(m) if m.state == State::Cutover && m.in_time => {
                let gid = m.cutover_gid.clone().unwrap_or_default();
                self.hold_for(gid).await;
            }
            Some(m) if m.state == State::Cutover => {
                let gid = m.cutover_gid.clone().unwrap_or_default();
                if self.settled.as_deref() != Some(&gid) {
                    match crate::txn::recovery::settle(&self.shards, &gid, self.timeout).await {
                        Ok(outcome) => {
                            tracing::warn!(
                                move_id = m.id,
                                outcome = if outcome == 'c' { "moved" } else { "not moved" },
                                "a slot move's cut-over outlasted its hold; settled it"
                            );
                            self.settled = Some(gid);
                        }
                        Err(e) => {
                            tracing::error!("a slot move's cut-over outlasted its hold and cannot be settled yet: {e}");
                            return;
                        }
                    }
                    // The outcome may be a newer version.
                    if let Some(client) = &self.home {
                        if let Ok(v) = placement_store::newest_version(client).await {
                            self.take_up(v.unwrap_or(0)).await;
                        }
                    }
                }
                self.release(look.newest.max(self.known));
            }
            _ => self.release(look.newest),
        }
    }

    /// Looks forever: every refresh interval, every 50 ms while a move is under way, and every
    /// 20 ms while holding.
    pub async fn run(mut self) {
        loop {
            let interval = if self.hold.is_some() {
                HOLDING_INTERVAL
            } else if self.moving {
                MOVING_INTERVAL
            } else {
                Duration::from_secs_f64(self.me.refresh_secs)
            };
            tokio::time::sleep(interval).await;
            self.look().await;
        }
    }

    async fn take_up(&mut self, newest: i64) {
        if newest <= self.known {
            return;
        }
        match placement_store::current(&self.shards, self.timeout).await {
            Ok(Some(recorded)) if recorded.version > self.known => {
                self.known = recorded.version;
                (self.proxy.adopt)(recorded);
                // Registered at once: whoever recorded the version may be waiting for it.
                if let Some(client) = &self.home {
                    if let Err(e) = proxy_registry::register(client, &self.me, self.known).await {
                        tracing::debug!("proxy registration: {e}");
                    }
                }
            }
            Ok(_) => {}
            Err(e) if newest > self.reported => {
                self.reported = newest;
                tracing::error!(
                    version = newest,
                    "cannot route by the cluster's new placement, so this proxy's writes will be refused: {e}"
                );
            }
            Err(e) => tracing::debug!("placement check: {e}"),
        }
    }

    async fn hold_for(&mut self, gid: String) {
        if self.hold.as_ref().is_none_or(|h| h.gid != gid) {
            self.proxy.pause.hold(Reason::Cutover, true);
            tracing::info!("holding new transactions for a slot move's cut-over");
            self.hold = Some(Hold {
                gid,
                since: Instant::now(),
                acknowledged: false,
            });
        }
        let Some(hold) = &mut self.hold else { return };
        if hold.acknowledged || self.proxy.clients.busy() > 0 {
            return;
        }
        if let Some(client) = &self.home {
            match move_journal::acknowledge(client, &self.me.id, &hold.gid).await {
                Ok(()) => hold.acknowledged = true,
                Err(e) => tracing::debug!("cut-over acknowledgement: {}", control::describe(&e)),
            }
        }
    }

    /// Lifts the hold, unless the proxy is still behind the cluster's `newest` version.
    fn release(&mut self, newest: i64) {
        if self.known < newest {
            return;
        }
        if let Some(hold) = self.hold.take() {
            self.proxy.pause.hold(Reason::Cutover, false);
            let held = hold.since.elapsed();
            metrics::histogram!(crate::metrics::MOVE_HOLD_SECONDS).record(held.as_secs_f64());
            tracing::info!(
                held_ms = held.as_millis() as u64,
                version = self.known,
                "new transactions go on after a slot move's cut-over"
            );
        }
    }
}

fn report_progress(look: &Look) {
    let (copied, total, lag) = look
        .active
        .as_ref()
        .map_or((0, 0, 0), |m| (m.rows_copied, m.rows_total, m.lag));
    metrics::gauge!(crate::metrics::MOVE_ROWS_COPIED).set(copied as f64);
    metrics::gauge!(crate::metrics::MOVE_ROWS_TOTAL).set(total as f64);
    metrics::gauge!(crate::metrics::MOVE_CATCHUP_LAG).set(lag as f64);
}
