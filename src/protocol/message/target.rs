//! Describe and Close: a kind byte (`S` statement, `P` portal) and a name.

use super::cursor::{Cursor, DecodeError};
use super::put_cstr;
use bytes::{BufMut, Bytes, BytesMut};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    Statement,
    Portal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: TargetKind,
    pub name: String,
}

impl Target {
    pub fn decode(body: &Bytes, message: &'static str) -> Result<Target, DecodeError> {
        let mut c = Cursor::new(body, message);
        let kind = match c.u8()? {
            b'S' => TargetKind::Statement,
            b'P' => TargetKind::Portal,
            other => return Err(c.invalid(format!("invalid {message} kind {other}"))),
        };
        let name = c.cstr()?;
        c.finish()?;
        Ok(Target { kind, name })
    }
}

impl Target {
    /// The message with tag `tag` (`D` Describe, `C` Close), tag and length included.
    pub fn encode(&self, tag: u8, out: &mut BytesMut) {
        super::frame(out, tag, |b| {
            b.put_u8(match self.kind {
                TargetKind::Statement => b'S',
                TargetKind::Portal => b'P',
            });
            put_cstr(b, &self.name);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_rejects() {
        let t = Target::decode(&Bytes::from_static(b"Pp1\0"), "Describe").unwrap();
        assert_eq!(t.kind, TargetKind::Portal);
        assert_eq!(t.name, "p1");
        for bad in [&b""[..], b"S", b"Xname\0", b"Sname"] {
            assert!(Target::decode(&Bytes::copy_from_slice(bad), "Close").is_err());
        }
    }
}
