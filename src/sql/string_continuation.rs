//! String constants continued over a line break (`'abc'` newline `'def'`), written as one
//! constant for the parser's sake.
//!
//! PostgreSQL joins two string constants separated only by blanks that hold a line break into
//! one: `'abc'` newline `'def'` is `'abcdef'` (long literals in scripts are written so).
//! sqlparser takes the second string as the first one's alias instead, which
//! `string_aliases` refuses. Each such pair is given to the parser as the one constant it
//! is; a shard still runs the client's text whenever that text goes to one shard.

use super::splice::Splice;
use super::tokens::{Token, Tokens};

/// `sql` with each plain string constant and the ones that continue it over a line break
/// written as one constant; None when it has no such continuation.
pub fn string_continuations_joined(sql: &str) -> Option<String> {
    let b = sql.as_bytes();
    // Every text is asked before it is parsed: most have no quote after a line break.
    if !b.windows(2).any(|w| matches!(w, [b'\n' | b'\r', _])) {
        return None;
    }
    let tokens: Vec<_> = Tokens::new(sql).collect();
    let plain_string = |i: usize| {
        tokens
            .get(i)
            .is_some_and(|(t, r)| *t == Token::Other && b[r.start] == b'\'' && r.len() >= 2)
    };
    let mut out = Splice::new(sql);
    let mut i = 0;
    while i < tokens.len() {
        if !plain_string(i) {
            i += 1;
            continue;
        }
        // Blanks up to the next token, which must be a string, with a line break among them.
        let mut j = i + 1;
        let mut line_break = false;
        while let Some((Token::Other, r)) = tokens.get(j) {
            let c = b[r.start];
            if !c.is_ascii_whitespace() {
                break;
            }
            line_break |= c == b'\n' || c == b'\r';
            j += 1;
        }
        if line_break && plain_string(j) {
            // Drop the closing quote, the blanks and the opening quote.
            out.replace(tokens[i].1.end - 1..tokens[j].1.start + 1, "");
        }
        i = j;
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_continued_over_a_line_break_are_one() {
        assert_eq!(
            string_continuations_joined("select 'ab'\n  'c''d'\r\n'e' from t").as_deref(),
            Some("select 'abc''de' from t")
        );
        assert_eq!(
            string_continuations_joined("select date '2024-01-'\n'02'").as_deref(),
            Some("select date '2024-01-02'")
        );
    }

    #[test]
    fn other_neighbours_stay() {
        for sql in [
            "select 'a' 'b'",
            "select 'a',\n'b'",
            "select E'a'\n'b'",
            "select $$a$$\n'b'",
            "select \"a\"\n'b'",
            "select 'a' -- c\n'b'",
            "select 'a\n' from t",
        ] {
            assert_eq!(string_continuations_joined(sql), None, "{sql}");
        }
    }
}
