//! Holding new transactions: while any reason holds, sessions start no new transaction; a
//! session already in one finishes it. New requests wait at the gate, outside any transaction,
//! until every reason is lifted.
//!
//! Two reasons are kept apart so that neither lifts the other: the operator's `PAUSE` (lifted by
//! `RESUME`) and a slot move's cut-over (lifted when this proxy routes by the new placement, or
//! the cut-over is given up).

use tokio::sync::watch;

/// Why new transactions are held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The admin console's `PAUSE`.
    Operator = 1,
    /// A slot move is switching the placement (see `backend::placement_store::watch`).
    Cutover = 2,
}

#[derive(Debug)]
pub struct Pause {
    /// The reasons held, as bits of `Reason`.
    held: watch::Sender<u8>,
}

impl Default for Pause {
    fn default() -> Self {
        Pause {
            held: watch::channel(0).0,
        }
    }
}

impl Pause {
    pub fn pause(&self) {
        self.hold(Reason::Operator, true);
    }

    pub fn resume(&self) {
        self.hold(Reason::Operator, false);
    }

    /// Holds (`on`) or lifts one reason.
    pub fn hold(&self, reason: Reason, on: bool) {
        let bit = reason as u8;
        self.held
            .send_modify(|held| if on { *held |= bit } else { *held &= !bit });
    }

    pub fn is_paused(&self) -> bool {
        *self.held.borrow() != 0
    }

    pub fn holds(&self, reason: Reason) -> bool {
        *self.held.borrow() & reason as u8 != 0
    }

    /// Returns at once unless held; otherwise when every reason is lifted.
    pub async fn wait(&self) {
        if !self.is_paused() {
            return;
        }
        let mut rx = self.held.subscribe();
        let _ = rx.wait_for(|held| *held == 0).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_go_on_at_resume() {
        let p = std::sync::Arc::new(Pause::default());
        p.wait().await;
        p.pause();
        let waiter = tokio::spawn({
            let p = p.clone();
            async move { p.wait().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        p.resume();
        waiter.await.unwrap();
    }

    #[tokio::test]
    async fn a_cutover_ending_does_not_lift_the_operators_pause() {
        let p = std::sync::Arc::new(Pause::default());
        p.pause();
        p.hold(Reason::Cutover, true);
        p.hold(Reason::Cutover, false);
        assert!(p.is_paused());
        let waiter = tokio::spawn({
            let p = p.clone();
            async move { p.wait().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        p.hold(Reason::Cutover, true);
        p.resume();
        assert!(p.holds(Reason::Cutover));
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        p.hold(Reason::Cutover, false);
        waiter.await.unwrap();
    }
}
