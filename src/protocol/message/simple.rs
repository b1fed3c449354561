//! Query and Execute: messages of one or two fields.

use super::cursor::{Cursor, DecodeError};
use super::put_cstr;
use bytes::{BufMut, Bytes, BytesMut};

/// A simple-protocol Query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub sql: String,
}

impl Query {
    pub fn decode(body: &Bytes) -> Result<Query, DecodeError> {
        Ok(Query {
            sql: Query::text(body)?.to_string(),
        })
    }

    /// The text of a Query's body, read in place: the session runs it from the message, which
    /// it holds anyway. Checked as `decode` checks it.
    pub fn text(body: &[u8]) -> Result<&str, DecodeError> {
        const MESSAGE: &str = "Query";
        let end = memchr::memchr(0, body).ok_or(DecodeError::BadString { message: MESSAGE })?;
        let sql = std::str::from_utf8(&body[..end])
            .map_err(|_| DecodeError::NotUtf8 { message: MESSAGE })?;
        match body.len() - end - 1 {
            0 => Ok(sql),
            extra => Err(DecodeError::Trailing {
                message: MESSAGE,
                extra,
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execute {
    pub portal: String,
    /// 0 means no limit; PostgreSQL treats a negative limit the same way.
    pub max_rows: i32,
}

impl Execute {
    pub fn decode(body: &Bytes) -> Result<Execute, DecodeError> {
        let mut c = Cursor::new(body, "Execute");
        let portal = c.cstr()?;
        let max_rows = c.i32()?;
        c.finish()?;
        Ok(Execute { portal, max_rows })
    }

    /// The row limit, if any.
    pub fn limit(&self) -> Option<usize> {
        (self.max_rows > 0).then_some(self.max_rows as usize)
    }
}

impl Query {
    pub fn encode(&self, out: &mut BytesMut) {
        super::frame(out, b'Q', |b| put_cstr(b, &self.sql));
    }
}

impl Execute {
    pub fn encode(&self, out: &mut BytesMut) {
        super::frame(out, b'E', |b| {
            put_cstr(b, &self.portal);
            b.put_i32(self.max_rows);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_rejects() {
        assert_eq!(
            Query::decode(&Bytes::from_static(b"select 1\0"))
                .unwrap()
                .sql,
            "select 1"
        );
        assert!(Query::decode(&Bytes::from_static(b"select 1")).is_err());
        assert_eq!(Query::text(b"select 1\0"), Ok("select 1"));
        assert!(matches!(
            Query::text(b"select 1\0x"),
            Err(DecodeError::Trailing { extra: 1, .. })
        ));
        assert!(matches!(
            Query::text(b"select '\xff'\0"),
            Err(DecodeError::NotUtf8 { .. })
        ));
        assert!(matches!(
            Query::text(b""),
            Err(DecodeError::BadString { .. })
        ));
        let e = Execute::decode(&Bytes::from_static(b"p\0\0\0\0\x05")).unwrap();
        assert_eq!((e.portal.as_str(), e.limit()), ("p", Some(5)));
        let e = Execute::decode(&Bytes::from_static(b"\0\xff\xff\xff\xff")).unwrap();
        assert_eq!(e.limit(), None);
        assert!(Execute::decode(&Bytes::from_static(b"p\0\0\0")).is_err());
        assert!(Execute::decode(&Bytes::from_static(b"")).is_err());
    }
}
