//! A forward-only reader over one message body.
//!
//! Every read checks that the bytes are there; `count` additionally checks that a declared
//! number of items could fit in the bytes left, so no caller sizes an allocation from a number
//! the peer made up.

use super::Text;
use bytes::Bytes;
use smol_str::SmolStr;

/// Why a message could not be decoded. Always a protocol violation (08P01).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("invalid {message} message: insufficient data left in message")]
    Truncated { message: &'static str },
    #[error("invalid {message} message: invalid string in message")]
    BadString { message: &'static str },
    /// A terminated string that is not UTF-8: bad input for PostgreSQL (22021), not a broken
    /// message.
    #[error("invalid byte sequence for encoding \"UTF8\" in {message} message")]
    NotUtf8 { message: &'static str },
    #[error("invalid {message} message: negative {what} count {count}")]
    NegativeCount {
        message: &'static str,
        what: &'static str,
        count: i64,
    },
    #[error("invalid {message} message: {what}")]
    Invalid { message: &'static str, what: String },
    #[error("invalid {message} message: {extra} trailing bytes")]
    Trailing { message: &'static str, extra: usize },
    #[error("invalid frontend message type {0}")]
    UnexpectedType(u8),
}

pub struct Cursor<'a> {
    body: &'a Bytes,
    at: usize,
    message: &'static str,
}

impl<'a> Cursor<'a> {
    pub fn new(body: &'a Bytes, message: &'static str) -> Cursor<'a> {
        Cursor {
            body,
            at: 0,
            message,
        }
    }

    pub fn remaining(&self) -> usize {
        self.body.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(self.truncated());
        }
        let s = &self.body[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    pub fn truncated(&self) -> DecodeError {
        DecodeError::Truncated {
            message: self.message,
        }
    }

    pub fn invalid(&self, what: impl Into<String>) -> DecodeError {
        DecodeError::Invalid {
            message: self.message,
            what: what.into(),
        }
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub fn i16(&mut self) -> Result<i16, DecodeError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(self.i32()? as u32)
    }

    /// A NUL-terminated UTF-8 string.
    pub fn cstr(&mut self) -> Result<String, DecodeError> {
        Ok(self.str()?.to_string())
    }

    /// A NUL-terminated UTF-8 name (of a statement or portal): held inline when short, as
    /// drivers' names are, so decoding a Bind allocates nothing for them.
    pub fn name(&mut self) -> Result<SmolStr, DecodeError> {
        Ok(SmolStr::new(self.str()?))
    }

    /// A NUL-terminated UTF-8 string as a slice of the body (no copy).
    pub fn text(&mut self) -> Result<Text, DecodeError> {
        let end = self.terminated()?;
        let text = Text::new(self.body.slice(self.at..end)).ok_or(DecodeError::NotUtf8 {
            message: self.message,
        })?;
        self.at = end + 1;
        Ok(text)
    }

    fn str(&mut self) -> Result<&'a str, DecodeError> {
        let body: &'a Bytes = self.body;
        let end = self.terminated()?;
        let s = std::str::from_utf8(&body[self.at..end]).map_err(|_| DecodeError::NotUtf8 {
            message: self.message,
        })?;
        self.at = end + 1;
        Ok(s)
    }

    /// Where the string at the cursor ends (its NUL).
    fn terminated(&self) -> Result<usize, DecodeError> {
        let rest = &self.body[self.at..];
        // Names are mostly empty: the unnamed statement and portal.
        if rest.first() == Some(&0) {
            return Ok(self.at);
        }
        let end = memchr::memchr(0, rest).ok_or(DecodeError::BadString {
            message: self.message,
        })?;
        Ok(self.at + end)
    }

    /// `n` bytes as a shared slice of the body (no copy).
    pub fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        if n > self.remaining() {
            return Err(self.truncated());
        }
        let b = self.body.slice(self.at..self.at + n);
        self.at += n;
        Ok(b)
    }

    /// An Int16 item count, each item taking at least `min_item` bytes: rejected when negative
    /// or when that many items cannot fit in what is left of the body.
    pub fn count(&mut self, what: &'static str, min_item: usize) -> Result<usize, DecodeError> {
        let n = self.i16()?;
        if n < 0 {
            return Err(DecodeError::NegativeCount {
                message: self.message,
                what,
                count: n.into(),
            });
        }
        let n = n as usize;
        if n.saturating_mul(min_item) > self.remaining() {
            return Err(self.truncated());
        }
        Ok(n)
    }

    /// The body must end here.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(DecodeError::Trailing {
                message: self.message,
                extra,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_never_pass_the_end() {
        let body = Bytes::from_static(&[0, 1, 0]);
        let mut c = Cursor::new(&body, "Test");
        assert_eq!(c.i16().unwrap(), 1);
        assert!(matches!(c.i32(), Err(DecodeError::Truncated { .. })));
        assert!(matches!(c.bytes(2), Err(DecodeError::Truncated { .. })));
        assert_eq!(c.u8().unwrap(), 0);
        c.finish().unwrap();
    }

    #[test]
    fn counts_are_checked_against_the_bytes_left() {
        let body = Bytes::from_static(&[0x7f, 0xff, 0, 0]);
        assert!(matches!(
            Cursor::new(&body, "Test").count("value", 2),
            Err(DecodeError::Truncated { .. })
        ));
        let body = Bytes::from_static(&[0xff, 0xff]);
        assert!(matches!(
            Cursor::new(&body, "Test").count("value", 2),
            Err(DecodeError::NegativeCount { count: -1, .. })
        ));
        let body = Bytes::from_static(&[0, 1, 0, 0]);
        assert_eq!(Cursor::new(&body, "Test").count("value", 2).unwrap(), 1);
    }

    #[test]
    fn strings_need_a_terminator_and_utf8() {
        let body = Bytes::from_static(b"abc");
        assert!(Cursor::new(&body, "Test").cstr().is_err());
        let body = Bytes::from_static(b"\xff\0");
        assert!(Cursor::new(&body, "Test").cstr().is_err());
        let body = Bytes::from_static(b"ok\0x");
        let mut c = Cursor::new(&body, "Test");
        assert_eq!(c.cstr().unwrap(), "ok");
        assert!(matches!(
            c.finish(),
            Err(DecodeError::Trailing { extra: 1, .. })
        ));
    }
}
