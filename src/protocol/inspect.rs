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

/// An ErrorResponse/NoticeResponse frame (whole, tag included) with its error position (`P`,
/// 1-based characters into the statement text) mapped by `map`: the shard ran a text with
/// something in front of the client's, or a text of its own. `None` from `map` drops the
/// field, so a client never points at the wrong place. A frame that cannot be read is kept.
pub fn map_error_position(frame: &[u8], map: impl Fn(u64) -> Option<u64>) -> bytes::Bytes {
    let Some(body) = frame.get(5..) else {
        return bytes::Bytes::copy_from_slice(frame);
    };
    let Some(position) = error_field(body, b'P').and_then(|p| p.parse::<u64>().ok()) else {
        return bytes::Bytes::copy_from_slice(frame);
    };
    let mapped = map(position);
    let mut out = bytes::BytesMut::with_capacity(frame.len());
    out.extend_from_slice(&frame[..1]);
    out.extend_from_slice(&[0; 4]);
    let mut rest = body;
    while let Some((&code, tail)) = rest.split_first() {
        if code == 0 {
            break;
        }
        let Some((value, after)) = cstr(tail) else {
            return bytes::Bytes::copy_from_slice(frame);
        };
        match (code, mapped) {
            (b'P', None) => {}
            (b'P', Some(p)) => {
                out.extend_from_slice(b"P");
                out.extend_from_slice(p.to_string().as_bytes());
                out.extend_from_slice(&[0]);
            }
            _ => {
                out.extend_from_slice(&[code]);
                out.extend_from_slice(value.as_bytes());
                out.extend_from_slice(&[0]);
            }
        }
        rest = after;
    }
    out.extend_from_slice(&[0]);
    let len = (out.len() - 1) as u32;
    out[1..5].copy_from_slice(&len.to_be_bytes());
    out.freeze()
}

/// An ErrorResponse or NoticeResponse `frame` with field `field` set to `value`.
pub fn with_error_field(frame: &[u8], field: u8, value: &str) -> bytes::Bytes {
    let mut out = bytes::BytesMut::with_capacity(frame.len() + value.len());
    out.extend_from_slice(&frame[..1]);
    out.extend_from_slice(&[0; 4]);
    let mut rest = frame.get(5..).unwrap_or_default();
    while let Some((&code, tail)) = rest.split_first() {
        let Some((old, after)) = cstr(tail).filter(|_| code != 0) else {
            break;
        };
        out.extend_from_slice(&[code]);
        out.extend_from_slice(if code == field { value } else { old }.as_bytes());
        out.extend_from_slice(&[0]);
        rest = after;
    }
    out.extend_from_slice(&[0]);
    let len = (out.len() - 1) as u32;
    out[1..5].copy_from_slice(&len.to_be_bytes());
    out.freeze()
}

/// One field of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDesc {
    pub name: String,
    /// The table and column (attribute number) the value comes from; 0 when it is computed.
    pub table_oid: u32,
    pub column: i16,
    pub type_oid: u32,
    /// The type modifier (`numeric(10,2)`, `varchar(20)`); -1 when there is none.
    pub typmod: i32,
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
            table_oid: u32::from_be_bytes(fixed[0..4].try_into().ok()?),
            column: i16::from_be_bytes(fixed[4..6].try_into().ok()?),
            type_oid: u32::from_be_bytes(fixed[6..10].try_into().ok()?),
            typmod: i32::from_be_bytes(fixed[12..16].try_into().ok()?),
            format: i16::from_be_bytes(fixed[16..18].try_into().ok()?),
        });
        rest = &after[18..];
    }
    Some(out)
}

/// Each field's type OID and format in a RowDescription body, without its name.
pub fn column_types(body: &[u8]) -> Option<Vec<(u32, i16)>> {
    let mut columns = ColumnTypes::new(body)?;
    let mut out = Vec::with_capacity(columns.left.min(body.len() / 19));
    out.extend(&mut columns);
    columns.whole().then_some(out)
}

/// Whether a field of a RowDescription body is `(type OID, format)` such that `f` holds; false
/// for a malformed body. Allocates nothing: it runs on every RowDescription of some paths.
pub fn any_column(body: &[u8], f: impl Fn(u32, i16) -> bool) -> bool {
    ColumnTypes::new(body).is_some_and(|mut c| c.any(|(oid, format)| f(oid, format)))
}

/// The fields' (type OID, format) of a RowDescription body, in order, names skipped unread.
struct ColumnTypes<'a> {
    rest: &'a [u8],
    left: usize,
    broken: bool,
}

impl<'a> ColumnTypes<'a> {
    fn new(body: &'a [u8]) -> Option<Self> {
        let n = usize::try_from(i16::from_be_bytes(body.get(..2)?.try_into().ok()?)).ok()?;
        Some(ColumnTypes {
            rest: &body[2..],
            left: n,
            broken: false,
        })
    }

