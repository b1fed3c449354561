//! Moving slots between shards while clients keep working through any number of proxies
//! (`shardgate move-slots`), and a running proxy's part in it (`follow`).
//!
//! A move goes through these steps, each recorded in the move journal on the first shard
//! (`backend::move_journal`):
//!
//! 1. **Ready.** The target holds every declared table (reference tables are copied to it when
//!    it has none of their rows), and every sharded table gets the placement fence.
//! 2. **Copy.** On each source the moving slots' changes are captured from now on
//!    (`capture`), then their rows are copied into staging tables on the target, where no query
//!    sees them.
//! 3. **Catch up.** The logged keys are applied to the staging tables until few are left.
//! 4. **Cut over** (`cutover`). Every proxy holds new transactions; with none open, one
//!    distributed transaction applies the last keys, moves the staged rows into the target's
//!    tables, deletes them from the sources and records the new placement version on every
//!    shard. Proxies take the version up and go on.
//!
//! Invariants: rows are visible on the old owner until the cut-over commits and on the new one
//! from then on, and the placement version changes in the same transaction, so no reader or
//! writer finds a row twice or not at all. Until the cut-over commits, the old placement holds
//! and undoing the move (`abort`) only removes what the move created.

pub mod capture;
mod copy;
mod cutover;
pub mod follow;
pub mod progress;
mod setup;

use crate::backend::{control, move_journal, placement_store};
use crate::config::{Config, ShardTarget};
use crate::placement::{Placement, SlotTable, HOME};
use capture::MovingTable;
use copy::Shape;
use progress::Progress;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// What `move-slots` is asked to do.
#[derive(Debug, Clone)]
pub enum Action {
    /// Move the slots of these inclusive ranges to the named shard.
    Start {
        ranges: Vec<(u32, u32)>,
        target: String,
    },
    /// Finish the unfinished move: complete a committed cut-over, or copy again.
    Resume,
    /// Undo the unfinished move, unless its cut-over committed.
    Abort,
}

#[derive(Debug, Clone)]
pub struct Options {
    /// How long proxies hold new transactions for one cut-over attempt, at most.
    pub hold: Duration,
    /// Cut-over attempts before the move gives up (it stays resumable).
    pub attempts: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            hold: Duration::from_secs(5),
            attempts: 5,
        }
    }
}

/// How a move ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Moved {
        id: i64,
        version: i64,
        slots: usize,
        rows: u64,
        /// The first copy of the rows (catching up not included).
        copy: Duration,
        /// From asking the proxies to hold to the cut-over's commit everywhere.
        cutover: Duration,
    },
    NothingToMove,
    Aborted {
        id: i64,
    },
}

/// The CLI's closing line.
pub fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Moved {
            id,
            version,
            slots,
            rows,
            copy,
            cutover,
        } if *slots > 0 => format!(
            "move {id}: {slots} slots and {rows} rows moved (copied in {:.2} s, {:.0} rows/s); \
             the cluster routes by placement version {version} (cut-over {:.0} ms)",
            copy.as_secs_f64(),
            *rows as f64 / copy.as_secs_f64().max(1e-6),
            cutover.as_secs_f64() * 1000.0
        ),
        Outcome::Moved { id, version, .. } => format!(
            "move {id}: its cut-over had committed and is finished; the cluster routes by placement version {version}"
        ),
        Outcome::NothingToMove => "nothing to move: the shard already owns those slots".into(),
        Outcome::Aborted { id } => {
            format!("move {id} undone: the placement is as it was, and what the move created is removed")
        }
    }
}

/// Catching up stops and the cut-over begins once at most this many changes wait.
const CUTOVER_BACKLOG: i64 = 200;
const BATCH: i64 = 5000;

