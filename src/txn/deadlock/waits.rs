//! A shard's lock waits as the shard reports them, and whose they are. A backend is named by
//! the session that holds it: this proxy's own (from the cancel registry), another proxy's
//! (from what that proxy published, see `claims`), or else the backend itself, a transaction
//! of that one server.
//!
//! A claim another proxy published may be a moment old, and in transaction pooling a server
//! connection serves another session after each transaction. So a claim names the backend's
//! transaction by its start (`xact_start`), and counts only while the shard still reports the
//! same start for that backend: a connection that has moved on is in another transaction.

use super::graph::{Party, Wait};
use crate::backend::control;
use std::collections::HashMap;
use std::time::Duration;
use tokio_postgres::Client;

/// A wait as one shard reports it, before its backends are named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawWait {
    pub shard: usize,
    pub backend: i32,
    /// When the waiting statement started.
    pub since: String,
    /// When the waiting backend's transaction started.
    pub xact: String,
    pub blocker: i32,
    /// When the blocking backend's transaction started ("" if the shard does not say).
    pub blocker_xact: String,
}

/// Every lock wait on one shard, whoever's.
pub async fn read(
    client: &Client,
    shard: usize,
    timeout: Duration,
) -> Result<Vec<RawWait>, String> {
    // The blocker's own row gives its transaction's start; a prepared transaction or a
    // backend gone meanwhile has none.
    let sql = "SELECT a.pid::pg_catalog.text, b.blocker::pg_catalog.text, \
                      a.query_start::pg_catalog.text, a.xact_start::pg_catalog.text, \
                      o.xact_start::pg_catalog.text \
               FROM pg_catalog.pg_stat_activity a \
               CROSS JOIN LATERAL pg_catalog.unnest(pg_catalog.pg_blocking_pids(a.pid)) AS b(blocker) \
               LEFT JOIN pg_catalog.pg_stat_activity o ON o.pid OPERATOR(pg_catalog.=) b.blocker \
               WHERE a.wait_event_type OPERATOR(pg_catalog.=) 'Lock'";
    let rows = match tokio::time::timeout(timeout, client.simple_query(sql)).await {
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
        let text = |i: usize| r.get(i).unwrap_or_default().to_string();
        let (Some(backend), Some(blocker)) = (pid(0), pid(1)) else {
            continue;
        };
        out.push(RawWait {
            shard,
            backend,
            since: text(2),
            xact: text(3),
            blocker,
            blocker_xact: text(4),
        });
    }
    Ok(out)
}

/// A backend another proxy says one of its sessions holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub proxy: String,
    pub session: i32,
    pub shard: usize,
    pub backend: i32,
    pub xact: String,
}

/// Who holds which backend, as this proxy knows it.
pub struct Holders<'a> {
    /// This proxy's registry id.
    pub me: &'a str,
    /// Per shard, this proxy's sessions' backends: backend pid -> session pid.
    pub own: &'a [HashMap<i32, i32>],
    /// What other proxies published.
    pub claims: &'a [Claim],
}

impl Holders<'_> {
    /// The party that holds `backend` on `shard`, in the transaction that started at `xact`.
    pub fn party(&self, shard: usize, backend: i32, xact: &str) -> Party {
        if let Some(&pid) = self.own.get(shard).and_then(|m| m.get(&backend)) {
            return Party::Session {
                proxy: self.me.to_string(),
                pid,
            };
        }
        let claimed = self.claims.iter().find(|c| {
            c.shard == shard && c.backend == backend && !xact.is_empty() && c.xact == xact
        });
        match claimed {
            Some(c) => Party::Session {
                proxy: c.proxy.clone(),
                pid: c.session,
            },
            None => Party::Backend {
                shard,
                pid: backend,
            },
        }
    }

    /// The waits with their parties named.
    pub fn name(&self, raw: &[RawWait]) -> Vec<Wait> {
        raw.iter()
            .map(|r| Wait {
                shard: r.shard,
                waiter: self.party(r.shard, r.backend, &r.xact),
                backend: r.backend,
                since: r.since.clone(),
                blocker: self.party(r.shard, r.blocker, &r.blocker_xact),
            })
            .collect()
    }
}