    /// Whether every field the count announced was read.
    fn whole(&self) -> bool {
        self.left == 0 && !self.broken
    }
}

impl Iterator for ColumnTypes<'_> {
    type Item = (u32, i16);

    fn next(&mut self) -> Option<(u32, i16)> {
        if self.left == 0 || self.broken {
            return None;
        }
        // name, NUL, table oid (4), attnum (2), type oid (4), typlen (2), typmod (4), format (2)
        let field = memchr::memchr(0, self.rest)
            .and_then(|end| Some((end, self.rest.get(end + 1..end + 19)?)))
            .map(|(end, fixed)| {
                let oid = u32::from_be_bytes([fixed[6], fixed[7], fixed[8], fixed[9]]);
                (end, (oid, i16::from_be_bytes([fixed[16], fixed[17]])))
            });
        match field {
            Some((end, item)) => {
                self.rest = &self.rest[end + 19..];
                self.left -= 1;
                Some(item)
            }
            None => {
                self.broken = true;
                None
            }
        }
    }
}

/// Where the type OIDs of a RowDescription or ParameterDescription frame (whole, tag
/// included) sit: (byte offset in the frame, OID). None for another message or a malformed one.
pub fn type_oid_positions(frame: &[u8]) -> Option<Vec<(usize, u32)>> {
    let body = frame.get(5..)?;
    let n = usize::try_from(i16::from_be_bytes(body.get(..2)?.try_into().ok()?)).ok()?;
    let oid_at = |at: usize| -> Option<(usize, u32)> {
        let bytes = body.get(at..at + 4)?;
        Some((5 + at, u32::from_be_bytes(bytes.try_into().ok()?)))
    };
    let mut out = Vec::with_capacity(n.min(body.len() / 4));
    match frame.first()? {
        b't' => {
            for i in 0..n {
                out.push(oid_at(2 + 4 * i)?);
            }
        }
        b'T' => {
            let mut at = 2;
            for _ in 0..n {
                let (name, _) = cstr(body.get(at..)?)?;
                // name, NUL, table oid (4), attnum (2), then the type oid
                at += name.len() + 1;
                out.push(oid_at(at + 6)?);
                at += 18;
            }
        }
        _ => return None,
    }
    Some(out)
}

/// Whether two RowDescription bodies describe the same columns: names, types, type modifiers
/// and formats. The source table's OID and column number are left out: they differ between
/// shards whose catalogs have different histories, as real shards' always do.
pub fn same_columns(a: &[u8], b: &[u8]) -> bool {
    matches!((columns(a, 18), columns(b, 18)), (Some(x), Some(y)) if x == y)
}

/// Whether two RowDescription bodies describe columns of the same names and types, whatever
/// their formats: a statement's result type as PostgreSQL fixes it when preparing it.
pub fn same_column_types(a: &[u8], b: &[u8]) -> bool {
    matches!((columns(a, 16), columns(b, 16)), (Some(x), Some(y)) if x == y)
}

/// Whether two answers to a Describe (whole RowDescription or NoData frames) show the same
/// result columns, formats aside.
pub fn same_description(a: &[u8], b: &[u8]) -> bool {
    match (a.first(), b.first()) {
        (Some(b'n'), Some(b'n')) => true,
        (Some(b'T'), Some(b'T')) => {
            a.len() >= 5 && b.len() >= 5 && same_column_types(&a[5..], &b[5..])
        }
        _ => false,
    }
}