/// One move in progress, with a connection to every shard.
pub(crate) struct Mover {
    pub shards: Vec<ShardTarget>,
    pub names: Vec<String>,
    /// One control connection per shard (the cut-over's transactions run on these).
    pub clients: Vec<Client>,
    /// The journal's own connection to the first shard, outside any transaction.
    pub home: Client,
    pub id: i64,
    pub target: usize,
    /// Each source shard and the moving slots it owns.
    pub sources: Vec<(usize, Vec<u32>)>,
    pub slots: Vec<u32>,
    /// Every sharded table and its shape; `present[s][i]` says whether shard s has table i.
    pub tables: Vec<(MovingTable, Shape)>,
    pub present: Vec<Vec<bool>>,
    pub from: Placement,
    pub to: SlotTable,
    pub timeout: Duration,
    /// The longest refresh interval of the running proxies: how long they may take to notice.
    pub slowest_look: Duration,
}

/// Runs `action` to its end. `progress` hears the figures the CLI draws.
pub async fn run(
    config: &Config,
    action: Action,
    opts: &Options,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Outcome, String> {
    if config.shards.len() < 2 {
        return Err("moving slots needs a config with several shards".into());
    }
    let timeout = Duration::from_secs(config.server.connect_timeout_secs);
    let shards = config.shard_targets();
    let home = control::connect(&shards[HOME], timeout).await?;
    home.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS shardgate; {}; {}",
        crate::backend::proxy_registry::CREATE,
        move_journal::CREATE
    ))
    .await
    .map_err(|e| control::describe(&e))?;
    let unfinished = move_journal::unfinished(&home).await?;
    let (id, ranges, target) = match (action, unfinished) {
        (Action::Start { ranges, target }, None) => {
            let text = crate::placement::slots::runs_text(&ranges);
            let mover = setup::prepare(config, &shards, home, None, &ranges, &target).await?;
            let Some(mut mover) = mover else {
                return Ok(Outcome::NothingToMove);
            };
            mover.id = move_journal::begin(&mover.home, &text, &target).await?;
            tracing::info!(move_id = mover.id, slots = %text, %target, "move begins");
            return mover.go(opts, progress).await;
        }
        (Action::Start { .. }, Some(m)) => {
            return Err(format!(
                "move {} (slots {} to {}) is unfinished; finish it with `shardgate move-slots \
                 --resume` or undo it with `--abort` first",
                m.id, m.slots, m.target
            ))
        }
        (_, None) => return Err("there is no unfinished move".into()),
        (action, Some(m)) => {
            if m.state == move_journal::State::Cutover {
                // A cut-over that was under way: its outcome decides.
                let gid = m.cutover_gid.clone().unwrap_or_default();
                if crate::txn::recovery::settle(&shards, &gid, timeout).await? == 'c' {
                    move_journal::set_state(&home, m.id, move_journal::State::Done).await?;
                    setup::remove_leftovers(config, &shards, m.id, timeout).await?;
                    let version = placement_store::newest_version(&home).await?.unwrap_or(0);
                    tracing::info!(
                        move_id = m.id,
                        "the move's cut-over had committed; finished it"
                    );
                    return Ok(Outcome::Moved {
                        id: m.id,
                        version,
                        slots: 0,
                        rows: 0,
                        copy: Duration::ZERO,
                        cutover: Duration::ZERO,
                    });
                }
                move_journal::set_state(&home, m.id, move_journal::State::Copying).await?;
            }
            setup::remove_leftovers(config, &shards, m.id, timeout).await?;
            if let Action::Abort = action {
                move_journal::set_state(&home, m.id, move_journal::State::Aborted).await?;
                tracing::info!(move_id = m.id, "move undone");
                return Ok(Outcome::Aborted { id: m.id });
            }
            let ranges = crate::placement::slots::parse_runs(&m.slots)?;
            (m.id, ranges, m.target)
        }
    };
    // Resuming: copy again from the start, under the same move.
    let mover = setup::prepare(config, &shards, home, Some(id), &ranges, &target).await?;
    match mover {
        Some(mut mover) => {
            mover.id = id;
            mover.go(opts, progress).await
        }
        None => {
            let home = control::connect(&shards[HOME], timeout).await?;
            move_journal::set_state(&home, id, move_journal::State::Done).await?;
            Ok(Outcome::NothingToMove)
        }
    }
}

