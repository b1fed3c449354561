//! Deadlocks across shards. PostgreSQL finds a cycle of lock waits on one server; two
//! transactions of the proxy's that wait for each other on different shards (A holds a row on
//! s0 and waits on s1, B holds that row on s1 and waits on s0) form a cycle no server sees,
//! and would wait for ever.
//!
//! A watch asks every shard, once a second, which of the server connections sessions hold
//! wait for a lock and whose (`pg_blocking_pids`), maps both backends to their sessions by the
//! cancel registry, and looks for a cycle of sessions that spans two shards or more (a cycle
//! on one shard is the shard's own to break). A cycle is acted on only if a second look, a
//! moment later, finds every one of its waits still there, the same statement still waiting
//! (its `query_start` unchanged): waits seen on different shards at different moments could
//! otherwise join into a cycle that never existed at once. The session with the highest pid
//! in the cycle is then cancelled on the shard where it waits, and its link reports the cancel
//! as PostgreSQL reports a deadlock (`40P01`), which drivers and ORMs retry.

use crate::backend::control;
use crate::client::cancel::CancelRegistry;
use crate::config::ShardTarget;
use crate::protocol::frame::Frame;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio_postgres::Client;

/// How often the shards are asked, as PostgreSQL's default `deadlock_timeout`.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// How long after a cycle is seen the second look is taken.
const CONFIRM_AFTER: Duration = Duration::from_millis(300);

/// One wait: on `shard`, the session with proxy pid `waiter` (backend `backend`, waiting
/// since its statement started at `since`) waits for the session with proxy pid `blocker`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    pub shard: usize,
    pub waiter: i32,
    pub backend: i32,
    pub since: String,
    pub blocker: i32,
}

/// A cycle of waits among sessions that spans two shards or more, if `waits` hold one.
pub fn cycle(waits: &[Wait]) -> Option<Vec<Wait>> {
    let mut out: BTreeMap<i32, Vec<&Wait>> = BTreeMap::new();
    for w in waits {
        out.entry(w.waiter).or_default().push(w);
    }
    // Depth-first from each session, along one path at a time; the graph is a few sessions.
    for &start in out.keys() {
        let mut path: Vec<&Wait> = Vec::new();
        if let Some(found) = walk(start, start, &out, &mut path) {
            let shards: std::collections::BTreeSet<usize> = found.iter().map(|w| w.shard).collect();
            if shards.len() > 1 {
                return Some(found);
            }
        }
    }
    None
}

fn walk<'a>(
    start: i32,
    at: i32,
    out: &BTreeMap<i32, Vec<&'a Wait>>,
    path: &mut Vec<&'a Wait>,
) -> Option<Vec<Wait>> {
    for &w in out.get(&at).into_iter().flatten() {
        if w.blocker == start {
            path.push(w);
            let found = path.iter().map(|w| (*w).clone()).collect::<Vec<_>>();
            let shards: std::collections::BTreeSet<usize> = found.iter().map(|w| w.shard).collect();
            path.pop();
            if shards.len() > 1 {
                return Some(found);
            }
            continue;
        }
        if path.iter().any(|p| p.waiter == w.blocker) || path.len() > 32 {
            continue;
        }
        path.push(w);
        if let Some(found) = walk(start, w.blocker, out, path) {
            return Some(found);
        }
        path.pop();
    }
    None
}

/// The wait of the cycle to cancel: the one of the session with the highest proxy pid, so
/// that every proxy looking at the same cycle picks the same session.
pub fn victim(cycle: &[Wait]) -> Option<&Wait> {
    cycle.iter().max_by_key(|w| w.waiter)
}

/// What the cancelled session's client sees instead of the cancel.
pub fn victim_error() -> Frame {
    let err = crate::error::PgError::error("40P01", "deadlock detected")
        .with_detail(
            "This transaction and another waited for each other's locks on different shards; \
             shardgate cancelled this one's statement to end the wait.",
        )
        .with_hint(
            "Retry the transaction. Taking locks in the same order everywhere avoids the wait.",
        );
    let mut buf = bytes::BytesMut::new();
    crate::protocol::build::error(&err, &mut buf);
    Frame {
        tag: b'E',
        bytes: buf.freeze(),
    }
}