/// Each column's name and its fixed fields from the type on, up to byte `upto` of the 18.
fn columns(body: &[u8], upto: usize) -> Option<Vec<(&[u8], &[u8])>> {
    let n = usize::try_from(i16::from_be_bytes(body.get(..2)?.try_into().ok()?)).ok()?;
    let mut rest = &body[2..];
    let mut out = Vec::with_capacity(n.min(rest.len() / 19));
    for _ in 0..n {
        let end = rest.iter().position(|&c| c == 0)?;
        let fixed = rest.get(end + 1..end + 19)?;
        // Skip table OID (4) and column number (2); keep type, size, modifier, format.
        out.push((&rest[..end], &fixed[6..upto]));
        rest = &rest[end + 19..];
    }
    rest.is_empty().then_some(out)
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

/// Whether whole backend messages laid end to end in `out` include one of these types; a
/// length that runs past the end stops the walk.
pub fn has_tag(out: &[u8], tags: &[u8]) -> bool {
    let mut at = 0;
    while let Some(head) = out.get(at..at + 5) {
        if tags.contains(&head[0]) {
            return true;
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        at = match at.checked_add(1 + len.max(4)) {
            Some(next) => next,
            None => return false,
        };
    }
    false
}

#[cfg(test)]
mod row_tests {
    use super::*;

    fn description(table_oid: u32, type_oid: u32) -> Vec<u8> {
        let mut b = 1i16.to_be_bytes().to_vec();
        b.extend_from_slice(b"id\0");
        b.extend_from_slice(&table_oid.to_be_bytes());
        b.extend_from_slice(&1i16.to_be_bytes());
        b.extend_from_slice(&type_oid.to_be_bytes());
        b.extend_from_slice(&8i16.to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&0i16.to_be_bytes());
        b
    }

    #[test]
    fn column_types_compare_without_their_format() {
        let text = description(16384, 20);
        let mut binary = text.clone();
        let last = binary.len() - 1;
        binary[last] = 1;
        assert!(!same_columns(&text, &binary));
        assert!(same_column_types(&text, &binary));
        assert!(!same_column_types(&text, &description(16384, 23)));
    }

    #[test]
    fn column_types_read_every_field_or_none() {
        let mut two = description(16384, 20);
        two[1] = 2;
        let mut second = description(16384, 16500);
        let last = second.len() - 1;
        second[last] = 1;
        two.extend_from_slice(&second[2..]);
        assert_eq!(column_types(&two), Some(vec![(20, 0), (16500, 1)]));
        assert!(any_column(&two, |oid, format| oid == 16500 && format == 1));
        assert!(!any_column(&two, |oid, _| oid == 23));
        // A count past the fields, or a field cut short, is no answer.
        let mut three = two.clone();
        three[1] = 3;
        assert_eq!(column_types(&three), None);
        assert_eq!(column_types(&two[..two.len() - 1]), None);
        assert!(!any_column(&two[..10], |_, _| true));
        assert_eq!(column_types(&[0, 0]), Some(vec![]));
        assert_eq!(column_types(&[0]), None);
    }

    #[test]
    fn columns_compare_without_their_table_oid() {
        assert!(same_columns(
            &description(16384, 20),
            &description(24001, 20)
        ));
        assert!(!same_columns(
            &description(16384, 20),
            &description(16384, 23)
        ));
        assert!(!same_columns(
            &description(1, 20),
            &description(1, 20)[..10]
        ));
    }

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

    #[test]
    fn tags_are_found_message_by_message() {
        let mut out = bytes::BytesMut::new();
        crate::protocol::build::command_complete("SELECT 1", &mut out);
        // An E inside a message's body is not a message.
        crate::protocol::build::command_complete("E", &mut out);
        assert!(!has_tag(&out, b"EN"));
        assert!(has_tag(&out, b"C"));
        crate::protocol::build::warning("01000", "w", &mut out);
        assert!(has_tag(&out, b"EN"));
        // A length past the end, or one that would overflow, ends the walk.
        assert!(!has_tag(b"C\xff\xff\xff\xffE\0\0\0\x04", b"E"));
        assert!(!has_tag(b"C\0\0\0\x04", b"E"));
        assert!(!has_tag(b"", b"E"));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn type_oids_are_found_in_descriptions() {
        let mut t = bytes::BytesMut::new();
        crate::protocol::build::row_description_text(&["a", "bee"], &mut t);
        let found = type_oid_positions(&t).unwrap();
        assert_eq!(found.len(), 2);
        for (at, oid) in found {
            assert_eq!(oid, 25);
            assert_eq!(u32::from_be_bytes(t[at..at + 4].try_into().unwrap()), 25);
        }
        let params = [b't', 0, 0, 0, 14, 0, 2, 0, 0, 0x40, 0, 0, 0, 0, 23];
        assert_eq!(
            type_oid_positions(&params),
            Some(vec![(7, 0x4000), (11, 23)])
        );
        assert_eq!(type_oid_positions(&[b't', 0, 0, 0, 6, 0, 2]), None);
        assert_eq!(type_oid_positions(b"Z\0\0\0\x05I"), None);
    }

    #[test]
    fn error_positions_are_moved_or_dropped() {
        let mut e = bytes::BytesMut::new();
        crate::protocol::build::error(
            &crate::error::PgError::error("42601", "syntax error"),
            &mut e,
        );
        // Append a position field by hand, as a shard would send it.
        let mut body = e[5..e.len() - 1].to_vec();
        body.extend_from_slice(b"P15\0\0");
        let mut frame = vec![b'E'];
        frame.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        frame.extend_from_slice(&body);
        let moved = map_error_position(&frame, |p| p.checked_sub(7));
        assert_eq!(error_field(&moved[5..], b'P'), Some("8"));
        assert_eq!(error_field(&moved[5..], b'C'), Some("42601"));
        assert_eq!(
            u32::from_be_bytes(moved[1..5].try_into().unwrap()) as usize,
            moved.len() - 1
        );
        let dropped = map_error_position(&frame, |_| None);
        assert_eq!(error_field(&dropped[5..], b'P'), None);
        assert_eq!(error_field(&dropped[5..], b'M'), Some("syntax error"));
        assert_eq!(dropped.len(), frame.len() - 4);
    }

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
