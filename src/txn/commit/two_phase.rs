//! The commit of a transaction that wrote on two or more shards: the decider protocol of
//! docs/transactions.md, run on the session's own shard connections (`Participants`).
//!
//! 1. Every written shard except the decider, in parallel: `INSERT` a marker and `PREPARE
//!    TRANSACTION gid`, in one message. Success is the command tag `PREPARE TRANSACTION`;
//!    PostgreSQL answers `ROLLBACK` without an error when the transaction had already failed.
//! 2. The decider: `INSERT` the commit record (outcome 'c') and `COMMIT`. That commit is the
//!    decision. An error means aborted; a lost connection means the outcome is unknown (08007).
//! 3. `COMMIT PREPARED` on the others and plain COMMIT on read-only participants, in parallel.
//!    A participant that cannot be reached is retried on a fresh connection; after
//!    `commit_wait` the client is answered with a WARNING naming what recovery will finish.
//!
//! Invariant: nothing is committed anywhere before the decider's commit, and after it every
//! prepared branch is committed eventually, by this session, its retry task or recovery.

use super::Ended;
use crate::error::PgError;
use crate::failpoint::{self, Outcome};
use crate::protocol::{build, inspect, Frame};
use crate::txn::gid;
use crate::txn::participants::Participants;
use crate::txn::snapshot::client::Grant;
use crate::txn::snapshot::gate::Class;
use crate::txn::TxnContext;
use bytes::BytesMut;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// A shard's answer to one Query: its command tags and first error.
struct Reply {
    tags: Vec<String>,
    error: Option<Frame>,
}

/// Sends `sql` to every shard first, then reads every answer: one round trip in all.
async fn round<P: Participants>(p: &mut P, shards: &[usize], sql: &str) -> Vec<Option<Reply>> {
    let mut q = BytesMut::new();
    build::query(sql, &mut q);
    let mut sent = Vec::with_capacity(shards.len());
    for &s in shards {
        sent.push(p.send(s, &q).await.is_ok());
    }
    let mut replies = Vec::with_capacity(shards.len());
    for (&s, ok) in shards.iter().zip(sent) {
        replies.push(if ok { read_reply(p, s).await } else { None });
    }
    replies
}

async fn read_reply<P: Participants>(p: &mut P, shard: usize) -> Option<Reply> {
    let mut reply = Reply {
        tags: Vec::new(),
        error: None,
    };
    loop {
        let f = p.recv(shard).await.ok()?;
        match f.tag {
            b'C' => {
                if let Some((tag, _)) = inspect::cstr(f.body()) {
                    reply.tags.push(tag.to_string());
                }
            }
            b'E' if reply.error.is_none() => reply.error = Some(f),
            b'N' => p.to_client(&f.bytes),
            b'Z' => return Some(reply),
            _ => {}
        }
    }
}

/// The proxy writes its commit records as the session's current role. After SET ROLE or SET
/// SESSION AUTHORIZATION to a role without rights on the `shardgate` schema's tables (every
/// role may use the schema, for its clock functions), PostgreSQL's "permission denied for table
/// txn_marker" would point into the client's statement; this says what was refused and what
/// to do instead.
fn own_records_error(e: &Frame) -> Option<Vec<u8>> {
    let body = e.body();
    let denied = inspect::error_field(body, b'C') == Some("42501")
        && inspect::error_field(body, b'M').is_some_and(|m| {
            ["shardgate", "txn_marker", "commit_record"]
                .iter()
                .any(|name| m.contains(name))
        });
    denied.then(|| {
        error_bytes(
            &PgError::error(
                "42501",
                "a transaction that wrote on several shards cannot commit under the current role: \
                 the proxy records its commit decision in the shardgate schema as that role",
            )
            .with_detail(format!(
                "PostgreSQL said: {}",
                inspect::error_field(body, b'M').unwrap_or("")
            ))
            .with_hint(
                "RESET ROLE (or RESET SESSION AUTHORIZATION) before writing on several shards, \
                 or keep the transaction's writes on one shard. The transaction was rolled back.",
            ),
        )
    })
}

fn phase(name: &'static str, since: Instant) {
    metrics::histogram!(crate::metrics::TWO_PHASE_SECONDS, "phase" => name)
        .record(since.elapsed().as_secs_f64());
}

