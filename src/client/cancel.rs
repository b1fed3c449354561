//! The cancel-key registry.
//!
//! Clients receive a BackendKeyData whose pid, when the session holds its first-shard
//! connection for good (one shard, or session pooling), is that connection's, the one that
//! answers `pg_backend_pid()`, sends NOTIFY's notifications and is signalled by
//! `pg_terminate_backend`, so all of them agree with it. Its secret is minted by the proxy, and
//! the key stands for every shard connection of the session: a CancelRequest arrives on a new
//! connection, the registry maps the key to the server connections the session holds at that
//! moment, and the cancel is forwarded to each. In transaction pooling those change between
//! transactions: each link updates its slot when it checks a connection out or returns it
//! (a mutex no other session contends for), and the registry is otherwise touched at session
//! start and end and on cancel only.

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

/// The server connections a session holds now, by shard.
#[derive(Debug)]
struct SessionKeys {
    targets: Vec<ShardTarget>,
    keys: Mutex<Vec<Option<(i32, i32)>>>,
}

/// A live session's secret and its connections, by proxy pid.
type Sessions = HashMap<i32, (i32, Arc<SessionKeys>)>;

/// Where one of a session's links records the server connection it holds.
#[derive(Debug, Clone)]
pub struct CancelSlot {
    keys: Arc<SessionKeys>,
    index: usize,
}

impl CancelSlot {
    pub fn set(&self, key: Option<(i32, i32)>) {
        if let Ok(mut keys) = self.keys.keys.lock() {
            if let Some(k) = keys.get_mut(self.index) {
                *k = key;
            }
        }
    }
}

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
        let (targets, keys) = shards.into_iter().map(|s| (s.target, Some(s.key))).unzip();
        self.register_slots(targets, keys)
    }

    /// Registers a session whose links check connections out and return them; `keys` are the
    /// ones held at login (None for none). The pid is the first shard's only if it is held.
    pub fn register_slots(
        &self,
        targets: Vec<ShardTarget>,
        keys: Vec<Option<(i32, i32)>>,
    ) -> Registration {
        use rand::RngExt;
        const ABOVE_ANY_PID: i32 = 1 << 22;
        let mut rng = rand::rng();
        let mut map = self.inner.lock().expect("cancel registry poisoned");
        let own = keys
            .first()
            .copied()
            .flatten()
            .map(|k| k.0)
            .filter(|p| *p > 0);
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
        let session = Arc::new(SessionKeys {
            targets,
            keys: Mutex::new(keys),
        });
        map.insert(key.pid, (key.secret, session.clone()));
        Registration {
            registry: self.clone(),
            key,
            session,
        }
    }

    /// The shard keys for a cancel request, if pid and secret match a live session.
    pub fn lookup(&self, pid: i32, secret: i32) -> Option<Vec<ShardKey>> {
        let map = self.inner.lock().expect("cancel registry poisoned");
        match map.get(&pid) {
            Some((s, session)) if *s == secret => {
                let keys = session.keys.lock().ok()?;
                Some(
                    session
                        .targets
                        .iter()
                        .zip(keys.iter())
                        .filter_map(|(t, k)| {
                            k.map(|key| ShardKey {
                                target: t.clone(),
                                key,
                            })
                        })
                        .collect(),
                )
            }
            _ => None,
        }
    }
}

/// Removes the key when the session ends.
pub struct Registration {
    registry: CancelRegistry,
    pub key: ProxyKey,
    session: Arc<SessionKeys>,
}

impl Registration {
    /// The slot of the session's link to shard `index`.
    pub fn slot(&self, index: usize) -> CancelSlot {
        CancelSlot {
            keys: self.session.clone(),
            index,
        }
    }
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

    #[test]
    fn a_pooled_session_is_cancelled_on_the_connections_it_holds_now() {
        let reg = CancelRegistry::default();
        let t = crate::config::ShardTarget::parse("postgres://u@h/db").unwrap();
        let r = reg.register_slots(vec![t.clone(), t], vec![None, None]);
        assert!(
            r.key.pid > 1 << 22,
            "no connection held: a pid no backend has"
        );
        assert!(reg.lookup(r.key.pid, r.key.secret).unwrap().is_empty());
        r.slot(1).set(Some((7, 8)));
        let keys = reg.lookup(r.key.pid, r.key.secret).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].key, (7, 8));
        r.slot(1).set(None);
        assert!(reg.lookup(r.key.pid, r.key.secret).unwrap().is_empty());
    }
}
