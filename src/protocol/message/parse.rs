//! Parse: statement name, query text, declared parameter types.

use super::cursor::{Cursor, DecodeError};
use super::{put_cstr, Text};
use bytes::{BufMut, Bytes, BytesMut};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parse {
    pub name: String,
    /// Read in place (see `Text`).
    pub sql: Text,
    /// Declared parameter type OIDs (0 = unspecified).
    pub param_types: Vec<u32>,
}

impl Parse {
    pub fn decode(body: &Bytes) -> Result<Parse, DecodeError> {
        let mut c = Cursor::new(body, "Parse");
        let name = c.cstr()?;
        let sql = c.text()?;
        let n = c.count("parameter type", 4)?;
        let mut param_types = Vec::with_capacity(n);
        for _ in 0..n {
            param_types.push(c.u32()?);
        }
        c.finish()?;
        Ok(Parse {
            name,
            sql,
            param_types,
        })
    }
}

impl Parse {
    /// The message, tag and length included.
    pub fn encode(&self, out: &mut BytesMut) {
        super::frame(out, b'P', |b| {
            put_cstr(b, &self.name);
            put_cstr(b, &self.sql);
            b.put_i16(self.param_types.len() as i16);
            for t in &self.param_types {
                b.put_u32(*t);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_rejects() {
        let ok = Bytes::from_static(b"s1\0select $1\0\0\x01\0\0\0\x14");
        let p = Parse::decode(&ok).unwrap();
        assert_eq!((p.name.as_str(), p.sql.as_str()), ("s1", "select $1"));
        assert_eq!(p.param_types, vec![20]);
        // A type count that the body cannot hold, a negative one, a missing terminator.
        for bad in [
            &b"s1\0select 1\0\x7f\xff"[..],
            &b"s1\0select 1\0\xff\xff"[..],
            &b"s1\0select 1"[..],
            &b""[..],
        ] {
            assert!(
                Parse::decode(&Bytes::copy_from_slice(bad)).is_err(),
                "{bad:?}"
            );
        }
    }
}
