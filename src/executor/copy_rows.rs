//! Splitting a COPY FROM STDIN stream into rows, and reading each row's shard key.
//!
//! The client's CopyData messages cut the stream anywhere; the splitter buffers what it has not
//! placed yet and yields whole rows, byte for byte as the client sent them, so each shard
//! receives exactly the text PostgreSQL would have read. Rows end where PostgreSQL's COPY ends
//! them: text format at a newline not escaped by a backslash, CSV at a newline outside quotes,
//! binary after the declared fields. Only the key field is decoded (text escapes, CSV quotes,
//! the binary value, and an integer field asked for with `given_at`), so memory holds one
//! unfinished row plus what a CopyData brought.

use crate::placement::{KeyType, KeyValue};
use crate::router::copy::{Format, Kind};

/// What the splitter found next.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// The header line (text/CSV) or the file header (binary): every shard needs it.
    Header(Vec<u8>),
    /// A row and its key (None: NULL), and the integer in the field `given_at` named (None:
    /// none asked for, NULL, or not an integer, which the shard refuses itself).
    Row {
        bytes: Vec<u8>,
        key: Option<KeyValue>,
        given: Option<i64>,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub struct BadRow {
    pub message: String,
    /// 1-based line (text, CSV) or row (binary) of the input.
    pub line: u64,
}

pub struct Splitter {
    format: Format,
    /// None: the rows carry no key (the proxy adds it, see `append_fields`).
    key_index: Option<usize>,
    key_type: KeyType,
    /// A field read as an integer too (see `given_at`).
    given_index: Option<usize>,
    buf: Vec<u8>,
    /// Where the next row starts in `buf`, and how far it has been scanned.
    start: usize,
    scanned: usize,
    in_quotes: bool,
    header_pending: bool,
    /// `\.` or the binary trailer was read: the rest of the stream is ignored.
    ended: bool,
    line: u64,
}

/// Bytes of placed rows kept in `buf` before it is compacted.
const COMPACT_AT: usize = 64 * 1024;

impl Splitter {
    pub fn new(format: Format, key_index: Option<usize>, key_type: KeyType) -> Splitter {
        let header_pending = format.header || format.kind == Kind::Binary;
        Splitter {
            format,
            key_index,
            key_type,
            given_index: None,
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            in_quotes: false,
            header_pending,
            ended: false,
            line: 0,
        }
    }

    /// Reads field `index` of each row as an integer too (a sequence column the client gives,
    /// see `copy_given`).
    pub fn given_at(mut self, index: Option<usize>) -> Splitter {
        self.given_index = index;
        self
    }

    /// The line (text, CSV) or row (binary) of the input read last.
    pub fn line(&self) -> u64 {
        self.line
    }

    pub fn push(&mut self, data: &[u8]) {
        if self.ended {
            return;
        }
        if self.start >= COMPACT_AT {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next whole piece, None when more input is needed. `last`: the input has ended, so
    /// a final text row without a newline is a row.
    pub fn next(&mut self, last: bool) -> Result<Option<Piece>, BadRow> {
        if self.ended {
            return Ok(None);
        }
        if self.format.kind == Kind::Binary {
            return self.next_binary(last);
        }
        let Some(end) = self.row_end(last)? else {
            return Ok(None);
        };
        let bytes = self.buf[self.start..end].to_vec();
        self.start = end;
        self.scanned = end;
        self.in_quotes = false;
        self.line += 1;
        let content = trim_eol(&bytes);
        if content == b"\\." {
            self.ended = true;
            return Ok(None);
        }
        if self.header_pending {
            self.header_pending = false;
            return Ok(Some(Piece::Header(bytes)));
        }
        let key = self.key_of(content)?;
        let given = self.given_index.and_then(|i| {
            let (raw, quoted) = field(content, i, &self.format)?;
            if !quoted && raw == self.format.null.as_slice() {
                return None;
            }
            let value = match self.format.kind {
                Kind::Csv => unquote(raw, self.format.quote, self.format.escape),
                _ => unescape(raw),
            };
            std::str::from_utf8(&value).ok()?.trim().parse().ok()
        });
        Ok(Some(Piece::Row { bytes, key, given }))
    }

    /// The end (exclusive) of the row starting at `start`.
    fn row_end(&mut self, last: bool) -> Result<Option<usize>, BadRow> {
        let f = &self.format;
        let mut i = self.scanned;
        while i < self.buf.len() {
            let c = self.buf[i];
            match f.kind {
                Kind::Text if c == b'\\' => {
                    if i + 1 >= self.buf.len() {
                        break;
                    }
                    i += 2;
                    continue;
                }
                Kind::Csv if self.in_quotes && c == f.escape && f.escape != f.quote => {
                    if i + 1 >= self.buf.len() {
                        break;
                    }
                    let next = self.buf[i + 1];
                    i += if next == f.quote || next == f.escape {
                        2
                    } else {
                        1
                    };
                    continue;
                }
                Kind::Csv if c == f.quote => self.in_quotes = !self.in_quotes,
                _ if c == b'\n' && !self.in_quotes => {
                    self.scanned = i + 1;
                    return Ok(Some(i + 1));
                }
                _ => {}
            }
            i += 1;
        }
        self.scanned = i;
        if last && self.start < self.buf.len() {
            if self.in_quotes {
                return Err(self.bad("unterminated CSV quoted field".into()));
            }
            return Ok(Some(self.buf.len()));
        }
        Ok(None)
    }

    fn bad(&self, message: String) -> BadRow {
        BadRow {
            message,
            line: self.line + 1,
        }
    }

    /// The key field of a text or CSV row (without its line end).
    fn key_of(&self, row: &[u8]) -> Result<Option<KeyValue>, BadRow> {
        let f = &self.format;
        let Some(key_index) = self.key_index else {
            return Ok(None);
        };
        let Some((raw, quoted)) = field(row, key_index, f) else {
            return Err(self.bad_line(format!(
                "missing data for the shard key (column {} of the row)",
                key_index + 1
            )));
        };
        if !quoted && raw == f.null.as_slice() {
            return Ok(None);
        }
        let value = match f.kind {
            Kind::Csv => unquote(raw, f.quote, f.escape),
            _ => unescape(raw),
        };
        let text = String::from_utf8(value)
            .map_err(|_| self.bad_line("the shard key is not valid UTF-8".into()))?;
        KeyValue::from_text(self.key_type, &text)
            .map(Some)
            .map_err(|e| self.bad_line(format!("invalid shard key: {e}")))
    }

    fn bad_line(&self, message: String) -> BadRow {
        BadRow {
            message,
            line: self.line,
        }
    }

    fn next_binary(&mut self, last: bool) -> Result<Option<Piece>, BadRow> {
        let avail = &self.buf[self.start..];
        if self.header_pending {
            const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
            if avail.len() < 19 {
                return self.need_more(last, "the binary COPY header is incomplete");
            }
            if &avail[..11] != SIGNATURE {
                return Err(self.bad("COPY file signature not recognized".into()));
            }
            let ext = u32::from_be_bytes([avail[15], avail[16], avail[17], avail[18]]) as usize;
            if avail.len() < 19 + ext {
                return self.need_more(last, "the binary COPY header is incomplete");
            }
            let header = avail[..19 + ext].to_vec();
            self.start += 19 + ext;
            self.header_pending = false;
            return Ok(Some(Piece::Header(header)));
        }
        if avail.len() < 2 {
            return self.need_more(last, "the binary COPY data ends inside a row");
        }
        let fields = i16::from_be_bytes([avail[0], avail[1]]);
        if fields == -1 {
            self.ended = true;
            return Ok(None);
        }
        let mut at = 2;
        let mut key = None;
        let mut given = None;
        for i in 0..fields.max(0) as usize {
            if avail.len() < at + 4 {
                return self.need_more(last, "the binary COPY data ends inside a row");
            }
            let len = i32::from_be_bytes([avail[at], avail[at + 1], avail[at + 2], avail[at + 3]]);
            at += 4;
            let null = len < 0;
            let len = len.max(0) as usize;
            if avail.len() < at + len {
                return self.need_more(last, "the binary COPY data ends inside a row");
            }
            if Some(i) == self.key_index && !null {
                key = Some(&avail[at..at + len]);
            }
            if Some(i) == self.given_index && !null {
                let raw = &avail[at..at + len];
                given = match len {
                    2 => Some(i16::from_be_bytes([raw[0], raw[1]]) as i64),
                    4 => Some(i32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]) as i64),
                    8 => raw.try_into().ok().map(i64::from_be_bytes),
                    _ => None,
                };
            }
            at += len;
        }
        self.line += 1;
        if let Some(k) = self.key_index.filter(|&k| fields as usize <= k) {
            return Err(self.bad_line(format!(
                "row has {fields} fields, so no shard key (field {})",
                k + 1
            )));
        }
        let key = match key {
            None => None,
            Some(raw) => Some(
                KeyValue::from_binary(self.key_type, raw)
                    .map_err(|e| self.bad_line(format!("invalid shard key: {e}")))?,
            ),
        };
        let bytes = avail[..at].to_vec();
        self.start += at;
        self.scanned = self.start;
        Ok(Some(Piece::Row { bytes, key, given }))
    }

    fn need_more(&self, last: bool, why: &str) -> Result<Option<Piece>, BadRow> {
        if last && self.start < self.buf.len() {
            return Err(self.bad(why.into()));
        }
        if last && self.header_pending {
            return Err(self.bad(why.into()));
        }
        Ok(None)
    }
}

/// Adds integer fields at the end of a whole row (as `Piece::Row` gives it): before the line
/// end in text and CSV, and as `width`-byte values with the field count raised in binary.
pub fn append_fields(row: &mut Vec<u8>, format: &Format, values: &[(i64, i16)]) {
    if format.kind == Kind::Binary {
        if row.len() < 2 {
            return;
        }
        let fields = i16::from_be_bytes([row[0], row[1]]) + values.len() as i16;
        row[..2].copy_from_slice(&fields.to_be_bytes());
        for &(v, width) in values {
            row.extend_from_slice(&(width as i32).to_be_bytes());
            match width {
                2 => row.extend_from_slice(&(v as i16).to_be_bytes()),
                4 => row.extend_from_slice(&(v as i32).to_be_bytes()),
                _ => row.extend_from_slice(&v.to_be_bytes()),
            }
        }
        return;
    }
    let content = trim_eol(row).len();
    let eol = row.split_off(content);
    for &(v, _) in values {
        row.push(format.delimiter);
        row.extend_from_slice(v.to_string().as_bytes());
    }
    row.extend_from_slice(&eol);
}

fn trim_eol(row: &[u8]) -> &[u8] {
    let row = row.strip_suffix(b"\n").unwrap_or(row);
    row.strip_suffix(b"\r").unwrap_or(row)
}

/// Field `index` of a text or CSV row, raw, and whether it was quoted (CSV).
fn field<'r>(row: &'r [u8], index: usize, f: &Format) -> Option<(&'r [u8], bool)> {
    let (mut n, mut from, mut i, mut in_quotes, mut quoted) = (0, 0, 0, false, false);
    while i <= row.len() {
        let at_end = i == row.len();
        let c = if at_end { 0 } else { row[i] };
        if !at_end {
            match f.kind {
                Kind::Text if c == b'\\' => {
                    i += 2;
                    continue;
                }
                Kind::Csv if in_quotes && c == f.escape && f.escape != f.quote => {
                    i += 2;
                    continue;
                }
                Kind::Csv if c == f.quote => {
                    in_quotes = !in_quotes;
                    quoted = true;
                    i += 1;
                    continue;
                }
                _ => {}
            }
        }
        if at_end || (c == f.delimiter && !in_quotes) {
            if n == index {
                return Some((&row[from..i.min(row.len())], quoted));
            }
            n += 1;
            from = i + 1;
            quoted = false;
        }
        i += 1;
    }
    None
}

