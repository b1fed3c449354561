//! A wait on a `watch` channel that its owner keeps for as long as it lives, and polls again
//! only when the channel has moved.
//!
//! A `wait_for` future registers with the channel at its first poll, takes the channel's lock
//! again at every later poll, and unregisters when dropped. The proxy's hot loops poll such
//! waits at every message they pass (a session's waits for a stop, a shard link's wait for its
//! shard to be marked down), so they keep one wait and look at the channel's version first,
//! which is one atomic load.
//!
//! Invariant: the wait is polled at its first poll, whenever the channel changed since it was
//! last polled, and whenever a task other than the one it registered polls it (a shard link
//! can move between tasks). In between, its registration stands, so a change of the channel
//! still wakes the task that polled it last.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use tokio::sync::watch;

pub struct KeptWait<T, F> {
    wait: F,
    /// A receiver of the wait's channel, looked at to tell whether `wait` needs a poll.
    probe: watch::Receiver<T>,
    /// The waker `wait` registered last; `None` until its first poll.
    registered: Option<Waker>,
}

impl<T, F: Future + Unpin> KeptWait<T, F> {
    /// `wait` is a wait on `probe`'s channel (through a receiver of its own).
    pub fn new(probe: watch::Receiver<T>, wait: F) -> Self {
        KeptWait {
            wait,
            probe,
            registered: None,
        }
    }

    pub fn poll_kept(&mut self, cx: &mut Context<'_>) -> Poll<F::Output> {
        let same_task = self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()));
        if same_task && matches!(self.probe.has_changed(), Ok(false)) {
            return Poll::Pending;
        }
        if !same_task {
            self.registered = Some(cx.waker().clone());
        }
        // Marked seen before the wait looks: a change from here on shows at the next poll
        // (and wakes the task), so one change does not make every later poll a full one.
        self.probe.borrow_and_update();
        Pin::new(&mut self.wait).poll(cx)
    }

    /// Whether the channel moved since the wait was last polled: one atomic load, for a loop
    /// that must see a change before it does anything else, but polls the wait itself only
    /// where it waits.
    pub fn moved(&self) -> bool {
        matches!(self.probe.has_changed(), Ok(true))
    }

    /// Puts a new wait in place of one that ended; its first poll registers it.
    pub fn renew(&mut self, wait: F) {
        self.wait = wait;
        self.registered = None;
    }

    /// Another receiver of the channel, for a new wait.
    pub fn receiver(&self) -> watch::Receiver<T> {
        self.probe.clone()
    }
}

impl<T, F: Future + Unpin> Future for KeptWait<T, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.get_mut().poll_kept(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use std::sync::Arc;

    /// A wait that counts its polls and ends once the channel holds `true`.
    fn counted(
        mut rx: watch::Receiver<bool>,
        polls: Arc<AtomicUsize>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let mut wait = Box::pin(async move {
            let _ = rx.wait_for(|done| *done).await;
        });
        Box::pin(std::future::poll_fn(move |cx| {
            polls.fetch_add(1, Relaxed);
            wait.as_mut().poll(cx)
        }))
    }

    async fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *f).poll(cx))).await
    }

    #[tokio::test]
    async fn the_wait_is_polled_again_only_after_a_change() {
        let (tx, rx) = watch::channel(false);
        let polls = Arc::new(AtomicUsize::new(0));
        let mut kept = KeptWait::new(rx.clone(), counted(rx, polls.clone()));
        for _ in 0..5 {
            assert!(poll_once(&mut kept).await.is_pending());
        }
        assert_eq!(
            polls.load(Relaxed),
            1,
            "only the first poll reaches the wait"
        );
        tx.send(false).unwrap();
        assert!(poll_once(&mut kept).await.is_pending());
        assert!(poll_once(&mut kept).await.is_pending());
        assert_eq!(polls.load(Relaxed), 2, "a change is looked at once");
        tx.send(true).unwrap();
        assert!(poll_once(&mut kept).await.is_ready());
    }

    #[tokio::test]
    async fn moved_tells_a_change_the_wait_has_not_been_polled_for() {
        let (tx, rx) = watch::channel(false);
        let polls = Arc::new(AtomicUsize::new(0));
        let mut kept = KeptWait::new(rx.clone(), counted(rx, polls));
        assert!(!kept.moved(), "nothing sent yet");
        assert!(poll_once(&mut kept).await.is_pending());
        tx.send(true).unwrap();
        assert!(kept.moved(), "seen without polling the wait");
        assert!(kept.moved(), "and looking does not mark it seen");
        assert!(poll_once(&mut kept).await.is_ready());
    }

    #[tokio::test]
    async fn a_change_wakes_the_task_that_polled_last() {
        let (tx, rx) = watch::channel(false);
        let polls = Arc::new(AtomicUsize::new(0));
        let mut kept = KeptWait::new(rx.clone(), counted(rx, polls));
        assert!(poll_once(&mut kept).await.is_pending());
        // Another task takes the wait over and awaits it: the change must wake that task.
        let waiter = tokio::spawn(kept);
        tokio::task::yield_now().await;
        tx.send(true).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(30), waiter)
            .await
            .expect("the change woke the new task")
            .unwrap();
    }
}
