//! Reading single fields out of frames the proxy must look into, without a full decode.

/// Reads a NUL-terminated string at the start of `buf`; returns it and the bytes after the NUL.
pub fn cstr(buf: &[u8]) -> Option<(&str, &[u8])> {
    let end = buf.iter().position(|&b| b == 0)?;
    let s = std::str::from_utf8(&buf[..end]).ok()?;
    Some((s, &buf[end + 1..]))
}

/// The SQL text of a simple-protocol Query body.
pub fn query_text(body: &[u8]) -> Option<&str> {
    cstr(body).map(|(s, _)| s)
}

/// Statement name and SQL text of a Parse body.
pub fn parse_text(body: &[u8]) -> Option<(&str, &str)> {
    let (name, rest) = cstr(body)?;
    let (sql, _) = cstr(rest)?;
    Some((name, sql))
}

/// The transaction status byte of a ReadyForQuery body.
pub fn ready_status(body: &[u8]) -> Option<u8> {
    body.first().copied()
}

/// The value of one field (e.g. `b'C'` for SQLSTATE) of an ErrorResponse/NoticeResponse body.
pub fn error_field(body: &[u8], field: u8) -> Option<&str> {
    let mut rest = body;
    while let Some((&code, tail)) = rest.split_first() {
        if code == 0 {
            return None;
        }
        let (value, after) = cstr(tail)?;
        if code == field {
            return Some(value);
        }
        rest = after;
    }
    None
}

/// One field of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDesc {
    pub name: String,
    pub type_oid: u32,
    pub format: i16,
}

/// The fields of a RowDescription body.
pub fn row_description(body: &[u8]) -> Option<Vec<FieldDesc>> {
    let n = usize::try_from(i16::from_be_bytes(body.get(..2)?.try_into().ok()?)).ok()?;
    let mut rest = &body[2..];
    // Each field takes at least 19 bytes: never size the vector from the count alone.
    let mut out = Vec::with_capacity(n.min(rest.len() / 19));
    for _ in 0..n {
        let (name, after) = cstr(rest)?;
        // table oid (4), attnum (2), type oid (4), typlen (2), typmod (4), format (2)
        let fixed = after.get(..18)?;
        out.push(FieldDesc {
            name: name.to_string(),
            type_oid: u32::from_be_bytes(fixed[6..10].try_into().ok()?),
            format: i16::from_be_bytes(fixed[16..18].try_into().ok()?),
        });
        rest = &after[18..];
    }
    Some(out)
}

/// Column `i` (0-based) of a DataRow body: `Some(None)` is SQL NULL.
pub fn data_row_column(body: &[u8], i: usize) -> Option<Option<&[u8]>> {
    let n = usize::try_from(i16::from_be_bytes(body.get(..2)?.try_into().ok()?)).ok()?;
    if i >= n {
        return None;
    }
    let mut at = 2;
    for col in 0..=i {
        let len = i32::from_be_bytes(body.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        if len < 0 {
            if col == i {
                return Some(None);
            }
            continue;
        }
        let len = len as usize;
        if col == i {
            return Some(Some(body.get(at..at + len)?));
        }
        at += len;
    }
    None
}

/// The row count of a CommandComplete tag such as `SELECT 5`, `UPDATE 3`, `INSERT 0 7`.
pub fn command_rows(body: &[u8]) -> Option<u64> {
    let (tag, _) = cstr(body)?;
    tag.rsplit(' ').next()?.parse().ok()
}

#[cfg(test)]
mod row_tests {
    use super::*;

    #[test]
    fn data_row_columns() {
        let mut body = 3i16.to_be_bytes().to_vec();
        body.extend_from_slice(&2i32.to_be_bytes());
        body.extend_from_slice(b"ab");
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(b"c");
        assert_eq!(data_row_column(&body, 0), Some(Some(&b"ab"[..])));
        assert_eq!(data_row_column(&body, 1), Some(None));
        assert_eq!(data_row_column(&body, 2), Some(Some(&b"c"[..])));
        assert_eq!(data_row_column(&body, 3), None);
        assert_eq!(command_rows(b"INSERT 0 7\0"), Some(7));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields() {
        let body = b"SERROR\0C26000\0Mnope\0\0";
        assert_eq!(error_field(body, b'C'), Some("26000"));
        assert_eq!(error_field(body, b'M'), Some("nope"));
        assert_eq!(error_field(body, b'H'), None);
        assert_eq!(parse_text(b"s1\0select 1\0\0\0"), Some(("s1", "select 1")));
        assert_eq!(query_text(b"select 2\0"), Some("select 2"));
        assert_eq!(cstr(b"no terminator"), None);
    }
}
