//! The graph of lock waits the watch builds: who waits for whom, on which shard, and the
//! cycle among them that no shard can see. Pure, so every proxy looking at the same waits
//! finds the same cycle and picks the same victim.

use std::collections::{BTreeMap, BTreeSet};

/// A transaction as the watch names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Party {
    /// A session of a proxy (`proxy` is that proxy's registry id), which may hold server
    /// connections on several shards.
    Session { proxy: String, pid: i32 },
    /// A backend no proxy claims: a transaction of one server only (a one-shard session of a
    /// proxy that did not say, a client connected to the shard directly).
    Backend { shard: usize, pid: i32 },
}

/// One wait: on `shard`, `waiter` (by its backend `backend`, waiting since its statement
/// started at `since`) waits for `blocker`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    pub shard: usize,
    pub waiter: Party,
    pub backend: i32,
    pub since: String,
    pub blocker: Party,
}

/// A cycle of waits that spans two shards or more, if `waits` hold one. A cycle on one shard
/// is that shard's to break. Every such cycle passes through a `Session`: a `Backend`'s waits
/// are all on its own shard.
pub fn cycle(waits: &[Wait]) -> Option<Vec<Wait>> {
    let mut out: BTreeMap<&Party, Vec<&Wait>> = BTreeMap::new();
    for w in waits.iter().filter(|w| w.waiter != w.blocker) {
        out.entry(&w.waiter).or_default().push(w);
    }
    // Depth-first from each party, along one path at a time; the graph is a few parties.
    for &start in out.keys() {
        let mut path: Vec<&Wait> = Vec::new();
        if let Some(found) = walk(start, start, &out, &mut path) {
            return Some(found);
        }
    }
    None
}

fn walk<'a>(
    start: &Party,
    at: &Party,
    out: &BTreeMap<&Party, Vec<&'a Wait>>,
    path: &mut Vec<&'a Wait>,
) -> Option<Vec<Wait>> {
    for &w in out.get(at).into_iter().flatten() {
        if w.blocker == *start {
            path.push(w);
            let shards: BTreeSet<usize> = path.iter().map(|w| w.shard).collect();
            let found = (shards.len() > 1).then(|| path.iter().map(|w| (*w).clone()).collect());
            path.pop();
            if found.is_some() {
                return found;
            }
            continue;
        }
        if path.iter().any(|p| p.waiter == w.blocker) || path.len() > 32 {
            continue;
        }
        path.push(w);
        if let Some(found) = walk(start, &w.blocker, out, path) {
            return Some(found);
        }
        path.pop();
    }
    None
}

/// The wait of the cycle to cancel: that of the greatest session (by proxy id, then pid), so
/// that every proxy looking at the same cycle picks the same one, and only its own proxy, which
/// holds its connections, acts.
pub fn victim(cycle: &[Wait]) -> Option<&Wait> {
    cycle
        .iter()
        .filter(|w| matches!(w.waiter, Party::Session { .. }))
        .max_by(|a, b| a.waiter.cmp(&b.waiter))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(proxy: &str, pid: i32) -> Party {
        Party::Session {
            proxy: proxy.into(),
            pid,
        }
    }

    fn w(shard: usize, waiter: Party, blocker: Party) -> Wait {
        Wait {
            shard,
            backend: 100 + shard as i32,
            since: "t".into(),
            waiter,
            blocker,
        }
    }

    fn waiters(found: &[Wait]) -> Vec<Party> {
        let mut out: Vec<Party> = found.iter().map(|w| w.waiter.clone()).collect();
        out.sort();
        out
    }

    #[test]
    fn a_cycle_over_two_shards_is_found_and_one_on_one_shard_is_left_to_it() {
        let (a, b) = (s("p", 7), s("p", 9));
        let found = cycle(&[w(0, a.clone(), b.clone()), w(1, b.clone(), a.clone())]).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(victim(&found).map(|v| (&v.waiter, v.shard)), Some((&b, 1)));
        // PostgreSQL breaks a cycle on one server itself.
        assert_eq!(
            cycle(&[w(0, a.clone(), b.clone()), w(0, b.clone(), a.clone())]),
            None
        );
        // Waits without a cycle.
        let c = s("p", 8);
        assert_eq!(
            cycle(&[
                w(0, a.clone(), b.clone()),
                w(1, b, c.clone()),
                w(2, c, s("p", 5))
            ]),
            None
        );
    }

    #[test]
    fn a_cycle_of_three_is_found_beside_a_chain_that_leads_into_it() {
        let (a, b, c, d) = (s("p", 4), s("p", 5), s("p", 6), s("p", 3));
        let found = cycle(&[
            w(2, a.clone(), b.clone()),
            w(0, b.clone(), c.clone()),
            w(1, c.clone(), a.clone()),
            w(0, d, a.clone()),
        ])
        .unwrap();
        assert_eq!(waiters(&found), [a, b, c]);
    }

    #[test]
    fn sessions_of_two_proxies_and_a_one_shard_backend_close_a_cycle() {
        // x (proxy "a") waits on shard 0 for a backend no proxy claims, which waits there for
        // y (proxy "b"); y waits for x on shard 1.
        let (x, y) = (s("a", 40), s("b", 12));
        let lone = Party::Backend { shard: 0, pid: 555 };
        let found = cycle(&[
            w(0, x.clone(), lone.clone()),
            w(0, lone.clone(), y.clone()),
            w(1, y.clone(), x.clone()),
        ])
        .unwrap();
        assert_eq!(found.len(), 3);
        // The greatest session by proxy id first: "b" over "a" whatever the pids.
        assert_eq!(victim(&found).map(|v| &v.waiter), Some(&y));
    }
}
