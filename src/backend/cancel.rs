//! CancelRequest to a shard: a fresh connection carrying the shard's own BackendKeyData.

use super::stream::ShardStream;
use crate::config::ShardTarget;
use tokio::io::AsyncWriteExt;

pub async fn send_cancel(target: &ShardTarget, key: (i32, i32)) -> std::io::Result<()> {
    let mut stream = ShardStream::open(target).await?;
    let mut packet = Vec::with_capacity(16);
    packet.extend_from_slice(&16i32.to_be_bytes());
    packet.extend_from_slice(&80877102i32.to_be_bytes());
    packet.extend_from_slice(&key.0.to_be_bytes());
    packet.extend_from_slice(&key.1.to_be_bytes());
    stream.write_all(&packet).await?;
    // The server closes the connection once it has read the packet; wait for that so the cancel
    // is delivered before we report back.
    let mut sink = [0u8; 1];
    let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await;
    Ok(())
}

/// Sends a cancel to each of a session's server connections, logging what failed: a cancel
/// gets no answer, so there is nobody else to tell.
pub async fn forward(shards: Vec<crate::client::cancel::ShardKey>) {
    for shard in shards {
        match send_cancel(&shard.target, shard.key).await {
            Ok(()) => tracing::info!(shard = %shard.target.name, "cancel request forwarded"),
            Err(e) => {
                tracing::warn!(shard = %shard.target.name, "could not forward cancel request: {e}")
            }
        }
    }
}
