//! jsonb values read back from their text form and ordered as PostgreSQL's jsonb btree
//! operator class orders them, so that the merge can sort and group jsonb columns.
//!
//! PostgreSQL compares two jsonb values by walking both in step, token by token, the way its
//! iterator yields them: a container's start carries its size, an object's pairs come key,
//! value, key, value in storage order (keys by length, then bytes), and a top-level scalar is a
//! one-element "raw scalar" array. The first difference decides:
//!
//! - two container starts: an object's pair count, or an array's "raw scalar" flag and then its
//!   element count (the count wins when both differ: an empty top-level array sorts below a
//!   top-level `null`, an anomaly PostgreSQL keeps for on-disk compatibility);
//! - two scalars of one type: null = null, strings by the database's collation, numbers by
//!   value (`1.0` = `1.00`), false < true;
//! - anything else by type: null < string < number < boolean < array < object.
//!
//! `Token` lists are that walk. They are built without recursion (a value nested a million
//! deep costs memory, not stack), and strings keep their bytes: the merge compares them
//! bytewise, which is the database's order only under the C collation (the caller's check).
//! Equality never depends on the collation: PostgreSQL's default collations are deterministic.

use super::Decimal;
use std::cmp::Ordering;

/// One step of the walk.
#[derive(Debug, Clone, PartialEq)]
pub enum Token {
    BeginArray { len: usize, raw_scalar: bool },
    BeginObject { pairs: usize },
    Key(Vec<u8>),
    Scalar(Scalar),
    End,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Null,
    Str(Vec<u8>),
    Num(Decimal),
    Bool(bool),
}

/// The type order of what a token starts (PostgreSQL's `enum jbvType`).
fn type_rank(t: &Token) -> u8 {
    match t {
        Token::Scalar(Scalar::Null) => 0,
        Token::Key(_) | Token::Scalar(Scalar::Str(_)) => 1,
        Token::Scalar(Scalar::Num(_)) => 2,
        Token::Scalar(Scalar::Bool(_)) => 3,
        Token::BeginArray { .. } => 0x10,
        Token::BeginObject { .. } => 0x11,
        Token::End => 0x20,
    }
}

