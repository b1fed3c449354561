//! The deadline every shard read and write runs under: the response timeout, if one is
//! configured, and the health probe's verdict. An operation that completes at its first poll
//! (most writes, and reads of answers already buffered) arms neither.
//!
//! The wait for the probe's verdict lives as long as the link (`Health`, a `KeptWait`): a wait
//! made for each read registered with the channel and unregistered when dropped, which took a
//! lock each time, at every answer a session waited for.

use crate::kept_wait::KeptWait;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::watch;

/// A link's wait for its shard to be marked down, kept for as long as the link lives.
pub(super) struct Health {
    /// Ends when the shard is marked down; never if the prober is gone (the proxy is stopping).
    down: KeptWait<bool, Pin<Box<dyn Future<Output = ()> + Send + Sync>>>,
}

impl Health {
    pub(super) fn new(rx: watch::Receiver<bool>) -> Health {
        Health {
            down: KeptWait::new(rx.clone(), Self::wait(rx)),
        }
    }

    fn wait(mut rx: watch::Receiver<bool>) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        Box::pin(async move {
            if rx.wait_for(|up| !*up).await.is_err() {
                std::future::pending::<()>().await
            }
        })
    }

    fn poll_down(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let verdict = self.down.poll_kept(cx);
        if verdict.is_ready() {
            // The next wait asks afresh: a shard back up by then is waited for again.
            self.down.renew(Self::wait(self.down.receiver()));
        }
        verdict
    }
}

/// Runs a shard read or write until it completes, the response timeout passes, or the health
/// probe marks the shard down; `None` for the last two (counted and logged here).
pub(super) async fn within<T>(
    timeout: Option<std::time::Duration>,
    health: Option<&mut Health>,
    shard: &str,
    io: impl Future<Output = T>,
) -> Option<T> {
    // Most writes, and reads of answers already here, are done at the first poll: then there
    // is no timer to arm and no probe to look at.
    let mut io = std::pin::pin!(io);
    if let Poll::Ready(r) = std::future::poll_fn(|cx| Poll::Ready(io.as_mut().poll(cx))).await {
        return Some(r);
    }
    let down = async {
        match health {
            Some(h) => std::future::poll_fn(|cx| h.poll_down(cx)).await,
            None => std::future::pending::<()>().await,
        }
    };
    let silent = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending::<()>().await,
        }
    };
    // The shard's answer first: it is what is waited for, and the order spares a random
    // number per poll.
    tokio::select! {
        biased;
        r = &mut io => Some(r),
        _ = down => {
            tracing::warn!(shard = %shard, "shard failed its health probes: giving up on it");
            None
        }
        _ = silent => {
            metrics::counter!(crate::metrics::SHARD_TIMEOUTS, "shard" => shard.to_string())
                .increment(1);
            tracing::warn!(shard = %shard, "shard silent past the response timeout: giving up on it");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link's health wait after one read that completed, so that the wait is registered.
    async fn registered_health() -> (watch::Sender<bool>, Health) {
        let (tx, rx) = watch::channel(true);
        let mut health = Health::new(rx);
        let quick = within(None, Some(&mut health), "s0", async {
            tokio::task::yield_now().await;
            7
        });
        assert_eq!(quick.await, Some(7), "a read that completes is its answer");
        (tx, health)
    }

    /// A read that never completes, on a link whose health wait was registered by an earlier
    /// read: the shard marked down still ends it, and a shard marked down before the wait
    /// began ends it too; once the shard is back up, a read is waited for again, and ended
    /// again when it goes down again.
    #[tokio::test]
    async fn a_kept_health_wait_still_ends_a_read_when_the_shard_goes_down() {
        let (tx, mut health) = registered_health().await;
        let marker = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            tx.send(false).expect("the link still listens");
            tx
        });
        let stuck = within(None, Some(&mut health), "s0", std::future::pending::<()>());
        assert_eq!(stuck.await, None, "the shard marked down ends the wait");
        let tx = marker.await.expect("the marker ran");
        let again = within(None, Some(&mut health), "s0", std::future::pending::<()>());
        assert_eq!(again.await, None, "a shard already down ends the next wait");
        tx.send(true).expect("the link still listens");
        let slow = within(None, Some(&mut health), "s0", async {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            5
        });
        assert_eq!(slow.await, Some(5), "a shard back up is waited for again");
        let marker = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            tx.send(false).expect("the link still listens");
        });
        let stuck = within(None, Some(&mut health), "s0", std::future::pending::<()>());
        assert_eq!(
            stuck.await,
            None,
            "a shard down a second time ends the wait too"
        );
        marker.await.expect("the marker ran");
    }

    /// The wait registered in one task still ends a read that another task runs.
    #[tokio::test]
    async fn a_link_that_changes_tasks_is_woken_in_the_new_one() {
        let (tx, mut health) = registered_health().await;
        let reader = tokio::spawn(async move {
            within(None, Some(&mut health), "s0", std::future::pending::<()>()).await
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        tx.send(false).expect("the link still listens");
        assert_eq!(reader.await.expect("the reader ran"), None);
    }
}
