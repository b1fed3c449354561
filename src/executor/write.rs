//! A write on several shards (`Plan::Write`): each shard runs its part inside the session's
//! transaction, and the client sees one result.
//!
//! RETURNING rows are passed on shard after shard, except a split INSERT's, which go back in
//! the order of the client's VALUES rows (ORMs pair returned keys with their objects so). The
//! command tag counts the rows of every shard (`UPDATE 7` = 3 + 4). A reference table's
//! rows are the same on every shard, so both its RETURNING rows and its count are one copy's. The caller commits: the
//! written shards are recorded, so the commit is two-phase. Writers of one reference table
//! take turns (see `run`).

use super::link::row_types::RowTypes;
use super::session::{Exec, Step, R};
use crate::router::plan::HOME;

/// The first key of the advisory locks that order reference-table writers ("SG").
const REFERENCE_LOCK_CLASS: i32 = 0x5347;
use crate::error::{sqlstate, PgError};
use crate::protocol::{build, inspect, Frame};
use crate::txn::state::TxnState;
use bytes::Bytes;

/// The statement that takes, on the first shard, the writers' turn of each reference table
/// `tables` names, in the order given (see `run`).
pub(crate) fn reference_turn(tables: &[&str]) -> String {
    let locks: Vec<String> = tables
        .iter()
        .map(|t| {
            format!(
                "pg_catalog.pg_advisory_xact_lock({REFERENCE_LOCK_CLASS}, pg_catalog.hashtext({}))",
                crate::sql::string_literal(t)
            )
        })
        .collect();
    format!("SELECT {}", locks.join(", "))
}

/// Whether every shard of `requests` answers the transaction's time (see `sql::clock`).
fn one_time_on(exec: &Exec<'_>, requests: &[(usize, Bytes)]) -> bool {
    matches!(&exec.txn, TxnState::Open(t)
        if t.time.is_some() && requests.iter().all(|(s, _)| t.timed.contains(s)))
}

/// Runs `requests` (shard, Query or Parse..Execute+Sync) and answers the client once.
/// `describe`: send the RowDescription (simple protocol) or not (extended, after Describe).
/// `serialize`: the reference table written, whose writers take turns (below). `rows`: what
/// each request's binary RETURNING rows need (see `binary_oids`), or nothing.
pub async fn run(
    exec: &mut Exec<'_>,
    requests: &[(usize, Bytes)],
    sum: bool,
    describe: bool,
    serialize: Option<&str>,
    row_order: &[usize],
    rows: Vec<RowTypes>,
) -> R<Step> {
    let given = exec.given.take();
    for &(shard, _) in requests {
        exec.txn.note_write(shard);
        if exec.enlist(shard).await? == Step::Failed {
            return Ok(Step::Failed);
        }
    }
    if let Some(given) = &given {
        let step = match given.checks.is_empty() {
            true => exec.lock_everywhere(given).await?,
            false => exec.claim_given_values(given).await?,
        };
        if step == Step::Failed {
            return Ok(Step::Failed);
        }
    }
    // The planner lets a reference table's write call the transaction's clock, which is alike
    // on every copy only where the shard was given the transaction's time.
    if serialize.is_some()
        && requests
            .iter()
            .any(|(_, r)| crate::sql::clock::calls_stamped_clock(r))
        && !one_time_on(exec, requests)
    {
        return Ok(exec.error(&PgError::error(
            sqlstate::FEATURE_NOT_SUPPORTED,
            "this write of a reference table cannot give every copy the same transaction time",
        )
        .with_hint("Send the statement again after a Sync, or write the time as a constant or parameter.")));
    }
    // Writers of one reference table take turns, holding a transaction advisory lock on the
    // first shard until they end: every copy then sees their writes in the same order, so a
    // serial default hands out the same value on every copy, and two writers of one key
    // cannot each wait for the other on different copies (a deadlock no shard could see).
    if let Some(table) = serialize {
        if let Some(err) = exec.run_quiet(HOME, &reference_turn(&[table])).await? {
            exec.shard_error(&err);
            return Ok(Step::Failed);
        }
    }
    for ((shard, _), r) in requests.iter().zip(rows) {
        if !matches!(r, RowTypes::Plain) {
            exec.links[*shard].row_types.push(r);
        }
    }
    for (shard, request) in requests {
        exec.links[*shard].send(request).await?;
    }
    let mut failure: Option<Frame> = None;
    let mut described = !describe;
    let mut tag: Option<(String, Option<u64>)> = None;
    let mut held: Vec<std::collections::VecDeque<Frame>> = vec![Default::default(); requests.len()];
    for (part, &(shard, _)) in requests.iter().enumerate() {
        loop {
            let f = exec.links[shard].recv().await?;
            match f.tag {
                b'Z' => break,
                b'E' => {
                    failure.get_or_insert(f);
                }
                _ if failure.is_some() => {}
                b'T' if !described => {
                    described = true;
                    let f = exec.for_client(shard, f).await;
                    exec.out.extend_from_slice(&f.bytes);
                }
                // Rows to be put back in the client's order, once every part has answered.
                b'D' if !row_order.is_empty() => held[part].push_back(f),
                // A reference table's copies return the same rows: the client gets one copy's.
                b'D' if sum || shard == requests[0].0 => {
                    exec.out.extend_from_slice(&f.bytes);
                    exec.maybe_flush().await?;
                }
                b'C' => {
                    let body = f.body();
                    let text = inspect::cstr(body).map(|(t, _)| t).unwrap_or("");
                    // A tag without a count (EXPLAIN ANALYZE of the write) is one copy's.
                    let (prefix, rows) = match inspect::command_rows(body) {
                        Some(n) => (
                            text.rsplit_once(' ').map(|(p, _)| p).unwrap_or(text),
                            Some(n),
                        ),
                        None => (text, None),
                    };
                    match &mut tag {
                        None => tag = Some((prefix.to_string(), rows)),
                        Some((_, Some(n))) if sum => *n += rows.unwrap_or(0),
                        Some(_) => {}
                    }
                }
                b'N' => exec.out.extend_from_slice(&f.bytes),
                _ => {}
            }
        }
    }
    if let Some(err) = failure {
        exec.shard_error(&err);
        return Ok(Step::Failed);
    }
    if !row_order.is_empty() {
        let assigned = |p: usize| row_order.iter().filter(|&&o| o == p).count();
        // ON CONFLICT DO NOTHING returns fewer rows than were sent, and which ones is not
        // known: those rows go out part after part.
        let complete = (0..held.len()).all(|p| held[p].len() == assigned(p));
        let order: Vec<usize> = if complete {
            row_order.to_vec()
        } else {
            (0..held.len())
                .flat_map(|p| std::iter::repeat_n(p, held[p].len()))
                .collect()
        };
        for p in order {
            if let Some(row) = held[p].pop_front() {
                exec.out.extend_from_slice(&row.bytes);
                exec.maybe_flush().await?;
            }
        }
    }
    // Values an UPDATE (or an upsert's DO UPDATE) sets are looked for once it is known to
    // have changed rows (see `given_update`).
    if let (Some(given), Some((_, Some(1..)))) = (&given, &tag) {
        if !given.after.is_empty() && exec.look_after_write(given).await? == Step::Failed {
            return Ok(Step::Failed);
        }
    }
    match tag {
        Some((prefix, Some(n))) => build::command_complete(&format!("{prefix} {n}"), &mut exec.out),
        Some((prefix, None)) => build::command_complete(&prefix, &mut exec.out),
        None => {}
    }
    Ok(Step::Done)
}
