//! Operators PostgreSQL reads as one that sqlparser splits in two.
//!
//! PostgreSQL's scanner takes a run of operator characters as one operator, and drops a
//! trailing `+` or `-` from it only when the run holds none of `~ ! @ # % ^ & | \` ?`. So
//! `2 !=- 1` and `2 ^-1` name the operators `!=-` and `^-`: an error, or a user's operator of
//! that name. sqlparser splits them into `!=` and `^` before a negative operand and answers
//! `true` and `0.5`; and it reads `==` as `=`. Such a text is not given to the parser, so the
//! shard judges it.

use super::tokens::{Token, Tokens};

/// Whether `sql` has, outside quotes and comments, `!=` or `^` run into a `+` or `-`, or `==`.
pub fn operator_split_by_parser(sql: &str) -> bool {
    let b = sql.as_bytes();
    // Every text is asked before it is parsed: most have none of them.
    if !b.contains(&b'^')
        && memchr::memmem::find(b, b"!=").is_none()
        && memchr::memmem::find(b, b"==").is_none()
    {
        return false;
    }
    let mut tokens = Tokens::new(sql).peekable();
    while let Some((token, range)) = tokens.next() {
        if token != Token::Other || range.len() != 1 {
            continue;
        }
        let at = range.start;
        let op_len = match b[at] {
            b'=' if b.get(at + 1) == Some(&b'=') => return true,
            b'^' => 1,
            b'!' if b.get(at + 1) == Some(&b'=') => 2,
            _ => continue,
        };
        // `!=` is two tokens of one byte each: step over the `=`.
        if op_len == 2 {
            tokens.next();
        }
        let next = at + op_len;
        // `--` after the operator starts a comment, which ends the run.
        let runs_on = matches!(b.get(next), Some(b'+' | b'-'))
            && !(b.get(next) == Some(&b'-') && b.get(next + 1) == Some(&b'-'));
        if runs_on {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_postgresql_reads_as_one_operator_are_found() {
        for sql in [
            "select 2 !=- 1",
            "select 2 ^-1 from t",
            "select 2 !=+ 1",
            "select 2^+3",
            "select k == 1 from t",
        ] {
            assert!(operator_split_by_parser(sql), "{sql}");
        }
    }

    #[test]
    fn separate_operators_and_quoted_text_are_not() {
        for sql in [
            "select 2 != -1, 2 ^ -1, 2^3, 2 <>-1",
            "select '2 !=- 1', \"a^-\" from t",
            "select 2 ^-- comment\n 3",
            "select 2 != 1 /* ^- */",
            "select f(a => 1), 1 = 1, 'a==b'",
        ] {
            assert!(!operator_split_by_parser(sql), "{sql}");
        }
    }
}
