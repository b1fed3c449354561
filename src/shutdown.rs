//! Stopping a running proxy, as PostgreSQL's smart and fast shutdowns do for its backends.
//!
//! A graceful stop (SIGTERM) closes the listener, ends idle sessions at once and lets every
//! other session finish its transaction: it ends, with 57P01, as soon as it is outside a
//! transaction with nothing in flight. After `[server] shutdown_timeout_secs` the stop turns
//! fast. A fast stop (SIGINT) ends every session now, a statement in flight included; the
//! shards roll back whatever was open when its connections close.
//!
//! The phase only moves forward: running, then draining, then now.

use crate::kept_wait::KeptWait;
use std::future::Future;
use std::pin::Pin;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Running,
    /// Graceful: sessions end when they are idle.
    Draining,
    /// Fast: sessions end at once.
    Now,
}

pub type Receiver = watch::Receiver<Phase>;
pub type Sender = watch::Sender<Phase>;

pub fn channel() -> (Sender, Receiver) {
    watch::channel(Phase::Running)
}

/// Moves the phase forward to `phase` (never back).
pub fn advance(tx: &Sender, phase: Phase) {
    tx.send_if_modified(|p| {
        let forward = phase > *p;
        if forward {
            *p = phase;
        }
        forward
    });
}

/// Resolves when a stop of either kind begins (or the sender is gone).
pub async fn requested(rx: &mut Receiver) {
    let _ = rx.wait_for(|p| *p >= Phase::Draining).await;
}

/// Resolves when a session that is `idle` (outside a transaction, nothing in flight) should end:
/// on any stop. A busy session ends only on a fast stop. A dropped sender counts as fast.
pub async fn ends(rx: &mut Receiver, idle: bool) {
    let least = if idle { Phase::Draining } else { Phase::Now };
    let _ = rx.wait_for(|p| *p >= least).await;
}

/// Resolves when the stop is fast (or the sender is gone).
pub async fn now(rx: &mut Receiver) {
    ends(rx, false).await;
}

/// For a session whose idleness is only known by looking (the one-shard relay): resolves once
/// a stop is fast, or it is draining and `idle()` holds. Looks every 20 ms while draining.
pub async fn ends_when(rx: &mut Receiver, idle: impl Fn() -> bool) {
    // The relay polls this at every message it passes: until a stop begins, each poll is one
    // atomic load (see `KeptWait`).
    let probe = rx.clone();
    loop {
        let begun = kept(probe.clone(), rx.wait_for(|p| *p >= Phase::Draining));
        let phase = match begun.await {
            Ok(p) => *p,
            Err(_) => return,
        };
        if phase == Phase::Now || idle() {
            return;
        }
        tokio::select! {
            _ = now(rx) => return,
            _ = tokio::time::sleep(std::time::Duration::from_millis(20)) => {}
        }
    }
}

/// `wait`, one of the waits above on a receiver of `probe`'s channel, kept and polled only when
/// the phase may have moved: a session's selects poll their stop waits at every message.
pub fn kept<F: Future>(probe: Receiver, wait: F) -> KeptWait<Phase, Pin<Box<F>>> {
    KeptWait::new(probe, Box::pin(wait))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_phase_only_moves_forward() {
        let (tx, rx) = channel();
        advance(&tx, Phase::Now);
        advance(&tx, Phase::Draining);
        assert_eq!(*rx.borrow(), Phase::Now);
    }

    #[tokio::test]
    async fn a_busy_session_waits_for_a_fast_stop() {
        let (tx, mut rx) = channel();
        advance(&tx, Phase::Draining);
        ends(&mut rx, true).await;
        let busy = tokio::time::timeout(std::time::Duration::from_millis(50), ends(&mut rx, false));
        assert!(
            busy.await.is_err(),
            "a busy session keeps going while draining"
        );
        advance(&tx, Phase::Now);
        ends(&mut rx, false).await;
    }

    #[tokio::test]
    async fn a_relay_polled_while_running_still_sees_the_stop_begin() {
        use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
        use std::time::Duration;
        let (tx, mut rx) = channel();
        let idle = AtomicBool::new(false);
        let mut ends = std::pin::pin!(ends_when(&mut rx, || idle.load(Relaxed)));
        for _ in 0..3 {
            assert!(poll_once(ends.as_mut()).await.is_pending());
        }
        advance(&tx, Phase::Draining);
        let busy = tokio::time::timeout(Duration::from_millis(60), ends.as_mut());
        assert!(busy.await.is_err(), "a busy session goes on while draining");
        idle.store(true, Relaxed);
        let done = tokio::time::timeout(Duration::from_secs(5), ends);
        done.await.expect("ends once idle");
    }

    /// One poll of `f` with the calling task's waker.
    async fn poll_once<F: Future>(mut f: std::pin::Pin<&mut F>) -> std::task::Poll<F::Output> {
        std::future::poll_fn(|cx| std::task::Poll::Ready(f.as_mut().poll(cx))).await
    }

    #[tokio::test]
    async fn a_kept_stop_wait_wakes_its_task_on_a_stop() {
        let (tx, rx) = channel();
        let (registered_tx, registered) = tokio::sync::oneshot::channel();
        let (drained_tx, drained) = tokio::sync::oneshot::channel();
        let session = tokio::spawn(async move {
            let (mut any_rx, mut fast_rx) = (rx.clone(), rx.clone());
            let mut any = std::pin::pin!(kept(rx.clone(), ends(&mut any_rx, true)));
            let mut fast = std::pin::pin!(kept(rx, now(&mut fast_rx)));
            // Registered, then polled again with nothing changed: neither ends.
            for _ in 0..3 {
                assert!(poll_once(any.as_mut()).await.is_pending());
                assert!(poll_once(fast.as_mut()).await.is_pending());
            }
            registered_tx.send(()).unwrap();
            // Only a wake from the channel brings the task back here.
            any.as_mut().await;
            // Draining ends an idle session's wait, not the fast one.
            assert!(poll_once(fast.as_mut()).await.is_pending());
            drained_tx.send(()).unwrap();
            fast.await;
        });
        registered.await.unwrap();
        advance(&tx, Phase::Draining);
        // Bounded so that a lost wake fails the test instead of hanging it.
        let woken = std::time::Duration::from_secs(30);
        tokio::time::timeout(woken, drained)
            .await
            .expect("the draining stop woke the session")
            .unwrap();
        advance(&tx, Phase::Now);
        tokio::time::timeout(woken, session)
            .await
            .expect("the fast stop woke the session")
            .unwrap();
    }

    #[tokio::test]
    async fn a_relay_ends_once_it_looks_idle() {
        let (tx, mut rx) = channel();
        advance(&tx, Phase::Draining);
        let idle = std::sync::atomic::AtomicBool::new(false);
        let flip = async {
            tokio::time::sleep(std::time::Duration::from_millis(60)).await;
            idle.store(true, std::sync::atomic::Ordering::SeqCst);
        };
        let ((), ()) = tokio::join!(
            ends_when(&mut rx, || idle.load(std::sync::atomic::Ordering::SeqCst)),
            flip
        );
        assert!(idle.load(std::sync::atomic::Ordering::SeqCst));
    }
}
