//! Typed-message framing: a one-byte tag, a four-byte big-endian length that counts itself, a body.
//!
//! `FrameScanner` walks a receive buffer and reports where each message starts and ends, so the
//! relay can forward whole runs of messages with one write and decode nothing it passes on. Frames
//! the caller wants to look into are reported only once they are complete; other frames may be
//! streamed in pieces (a 100 MB DataRow is never buffered whole).

use bytes::{Bytes, BytesMut};

/// The largest message accepted from a shard: PostgreSQL's own limit on one value is 1 GiB, plus
/// room for the message around it. Larger, the framing cannot be trusted.
pub const MAX_SHARD_MESSAGE_BYTES: usize = (1 << 30) + (1 << 20);

/// A complete message: tag plus the whole frame bytes (tag and length included).
#[derive(Debug, Clone)]
pub struct Frame {
    pub tag: u8,
    pub bytes: Bytes,
}

impl Frame {
    /// The body, after the tag and length.
    pub fn body(&self) -> &[u8] {
        &self.bytes[5..]
    }
}

/// Framing violations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("invalid message length {0}")]
    BadLength(i32),
    #[error("message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
}

/// What the scanner found at the front of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// A complete frame the caller asked to inspect: tag and total length.
    Whole { tag: u8, len: usize },
    /// `len` bytes (a whole frame or a piece of one) that need no inspection; `start` is the tag
    /// when these bytes begin a new frame.
    Pass { len: usize, start: Option<u8> },
    /// Not enough bytes buffered yet.
    NeedMore,
}

/// Stateful scanner over one direction of a connection.
#[derive(Debug)]
pub struct FrameScanner {
    /// Bytes of the current frame still to pass through uninspected.
    remaining: usize,
    limit: usize,
}

impl FrameScanner {
    pub fn new(limit: usize) -> FrameScanner {
        FrameScanner {
            remaining: 0,
            limit,
        }
    }

    /// True between frames (no partially passed frame outstanding).
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0
    }

    /// Classifies the bytes at the front of `buf` (starting at `offset`). `inspect(tag)` says
    /// whether the caller needs the frame whole.
    pub fn scan(
        &mut self,
        buf: &[u8],
        offset: usize,
        inspect: impl Fn(u8) -> bool,
    ) -> Result<Scan, FrameError> {
        let avail = buf.len() - offset;
        if self.remaining > 0 {
            if avail == 0 {
                return Ok(Scan::NeedMore);
            }
            let len = self.remaining.min(avail);
            self.remaining -= len;
            return Ok(Scan::Pass { len, start: None });
        }
        if avail < 5 {
            return Ok(Scan::NeedMore);
        }
        let tag = buf[offset];
        let raw = i32::from_be_bytes(buf[offset + 1..offset + 5].try_into().expect("4 bytes"));
        if raw < 4 {
            return Err(FrameError::BadLength(raw));
        }
        let total = raw as usize + 1;
        if total > self.limit {
            return Err(FrameError::TooLarge {
                len: total,
                limit: self.limit,
            });
        }
        if inspect(tag) {
            if avail < total {
                return Ok(Scan::NeedMore);
            }
            return Ok(Scan::Whole { tag, len: total });
        }
        let len = total.min(avail);
        self.remaining = total - len;
        Ok(Scan::Pass {
            len,
            start: Some(tag),
        })
    }
}

/// Takes a complete frame of `len` bytes off the front of `buf`.
pub fn take_frame(buf: &mut BytesMut, tag: u8, len: usize) -> Frame {
    Frame {
        tag,
        bytes: buf.split_to(len).freeze(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn inspected_frames_wait_until_complete() {
        let full = msg(b'Z', b"I");
        let mut s = FrameScanner::new(1 << 20);
        assert_eq!(
            s.scan(&full[..5], 0, |t| t == b'Z').unwrap(),
            Scan::NeedMore
        );
        assert_eq!(
            s.scan(&full, 0, |t| t == b'Z').unwrap(),
            Scan::Whole { tag: b'Z', len: 6 }
        );
    }

    #[test]
    fn passed_frames_stream_in_pieces() {
        let full = msg(b'D', &[7u8; 100]);
        let mut s = FrameScanner::new(1 << 20);
        assert_eq!(
            s.scan(&full[..50], 0, |_| false).unwrap(),
            Scan::Pass {
                len: 50,
                start: Some(b'D')
            }
        );
        assert!(!s.at_boundary());
        assert_eq!(
            s.scan(&full, 50, |_| false).unwrap(),
            Scan::Pass {
                len: 55,
                start: None
            }
        );
        assert!(s.at_boundary());
    }

    #[test]
    fn bad_and_oversized_lengths_are_errors() {
        let mut s = FrameScanner::new(64);
        assert_eq!(
            s.scan(&[b'Q', 0, 0, 0, 2], 0, |_| true),
            Err(FrameError::BadLength(2))
        );
        let big = msg(b'Q', &[0u8; 100]);
        assert!(matches!(
            s.scan(&big, 0, |_| true),
            Err(FrameError::TooLarge { .. })
        ));
    }
}
