//! Counting the statements outgoing bytes prepare: the link keeps track of the unnamed
//! statement and of how many named ones a pooled connection has been given.

/// Messages that replace the unnamed statement, among whole messages: a Parse of it, and a
/// simple Query (PostgreSQL drops the unnamed statement when it runs one).
pub(crate) fn unnamed_parses(bytes: &[u8]) -> u64 {
    parses(bytes).0
}

/// Messages replacing the unnamed statement (see `unnamed_parses`), and Parses of named ones.
pub(super) fn parses(mut bytes: &[u8]) -> (u64, u64) {
    let (mut unnamed, mut named) = (0, 0);
    while bytes.len() >= 6 {
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        match bytes[0] {
            b'P' if bytes[5] == 0 => unnamed += 1,
            b'P' => named += 1,
            b'Q' => unnamed += 1,
            _ => {}
        }
        bytes = bytes.get(1 + len..).unwrap_or(&[]);
    }
    (unnamed, named)
}
