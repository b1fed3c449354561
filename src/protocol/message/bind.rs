//! Bind: portal, statement, parameter formats and values, result formats.
//!
//! Every count is checked against the bytes present before anything is sized from it (a Bind
//! that claims 32,767 values in ten bytes is rejected, not allocated for), and format codes must
//! be 0 (text) or 1 (binary).

use super::cursor::{Cursor, DecodeError};
use super::put_cstr;
use bytes::{BufMut, Bytes, BytesMut};
use smallvec::SmallVec;
use smol_str::SmolStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// Names are inline strings: a Bind is decoded for every execution.
    pub portal: SmolStr,
    pub statement: SmolStr,
    /// The bound values, which routing reads keys from as they are (see `router::params`).
    pub params: Params,
    /// Result-column format codes, with the same none/one/each convention as the parameters'.
    /// Inline: drivers send one, and this is decoded for every Bind.
    pub result_formats: SmallVec<[i16; 2]>,
}

/// Bound values, inline up to the two a point query mostly binds.
pub type Values = SmallVec<[Option<Bytes>; 2]>;

/// Parameters of one execution: values, and per-value format codes (0 text, 1 binary) as Bind
/// gives them (none = all text, one = applies to all).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Params {
    /// Values; `None` is SQL NULL. In a decoded Bind, slices of the message body, not copies.
    pub values: Values,
    pub formats: Vec<i16>,
    /// The types the statement's Parse declared for them (0 or missing: left to the server to
    /// infer). Not part of the Bind message: the session, which knows the statement, fills
    /// them in, so that routing never reads a value of another type as a key.
    pub types: SmallVec<[u32; 2]>,
}

fn format_code(c: &Cursor<'_>, code: i16) -> Result<i16, DecodeError> {
    match code {
        0 | 1 => Ok(code),
        other => Err(c.invalid(format!("unsupported format code {other}"))),
    }
}

impl Bind {
    pub fn decode(body: &Bytes) -> Result<Bind, DecodeError> {
        let mut c = Cursor::new(body, "Bind");
        let portal = c.name()?;
        let statement = c.name()?;
        let n = c.count("parameter format", 2)?;
        let mut param_formats = Vec::with_capacity(n);
        for _ in 0..n {
            let code = c.i16()?;
            param_formats.push(format_code(&c, code)?);
        }
        let n = c.count("parameter value", 4)?;
        if param_formats.len() > 1 && param_formats.len() != n {
            return Err(c.invalid(format!(
                "bind message has {} parameter formats but {n} parameters",
                param_formats.len()
            )));
        }
        let mut values = Values::with_capacity(n);
        for _ in 0..n {
            let len = c.i32()?;
            values.push(match len {
                -1 => None,
                len if len < -1 => return Err(c.invalid(format!("invalid value length {len}"))),
                len => Some(c.bytes(len as usize)?),
            });
        }
        let n = c.count("result format", 2)?;
        let mut result_formats = SmallVec::with_capacity(n);
        for _ in 0..n {
            let code = c.i16()?;
            result_formats.push(format_code(&c, code)?);
        }
        c.finish()?;
        Ok(Bind {
            portal,
            statement,
            params: Params {
                values,
                formats: param_formats,
                types: SmallVec::new(),
            },
            result_formats,
        })
    }
}

impl Bind {
    /// The message, tag and length included.
    pub fn encode(&self, out: &mut BytesMut) {
        super::frame(out, b'B', |b| {
            put_cstr(b, &self.portal);
            put_cstr(b, &self.statement);
            b.put_i16(self.params.formats.len() as i16);
            for f in &self.params.formats {
                b.put_i16(*f);
            }
            b.put_i16(self.params.values.len() as i16);
            for v in &self.params.values {
                match v {
                    None => b.put_i32(-1),
                    Some(bytes) => {
                        b.put_i32(bytes.len() as i32);
                        b.put_slice(bytes);
                    }
                }
            }
            b.put_i16(self.result_formats.len() as i16);
            for f in &self.result_formats {
                b.put_i16(*f);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[&[u8]]) -> Bytes {
        Bytes::from(parts.concat())
    }

    #[test]
    fn decodes_values_and_formats() {
        let b = body(&[
            b"p\0s\0",
            &[0, 1, 0, 1],
            &[0, 2],
            &[0, 0, 0, 2],
            b"42",
            &[0xff, 0xff, 0xff, 0xff],
            &[0, 1, 0, 0],
        ]);
        let bind = Bind::decode(&b).unwrap();
        assert_eq!(bind.portal, "p");
        assert_eq!(bind.statement, "s");
        assert_eq!(bind.params.formats, vec![1]);
        assert_eq!(
            bind.params.values.as_slice(),
            [Some(Bytes::from_static(b"42")), None]
        );
        assert_eq!(bind.result_formats.as_slice(), [0]);
    }

    #[test]
    fn rejects_every_malformed_shape() {
        let cases: Vec<(&str, Bytes)> = vec![
            ("empty", Bytes::new()),
            ("no statement name", body(&[b"p\0"])),
            ("negative format count", body(&[b"\0\0", &[0xff, 0xff]])),
            (
                "negative value count",
                body(&[b"\0\0", &[0, 0], &[0xff, 0xff]]),
            ),
            (
                "huge value count",
                body(&[b"\0\0", &[0, 0], &[0x7f, 0xff], &[0; 8]]),
            ),
            (
                "value longer than the body",
                body(&[b"\0\0", &[0, 0], &[0, 1], &[0x7f, 0, 0, 0], b"x"]),
            ),
            (
                "value length below -1",
                body(&[
                    b"\0\0",
                    &[0, 0],
                    &[0, 1],
                    &[0xff, 0xff, 0xff, 0xfe],
                    &[0, 0],
                ]),
            ),
            (
                "negative result format count",
                body(&[b"\0\0", &[0, 0], &[0, 0], &[0xff, 0xff]]),
            ),
            (
                "bad format code",
                body(&[b"\0\0", &[0, 1, 0, 7], &[0, 0], &[0, 0]]),
            ),
            (
                "format count differs from value count",
                body(&[
                    b"\0\0",
                    &[0, 2, 0, 0, 0, 0],
                    &[0, 1],
                    &[0, 0, 0, 0],
                    &[0, 0],
                ]),
            ),
            (
                "trailing bytes",
                body(&[b"\0\0", &[0, 0], &[0, 0], &[0, 0], b"z"]),
            ),
        ];
        for (what, b) in cases {
            assert!(Bind::decode(&b).is_err(), "{what} was accepted");
        }
    }
}
