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
//!
//! A pid the proxy minted names no backend, so `pg_cancel_backend` and `pg_terminate_backend`
//! of it cannot reach the session through a shard: the sessions take such calls to the
//! registry (`signal`), which forwards a cancel as a CancelRequest would and tells the session
//! to end through its `termination` wait. Who may signal whom follows PostgreSQL's rule with
//! the proxy's users for roles (`Owner::may_signal`).

use crate::config::ShardTarget;
use crate::error::{sqlstate, PgError};
use crate::kept_wait::KeptWait;
pub use crate::sql::signal_call::SignalKind;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Pids above this one are the proxy's: Linux gives none above `PID_MAX_LIMIT`, 2^22.
pub const ABOVE_ANY_PID: i32 = 1 << 22;

/// Whether `pid` is one the proxy may have minted, never a backend's.
pub fn is_minted(pid: i64) -> bool {
    pid > ABOVE_ANY_PID as i64 && pid <= i32::MAX as i64
}

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

/// Who a session logged in as, for the rule on who may signal it.
#[derive(Debug, Clone)]
pub struct Owner {
    pub user: Arc<str>,
    /// `admin = true` in `[[users]]`: stands for a superuser, who may signal any backend.
    pub admin: bool,
}

impl Owner {
    pub fn new(user: &str, admin: bool) -> Owner {
        Owner {
            user: user.into(),
            admin,
        }
    }

    /// PostgreSQL's rule with the proxy's users for roles: a role signals its own sessions, and
    /// a superuser (an admin user) any. The shards see one role for every client, so they
    /// cannot make this check themselves.
    pub fn may_signal(&self, target: &Owner) -> bool {
        self.admin || self.user == target.user
    }
}

/// The refusal of a signal to another user's session, in PostgreSQL's words.
pub fn forbidden(kind: SignalKind) -> PgError {
    let (message, hint) = match kind {
        SignalKind::Cancel => (
            "permission denied to cancel query",
            "Only the user the session logged in as, or a proxy user with admin = true, may \
             cancel its query.",
        ),
        SignalKind::Terminate => (
            "permission denied to terminate process",
            "Only the user the session logged in as, or a proxy user with admin = true, may \
             terminate it.",
        ),
    };
    PgError::error(sqlstate::INSUFFICIENT_PRIVILEGE, message).with_hint(hint)
}

/// The server connections a session holds now, by shard.
#[derive(Debug)]
struct SessionKeys {
    owner: Owner,
    targets: Vec<ShardTarget>,
    keys: Mutex<Vec<Option<(i32, i32)>>>,
    /// Set once another session terminated this one.
    terminate: watch::Sender<bool>,
    /// The shard index whose statement the deadlock detector cancelled (`NOT_A_VICTIM` for
    /// none), so that its link reports the cancel as the deadlock it ended.
    victim: AtomicUsize,
}

const NOT_A_VICTIM: usize = usize::MAX;

impl SessionKeys {
    fn held(&self) -> Vec<ShardKey> {
        let Ok(keys) = self.keys.lock() else {
            return Vec::new();
        };
        self.targets
            .iter()
            .zip(keys.iter())
            .filter_map(|(t, k)| {
                k.map(|key| ShardKey {
                    target: t.clone(),
                    key,
                })
            })
            .collect()
    }
}

/// What a signal to a proxy pid came to.
#[derive(Debug)]
pub enum Signalled {
    /// No live session has the pid: PostgreSQL's answer for a pid that is no backend's.
    NoSuchSession,
    /// The pid is the caller's own: it cancels its own statement or ends its own session.
    Own,
    /// Another user's session, which the caller may not signal (see `forbidden`).
    Forbidden,
    /// Delivered. For a cancel, the server connections to send it to (possibly none: a
    /// session between transactions runs nothing).
    Sent(Vec<ShardKey>),
}

/// What a session signals other sessions through.
#[derive(Debug, Clone, Copy)]
pub struct Signaller<'a> {
    pub registry: &'a CancelRegistry,
    /// The pid in this session's BackendKeyData.
    pub own_pid: i32,
}

impl Signaller<'_> {
    /// `kind` of the session with proxy pid `pid` (see `CancelRegistry::signal`).
    pub fn signal(&self, pid: i32, kind: SignalKind) -> Signalled {
        self.registry.signal(pid, kind, self.own_pid)
    }

    /// What a signal to `pid` would come to, without sending it: `Sent` stands for a session
    /// this one may signal (see `CancelRegistry::access`).
    pub fn access(&self, pid: i32) -> Signalled {
        self.registry.access(pid, self.own_pid)
    }
}

