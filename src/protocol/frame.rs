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

/// Moves the whole messages at the front of `buf` that `plain` accepts into `out`, as they are,
/// without making a `Frame` of each: a relay that only passes them on needs no more. Stops at
/// the first message `plain` refuses, one not yet whole, one over `largest` bytes (or with a
/// length that is not a length, which the caller's scanner then reports), or once `out` holds
/// `room` bytes. Returns the bytes moved.
pub fn move_plain(
    buf: &mut BytesMut,
    out: &mut BytesMut,
    plain: impl Fn(u8) -> bool,
    largest: usize,
    room: usize,
) -> usize {
    let mut at = 0;
    while out.len() + at < room {
        let Some(head) = buf.get(at..at + 5) else {
            break;
        };
        let declared = i32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        let Some(len) = usize::try_from(declared)
            .ok()
            .filter(|d| *d >= 4)
            .map(|d| d + 1)
        else {
            break;
        };
        if !plain(head[0]) || len > largest || at + len > buf.len() {
            break;
        }
        at += len;
    }
    out.extend_from_slice(&buf[..at]);
    bytes::Buf::advance(buf, at);
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_messages_move_until_one_that_must_be_looked_at() {
        let mut buf = BytesMut::new();
        for m in [msg(b'2', b""), msg(b'D', b"row"), msg(b'C', b"SELECT 1\0")] {
            buf.extend_from_slice(&m);
        }
        let tail = [msg(b'Z', b"I"), msg(b'D', b"after")].concat();
        buf.extend_from_slice(&tail);
        let mut out = BytesMut::new();
        let moved = move_plain(&mut buf, &mut out, |t| t != b'Z', 1 << 20, 1 << 20);
        assert_eq!(moved, out.len());
        assert_eq!(&out[..1], b"2");
        assert_eq!(
            &buf[..],
            &tail[..],
            "the ReadyForQuery and what follows stay"
        );
    }

    #[test]
    fn a_message_not_yet_whole_or_too_large_or_malformed_stays() {
        let row = msg(b'D', &[1u8; 100]);
        let mut out = BytesMut::new();
        // Not whole.
        let mut buf = BytesMut::from(&row[..50]);
        assert_eq!(
            move_plain(&mut buf, &mut out, |_| true, 1 << 20, 1 << 20),
            0
        );
        assert_eq!(buf.len(), 50);
        // Whole, but over the size the caller streams.
        let mut buf = BytesMut::from(&row[..]);
        assert_eq!(move_plain(&mut buf, &mut out, |_| true, 50, 1 << 20), 0);
        // A length under 4 is left for the scanner to refuse.
        let mut buf = BytesMut::from(&[b'D', 0, 0, 0, 2, 0][..]);
        assert_eq!(
            move_plain(&mut buf, &mut out, |_| true, 1 << 20, 1 << 20),
            0
        );
        let mut buf = BytesMut::from(&[b'D', 0xff, 0xff, 0xff, 0xff][..]);
        assert_eq!(
            move_plain(&mut buf, &mut out, |_| true, 1 << 20, 1 << 20),
            0
        );
        assert!(out.is_empty());
    }

    #[test]
    fn moving_stops_once_the_output_holds_its_room() {
        let row = msg(b'D', &[1u8; 10]);
        let mut buf = BytesMut::new();
        for _ in 0..10 {
            buf.extend_from_slice(&row);
        }
        let mut out = BytesMut::new();
        let moved = move_plain(&mut buf, &mut out, |_| true, 1 << 20, 3 * row.len());
        assert_eq!(moved, 3 * row.len());
        assert_eq!(buf.len(), 7 * row.len());
    }

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