/// What this proxy should publish: its own backends that take part in a wait, for those of its
/// sessions that hold connections on two shards or more (a one-shard session is its backend,
/// and needs no name). Sorted, so that an unchanged answer is seen as unchanged.
pub fn own_claims(me: &str, own: &[HashMap<i32, i32>], raw: &[RawWait]) -> Vec<Claim> {
    let mut shards_of: HashMap<i32, usize> = HashMap::new();
    for held in own {
        for &session in held.values() {
            *shards_of.entry(session).or_default() += 1;
        }
    }
    let mut out: Vec<Claim> = Vec::new();
    let mut claim = |shard: usize, backend: i32, xact: &str| {
        let Some(&session) = own.get(shard).and_then(|m| m.get(&backend)) else {
            return;
        };
        if shards_of.get(&session).copied().unwrap_or(0) < 2 || xact.is_empty() {
            return;
        }
        let c = Claim {
            proxy: me.to_string(),
            session,
            shard,
            backend,
            xact: xact.to_string(),
        };
        if !out.contains(&c) {
            out.push(c);
        }
    };
    for r in raw {
        claim(r.shard, r.backend, &r.xact);
        claim(r.shard, r.blocker, &r.blocker_xact);
    }
    out.sort_by_key(|c| (c.shard, c.backend));
    out
}

/// Whether a wait involves a backend this proxy does not hold: only then can another proxy's
/// session be in a cycle with its own, and claims are worth writing and reading.
pub fn reaches_beyond(own: &[HashMap<i32, i32>], raw: &[RawWait]) -> bool {
    let held =
        |shard: usize, backend: i32| own.get(shard).is_some_and(|m| m.contains_key(&backend));
    raw.iter()
        .any(|r| !held(r.shard, r.backend) || !held(r.shard, r.blocker))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(shard: usize, backend: i32, xact: &str, blocker: i32, blocker_xact: &str) -> RawWait {
        RawWait {
            shard,
            backend,
            since: "q".into(),
            xact: xact.into(),
            blocker,
            blocker_xact: blocker_xact.into(),
        }
    }

    #[test]
    fn a_claim_counts_only_for_the_transaction_it_was_made_in() {
        let own = vec![HashMap::from([(10, 1)]), HashMap::from([(11, 1)])];
        let claims = vec![Claim {
            proxy: "other".into(),
            session: 7,
            shard: 1,
            backend: 20,
            xact: "t1".into(),
        }];
        let h = Holders {
            me: "me",
            own: &own,
            claims: &claims,
        };
        let named = h.name(&[raw(1, 11, "t0", 20, "t1"), raw(1, 30, "t5", 20, "t2")]);
        assert_eq!(
            named[0].waiter,
            Party::Session {
                proxy: "me".into(),
                pid: 1
            }
        );
        assert_eq!(
            named[0].blocker,
            Party::Session {
                proxy: "other".into(),
                pid: 7
            }
        );
        // The same backend in a later transaction: the connection moved on, the claim is old.
        assert_eq!(named[1].blocker, Party::Backend { shard: 1, pid: 20 });
        assert_eq!(named[1].waiter, Party::Backend { shard: 1, pid: 30 });
    }

    #[test]
    fn only_sessions_on_several_shards_are_claimed_and_only_their_waiting_backends() {
        // Session 1 holds backends on shards 0 and 1; session 2 only on shard 0.
        let own = vec![HashMap::from([(10, 1), (12, 2)]), HashMap::from([(11, 1)])];
        let waits = [raw(0, 12, "x2", 10, "x1"), raw(1, 99, "y", 11, "x1b")];
        let claims = own_claims("me", &own, &waits);
        let named: Vec<(usize, i32, i32)> = claims
            .iter()
            .map(|c| (c.shard, c.backend, c.session))
            .collect();
        assert_eq!(named, [(0, 10, 1), (1, 11, 1)]);
        assert!(reaches_beyond(&own, &waits));
        assert!(!reaches_beyond(&own, &waits[..1]));
    }
}