impl Mover {
    async fn go(
        self,
        opts: &Options,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<Outcome, String> {
        let began = Instant::now();
        setup::fence(&self).await?;
        let copying = Instant::now();
        let rows = self.copy(progress).await?;
        let copy_took = copying.elapsed();
        crate::failpoint::hit(crate::failpoint::MOVE_AFTER_COPY).await;
        let mut last = Vec::new();
        for attempt in 1..=opts.attempts {
            // Proxies look faster while a move is under way (see `follow`); one of their
            // slowest intervals after the move began, each of them does.
            self.catch_up(progress, began + self.slowest_look).await?;
            match cutover::attempt(&self, opts.hold).await? {
                cutover::Attempt::Done { version, took } => {
                    tracing::info!(
                        move_id = self.id,
                        version,
                        took_ms = took.as_millis() as u64,
                        "cut-over committed"
                    );
                    return Ok(Outcome::Moved {
                        id: self.id,
                        version,
                        slots: self.slots.len(),
                        rows,
                        copy: copy_took,
                        cutover: took,
                    });
                }
                cutover::Attempt::Retry(why) => {
                    tracing::warn!(move_id = self.id, attempt, "cut-over not done: {why}");
                    last.push(why);
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
            }
        }
        Err(format!(
            "the cut-over did not succeed in {} attempts ({}); nothing moved yet, and the \
             move stays resumable: run `shardgate move-slots --resume` to try again or \
             `--abort` to undo it",
            opts.attempts,
            last.join("; ")
        ))
    }

    /// The first copy of every moving row into the target's staging tables. Returns the rows
    /// copied.
    async fn copy(&self, progress: &mut dyn FnMut(&Progress)) -> Result<u64, String> {
        let target = &self.clients[self.target];
        setup::capture(self).await?;
        let mut total = 0i64;
        for (s, slots) in &self.sources {
            for (i, (t, _)) in self.tables.iter().enumerate() {
                if self.present[*s][i] {
                    let filter =
                        capture::in_slots(&crate::sql::identifier(&t.key), t.key_type, slots);
                    let n: i64 = self.clients[*s]
                        .query_one(
                            &format!(
                                "SELECT count(*) FROM {} WHERE {filter}",
                                crate::sql::identifier(&t.name)
                            ),
                            &[],
                        )
                        .await
                        .map_err(|e| self.failed(*s, &e))?
                        .get(0);
                    total += n;
                }
            }
        }
        let mut done = 0u64;
        for (s, slots) in &self.sources {
            for (i, (t, shape)) in self.tables.iter().enumerate() {
                if !self.present[*s][i] {
                    continue;
                }
                let filter = capture::in_slots(&crate::sql::identifier(&t.key), t.key_type, slots);
                let select = format!(
                    "SELECT {} FROM {} WHERE {filter}",
                    shape.columns,
                    crate::sql::identifier(&t.name)
                );
                let staging = capture::staging(self.id, t);
                let before = done;
                // The journal (and so every proxy's metrics) hears the count once a second
                // while the rows stream.
                let now = std::sync::atomic::AtomicU64::new(before);
                let finished = tokio::sync::Notify::new();
                let streaming = async {
                    let r = copy::stream(
                        &self.clients[*s],
                        target,
                        &select,
                        (&staging, &shape.columns),
                        |n| {
                            now.store(before + n, std::sync::atomic::Ordering::Relaxed);
                            progress(&Progress::copying(
                                &t.name,
                                &self.names[*s],
                                before + n,
                                total,
                            ));
                        },
                    )
                    .await;
                    finished.notify_one();
                    r
                };
                let journal = async {
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = finished.notified() => return,
                        }
                        let n = now.load(std::sync::atomic::Ordering::Relaxed) as i64;
                        let _ = move_journal::progress(&self.home, self.id, (n, total, 0)).await;
                    }
                };
                let (copied, ()) = tokio::join!(streaming, journal);
                let copied = copied.map_err(|e| {
                    format!(
                        "copying {} from {} to {}: {e}",
                        t.name, self.names[*s], self.names[self.target]
                    )
                })?;
                done += copied;
                move_journal::progress(&self.home, self.id, (done as i64, total, 0)).await?;
                progress(&Progress::copying(&t.name, &self.names[*s], done, total));
            }
        }
        // Catching up deletes staged rows by key.
        for (t, _) in &self.tables {
            target
                .batch_execute(&format!(
                    "CREATE INDEX IF NOT EXISTS move_{}_{}_key ON {} ({})",
                    self.id,
                    t.n,
                    capture::staging(self.id, t),
                    crate::sql::identifier(&t.key)
                ))
                .await
                .map_err(|e| self.failed(self.target, &e))?;
        }
        move_journal::progress(
            &self.home,
            self.id,
            (done as i64, total.max(done as i64), 0),
        )
        .await?;
        Ok(done)
    }

