//! The client's connection beneath every kind of session: its socket, plain or TLS (`tls`),
//! the cancel keys handed to it at login (`cancel`), and the last word a failing session
//! writes (`send_fatal`). Sessions on one shard and on several share these, so they sit below
//! both.

pub mod cancel;
pub mod tls;

use crate::error::PgError;
use crate::protocol::build;
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

/// Best effort: the connection is closed right after.
pub async fn send_fatal<W: AsyncWriteExt + Unpin>(socket: &mut W, err: &PgError) {
    let mut buf = BytesMut::new();
    build::error(err, &mut buf);
    let _ = socket.write_all(&buf).await;
    let _ = socket.flush().await;
}