/// The waits on one shard among the backends in `held` (backend pid -> session pid).
async fn waits_on(
    client: &Client,
    shard: usize,
    held: &HashMap<i32, i32>,
    timeout: Duration,
) -> Result<Vec<Wait>, String> {
    let pids: Vec<String> = held.keys().map(|p| p.to_string()).collect();
    let sql = format!(
        "SELECT a.pid::pg_catalog.text, b.blocker::pg_catalog.text, a.query_start::pg_catalog.text \
         FROM pg_catalog.pg_stat_activity a \
         CROSS JOIN LATERAL pg_catalog.unnest(pg_catalog.pg_blocking_pids(a.pid)) AS b(blocker) \
         WHERE a.wait_event_type OPERATOR(pg_catalog.=) 'Lock' \
         AND a.pid OPERATOR(pg_catalog.=) ANY ('{{{}}}'::pg_catalog.int4[])",
        pids.join(",")
    );
    let rows = match tokio::time::timeout(timeout, client.simple_query(&sql)).await {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => return Err(control::describe(&e)),
        Err(_) => return Err("no answer within the connect timeout".into()),
    };
    let mut out = Vec::new();
    for m in rows {
        let tokio_postgres::SimpleQueryMessage::Row(r) = m else {
            continue;
        };
        let pid = |i: usize| r.get(i).and_then(|v| v.parse::<i32>().ok());
        let (Some(backend), Some(blocked_by)) = (pid(0), pid(1)) else {
            continue;
        };
        if let (Some(&waiter), Some(&blocker)) = (held.get(&backend), held.get(&blocked_by)) {
            if waiter != blocker {
                out.push(Wait {
                    shard,
                    waiter,
                    backend,
                    since: r.get(2).unwrap_or_default().to_string(),
                    blocker,
                });
            }
        }
    }
    Ok(out)
}

/// Every shard's waits among the connections sessions hold now.
async fn look(
    clients: &mut [Option<Client>],
    shards: &[ShardTarget],
    registry: &CancelRegistry,
    timeout: Duration,
) -> Result<Vec<Wait>, String> {
    let held = registry.held_by_shard(shards.len());
    // A cycle across shards needs sessions holding connections on two of them at least.
    if held.iter().filter(|h| h.len() > 1).count() < 2 {
        return Ok(Vec::new());
    }
    let mut all = Vec::new();
    for (shard, (target, client)) in shards.iter().zip(clients.iter_mut()).enumerate() {
        if held[shard].len() < 2 {
            continue;
        }
        if client.is_none() {
            *client = Some(control::connect(target, timeout).await?);
        }
        let Some(asking) = client.as_ref() else {
            continue;
        };
        match waits_on(asking, shard, &held[shard], timeout).await {
            Ok(w) => all.extend(w),
            Err(e) => {
                *client = None;
                return Err(format!("shard {}: {e}", target.name));
            }
        }
    }
    Ok(all)
}

/// Looks for deadlocks across shards for as long as the proxy runs, and ends each it finds.
pub async fn watch(shards: Vec<ShardTarget>, registry: CancelRegistry, timeout: Duration) {
    let mut clients: Vec<Option<Client>> = shards.iter().map(|_| None).collect();
    loop {
        tokio::time::sleep(INTERVAL).await;
        let first = match look(&mut clients, &shards, &registry, timeout).await {
            Ok(w) => w,
            Err(e) => {
                tracing::debug!("lock waits not read: {e}");
                continue;
            }
        };
        if cycle(&first).is_none() {
            continue;
        }
        tokio::time::sleep(CONFIRM_AFTER).await;
        let Ok(second) = look(&mut clients, &shards, &registry, timeout).await else {
            continue;
        };
        let lasting: Vec<Wait> = second.into_iter().filter(|w| first.contains(w)).collect();
        let Some(found) = cycle(&lasting) else {
            continue;
        };
        let Some(v) = victim(&found) else {
            continue;
        };
        let Some(key) = registry.deadlock_victim(v.waiter, v.shard, v.backend) else {
            continue;
        };
        tracing::warn!(
            shard = %key.target.name,
            sessions = ?found.iter().map(|w| w.waiter).collect::<Vec<_>>(),
            "deadlock across shards: cancelling the statement of session {}",
            v.waiter
        );
        metrics::counter!(crate::metrics::DISTRIBUTED_DEADLOCKS).increment(1);
        crate::backend::forward_cancel(vec![key]).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(shard: usize, waiter: i32, blocker: i32) -> Wait {
        Wait {
            shard,
            waiter,
            backend: waiter * 10 + shard as i32,
            since: "t".into(),
            blocker,
        }
    }

    #[test]
    fn a_cycle_over_two_shards_is_found_and_one_on_one_shard_is_left_to_it() {
        let found = cycle(&[w(0, 7, 9), w(1, 9, 7)]).expect("a cycle");
        assert_eq!(found.len(), 2);
        assert_eq!(victim(&found).map(|v| (v.waiter, v.shard)), Some((9, 1)));
        // PostgreSQL breaks a cycle on one server itself.
        assert_eq!(cycle(&[w(0, 7, 9), w(0, 9, 7)]), None);
        // Waits without a cycle.
        assert_eq!(cycle(&[w(0, 7, 9), w(1, 9, 8), w(2, 8, 5)]), None);
        // Three sessions over three shards, beside a chain that leads into it.
        let found = cycle(&[w(2, 4, 5), w(0, 5, 6), w(1, 6, 4), w(0, 3, 4)]).expect("a cycle");
        let mut sessions: Vec<i32> = found.iter().map(|w| w.waiter).collect();
        sessions.sort_unstable();
        assert_eq!(sessions, [4, 5, 6]);
    }
}