/// A session's wait for another session's `pg_terminate_backend` of it.
pub type Termination = KeptWait<bool, Pin<Box<dyn Future<Output = ()> + Send>>>;

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

    /// Whether this slot's statement was cancelled to end a deadlock across shards; asking
    /// clears it, as does `settled`.
    pub fn take_victim(&self) -> bool {
        self.keys
            .victim
            .compare_exchange(
                self.index,
                NOT_A_VICTIM,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// The connection answered ReadyForQuery: a cancel that had not ended a statement by now
    /// ends none.
    pub fn settled(&self) {
        // A load first: every ReadyForQuery passes here, a victim almost never.
        if self.keys.victim.load(Ordering::Relaxed) == self.index {
            let _ = self.take_victim();
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
    pub fn register(&self, shards: Vec<ShardKey>, owner: Owner) -> Registration {
        let (targets, keys) = shards.into_iter().map(|s| (s.target, Some(s.key))).unzip();
        self.register_slots(targets, keys, owner)
    }

    /// Registers a session whose links check connections out and return them; `keys` are the
    /// ones held at login (None for none). The pid is the first shard's only if it is held.
    pub fn register_slots(
        &self,
        targets: Vec<ShardTarget>,
        keys: Vec<Option<(i32, i32)>>,
        owner: Owner,
    ) -> Registration {
        use rand::RngExt;
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
            owner,
            targets,
            keys: Mutex::new(keys),
            terminate: watch::channel(false).0,
            victim: AtomicUsize::new(NOT_A_VICTIM),
        });
        map.insert(key.pid, (key.secret, session.clone()));
        Registration {
            registry: self.clone(),
            key,
            session,
        }
    }

    /// For each of `shards` shard indexes, the backend pid of every server connection a session
    /// holds there, with the session's proxy pid.
    pub fn held_by_shard(&self, shards: usize) -> Vec<HashMap<i32, i32>> {
        let mut out = vec![HashMap::new(); shards];
        let map = self.inner.lock().expect("cancel registry poisoned");
        for (&proxy_pid, (_, session)) in map.iter() {
            let Ok(keys) = session.keys.lock() else {
                continue;
            };
            for (held, key) in out.iter_mut().zip(keys.iter()) {
                if let Some((backend_pid, _)) = key {
                    held.insert(*backend_pid, proxy_pid);
                }
            }
        }
        out
    }

    /// Marks the session with `proxy_pid` as the victim of a deadlock across shards, waiting
    /// on shard `shard`, and gives the key of its connection there to cancel, if it holds
    /// the connection with backend `backend_pid` still.
    pub fn deadlock_victim(
        &self,
        proxy_pid: i32,
        shard: usize,
        backend_pid: i32,
    ) -> Option<ShardKey> {
        let map = self.inner.lock().expect("cancel registry poisoned");
        let (_, session) = map.get(&proxy_pid)?;
        let key = (*session.keys.lock().ok()?.get(shard)?)?;
        if key.0 != backend_pid {
            return None;
        }
        session.victim.store(shard, Ordering::Release);
        Some(ShardKey {
            target: session.targets.get(shard)?.clone(),
            key,
        })
    }

    /// The shard keys for a cancel request, if pid and secret match a live session.
    pub fn lookup(&self, pid: i32, secret: i32) -> Option<Vec<ShardKey>> {
        let map = self.inner.lock().expect("cancel registry poisoned");
        match map.get(&pid) {
            Some((s, session)) if *s == secret => Some(session.held()),
            _ => None,
        }
    }

    /// Whether the session with pid `from` may signal the one with proxy pid `pid`: `Sent`
    /// (with no keys) when it may; the other answers as `signal` gives them.
    pub fn access(&self, pid: i32, from: i32) -> Signalled {
        let map = self.inner.lock().expect("cancel registry poisoned");
        Self::access_in(&map, pid, from)
            .map_or_else(|refused| refused, |_| Signalled::Sent(Vec::new()))
    }

    /// `kind` of the session with proxy pid `pid`, asked by the session with pid `from`. As
    /// in PostgreSQL, a pid no session has is answered before the caller's right is checked.
    pub fn signal(&self, pid: i32, kind: SignalKind, from: i32) -> Signalled {
        let mut map = self.inner.lock().expect("cancel registry poisoned");
        let session = match Self::access_in(&map, pid, from) {
            Ok(session) => session,
            Err(refused) => return refused,
        };
        match kind {
            SignalKind::Cancel => Signalled::Sent(session.held()),
            SignalKind::Terminate => {
                session.terminate.send_replace(true);
                // Gone from now on, as a terminated backend is for the caller's next call,
                // while the session still winds down.
                map.remove(&pid);
                Signalled::Sent(Vec::new())
            }
        }
    }

    /// The target session, if `from` may signal it; otherwise what the signal comes to.
    fn access_in(map: &Sessions, pid: i32, from: i32) -> Result<&Arc<SessionKeys>, Signalled> {
        let Some((_, session)) = map.get(&pid) else {
            return Err(Signalled::NoSuchSession);
        };
        if pid == from {
            return Err(Signalled::Own);
        }
        match map.get(&from) {
            Some((_, caller)) if caller.owner.may_signal(&session.owner) => Ok(session),
            _ => Err(Signalled::Forbidden),
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
    /// A wait that ends once another session terminated this one.
    pub fn termination(&self) -> Termination {
        let mut rx = self.session.terminate.subscribe();
        let mut probe = rx.clone();
        // A subscription counts the value it finds as seen. A terminate that came between
        // the registration and this wait (the greeting is written in between) must still
        // show in `moved()`, which the session loops look at before reading the client.
        if *probe.borrow() {
            probe.mark_changed();
        }
        KeptWait::new(
            probe,
            Box::pin(async move {
                if rx.wait_for(|t| *t).await.is_err() {
                    // The registration outlives the session; never, then.
                    std::future::pending::<()>().await;
                }
            }),
        )
    }

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
            // A terminated session left the map already, and its pid may be another's now.
            if map
                .get(&self.key.pid)
                .is_some_and(|(_, s)| Arc::ptr_eq(s, &self.session))
            {
                map.remove(&self.key.pid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> Owner {
        Owner::new("app", false)
    }

    #[test]
    fn keys_resolve_until_dropped() {
        let reg = CancelRegistry::default();
        let target = crate::config::ShardTarget::parse("postgres://u@h/db").unwrap();
        let r = reg.register(
            vec![ShardKey {
                target,
                key: (1, 2),
            }],
            app(),
        );
        let k = r.key;
        assert_eq!(k.pid, 1, "the first shard connection's pid");
        assert_eq!(reg.lookup(k.pid, k.secret).unwrap()[0].key, (1, 2));
        // The same pid again (it cannot happen with live backends): a pid no backend has.
        let target = crate::config::ShardTarget::parse("postgres://u@h/db").unwrap();
        let again = reg.register(
            vec![ShardKey {
                target,
                key: (1, 3),
            }],
            app(),
        );
        assert!(again.key.pid > 1 << 22);
        assert!(reg.lookup(k.pid, k.secret.wrapping_add(1)).is_none());
        drop(r);
        assert!(reg.lookup(k.pid, k.secret).is_none());
    }

    #[test]
    fn a_terminated_session_is_gone_at_once_and_its_end_leaves_the_pid_alone() {
        let reg = CancelRegistry::default();
        let t = crate::config::ShardTarget::parse("postgres://u@h/db").unwrap();
        let killer = reg.register_slots(vec![t.clone()], vec![None], app());
        let victim = reg.register_slots(vec![t.clone()], vec![Some((40, 1))], app());
        assert!(matches!(
            reg.signal(victim.key.pid, SignalKind::Terminate, killer.key.pid),
            Signalled::Sent(_)
        ));
        // As a terminated backend: the next call finds no such session, though the session
        // itself has not ended yet.
        assert!(matches!(
            reg.signal(victim.key.pid, SignalKind::Terminate, killer.key.pid),
            Signalled::NoSuchSession
        ));
        // A new session given the same pid is not removed when the old one ends.
        let next = reg.register_slots(vec![t], vec![Some((40, 2))], app());
        assert_eq!(next.key.pid, 40);
        drop(victim);
        assert!(reg.lookup(next.key.pid, next.key.secret).is_some());
    }

    #[test]
    fn held_connections_map_to_their_sessions_and_a_victim_is_reported_once() {
        let reg = CancelRegistry::default();
        let t = crate::config::ShardTarget::parse("postgres://u@h/db").unwrap();
        let r = reg.register_slots(vec![t.clone(), t], vec![None, None], app());
        r.slot(0).set(Some((70, 1)));
        r.slot(1).set(Some((71, 2)));
        let held = reg.held_by_shard(2);
        assert_eq!(held[0].get(&70), Some(&r.key.pid));
        assert_eq!(held[1].get(&71), Some(&r.key.pid));
        // Only the connection it holds on that shard now.
        assert!(reg.deadlock_victim(r.key.pid, 1, 99).is_none());
        let key = reg.deadlock_victim(r.key.pid, 1, 71).expect("held");
        assert_eq!(key.key, (71, 2));
        assert!(!r.slot(0).take_victim(), "another shard's link");
        assert!(r.slot(1).take_victim());
        assert!(!r.slot(1).take_victim(), "reported once");
        // A ReadyForQuery before the cancel landed: nothing to report.
        reg.deadlock_victim(r.key.pid, 1, 71).unwrap();
        r.slot(1).settled();
        assert!(!r.slot(1).take_victim());
    }

    #[test]
    fn a_pooled_session_is_cancelled_on_the_connections_it_holds_now() {
        let reg = CancelRegistry::default();
        let t = crate::config::ShardTarget::parse("postgres://u@h/db").unwrap();
        let r = reg.register_slots(vec![t.clone(), t], vec![None, None], app());
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

    #[tokio::test]
    async fn a_session_signals_another_by_its_minted_pid() {
        use std::future::Future;
        let reg = CancelRegistry::default();
        let t = crate::config::ShardTarget::parse("postgres://u@h/db").unwrap();
        let a = reg.register_slots(vec![t.clone()], vec![None], app());
        let b = reg.register_slots(vec![t], vec![None], app());
        assert!(is_minted(a.key.pid as i64) && is_minted(b.key.pid as i64));
        assert!(!is_minted(ABOVE_ANY_PID as i64) && !is_minted(1 << 31));
        let (pa, pb) = (a.key.pid, b.key.pid);
        assert!(matches!(
            reg.signal(pa, SignalKind::Terminate, pa),
            Signalled::Own
        ));
        b.slot(0).set(Some((7, 8)));
        match reg.signal(pb, SignalKind::Cancel, pa) {
            Signalled::Sent(keys) => assert_eq!(keys[0].key, (7, 8)),
            other => panic!("{other:?}"),
        }
        let mut ended = b.termination();
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(std::pin::Pin::new(&mut ended).poll(&mut cx).is_pending());
        assert!(a.termination().poll_kept(&mut cx).is_pending());
        assert!(matches!(
            reg.signal(pb, SignalKind::Terminate, pa),
            Signalled::Sent(_)
        ));
        ended.await;
        assert!(
            a.termination().poll_kept(&mut cx).is_pending(),
            "only the target ends"
        );
        drop(b);
        assert!(matches!(
            reg.signal(pb, SignalKind::Terminate, pa),
            Signalled::NoSuchSession
        ));
    }

    #[test]
    fn a_terminate_before_the_wait_is_taken_shows_at_once() {
        let reg = CancelRegistry::default();
        let t = crate::config::ShardTarget::parse("postgres://u@h/db").unwrap();
        let killer = reg.register_slots(vec![t.clone()], vec![None], app());
        let victim = reg.register_slots(vec![t], vec![None], app());
        assert!(!victim.termination().moved());
        assert!(matches!(
            reg.signal(victim.key.pid, SignalKind::Terminate, killer.key.pid),
            Signalled::Sent(_)
        ));
        // As when the terminate lands while the greeting is written, before the session
        // loop takes its wait.
        assert!(victim.termination().moved());
    }

    #[test]
    fn only_the_same_user_or_an_admin_signals_a_session() {
        let reg = CancelRegistry::default();
        let t = crate::config::ShardTarget::parse("postgres://u@h/db").unwrap();
        let session = |owner| reg.register_slots(vec![t.clone()], vec![None], owner);
        let (target, same, other, admin) = (
            session(app()),
            session(app()),
            session(Owner::new("report", false)),
            session(Owner::new("ops", true)),
        );
        let (to, gone) = (target.key.pid, other.key.pid);
        assert!(matches!(reg.access(to, same.key.pid), Signalled::Sent(_)));
        assert!(matches!(
            reg.access(to, other.key.pid),
            Signalled::Forbidden
        ));
        assert!(matches!(reg.access(to, admin.key.pid), Signalled::Sent(_)));
        assert!(matches!(
            reg.access(admin.key.pid, target.key.pid),
            Signalled::Forbidden
        ));
        // A refused terminate leaves the session be.
        assert!(matches!(
            reg.signal(to, SignalKind::Terminate, gone),
            Signalled::Forbidden
        ));
        assert!(!*target.session.terminate.borrow());
        // A pid no session has is answered as such whoever asks.
        drop(other);
        assert!(matches!(
            reg.access(gone, target.key.pid),
            Signalled::NoSuchSession
        ));
        assert!(
            matches!(reg.access(to, gone), Signalled::Forbidden),
            "a caller that is no session may signal nothing"
        );
    }
}