fn abort_metric(reason: &'static str) {
    metrics::counter!(crate::metrics::ABORTS, "reason" => reason).increment(1);
}

/// The error for the client, and the outcome that follows.
fn refuse<P: Participants>(p: &mut P, e: &PgError) -> Ended {
    p.to_client(&error_bytes(e));
    Ended::NotCommitted
}

/// Commits `written` (two or more shards) and `readers` atomically. A WARNING the client must
/// see (a participant that has not confirmed yet) has gone to it when this returns.
pub async fn commit<P: Participants>(
    ctx: &TxnContext,
    p: &mut P,
    written: &BTreeSet<usize>,
    readers: &BTreeSet<usize>,
) -> Ended {
    let all: Vec<usize> = written.iter().copied().collect();
    let decider = all[0];
    let others: Vec<usize> = all[1..].to_vec();
    let readers: Vec<usize> = readers.iter().copied().collect();
    let name = |p: &P, s: usize| p.name(s).to_string();
    let g = ctx.gids.next(&name(p, decider));
    let lit = gid::literal(&g);

    // With snapshot mode on, the commit window is requested while the participants prepare; it
    // must be granted before the decision makes anything visible.
    let gate = ctx.oracle.clone().map(|oracle| {
        let (shards, names, gid) = (all.clone(), ctx.shard_names.clone(), g.clone());
        tokio::spawn(async move {
            oracle
                .acquire(Class::Commit, &shards, &names, Some(&gid))
                .await
        })
    });

    // Phase 1: prepare every written shard but the decider.
    let started = Instant::now();
    if failpoint::hit(failpoint::COMMIT_BEFORE_PREPARE).await == Outcome::Fail {
        if let Some(h) = &gate {
            h.abort();
        }
        abort(ctx, p, decider, &[], &readers, &lit).await;
        abort_metric("prepare_failed");
        return refuse(
            p,
            &PgError::error("40000", format!("failpoint: PREPARE of {g} failed")),
        );
    }
    let prepare =
        format!("INSERT INTO shardgate.txn_marker (gid) VALUES ({lit}); PREPARE TRANSACTION {lit}");
    let replies = round(p, &others, &prepare).await;
    let mut prepared = Vec::new();
    // Shards whose marker INSERT failed: their transaction is aborted but still open. (A
    // PREPARE that fails, at a deferred constraint say, ends the transaction itself, and a
    // ROLLBACK there would only bring the client a WARNING.)
    let mut failed = Vec::new();
    let mut failure: Option<Vec<u8>> = None;
    let mut lost = None;
    for (&s, reply) in others.iter().zip(replies) {
        match reply {
            Some(r)
                if r.error.is_none()
                    && r.tags.last().map(String::as_str) == Some("PREPARE TRANSACTION") =>
            {
                prepared.push(s)
            }
            Some(r) => {
                if r.error.is_some() && p.in_transaction(s) {
                    failed.push(s);
                }
                failure.get_or_insert_with(|| match r.error {
                    Some(e) => own_records_error(&e).unwrap_or_else(|| e.bytes.to_vec()),
                    None => error_bytes(&PgError::error(
                        "40000",
                        format!("shard {} rolled back its part of the transaction instead of preparing it", name(p, s)),
                    )),
                });
            }
            None => lost = Some(s),
        }
    }
    phase("prepare", started);
    if failure.is_some() || lost.is_some() {
        if let Some(h) = &gate {
            h.abort();
        }
        let plain: Vec<usize> = readers.iter().copied().chain(failed).collect();
        abort(ctx, p, decider, &prepared, &plain, &lit).await;
        abort_metric("prepare_failed");
        if let Some(s) = lost {
            // A branch may have been prepared before the link broke; recovery finds it, fences
            // the gid (no decision row exists) and rolls it back.
            ctx.kick.notify_one();
            return Ended::Lost(s);
        }
        p.to_client(&failure.unwrap_or_default());
        return Ended::NotCommitted;
    }
    failpoint::hit(failpoint::COMMIT_AFTER_PREPARE).await;
    let window: Option<Grant> = match gate {
        None => None,
        Some(h) => match h.await {
            Ok(Ok(grant)) => Some(grant),
            outcome => {
                let why = match outcome {
                    Ok(Err(e)) => e,
                    _ => "the request to the oracle failed".to_string(),
                };
                abort(ctx, p, decider, &prepared, &readers, &lit).await;
                abort_metric("oracle_unavailable");
                let e = PgError::error(
                    "58000",
                    format!("the transaction was rolled back before its commit: {why}"),
                )
                .with_hint("Commits that write on several shards need the timestamp oracle (transactions.snapshot = true). Single-shard work goes on.");
                return refuse(p, &e);
            }
        },
    };

    // Phase 2: the decision, committed on the decider.
    let started = Instant::now();
    let commit_ts = window
        .as_ref()
        .map_or("NULL".to_string(), |w| w.ts.to_string());
    let record = format!(
        "INSERT INTO shardgate.commit_record (gid, outcome, commit_ts) VALUES ({lit}, 'c', {commit_ts})"
    );
    let decision = if failpoint::armed(failpoint::COMMIT_AFTER_DECIDER_INSERT) {
        match round(p, &[decider], &record).await.pop().flatten() {
            Some(r) if r.error.is_none() => {
                failpoint::hit(failpoint::COMMIT_AFTER_DECIDER_INSERT).await;
                round(p, &[decider], "COMMIT").await.pop().flatten()
            }
            other => other,
        }
    } else {
        round(p, &[decider], &format!("{record}; COMMIT"))
            .await
            .pop()
            .flatten()
    };
    phase("decide", started);
    match decision {
        None => {
            // The decision may or may not have committed: only the decider knows. Snapshots
            // of these shards wait until recovery has settled it.
            if let Some(w) = window {
                w.orphan(&g);
            }
            for &s in &readers {
                let _ = round(p, &[s], "ROLLBACK").await;
            }
            ctx.kick.notify_one();
            metrics::gauge!(crate::metrics::IN_DOUBT).increment(1.0);
            tracing::error!(gid = %g, decider = %name(p, decider), "connection to the decider lost during commit: outcome unknown, left to recovery");
            let e = PgError::error(
                "08007",
                format!("connection to shard {} was lost while committing; the transaction's outcome is unknown", name(p, decider)),
            )
            .with_detail(format!("Distributed transaction {g}."))
            .with_hint("Recovery resolves it shortly; check whether its changes are present before retrying.");
            return refuse(p, &e);
        }
        Some(r) if r.error.is_some() || r.tags.last().map(String::as_str) != Some("COMMIT") => {
            // A recoverer's fence shows as a duplicate decision row; any other error (a deferred
            // constraint at COMMIT ...) is the client's to see.
            let fenced = r.error.as_ref().is_some_and(|e| {
                inspect::error_field(e.body(), b'n') == Some("commit_record_pkey")
            });
            // A COMMIT that failed ended the transaction itself; a failed INSERT left it open.
            if p.in_transaction(decider) {
                let _ = round(p, &[decider], "ROLLBACK").await;
            }
            abort(ctx, p, usize::MAX, &prepared, &readers, &lit).await;
            abort_metric("decision_failed");
            match r.error {
                Some(_) if fenced => {
                    refuse(p, &PgError::error(
                        "40000",
                        format!("distributed transaction {g} was rolled back by a concurrent recovery before it could commit"),
                    ));
                }
                Some(e) => {
                    let bytes = own_records_error(&e).unwrap_or_else(|| e.bytes.to_vec());
                    p.to_client(&bytes);
                }
                None => {
                    refuse(
                        p,
                        &PgError::error(
                            "40000",
                            format!(
                                "shard {} rolled back the transaction at commit",
                                name(p, decider)
                            ),
                        ),
                    );
                }
            }
            return Ended::NotCommitted;
        }
        Some(_) => {}
    }
    failpoint::hit(failpoint::COMMIT_AFTER_DECISION).await;

    // Phase 3: commit everywhere else.
    failpoint::hit(failpoint::COMMIT_BEFORE_COMMIT_PREPARED).await;
    let started = Instant::now();
    let commit_prepared = format!("COMMIT PREPARED {lit}");
    let mut pending: Vec<usize> = Vec::new();
    if failpoint::armed(failpoint::COMMIT_BETWEEN_COMMIT_PREPARED) {
        for (i, &s) in others.iter().enumerate() {
            if i > 0 {
                failpoint::hit(failpoint::COMMIT_BETWEEN_COMMIT_PREPARED).await;
            }
            if !committed(round(p, &[s], &commit_prepared).await.pop().flatten()) {
                pending.push(s);
            }
        }
    } else {
        let replies = round(p, &others, &commit_prepared).await;
        for (&s, r) in others.iter().zip(replies) {
            if !committed(r) {
                pending.push(s);
            }
        }
    }
    // Read-only participants: their commit changes nothing, so it follows the decision.
    let _ = round(p, &readers, "COMMIT").await;
    if !pending.is_empty() {
        finish_later(ctx, p, &g, &pending, window).await;
    }
    phase("commit_prepared", started);
    metrics::counter!(crate::metrics::COMMITS, "kind" => "two_phase").increment(1);
    Ended::Committed
}