    /// Applies logged changes until few are left and `not_before` has passed.
    async fn catch_up(
        &self,
        progress: &mut dyn FnMut(&Progress),
        not_before: Instant,
    ) -> Result<(), String> {
        loop {
            let mut lag = 0i64;
            for (s, _) in &self.sources {
                lag += copy::backlog(&self.clients[*s], self.id).await?;
            }
            progress(&Progress::catching_up(lag));
            let row = self
                .home
                .query_one(
                    "SELECT rows_copied, rows_total FROM shardgate.moves WHERE id = $1",
                    &[&self.id],
                )
                .await
                .map_err(|e| control::describe(&e))?;
            move_journal::progress(&self.home, self.id, (row.get(0), row.get(1), lag)).await?;
            if lag <= CUTOVER_BACKLOG && Instant::now() >= not_before {
                return Ok(());
            }
            if lag == 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            for (s, _) in &self.sources {
                self.catch_up_once(*s, BATCH).await?;
            }
        }
    }

    /// One batch from source `s`, committed on the target before the source's log forgets it.
    async fn catch_up_once(&self, s: usize, limit: i64) -> Result<usize, String> {
        let (src, dst) = (&self.clients[s], &self.clients[self.target]);
        src.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            .await
            .map_err(|e| self.failed(s, &e))?;
        dst.batch_execute("BEGIN")
            .await
            .map_err(|e| self.failed(self.target, &e))?;
        let tables = self.tables_on(s);
        let applied = match copy::catch_up(src, dst, self.id, &tables, limit).await {
            Ok(n) => n,
            Err(e) => {
                let _ = dst.batch_execute("ROLLBACK").await;
                let _ = src.batch_execute("ROLLBACK").await;
                return Err(format!(
                    "catching up from {} to {}: {e}",
                    self.names[s], self.names[self.target]
                ));
            }
        };
        dst.batch_execute("COMMIT")
            .await
            .map_err(|e| self.failed(self.target, &e))?;
        src.batch_execute("COMMIT")
            .await
            .map_err(|e| self.failed(s, &e))?;
        Ok(applied)
    }

    /// The tables source `s` holds.
    fn tables_on(&self, s: usize) -> Vec<(MovingTable, Shape)> {
        self.tables
            .iter()
            .enumerate()
            .filter(|(i, _)| self.present[s][*i])
            .map(|(_, t)| t.clone())
            .collect()
    }

    fn failed(&self, s: usize, e: &tokio_postgres::Error) -> String {
        format!("shard {}: {}", self.names[s], control::describe(e))
    }
}
