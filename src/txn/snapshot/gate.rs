//! The commit/snapshot gate: a two-class lock per shard (docs/snapshot.md).
//!
//! Commit windows (from a distributed transaction's decision until its last COMMIT PREPARED is
//! acknowledged) share a shard with each other; snapshot acquisitions (a reader taking its
//! per-shard snapshots) share with each other; the two classes exclude each other. If no commit
//! window overlaps a snapshot acquisition on a shared shard, the reader sees every distributed
//! transaction whole or not at all.
//!
//! Invariants: a request is granted on all its shards at once or not at all (no hold-and-wait,
//! so no deadlock), and requests are granted in timestamp order where they conflict: a waiting
//! request blocks later requests of the other class on its shards, so neither class starves.

use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Commit,
    Snapshot,
}

#[derive(Debug, Default)]
struct Load {
    commits: u32,
    snapshots: u32,
}

impl Load {
    fn other(&self, class: Class) -> u32 {
        match class {
            Class::Commit => self.snapshots,
            Class::Snapshot => self.commits,
        }
    }
    fn add(&mut self, class: Class, n: i64) {
        let c = match class {
            Class::Commit => &mut self.commits,
            Class::Snapshot => &mut self.snapshots,
        };
        *c = (*c as i64 + n) as u32;
    }
}

#[derive(Debug, Clone)]
struct Request {
    class: Class,
    shards: Vec<usize>,
}

/// The gate's bookkeeping, without any waiting: `request` and `release` say which requests are
/// granted, the caller wakes them.
#[derive(Debug, Default)]
pub struct GateCore {
    load: HashMap<usize, Load>,
    /// Waiting requests by id (ids are timestamps, so this is FIFO by timestamp).
    waiting: BTreeMap<u64, Request>,
    granted: HashMap<u64, Request>,
}

impl GateCore {
    /// Queues request `id`; returns the ids granted now (possibly including `id`).
    pub fn request(&mut self, id: u64, class: Class, shards: Vec<usize>) -> Vec<u64> {
        self.waiting.insert(id, Request { class, shards });
        self.pump()
    }

    /// Ends a granted (or still waiting) request; returns the ids granted as a result.
    pub fn release(&mut self, id: u64) -> Vec<u64> {
        if self.waiting.remove(&id).is_some() {
            return self.pump();
        }
        if let Some(r) = self.granted.remove(&id) {
            for s in &r.shards {
                self.load.entry(*s).or_default().add(r.class, -1);
            }
        }
        self.pump()
    }

    pub fn is_granted(&self, id: u64) -> bool {
        self.granted.contains_key(&id)
    }

    /// Commit windows open now.
    pub fn open_windows(&self) -> usize {
        self.granted
            .values()
            .filter(|r| r.class == Class::Commit)
            .count()
    }

    fn pump(&mut self) -> Vec<u64> {
        let mut now = Vec::new();
        // Shards where an earlier waiting request of a class holds back the other class.
        let mut held_back: HashMap<(usize, Class), ()> = HashMap::new();
        let ids: Vec<u64> = self.waiting.keys().copied().collect();
        for id in ids {
            let r = &self.waiting[&id];
            let ok = r.shards.iter().all(|s| {
                self.load.get(s).map_or(0, |l| l.other(r.class)) == 0
                    && !held_back.contains_key(&(*s, r.class))
            });
            if ok {
                let r = self.waiting.remove(&id).expect("listed above");
                for s in &r.shards {
                    self.load.entry(*s).or_default().add(r.class, 1);
                }
                self.granted.insert(id, r);
                now.push(id);
            } else {
                let other = match r.class {
                    Class::Commit => Class::Snapshot,
                    Class::Snapshot => Class::Commit,
                };
                for s in &r.shards {
                    held_back.insert((*s, other), ());
                }
            }
        }
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_exclude_each_other_and_share_within() {
        let mut g = GateCore::default();
        assert_eq!(g.request(1, Class::Commit, vec![0, 1]), vec![1]);
        assert_eq!(
            g.request(2, Class::Commit, vec![1, 2]),
            vec![2],
            "commits share"
        );
        assert!(
            g.request(3, Class::Snapshot, vec![0]).is_empty(),
            "a commit window is open"
        );
        assert!(g.request(4, Class::Snapshot, vec![2]).is_empty());
        assert_eq!(g.release(1), vec![3]);
        assert_eq!(g.release(2), vec![4]);
        assert_eq!(g.open_windows(), 0);
    }

    #[test]
    fn grants_are_atomic_and_fifo_so_nobody_starves() {
        let mut g = GateCore::default();
        assert_eq!(g.request(1, Class::Snapshot, vec![0]), vec![1]);
        // A commit on shards 0 and 1 waits for the snapshot on 0, and holds nothing meanwhile.
        assert!(g.request(2, Class::Commit, vec![0, 1]).is_empty());
        assert!(!g.is_granted(2));
        // A later snapshot on 0 must not overtake the waiting commit (no starvation) ...
        assert!(g.request(3, Class::Snapshot, vec![0]).is_empty());
        // ... but one on a shard the commit does not touch goes ahead.
        assert_eq!(g.request(4, Class::Snapshot, vec![2]), vec![4]);
        assert_eq!(g.release(1), vec![2]);
        assert_eq!(g.release(2), vec![3]);
    }

    #[test]
    fn a_waiting_request_can_be_withdrawn() {
        let mut g = GateCore::default();
        g.request(1, Class::Commit, vec![0]);
        assert!(g.request(2, Class::Snapshot, vec![0]).is_empty());
        assert!(
            g.request(3, Class::Commit, vec![0]).is_empty(),
            "behind the snapshot"
        );
        assert_eq!(g.release(2), vec![3]);
    }
}