fn committed(reply: Option<Reply>) -> bool {
    match reply {
        Some(r) => match &r.error {
            None => true,
            // Already resolved (by recovery, from the same decision).
            Some(e) => inspect::error_field(e.body(), b'C') == Some("42704"),
        },
        None => false,
    }
}

/// Rolls back everything after a failed phase 1 or decision; `decider` (unless usize::MAX) is
/// still in its plain transaction.
async fn abort<P: Participants>(
    ctx: &TxnContext,
    p: &mut P,
    decider: usize,
    prepared: &[usize],
    readers: &[usize],
    lit: &str,
) {
    let mut plain: Vec<usize> = readers.to_vec();
    if decider != usize::MAX {
        plain.push(decider);
    }
    let _ = round(p, &plain, "ROLLBACK").await;
    let replies = round(p, prepared, &format!("ROLLBACK PREPARED {lit}")).await;
    if replies
        .iter()
        .any(|r| r.as_ref().is_none_or(|r| r.error.is_some()))
    {
        // Recovery rolls back what is left: no decision row exists, so its fence writes 'a'.
        ctx.kick.notify_one();
    }
}

/// The decision is committed but some participants did not confirm: retry on fresh
/// connections, wait up to `commit_wait`, then answer with a WARNING and leave the rest to the
/// retry task and recovery.
/// The commit window (if any) stays open until every participant has committed.
async fn finish_later<P: Participants>(
    ctx: &TxnContext,
    p: &mut P,
    g: &str,
    pending: &[usize],
    window: Option<Grant>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for &s in pending {
        let target = ctx.shards[s].clone();
        let timeout = ctx.connect_timeout;
        let sql = format!("COMMIT PREPARED {}", gid::literal(g));
        tasks.spawn(async move {
            let mut delay = Duration::from_millis(50);
            loop {
                if let Ok(client) = crate::backend::control::connect(&target, timeout).await {
                    match client.batch_execute(&sql).await {
                        Ok(()) => return,
                        Err(e) if crate::backend::control::code(&e) == Some("42704") => return,
                        Err(_) => {}
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        });
    }
    let wait = ctx.commit_wait;
    let all_done = tokio::time::timeout(wait, async { while tasks.join_next().await.is_some() {} })
        .await
        .is_ok();
    if all_done {
        return;
    }
    // Keep retrying after the client has its answer; snapshots of these shards wait for it.
    tokio::spawn(async move {
        while tasks.join_next().await.is_some() {}
        drop(window);
    });
    let names: Vec<String> = pending.iter().map(|&s| p.name(s).to_string()).collect();
    tracing::warn!(gid = %g, shards = ?names, "commit decided but not yet confirmed by every shard; retrying, recovery will finish it");
    let mut note = BytesMut::new();
    build::warning(
        "01000",
        &format!(
            "the transaction committed, but shard(s) {} have not confirmed yet; its prepared part {g} is committed as soon as they are reachable",
            names.join(", ")
        ),
        &mut note,
    );
    p.to_client(&note);
}

fn error_bytes(e: &PgError) -> Vec<u8> {
    let mut b = BytesMut::new();
    build::error(e, &mut b);
    b.to_vec()
}
