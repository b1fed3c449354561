//! Small sets and maps keyed by shard index, for what a session notes at every batch (the
//! shards a batch touched, where the unnamed statement was parsed). A batch touches one shard or
//! a few, so they are held inline in sorted order and cleared without freeing: the B-tree
//! collections they replace allocated a node at the first insert of every batch and freed it at
//! the clear.
//!
//! Invariant: entries are sorted by shard and each shard appears once, so iteration is in
//! shard order, as it was.

use smallvec::SmallVec;

/// Shards held inline before the list moves to the heap.
const INLINE: usize = 4;

#[derive(Debug, Default, Clone)]
pub(super) struct ShardSet(SmallVec<[usize; INLINE]>);

impl ShardSet {
    pub fn insert(&mut self, shard: usize) {
        if let Err(at) = self.0.binary_search(&shard) {
            self.0.insert(at, shard);
        }
    }

    pub fn contains(&self, shard: &usize) -> bool {
        self.0.binary_search(shard).is_ok()
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().copied()
    }
}

#[derive(Debug, Default, Clone)]
pub(super) struct ShardMap<V: Copy>(SmallVec<[(usize, V); INLINE]>);

impl<V: Copy> ShardMap<V> {
    pub fn insert(&mut self, shard: usize, value: V) {
        match self.0.binary_search_by_key(&shard, |e| e.0) {
            Ok(at) => self.0[at].1 = value,
            Err(at) => self.0.insert(at, (shard, value)),
        }
    }

    pub fn get(&self, shard: &usize) -> Option<&V> {
        let at = self.0.binary_search_by_key(shard, |e| e.0).ok()?;
        Some(&self.0[at].1)
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// Any sequence of inserts (past the inline size too) gives what the B-tree gave.
    #[test]
    fn agree_with_the_btree_collections() {
        let inserts = [5usize, 1, 9, 1, 0, 7, 5, 3, 12, 0, 2];
        let (mut set, mut tree) = (ShardSet::default(), BTreeSet::new());
        let (mut map, mut tree_map) = (ShardMap::default(), BTreeMap::new());
        for (i, &s) in inserts.iter().enumerate() {
            set.insert(s);
            tree.insert(s);
            map.insert(s, i as u64);
            tree_map.insert(s, i as u64);
            assert_eq!(
                set.iter().collect::<Vec<_>>(),
                tree.iter().copied().collect::<Vec<_>>()
            );
            for probe in 0..14 {
                assert_eq!(set.contains(&probe), tree.contains(&probe));
                assert_eq!(map.get(&probe), tree_map.get(&probe));
            }
        }
        set.clear();
        map.clear();
        assert_eq!(set.iter().count(), 0);
        assert_eq!(map.get(&5), None);
    }
}