/// PostgreSQL's jsonb order (`compareJsonbContainers`), strings bytewise.
pub fn compare(a: &[Token], b: &[Token]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let o = match (x, y) {
            (Token::End, Token::End) => Ordering::Equal,
            (
                Token::BeginArray {
                    len: la,
                    raw_scalar: ra,
                },
                Token::BeginArray {
                    len: lb,
                    raw_scalar: rb,
                },
            ) => {
                if la != lb {
                    la.cmp(lb)
                } else {
                    // A raw scalar below a one-element array.
                    rb.cmp(ra)
                }
            }
            (Token::BeginObject { pairs: pa }, Token::BeginObject { pairs: pb }) => pa.cmp(pb),
            (Token::Key(ka), Token::Key(kb)) => ka.cmp(kb),
            (Token::Scalar(sa), Token::Scalar(sb)) => match (sa, sb) {
                (Scalar::Null, Scalar::Null) => Ordering::Equal,
                (Scalar::Str(p), Scalar::Str(q)) => p.cmp(q),
                (Scalar::Num(p), Scalar::Num(q)) => p.partial_cmp(q).unwrap_or(Ordering::Equal),
                (Scalar::Bool(p), Scalar::Bool(q)) => p.cmp(q),
                _ => type_rank(x).cmp(&type_rank(y)),
            },
            _ => type_rank(x).cmp(&type_rank(y)),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    // Equal sizes at every level make equal lengths; a difference was found above otherwise.
    a.len().cmp(&b.len())
}

/// Bytes equal exactly when PostgreSQL's jsonb `=` holds: the walk with numbers by value.
pub fn equality_key(tokens: &[Token]) -> Vec<u8> {
    let mut out = Vec::new();
    let bytes = |tag: u8, b: &[u8], out: &mut Vec<u8>| {
        out.push(tag);
        out.extend_from_slice(&(b.len() as u64).to_be_bytes());
        out.extend_from_slice(b);
    };
    for t in tokens {
        match t {
            Token::BeginArray { len, raw_scalar } => {
                out.push(if *raw_scalar { b'r' } else { b'[' });
                out.extend_from_slice(&(*len as u64).to_be_bytes());
            }
            Token::BeginObject { pairs } => {
                out.push(b'{');
                out.extend_from_slice(&(*pairs as u64).to_be_bytes());
            }
            Token::Key(k) => bytes(b'k', k, &mut out),
            Token::Scalar(Scalar::Str(s)) => bytes(b's', s, &mut out),
            Token::Scalar(Scalar::Num(d)) => bytes(b'n', format!("{d:?}").as_bytes(), &mut out),
            Token::Scalar(Scalar::Bool(v)) => out.extend_from_slice(if *v { b"t" } else { b"f" }),
            Token::Scalar(Scalar::Null) => out.push(b'0'),
            Token::End => out.push(b'e'),
        }
    }
    out
}

/// The walk of a jsonb value as PostgreSQL writes it (`jsonb_out`). None for text that is not
/// that: malformed JSON, a number with an exponent, object keys out of storage order.
pub fn parse(text: &str) -> Option<Vec<Token>> {
    let mut p = Reader {
        s: text.as_bytes(),
        at: 0,
    };
    let mut out = Vec::new();
    // Open containers: where their start token is, and the last key of an object (to check
    // the storage order).
    let mut open: Vec<(usize, Option<Vec<u8>>)> = Vec::new();
    p.space();
    if !matches!(p.peek(), Some(b'[' | b'{')) {
        out.push(Token::BeginArray {
            len: 1,
            raw_scalar: true,
        });
        out.push(Token::Scalar(p.scalar()?));
        out.push(Token::End);
        p.space();
        return (p.at == p.s.len()).then_some(out);
    }
    loop {
        p.space();
        // A value is due here (the document's, an element, or after a key's colon).
        match p.peek()? {
            b'[' => {
                p.at += 1;
                open.push((out.len(), None));
                out.push(Token::BeginArray {
                    len: 0,
                    raw_scalar: false,
                });
                p.space();
                if p.eat(b']') {
                    out.push(Token::End);
                    open.pop();
                } else {
                    continue;
                }
            }
            b'{' => {
                p.at += 1;
                open.push((out.len(), None));
                out.push(Token::BeginObject { pairs: 0 });
                p.space();
                if p.eat(b'}') {
                    out.push(Token::End);
                    open.pop();
                } else {
                    p.key(&mut open, &mut out)?;
                    continue;
                }
            }
            _ => out.push(Token::Scalar(p.scalar()?)),
        }
        // A value ended: count it in its container, then a comma or the container's end.
        loop {
            let Some(&(start, _)) = open.last() else {
                p.space();
                return (p.at == p.s.len()).then_some(out);
            };
            match &mut out[start] {
                Token::BeginArray { len, .. } => *len += 1,
                Token::BeginObject { pairs } => *pairs += 1,
                _ => return None,
            }
            let object = matches!(out[start], Token::BeginObject { .. });
            p.space();
            if p.eat(b',') {
                if object {
                    p.key(&mut open, &mut out)?;
                }
                break;
            }
            if !p.eat(if object { b'}' } else { b']' }) {
                return None;
            }
            out.push(Token::End);
            open.pop();
        }
    }
}

struct Reader<'a> {
    s: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    fn space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        let yes = self.peek() == Some(b);
        if yes {
            self.at += 1;
        }
        yes
    }

    /// An object's key and its colon; keys must come in storage order (by length, then bytes).
    fn key(&mut self, open: &mut [(usize, Option<Vec<u8>>)], out: &mut Vec<Token>) -> Option<()> {
        self.space();
        let key = self.string()?;
        let last = &mut open.last_mut()?.1;
        if let Some(prev) = last.as_ref() {
            if (prev.len(), prev.as_slice()) >= (key.len(), key.as_slice()) {
                return None;
            }
        }
        *last = Some(key.clone());
        out.push(Token::Key(key));
        self.space();
        self.eat(b':').then_some(())
    }

    fn scalar(&mut self) -> Option<Scalar> {
        match self.peek()? {
            b'"' => self.string().map(Scalar::Str),
            b'n' => self.word(b"null", Scalar::Null),
            b't' => self.word(b"true", Scalar::Bool(true)),
            b'f' => self.word(b"false", Scalar::Bool(false)),
            _ => {
                let start = self.at;
                while matches!(self.peek(), Some(b'-' | b'.' | b'0'..=b'9')) {
                    self.at += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.at]).ok()?;
                match Decimal::parse(text)? {
                    d @ Decimal::Finite(..) if text.bytes().any(|b| b.is_ascii_digit()) => {
                        Some(Scalar::Num(d))
                    }
                    _ => None,
                }
            }
        }
    }

    fn word(&mut self, w: &[u8], v: Scalar) -> Option<Scalar> {
        let end = self.at + w.len();
        (self.s.get(self.at..end)? == w).then(|| {
            self.at = end;
            v
        })
    }

    /// A JSON string's bytes, its escapes undone.
    fn string(&mut self) -> Option<Vec<u8>> {
        if !self.eat(b'"') {
            return None;
        }
        let mut out = Vec::new();
        loop {
            let b = self.peek()?;
            self.at += 1;
            match b {
                b'"' => return Some(out),
                b'\\' => {
                    let e = self.peek()?;
                    self.at += 1;
                    let c = match e {
                        b'"' | b'\\' | b'/' => e as char,
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode()?,
                        _ => return None,
                    };
                    let mut buf = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                _ => out.push(b),
            }
        }
    }

    /// The character of a `\uXXXX` escape (a surrogate pair's two of them).
    fn unicode(&mut self) -> Option<char> {
        let first = self.hex4()?;
        if (0xD800..0xDC00).contains(&first) {
            if self.s.get(self.at..self.at + 2)? != b"\\u" {
                return None;
            }
            self.at += 2;
            let second = self.hex4()?;
            if !(0xDC00..0xE000).contains(&second) {
                return None;
            }
            return char::from_u32(0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00));
        }
        char::from_u32(first)
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = std::str::from_utf8(self.s.get(self.at..self.at + 4)?).ok()?;
        self.at += 4;
        u32::from_str_radix(digits, 16).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<Token> {
        parse(s).unwrap_or_else(|| panic!("{s}"))
    }

    #[test]
    fn orders_as_postgresql_does() {
        // Ascending, as `SELECT v FROM unnest(...) v ORDER BY v` gives them on PostgreSQL 15.
        let ascending = [
            "[]",
            "null",
            "\"\"",
            "\"a\"",
            "\"ab\"",
            "\"b\"",
            "-1.5",
            "0",
            "2",
            "10",
            "false",
            "true",
            "[null]",
            "[1]",
            "[true]",
            "[[]]",
            "[{}]",
            "[1, 2]",
            "{}",
            "{\"a\": 1}",
            "{\"a\": 2}",
            "{\"a\": [1]}",
            "{\"aa\": 0}",
            "{\"b\": 1}",
            "{\"a\": 1, \"b\": 2}",
            "{\"b\": 0, \"aa\": 5}",
        ];
        for w in ascending.windows(2) {
            assert_eq!(
                compare(&p(w[0]), &p(w[1])),
                Ordering::Less,
                "{} < {}",
                w[0],
                w[1]
            );
            assert_eq!(compare(&p(w[1]), &p(w[0])), Ordering::Greater);
        }
    }

    #[test]
    fn numbers_compare_by_value_and_key_alike() {
        let a = p("{\"n\": 1.0, \"x\": [2.50]}");
        let b = p("{\"n\": 1, \"x\": [2.5]}");
        assert_eq!(compare(&a, &b), Ordering::Equal);
        assert_eq!(equality_key(&a), equality_key(&b));
        assert_ne!(equality_key(&p("[1]")), equality_key(&p("1")));
        assert_ne!(equality_key(&p("\"1\"")), equality_key(&p("1")));
    }

    #[test]
    fn strings_lose_their_escapes() {
        assert_eq!(p(r#""\u00e9\n\"""#), p("\"é\n\\\"\""));
        assert_eq!(
            p(r#""\ud83d\ude00""#),
            vec![
                Token::BeginArray {
                    len: 1,
                    raw_scalar: true
                },
                Token::Scalar(Scalar::Str("😀".as_bytes().to_vec())),
                Token::End
            ]
        );
    }

    #[test]
    fn refuses_what_jsonb_out_does_not_write() {
        for bad in [
            "",
            "1e5",
            "{\"b\": 1, \"a\": 2}",
            "{\"a\": 1, \"a\": 2}",
            "[1,]",
            "[1",
            "{\"a\" 1}",
            "nul",
            "\"x",
            "[] 1",
            "NaN",
            "-",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn deep_nesting_needs_no_stack() {
        let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
        let tokens = p(&deep);
        assert_eq!(tokens.len(), 400_000);
        assert_eq!(compare(&tokens, &tokens), Ordering::Equal);
    }
}
