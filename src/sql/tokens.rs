//! The few tokens of PostgreSQL's scanner that the proxy's readers of raw statement text need:
//! where a word, a comment, a `;` or a parenthesis is, with quoted strings, quoted identifiers
//! and dollar quotes stepped over whole. It follows the scanner's rules for those: a word
//! (identifier or keyword) runs on through `$`, a `--` comment ends at a newline or carriage
//! return, block comments nest, `E'...'` takes backslash escapes, and a `$` that starts no dollar
//! quote (`$1`, a `$` alone) is a token of its own. Everything else is `Other`, a byte at a time.

use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    Word,
    Comment,
    Semicolon,
    Open,
    Close,
    /// A quoted string or identifier, a dollar quote, or any other byte.
    Other,
}

/// The tokens of a text, each with its byte range.
pub struct Tokens<'a> {
    b: &'a [u8],
    i: usize,
    /// Where the last token that starts with `$` ended: a word may start there, though a `$`
    /// is before it.
    dollar_end: usize,
}

impl<'a> Tokens<'a> {
    pub fn new(sql: &'a str) -> Self {
        Tokens {
            b: sql.as_bytes(),
            i: 0,
            dollar_end: usize::MAX,
        }
    }
}

impl Iterator for Tokens<'_> {
    type Item = (Token, Range<usize>);

    fn next(&mut self) -> Option<Self::Item> {
        let (b, i) = (self.b, self.i);
        let c = *b.get(i)?;
        let (token, end) = match c {
            b';' => (Token::Semicolon, i + 1),
            b'(' => (Token::Open, i + 1),
            b')' => (Token::Close, i + 1),
            c if is_word_start(c) && (i == 0 || i == self.dollar_end || !is_ident(b[i - 1])) => {
                let end = b[i..]
                    .iter()
                    .position(|&c| !is_ident(c))
                    .map_or(b.len(), |p| i + p);
                // `E` right before a quote is no word: it makes the string an escape string.
                if end == i + 1 && matches!(c, b'e' | b'E') && b.get(end) == Some(&b'\'') {
                    (Token::Other, skip_quoted(b, end + 1, b'\'', true))
                } else {
                    (Token::Word, end)
                }
            }
            b'\'' => (Token::Other, skip_quoted(b, i + 1, b'\'', false)),
            b'"' => (Token::Other, skip_quoted(b, i + 1, b'"', false)),
            b'-' if b.get(i + 1) == Some(&b'-') => (
                Token::Comment,
                memchr::memchr2(b'\n', b'\r', &b[i..]).map_or(b.len(), |p| i + p + 1),
            ),
            b'/' if b.get(i + 1) == Some(&b'*') => (Token::Comment, skip_block_comment(b, i + 2)),
            b'$' if i == 0 || !is_ident(b[i - 1]) => {
                let end = skip_dollar(b, i);
                self.dollar_end = end;
                (Token::Other, end)
            }
            _ => (Token::Other, i + 1),
        };
        self.i = end;
        Some((token, i..end))
    }
}

fn is_word_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

/// A character that continues an identifier, `$` included (PostgreSQL's `ident_cont`).
pub fn is_ident(c: u8) -> bool {
    is_tag(c) || c == b'$'
}

/// A character of a dollar quote's tag: an identifier's without `$`.
fn is_tag(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// Index after the closing quote (a doubled quote is part of the text).
fn skip_quoted(b: &[u8], mut i: usize, quote: u8, backslash_escapes: bool) -> usize {
    while i < b.len() {
        if backslash_escapes && b[i] == b'\\' {
            i += 2;
        } else if b[i] == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return i + 1;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// Index after the end of a (nested) block comment.
fn skip_block_comment(b: &[u8], i: usize) -> usize {
    block_comment_end(b, i).unwrap_or(b.len())
}

/// Inside a block comment at `i`: the index after its closing `*/`, None when it is never
/// closed (PostgreSQL refuses such a text).
fn block_comment_end(b: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 1;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return Some(i);
            }
        } else {
            i += 1;
        }
    }
    None
}

/// The tokens of `sql` that mean something to the scanner: its comments and blanks left out.
pub fn significant(sql: &str) -> Vec<(Token, Range<usize>)> {
    let b = sql.as_bytes();
    Tokens::new(sql)
        .filter(|(t, r)| match t {
            Token::Comment => false,
            Token::Other => !b[r.start].is_ascii_whitespace(),
            _ => true,
        })
        .collect()
}

/// Whether `word` appears in `sql` in any case, quoted or not: a cheap test that lets the
/// readers of raw text skip the texts that cannot hold what they look for.
pub fn mentions(sql: &str, word: &[u8]) -> bool {
    sql.as_bytes()
        .windows(word.len())
        .any(|w| w.eq_ignore_ascii_case(word))
}

/// Whether `sql` holds nothing but comments and blanks, each block comment closed: the scanner
/// finds no statement in it.
pub fn only_comments(sql: &str) -> bool {
    let b = sql.as_bytes();
    Tokens::new(sql).all(|(token, at)| match token {
        Token::Comment => b[at.start] == b'-' || block_comment_end(b, at.start + 2) == Some(at.end),
        Token::Other => b[at.start].is_ascii_whitespace(),
        _ => false,
    })
}

/// At a `$`: if it opens a dollar quote (`$$` or `$tag$`), the index after its closing tag;
/// otherwise (a parameter such as `$1`) the next index.
fn skip_dollar(b: &[u8], i: usize) -> usize {
    let mut j = i + 1;
    while j < b.len() && is_tag(b[j]) && !(j == i + 1 && b[j].is_ascii_digit()) {
        j += 1;
    }
    if b.get(j) != Some(&b'$') {
        return i + 1;
    }
    let tag = &b[i..=j];
    let body = j + 1;
    b[body..]
        .windows(tag.len())
        .position(|w| w == tag)
        .map_or(b.len(), |p| body + p + tag.len())
}
