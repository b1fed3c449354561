//! The client's side of the socket, read a whole message at a time.
//!
//! The client loop owns it between messages and lends it to the session while a message is
//! being carried out, because COPY FROM STDIN reads the client's data in the middle of a
//! statement.
//!
//! Each Query and Parse is handed on with its calls of the transaction's clock rewritten (see
//! `sql::clock`), so that everything after reads, prepares and sends the rewritten text.

use crate::client::tls::ClientReader;
use crate::protocol::frame::{take_frame, FrameScanner, Scan};
use crate::protocol::Frame;
use bytes::BytesMut;
use tokio::io::AsyncReadExt;

pub struct ClientInput {
    rx: ClientReader,
    buf: BytesMut,
    scanner: FrameScanner,
    clock: ClockLook,
}

/// The look at each Query and Parse for calls of the transaction's clock.
#[derive(Default)]
struct ClockLook {
    /// A Query or Parse calling the clock has come (see `with_stamped_clock`).
    calls: bool,
    /// The text of the last Parse found without a call (at most `REMEMBERED_TEXT_BYTES`):
    /// drivers parse the unnamed statement again for every query, mostly the same text.
    plain_parse: Vec<u8>,
}

/// The longest Parse text `ClockLook` keeps, so that a session holds no large text for it.
const REMEMBERED_TEXT_BYTES: usize = 4096;

impl ClockLook {
    fn stamped(&mut self, frame: Frame) -> Frame {
        let parse_text = if frame.tag == b'P' {
            text_at(&frame)
        } else {
            None
        };
        if let Some((start, len)) = parse_text {
            if frame.body()[start..start + len] == self.plain_parse[..] {
                return frame;
            }
        }
        match with_stamped_clock(&frame) {
            Some(stamped) => {
                self.calls = true;
                stamped
            }
            None => {
                if let Some((start, len)) =
                    parse_text.filter(|&(_, len)| len <= REMEMBERED_TEXT_BYTES)
                {
                    self.plain_parse.clear();
                    self.plain_parse
                        .extend_from_slice(&frame.body()[start..start + len]);
                }
                frame
            }
        }
    }
}

impl ClientInput {
    pub fn new(rx: ClientReader, max_message_bytes: usize) -> ClientInput {
        ClientInput {
            rx,
            buf: BytesMut::with_capacity(8 * 1024),
            scanner: FrameScanner::new(max_message_bytes),
            clock: ClockLook::default(),
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
                Scan::Whole { tag, len } => {
                    let frame = take_frame(&mut self.buf, tag, len);
                    return Ok(Some(self.clock.stamped(frame)));
                }
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
            Ok(Scan::Whole { tag, len }) => {
                let frame = take_frame(&mut self.buf, tag, len);
                Some(Ok(self.clock.stamped(frame)))
            }
            Ok(Scan::Pass { .. }) => unreachable!("every frame is inspected"),
            Ok(Scan::NeedMore) => None,
            Err(e) => Some(Err(e.to_string())),
        }
    }

    /// Whether a Query or Parse that calls the transaction's clock has come so far.
    pub fn clock_calls(&self) -> bool {
        self.clock.calls
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

/// A Query or Parse whose text calls the transaction's clock, rewritten; None for any other
/// message (or text that is not UTF-8, which the session refuses later).
fn with_stamped_clock(frame: &Frame) -> Option<Frame> {
    let body = frame.body();
    let (start, len) = text_at(frame)?;
    // Before the UTF-8 check: most texts end here.
    if !crate::sql::clock::may_read_clock(&body[start..start + len]) {
        return None;
    }
    let sql = std::str::from_utf8(&body[start..start + len]).ok()?;
    let stamped = crate::sql::clock::stamped(sql)?;
    let rest = &body[start + len..];
    let mut out = bytes::BytesMut::with_capacity(5 + start + stamped.len() + rest.len());
    out.extend_from_slice(&[frame.tag]);
    out.extend_from_slice(&((4 + start + stamped.len() + rest.len()) as u32).to_be_bytes());
    out.extend_from_slice(&body[..start]);
    out.extend_from_slice(stamped.as_bytes());
    out.extend_from_slice(rest);
    Some(Frame {
        tag: frame.tag,
        bytes: out.freeze(),
    })
}

/// Where a Query's or Parse's text sits in its body (after a Parse's statement name): start
/// and length, without the NUL that ends it.
fn text_at(frame: &Frame) -> Option<(usize, usize)> {
    let body = frame.body();
    let start = match frame.tag {
        b'Q' => 0,
        b'P' => memchr::memchr(0, body)? + 1,
        _ => return None,
    };
    Some((start, memchr::memchr(0, &body[start..])?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Frame {
        let mut b = vec![tag];
        b.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        b.extend_from_slice(body);
        Frame {
            tag,
            bytes: bytes::Bytes::from(b),
        }
    }

    #[test]
    fn a_parse_keeps_its_name_and_types_around_the_new_text() {
        let parse = frame(b'P', b"s1\0select now()\0\0\x01\0\0\0\x17");
        let out = with_stamped_clock(&parse).unwrap();
        assert_eq!(
            out.bytes,
            frame(b'P', b"s1\0select shardgate.now()\0\0\x01\0\0\0\x17").bytes
        );
        let query = frame(b'Q', b"select current_date\0");
        assert_eq!(
            with_stamped_clock(&query).unwrap().bytes,
            frame(b'Q', b"select shardgate.\"current_date\"()\0").bytes
        );
        assert!(with_stamped_clock(&frame(b'Q', b"select 1\0")).is_none());
        assert!(with_stamped_clock(&frame(b'B', b"\0s1\0\0\0\0\0\0\0")).is_none());
    }

    #[test]
    fn a_parse_text_found_without_a_clock_call_is_passed_again_as_it_is() {
        let mut look = ClockLook::default();
        let plain = frame(b'P', b"\0select 1\0\0\0");
        assert_eq!(look.stamped(plain.clone()).bytes, plain.bytes);
        assert_eq!(look.plain_parse, b"select 1");
        assert_eq!(look.stamped(plain.clone()).bytes, plain.bytes);
        assert!(!look.calls);
        // Another text is looked at, and one with a call is rewritten every time.
        let clock = frame(b'P', b"\0select now()\0\0\0");
        for _ in 0..2 {
            assert_eq!(
                look.stamped(clock.clone()).bytes,
                frame(b'P', b"\0select shardgate.now()\0\0\0").bytes
            );
        }
        assert!(look.calls);
        assert_eq!(look.plain_parse, b"select 1");
        // A Query is never remembered, and never mistaken for a remembered Parse.
        let query = frame(b'Q', b"select current_date\0");
        assert_ne!(look.stamped(query.clone()).bytes, query.bytes);
        assert_eq!(look.plain_parse, b"select 1");
    }
}
