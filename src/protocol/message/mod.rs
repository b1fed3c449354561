//! Typed, checked decoders for the frontend messages the several-shard session reads.
//!
//! Every message is decoded in two moves, the way untrusted bytes should be: a `Cursor` walks the
//! body forward and can only hand out bytes that are really there, and a count the client
//! declared is checked against the bytes left before anything is sized from it. A decoder never
//! panics; it returns a `DecodeError`, which the session answers with SQLSTATE 08P01 and ends the
//! connection. The body must be consumed exactly: trailing bytes are an error, as in PostgreSQL.
//! Each message also encodes itself, for the requests the proxy builds and for the round-trip
//! property the fuzzer checks (`fuzz`).

mod bind;
mod cursor;
mod parse;
mod simple;
mod target;
mod text;

pub use bind::{Bind, Params};
pub use cursor::{Cursor, DecodeError};
pub use parse::Parse;
pub use simple::{Execute, Query};
pub use target::{Target, TargetKind};
pub use text::Text;

use super::Frame;
use bytes::{BufMut, BytesMut};

/// Writes one message: tag, then the length (which counts itself), then what `body` writes.
pub(crate) fn frame(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    let at = out.len();
    out.put_i32(0);
    body(out);
    let len = (out.len() - at) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

pub(crate) fn put_cstr(out: &mut BytesMut, s: &str) {
    out.put_slice(s.as_bytes());
    out.put_u8(0);
}

/// A frontend message of the extended protocol, decoded, with the frame it came in (which is
/// what gets forwarded to a shard).
#[derive(Debug, Clone)]
pub struct ClientMessage {
    pub frame: Frame,
    pub kind: Kind,
}

/// The decoded content of an extended-protocol message.
#[derive(Debug, Clone)]
pub enum Kind {
    Parse(Parse),
    Bind(Bind),
    Describe(Target),
    Close(Target),
    Execute(Execute),
    Flush,
    Sync,
}

impl ClientMessage {
    /// Decodes an extended-protocol frame (`P B D C E H S`). Other tags are not handled here.
    pub fn decode(frame: Frame) -> Result<ClientMessage, DecodeError> {
        let body = frame.bytes.slice(5..);
        let kind = match frame.tag {
            b'P' => Kind::Parse(Parse::decode(&body)?),
            b'B' => Kind::Bind(Bind::decode(&body)?),
            b'D' => Kind::Describe(Target::decode(&body, "Describe")?),
            b'C' => Kind::Close(Target::decode(&body, "Close")?),
            b'E' => Kind::Execute(Execute::decode(&body)?),
            b'H' => {
                Cursor::new(&body, "Flush").finish()?;
                Kind::Flush
            }
            b'S' => {
                Cursor::new(&body, "Sync").finish()?;
                Kind::Sync
            }
            other => return Err(DecodeError::UnexpectedType(other)),
        };
        Ok(ClientMessage { frame, kind })
    }

    pub fn tag(&self) -> u8 {
        self.frame.tag
    }

    /// Bytes this message holds in memory (for the pending-batch limit).
    pub fn size(&self) -> usize {
        self.frame.bytes.len()
    }
}
