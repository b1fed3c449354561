//! A move's cut-over: the one distributed transaction that switches ownership of the moving
//! slots, run while every proxy holds new transactions.
//!
//! 1. The journal asks the proxies to hold, naming the transaction's gid and a time limit; the
//!    mover waits until every running proxy acknowledges (holds, with no transaction open).
//! 2. On every shard a transaction: the sources lock the moved tables against writes and the
//!    last logged changes are applied; the target moves its staged rows into the tables; the
//!    sources delete theirs and drop the capture; every shard records the new version.
//! 3. Two-phase commit as the proxies' own: every shard but the first prepares, and the first
//!    (the decider) commits the decision row with its own part, only if the hold has not run
//!    out. A proxy whose hold ran out fences the gid first (see `follow`), so either the
//!    decision or the fence wins, never both.
//! 4. The prepared parts are committed, and the journal says done: proxies take the version
//!    up and go on.
//!
//! Anything that fails before the decision rolls every part back; the proxies go on by the old
//! placement and the mover tries again after catching up.

use super::{capture, copy, Mover};
use crate::backend::{control, move_journal, placement_store};
use crate::failpoint;
use crate::placement::{record, HOME};
use crate::txn::gid::{self, GidSource};
use std::time::{Duration, Instant};

/// How one attempt ended.
pub enum Attempt {
    Done {
        version: i64,
        took: Duration,
    },
    /// Nothing changed; why, for the log.
    Retry(String),
}

/// Why a switch did not commit.
enum Failed {
    /// Known not committed: every part can be rolled back.
    NotCommitted(String),
    /// The decision's answer was lost: the decision row tells.
    Unknown(String),
    /// Not worth another attempt.
    Fatal(String),
}

