//! The cancel-key registry.
//!
//! Clients receive a BackendKeyData minted by the proxy (a shard's pid would be meaningless once
//! a session spans several shards). A CancelRequest arrives on a new connection; the registry maps
//! the proxy key to the shard connections of that session, and the cancel is forwarded to each.
//! The registry is touched at session start and end and on cancel only, never per query.

use crate::config::ShardTarget;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The proxy-side key of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProxyKey {
    pub pid: i32,
    pub secret: i32,
}

/// One shard connection a cancel must reach.
#[derive(Debug, Clone)]
pub struct ShardKey {
    pub target: ShardTarget,
    pub key: (i32, i32),
}

/// A live session's secret and the shard connections it uses, by proxy pid.
type Sessions = HashMap<i32, (i32, Vec<ShardKey>)>;

#[derive(Debug, Default, Clone)]
pub struct CancelRegistry {
    inner: Arc<Mutex<Sessions>>,
}

impl CancelRegistry {
    /// Mints a fresh key for a session's shard connections and registers it.
    pub fn register(&self, shards: Vec<ShardKey>) -> Registration {
        use rand::RngExt;
        let mut rng = rand::rng();
        let mut map = self.inner.lock().expect("cancel registry poisoned");
        let key = loop {
            let pid = rng.random_range(1..i32::MAX);
            if !map.contains_key(&pid) {
                break ProxyKey {
                    pid,
                    secret: rng.random(),
                };
            }
        };
        map.insert(key.pid, (key.secret, shards));
        Registration {
            registry: self.clone(),
            key,
        }
    }

    /// The shard keys for a cancel request, if pid and secret match a live session.
    pub fn lookup(&self, pid: i32, secret: i32) -> Option<Vec<ShardKey>> {
        let map = self.inner.lock().expect("cancel registry poisoned");
        match map.get(&pid) {
            Some((s, shards)) if *s == secret => Some(shards.clone()),
            _ => None,
        }
    }
}

/// Removes the key when the session ends.
pub struct Registration {
    registry: CancelRegistry,
    pub key: ProxyKey,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut map) = self.registry.inner.lock() {
            map.remove(&self.key.pid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_resolve_until_dropped() {
        let reg = CancelRegistry::default();
        let target = crate::config::ShardTarget::parse("postgres://u@h/db").unwrap();
        let r = reg.register(vec![ShardKey {
            target,
            key: (1, 2),
        }]);
        let k = r.key;
        assert_eq!(reg.lookup(k.pid, k.secret).unwrap()[0].key, (1, 2));
        assert!(reg.lookup(k.pid, k.secret.wrapping_add(1)).is_none());
        drop(r);
        assert!(reg.lookup(k.pid, k.secret).is_none());
    }
}
