//! `PAUSE` and `RESUME`: while paused, sessions start no new transaction; a session already in
//! one finishes it. New requests wait at the gate, outside any transaction, until `RESUME`.

use tokio::sync::watch;

#[derive(Debug)]
pub struct Pause {
    paused: watch::Sender<bool>,
}

impl Default for Pause {
    fn default() -> Self {
        Pause {
            paused: watch::channel(false).0,
        }
    }
}

impl Pause {
    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    pub fn resume(&self) {
        self.paused.send_replace(false);
    }

    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// Returns at once unless paused; otherwise when resumed.
    pub async fn wait(&self) {
        if !self.is_paused() {
            return;
        }
        let mut rx = self.paused.subscribe();
        let _ = rx.wait_for(|p| !*p).await;
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
}
