//! Who gets in: the client connection limit and the queue of connections still logging in.
//!
//! Two budgets protect the proxy from floods. Every accepted connection holds one of
//! `max_client_connections` slots until it ends; one more is told `53300` and closed. A
//! connection still in startup or authentication also holds a place in a queue of
//! `max_pending_startups`; when the queue is full, the connection that has waited longest is
//! evicted to make room. Real clients log in within milliseconds, so a flood of half-open
//! connections only ever evicts itself, and legitimate clients keep getting in.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

/// Connections logging in, oldest first, each with the sender that evicts it.
type StartupQueue = Arc<Mutex<VecDeque<(u64, oneshot::Sender<()>)>>>;

#[derive(Debug)]
pub struct Admission {
    slots: Arc<Semaphore>,
    pending: StartupQueue,
    max_pending: usize,
    next_id: AtomicU64,
}

/// A connection's place: its client slot, and until it has logged in, its place in the queue.
#[derive(Debug)]
pub struct Admitted {
    _slot: OwnedSemaphorePermit,
    ticket: Option<Ticket>,
}

#[derive(Debug)]
struct Ticket {
    id: u64,
    evicted: oneshot::Receiver<()>,
    queue: StartupQueue,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.retain(|(id, _)| *id != self.id);
    }
}

impl Admission {
    pub fn new(max_clients: usize, max_pending: usize) -> Admission {
        Admission {
            slots: Arc::new(Semaphore::new(max_clients)),
            pending: Arc::default(),
            max_pending: max_pending.max(1),
            next_id: AtomicU64::new(0),
        }
    }

    /// A place for a new connection, or `None` when every client slot is taken.
    pub fn admit(&self) -> Option<Admitted> {
        let slot = self.slots.clone().try_acquire_owned().ok()?;
        let (tx, rx) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut q = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        while q.len() >= self.max_pending {
            if let Some((_, oldest)) = q.pop_front() {
                metrics::counter!(crate::metrics::STARTUPS_EVICTED).increment(1);
                let _ = oldest.send(());
            }
        }
        q.push_back((id, tx));
        drop(q);
        Some(Admitted {
            _slot: slot,
            ticket: Some(Ticket {
                id,
                evicted: rx,
                queue: self.pending.clone(),
            }),
        })
    }

    /// Connections in startup or authentication now.
    pub fn pending(&self) -> usize {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Admitted {
    /// Resolves when this connection is evicted from the startup queue (never, once logged in).
    pub async fn evicted(&mut self) {
        match self.ticket.as_mut() {
            Some(t) => {
                if (&mut t.evicted).await.is_err() {
                    // The queue dropped the sender without evicting: never resolve.
                    std::future::pending::<()>().await
                }
            }
            None => std::future::pending::<()>().await,
        }
    }

    /// The client has logged in: it leaves the startup queue and keeps only its slot.
    pub fn logged_in(&mut self) {
        self.ticket = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_longest_waiting_startup_is_evicted_and_the_client_limit_holds() {
        let a = Admission::new(3, 2);
        let mut first = a.admit().unwrap();
        let mut second = a.admit().unwrap();
        second.logged_in();
        let _third = a.admit().unwrap();
        // The queue held `first` and `third`; a fourth would exceed the client limit.
        assert!(a.admit().is_none());
        tokio::time::timeout(std::time::Duration::from_secs(1), first.evicted())
            .await
            .expect_err("not evicted while the queue has room");
        drop(second);
        let _fourth = a.admit().unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), first.evicted())
            .await
            .expect("the oldest startup is evicted");
        assert_eq!(a.pending(), 2);
    }
}
