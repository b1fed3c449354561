//! The cancel-key registry.
//!
//! Clients receive a BackendKeyData whose pid is that of the session's connection to the first
//! shard, the one that answers `pg_backend_pid()`, sends NOTIFY's notifications and is
//! signalled by `pg_terminate_backend`, so all of them agree with it. Its secret is minted by the
//! proxy, and the key stands for every shard connection of the session: a CancelRequest arrives
//! on a new connection, the registry maps the key to the session's shard connections, and the
//! cancel is forwarded to each. The registry is touched at session start and end and on cancel
//! only, never per query.

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
    /// Registers a key for a session's shard connections: the first one's pid, with a fresh
    /// secret. Should that pid be taken (two sessions cannot share a backend, but the proxy
    /// does not rely on it), a pid is minted above the largest pid Linux gives
    /// (`PID_MAX_LIMIT`, 2^22), so that it never names a real backend.
    pub fn register(&self, shards: Vec<ShardKey>) -> Registration {
        use rand::RngExt;
        const ABOVE_ANY_PID: i32 = 1 << 22;
        let mut rng = rand::rng();
        let mut map = self.inner.lock().expect("cancel registry poisoned");
        let own = shards.first().map(|s| s.key.0).filter(|p| *p > 0);
        let pid = match own {
            Some(p) if !map.contains_key(&p) => p,
            _ => loop {
                let pid = rng.random_range(ABOVE_ANY_PID + 1..i32::MAX);
                if !map.contains_key(&pid) {
                    break pid;
                }
            },
        };
        let key = ProxyKey {
            pid,
            secret: rng.random(),
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
        assert_eq!(k.pid, 1, "the first shard connection's pid");
        assert_eq!(reg.lookup(k.pid, k.secret).unwrap()[0].key, (1, 2));
        // The same pid again (it cannot happen with live backends): a pid no backend has.
        let target = crate::config::ShardTarget::parse("postgres://u@h/db").unwrap();
        let again = reg.register(vec![ShardKey {
            target,
            key: (1, 3),
        }]);
        assert!(again.key.pid > 1 << 22);
        assert!(reg.lookup(k.pid, k.secret.wrapping_add(1)).is_none());
        drop(r);
        assert!(reg.lookup(k.pid, k.secret).is_none());
    }
}
