//! The client's side of the socket, read a whole message at a time.
//!
//! The client loop owns it between messages and lends it to the session while a message is
//! being carried out, because COPY FROM STDIN reads the client's data in the middle of a
//! statement.

use crate::client::tls::ClientReader;
use crate::protocol::frame::{take_frame, FrameScanner, Scan};
use crate::protocol::Frame;
use bytes::BytesMut;
use tokio::io::AsyncReadExt;

pub struct ClientInput {
    rx: ClientReader,
    buf: BytesMut,
    scanner: FrameScanner,
}

impl ClientInput {
    pub fn new(rx: ClientReader, max_message_bytes: usize) -> ClientInput {
        ClientInput {
            rx,
            buf: BytesMut::with_capacity(8 * 1024),
            scanner: FrameScanner::new(max_message_bytes),
        }
    }

    /// The next message; None when the client closed the connection; Err for a message the
    /// protocol does not allow (too large, bad length).
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, String> {
        loop {
            match self
                .scanner
                .scan(&self.buf, 0, |_| true)
                .map_err(|e| e.to_string())?
            {
                Scan::Whole { tag, len } => return Ok(Some(take_frame(&mut self.buf, tag, len))),
                Scan::Pass { .. } => unreachable!("every frame is inspected"),
                Scan::NeedMore => {}
            }
            self.buf.reserve(8 * 1024);
            match self.rx.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return Ok(None),
                Ok(_) => {}
            }
        }
    }

    /// The next message if it is already here whole (no read, nothing to wait for); Err as in
    /// `read_frame`.
    pub fn take_whole(&mut self) -> Option<Result<Frame, String>> {
        match self.scanner.scan(&self.buf, 0, |_| true) {
            Ok(Scan::Whole { tag, len }) => Some(Ok(take_frame(&mut self.buf, tag, len))),
            Ok(Scan::Pass { .. }) => unreachable!("every frame is inspected"),
            Ok(Scan::NeedMore) => None,
            Err(e) => Some(Err(e.to_string())),
        }
    }

    /// Whether `read_frame` would answer without waiting for the client: a whole message is
    /// buffered or arrives now, or the connection ended or broke.
    pub fn ready(&mut self) -> bool {
        loop {
            match self.scanner.scan(&self.buf, 0, |_| true) {
                Ok(Scan::NeedMore) => {}
                _ => return true,
            }
            self.buf.reserve(8 * 1024);
            // One poll, without waiting (plaintext and TLS alike).
            match futures_util::FutureExt::now_or_never(self.rx.read_buf(&mut self.buf)) {
                None => return false,
                Some(Ok(0)) | Some(Err(_)) => return true,
                Some(Ok(_)) => {}
            }
        }
    }
}
