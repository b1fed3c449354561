//! Who is connected, and what each session is doing, for the admin console (`SHOW CLIENTS`,
//! `SHOW POOLS`, `SHOW TRANSACTIONS`) and for `PAUSE`, which waits until no session is in a
//! transaction.
//!
//! A session registers at login and is removed when its handle drops. It reports its state at
//! request boundaries only (an atomic store), so the registry costs nothing per row.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

/// What a session is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Between transactions, waiting for the client.
    Idle,
    /// Running a statement outside a transaction block.
    Active,
    /// Inside a transaction (between statements or running one).
    InTransaction,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Active => "active",
            State::InTransaction => "in transaction",
        }
    }

    fn from_u8(v: u8) -> State {
        match v {
            1 => State::Active,
            2 => State::InTransaction,
            _ => State::Idle,
        }
    }
}

/// One connected session.
#[derive(Debug)]
pub struct Client {
    pub id: u64,
    pub user: String,
    pub peer: SocketAddr,
    pub tls: bool,
    /// The shards it holds a connection to.
    pub shards: usize,
    /// The pid in its BackendKeyData, which `pg_cancel_backend` and `pg_terminate_backend` take.
    pub pid: i32,
    pub connected_at: SystemTime,
    state: AtomicU8,
    /// Milliseconds after `started` when the current transaction began (0: none).
    txn_since_ms: AtomicU64,
    started: Instant,
}

impl Client {
    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::SeqCst))
    }

    /// When the transaction it is in began, if it is in one.
    pub fn transaction_since(&self) -> Option<Instant> {
        match self.txn_since_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.started + std::time::Duration::from_millis(ms)),
        }
    }
}

/// The registry.
#[derive(Debug, Default, Clone)]
pub struct Clients {
    inner: Arc<Mutex<BTreeMap<u64, Arc<Client>>>>,
    next: Arc<AtomicU64>,
}

impl Clients {
    pub fn register(
        &self,
        user: &str,
        peer: SocketAddr,
        tls: bool,
        shards: usize,
        pid: i32,
    ) -> Registered {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let client = Arc::new(Client {
            id,
            user: user.to_string(),
            peer,
            tls,
            shards,
            pid,
            connected_at: SystemTime::now(),
            state: AtomicU8::new(State::Idle as u8),
            txn_since_ms: AtomicU64::new(0),
            started: Instant::now(),
        });
        self.lock().insert(id, client.clone());
        Registered {
            clients: self.clone(),
            client,
        }
    }

    /// Every session, oldest first.
    pub fn list(&self) -> Vec<Arc<Client>> {
        self.lock().values().cloned().collect()
    }

    /// Sessions in a transaction or running a statement.
    pub fn busy(&self) -> usize {
        self.lock()
            .values()
            .filter(|c| c.state() != State::Idle)
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Client>>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A session's entry; removed when dropped.
pub struct Registered {
    clients: Clients,
    client: Arc<Client>,
}

impl Registered {
    pub fn set(&self, state: State) {
        let c = &self.client;
        let before = State::from_u8(c.state.swap(state as u8, Ordering::SeqCst));
        match (before, state) {
            (State::InTransaction, State::InTransaction) => {}
            (_, State::InTransaction) => {
                let ms = c.started.elapsed().as_millis().max(1) as u64;
                c.txn_since_ms.store(ms, Ordering::Relaxed);
            }
            (_, _) => c.txn_since_ms.store(0, Ordering::Relaxed),
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.clients.lock().remove(&self.client.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_come_and_go_and_report_their_state() {
        let clients = Clients::default();
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let a = clients.register("app", peer, false, 3, 5_000_001);
        let b = clients.register("ops", peer, true, 3, 5_000_002);
        assert_eq!(clients.list().len(), 2);
        assert_eq!(clients.busy(), 0);
        a.set(State::InTransaction);
        assert_eq!(clients.busy(), 1);
        assert!(clients.list()[0].transaction_since().is_some());
        a.set(State::Idle);
        assert!(clients.list()[0].transaction_since().is_none());
        drop(b);
        assert_eq!(clients.list().len(), 1);
    }
}