/// A text-format field's value: backslash escapes resolved as PostgreSQL's COPY reads them.
fn unescape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        if c != b'\\' || i + 1 >= raw.len() {
            out.push(c);
            i += 1;
            continue;
        }
        let e = raw[i + 1];
        i += 2;
        match e {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = (e - b'0') as u32;
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(d @ b'0'..=b'7') => {
                            v = v * 8 + (d - b'0') as u32;
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(v as u8);
            }
            b'x' if raw.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                let mut v = 0u32;
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(d) if d.is_ascii_hexdigit() => {
                            v = v * 16 + (*d as char).to_digit(16).unwrap_or(0);
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    out
}

/// A CSV field's value: quotes removed, doubled quotes and escapes resolved.
fn unquote(raw: &[u8], quote: u8, escape: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let (mut i, mut in_quotes) = (0, false);
    while i < raw.len() {
        let c = raw[i];
        if in_quotes {
            if c == escape && escape != quote && i + 1 < raw.len() {
                let next = raw[i + 1];
                if next == quote || next == escape {
                    out.push(next);
                    i += 2;
                    continue;
                }
            }
            if c == quote {
                if escape == quote && raw.get(i + 1) == Some(&quote) {
                    out.push(quote);
                    i += 2;
                    continue;
                }
                in_quotes = false;
                i += 1;
                continue;
            }
            out.push(c);
        } else if c == quote {
            in_quotes = true;
        } else {
            out.push(c);
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests;
