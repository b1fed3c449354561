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
