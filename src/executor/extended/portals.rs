//! The session's portals by name. The unnamed portal, which drivers bind for nearly every
//! query and which ends at every Sync, is kept apart from the named ones: it needs no hashing,
//! and ending it clears no table.

use super::Portal;
use foldhash::HashMap;

#[derive(Default)]
pub(super) struct Portals {
    unnamed: Option<Portal>,
    named: HashMap<String, Portal>,
}

impl Portals {
    pub fn get(&self, name: &str) -> Option<&Portal> {
        match name {
            "" => self.unnamed.as_ref(),
            _ => self.named.get(name),
        }
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut Portal> {
        match name {
            "" => self.unnamed.as_mut(),
            _ => self.named.get_mut(name),
        }
    }

    /// Binds `name`, replacing any portal of that name.
    pub fn insert(&mut self, name: &str, portal: Portal) {
        match name {
            "" => self.unnamed = Some(portal),
            _ => {
                self.named.insert(name.to_string(), portal);
            }
        }
    }

    pub fn remove(&mut self, name: &str) -> Option<Portal> {
        match name {
            "" => self.unnamed.take(),
            _ => self.named.remove(name),
        }
    }

    /// Whether any portal has a name (only those can be named by SQL).
    pub fn any_named(&self) -> bool {
        !self.named.is_empty()
    }

    /// The transaction ended: every portal is gone on the shards.
    pub fn clear(&mut self) {
        self.unnamed = None;
        if !self.named.is_empty() {
            self.named.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(p: Option<&Portal>) -> Option<usize> {
        match p {
            Some(Portal::Shard(s, _)) => Some(*s),
            _ => None,
        }
    }

    #[test]
    fn unnamed_and_named_portals_are_kept_apart() {
        let mut p = Portals::default();
        p.insert("", Portal::Shard(1, None));
        p.insert("c1", Portal::Shard(2, None));
        assert_eq!((shard(p.get("")), shard(p.get("c1"))), (Some(1), Some(2)));
        p.insert("", Portal::Shard(3, None));
        assert_eq!(shard(p.get("")), Some(3));
        assert_eq!(shard(p.remove("").as_ref()), Some(3));
        assert_eq!((shard(p.get("")), shard(p.get("c1"))), (None, Some(2)));
        p.insert("", Portal::Shard(0, None));
        p.clear();
        assert!(p.get("").is_none() && p.get("c1").is_none() && p.remove("c1").is_none());
    }
}
