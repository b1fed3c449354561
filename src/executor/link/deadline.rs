//! The deadline every shard read and write runs under: the response timeout, if one is
//! configured, and the health probe's verdict. An operation that completes at its first poll
//! (most writes, and reads of answers already buffered) arms neither.

use tokio::sync::watch;

/// Runs a shard read or write until it completes, the response timeout passes, or the health
/// probe marks the shard down; `None` for the last two (counted and logged here).
pub(super) async fn within<T>(
    timeout: Option<std::time::Duration>,
    health: Option<&mut watch::Receiver<bool>>,
    shard: &str,
    io: impl std::future::Future<Output = T>,
) -> Option<T> {
    // Most writes, and reads of answers already here, are done at the first poll: then there
    // is no timer to arm and no probe to watch.
    let mut io = std::pin::pin!(io);
    if let std::task::Poll::Ready(r) = std::future::poll_fn(|cx| {
        std::task::Poll::Ready(std::future::Future::poll(io.as_mut(), cx))
    })
    .await
    {
        return Some(r);
    }
    let down = async {
        match health {
            Some(h) => {
                if h.wait_for(|up| !*up).await.is_err() {
                    // No prober any more (the proxy is stopping): nothing to wait for.
                    std::future::pending::<()>().await
                }
            }
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