pub async fn attempt(m: &Mover, hold: Duration) -> Result<Attempt, String> {
    let gid = GidSource::new().next(&m.names[HOME]);
    let started = Instant::now();
    move_journal::request_cutover(&m.home, m.id, &gid, hold).await?;
    let acknowledged_by = started + hold / 2;
    loop {
        let missing = move_journal::not_holding(&m.home, &gid).await?;
        if missing.is_empty() {
            break;
        }
        if Instant::now() >= acknowledged_by {
            give_up(m).await?;
            return Ok(Attempt::Retry(format!(
                "proxies did not hold within {:.1} s: {} (a transaction kept open there holds \
                 the cut-over back)",
                (hold / 2).as_secs_f64(),
                missing.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let version = match switch(m, &gid).await {
        Ok(v) => v,
        Err(Failed::NotCommitted(why)) => {
            roll_back(m, &gid).await;
            give_up(m).await?;
            return Ok(Attempt::Retry(why));
        }
        Err(Failed::Fatal(why)) => {
            roll_back(m, &gid).await;
            give_up(m).await?;
            return Err(why);
        }
        Err(Failed::Unknown(why)) => {
            tracing::warn!("the cut-over's decision was not answered ({why}); settling it");
            if settle(m, &gid).await? != 'c' {
                give_up(m).await?;
                return Ok(Attempt::Retry(why));
            }
            placement_store::newest_version(&m.home).await?.unwrap_or(0)
        }
    };
    failpoint::hit(failpoint::MOVE_AFTER_DECISION).await;
    commit_prepared(m, &gid).await?;
    failpoint::hit(failpoint::MOVE_BEFORE_DONE).await;
    move_journal::set_state(&m.home, m.id, move_journal::State::Done).await?;
    Ok(Attempt::Done {
        version,
        took: started.elapsed(),
    })
}

/// Steps 2 and 3. Returns the version recorded.
async fn switch(m: &Mover, gid: &str) -> Result<i64, Failed> {
    let newest = placement_store::newest_version(&m.home)
        .await
        .map_err(Failed::NotCommitted)?
        .unwrap_or(0);
    if newest != m.from.version {
        return Err(Failed::Fatal(format!(
            "the placement changed during the move (version {newest} was recorded; the move \
             began at {}); undo it with `shardgate move-slots --abort` and start it again",
            m.from.version
        )));
    }
    let version = newest + 1;
    let text = record::encode(&m.to, &m.names);
    let step = |s: usize| {
        move |e: tokio_postgres::Error| {
            let why = format!("shard {}: {}", m.names[s], control::describe(&e));
            if e.as_db_error().is_some() {
                Failed::NotCommitted(why)
            } else {
                // A part is lost with its connection; the others are rolled back.
                Failed::NotCommitted(format!("{why} (connection lost)"))
            }
        }
    };
    for (s, client) in m.clients.iter().enumerate() {
        client
            .batch_execute("BEGIN; SET LOCAL lock_timeout = '2s'")
            .await
            .map_err(step(s))?;
    }
    for (s, _) in &m.sources {
        let tables: Vec<String> = m
            .tables_on(*s)
            .iter()
            .map(|(t, _)| crate::sql::identifier(&t.name))
            .collect();
        if !tables.is_empty() {
            m.clients[*s]
                .batch_execute(&format!(
                    "LOCK TABLE {} IN EXCLUSIVE MODE",
                    tables.join(", ")
                ))
                .await
                .map_err(step(*s))?;
        }
    }
    let target = &m.clients[m.target];
    for (s, _) in &m.sources {
        let tables = m.tables_on(*s);
        while copy::catch_up(&m.clients[*s], target, m.id, &tables, 10_000)
            .await
            .map_err(|e| Failed::NotCommitted(format!("last changes from {}: {e}", m.names[*s])))?
            > 0
        {}
    }
    // Each shard's part, all at once: the pause lasts as long as the slowest shard's.
    let literal = gid::literal(gid);
    let parts = m.clients.iter().enumerate().map(|(s, client)| {
        let (text, literal, step) = (&text, &literal, step(s));
        async move {
            if s == m.target {
                for (t, shape) in &m.tables {
                    let staging = capture::staging(m.id, t);
                    client
                        .batch_execute(&format!(
                            "INSERT INTO {} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM {staging}; \
                             DROP TABLE {staging}",
                            crate::sql::identifier(&t.name),
                            cols = shape.columns
                        ))
                        .await
                        .map_err(step)?;
                }
            }
            if let Some((_, slots)) = m.sources.iter().find(|(src, _)| *src == s) {
                for (t, _) in m.tables_on(s) {
                    let filter =
                        capture::in_slots(&crate::sql::identifier(&t.key), t.key_type, slots);
                    client
                        .batch_execute(&format!(
                            "DELETE FROM {} WHERE {filter}; {}",
                            crate::sql::identifier(&t.name),
                            capture::remove(m.id, &t)
                        ))
                        .await
                        .map_err(step)?;
                }
            }
            client
                .execute(
                    "INSERT INTO shardgate.placement (version, slots) VALUES ($1, $2)",
                    &[&version, text],
                )
                .await
                .map_err(step)?;
            if s == HOME {
                return Ok(());
            }
            client
                .batch_execute(&format!(
                    "INSERT INTO shardgate.txn_marker (gid) VALUES ({literal}); PREPARE TRANSACTION {literal}"
                ))
                .await
                .map_err(step)?;
            // PREPARE in a failed transaction answers ROLLBACK, not an error.
            let prepared: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_prepared_xacts WHERE gid = $1",
                    &[&gid],
                )
                .await
                .map_err(step)?
                .get(0);
            if prepared != 1 {
                return Err(Failed::NotCommitted(format!(
                    "shard {} did not prepare its part",
                    m.names[s]
                )));
            }
            Ok(())
        }
    });
    // Every part ends before any is judged, so none is left mid-statement on its connection.
    for result in futures_util::future::join_all(parts).await {
        result?;
    }
    failpoint::hit(failpoint::MOVE_AFTER_PREPARE).await;
    let home = &m.clients[HOME];
    let decided = home
        .execute(
            "INSERT INTO shardgate.commit_record (gid, outcome) SELECT $1, 'c' \
             WHERE EXISTS (SELECT 1 FROM shardgate.moves WHERE id = $2 AND state = 'cutover' \
                           AND cutover_gid = $1 AND pause_until > clock_timestamp())",
            &[&gid, &m.id],
        )
        .await;
    match decided {
        Ok(1) => {}
        Ok(_) => {
            return Err(Failed::NotCommitted(
                "the proxies' hold ran out before the decision".into(),
            ))
        }
        // A fence row (a proxy's hold ran out) is a unique violation: not committed.
        Err(e) if e.as_db_error().is_some() => {
            return Err(Failed::NotCommitted(format!(
                "decision refused: {}",
                control::describe(&e)
            )))
        }
        Err(e) => return Err(Failed::Unknown(control::describe(&e))),
    }
    match home.batch_execute("COMMIT").await {
        Ok(()) => Ok(version),
        Err(e) if e.as_db_error().is_some() => Err(Failed::NotCommitted(format!(
            "decision refused: {}",
            control::describe(&e)
        ))),
        Err(e) => Err(Failed::Unknown(control::describe(&e))),
    }
}

/// Rolls back every part of a cut-over that did not commit: open transactions and prepared
/// parts. What cannot be reached is left to recovery (the decision row decides it: none, so
/// rolled back).
async fn roll_back(m: &Mover, gid: &str) {
    for client in &m.clients {
        let _ = client.batch_execute("ROLLBACK").await;
        let _ = client
            .batch_execute(&format!("ROLLBACK PREPARED {}", gid::literal(gid)))
            .await;
    }
}

/// Commits the prepared parts after a commit decision; a part whose shard does not answer is
/// settled through recovery until it is.
async fn commit_prepared(m: &Mover, gid: &str) -> Result<(), String> {
    let literal = gid::literal(gid);
    let commits = m
        .clients
        .iter()
        .enumerate()
        .filter(|(s, _)| *s != HOME)
        .map(|(s, client)| {
            let literal = &literal;
            async move {
                match client
                    .batch_execute(&format!("COMMIT PREPARED {literal}"))
                    .await
                {
                    Ok(()) => true,
                    Err(e) if control::code(&e) == Some("42704") => true,
                    Err(e) => {
                        tracing::warn!(shard = %m.names[s], "COMMIT PREPARED of the cut-over: {}", control::describe(&e));
                        false
                    }
                }
            }
        });
    let all = futures_util::future::join_all(commits)
        .await
        .into_iter()
        .all(|ok| ok);
    if !all {
        settle(m, gid).await?;
    }
    Ok(())
}

/// Settles the gid through recovery, retrying until every shard answers.
async fn settle(m: &Mover, gid: &str) -> Result<char, String> {
    for attempt in 1.. {
        match crate::txn::recovery::settle(&m.shards, gid, m.timeout).await {
            Ok(outcome) => return Ok(outcome),
            Err(e) if attempt < 30 => {
                tracing::warn!("settling the cut-over: {e}; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(format!(
                "the cut-over {gid} cannot be settled: {e}; run `shardgate move-slots --resume` once every shard answers"
            )),
        }
    }
    unreachable!("the loop returns")
}

/// Ends the hold without a switch: the proxies go on by the old placement.
async fn give_up(m: &Mover) -> Result<(), String> {
    move_journal::set_state(&m.home, m.id, move_journal::State::Copying).await
}
