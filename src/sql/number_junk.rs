//! Numbers run into letters (`0x1f`, `0o17`, `0b101`, `1_000`, `12abc`), which PostgreSQL and
//! sqlparser read differently.
//!
//! PostgreSQL 15 rejects a numeric literal with identifier characters right after it
//! ("trailing junk"); 16 reads `0x1f`, `0o17`, `0b101` and `1_000` as integers. sqlparser reads
//! `0x1f` as the bit string `X'1f'`, and others as a number followed by an alias: a read of
//! several shards, written anew from that parse, answered `00011111` where PostgreSQL fails or
//! answers 31. Such a text is not given to the parser at all, so the proxy refuses what it
//! would otherwise write anew.

use super::tokens::{is_ident, Token, Tokens};

/// Whether `sql` has, outside quotes and comments, a numeric literal followed at once by what
/// could start an identifier (a letter, `_`, a non-ASCII byte), as PostgreSQL's scanner rules
/// for trailing junk have it.
pub fn number_runs_into_word(sql: &str) -> bool {
    let b = sql.as_bytes();
    // Every text is asked before it is parsed: most have no digit right before a letter.
    if !b
        .windows(2)
        .any(|w| w[0].is_ascii_digit() && starts_word(w[1]))
    {
        return false;
    }
    Tokens::new(sql).any(|(token, range)| {
        let start = range.start;
        let starts_number = token == Token::Other
            && range.len() == 1
            && (b[start].is_ascii_digit()
                || b[start] == b'.' && b.get(start + 1).is_some_and(u8::is_ascii_digit))
            // Digits after a word's letters, a `$n` parameter's or another number's are theirs.
            && (start == 0 || !is_ident(b[start - 1]) && b[start - 1] != b'.');
        starts_number && b.get(number_end(b, start)).is_some_and(|&c| starts_word(c))
    })
}

/// Where the numeric literal starting at `start` ends, as PostgreSQL's scanner reads one:
/// digits, a fraction, an exponent.
fn number_end(b: &[u8], start: usize) -> usize {
    let digits = |mut i: usize| {
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    let mut i = digits(start);
    // `1..5` is not a fraction: PostgreSQL reads `1` and then `..`.
    if b.get(i) == Some(&b'.') && b.get(i + 1) != Some(&b'.') {
        i = digits(i + 1);
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(b.get(i + 1), Some(b'+' | b'-')));
        if b.get(i + 1 + sign).is_some_and(u8::is_ascii_digit) {
            i = digits(i + 1 + sign);
        }
    }
    i
}

fn starts_word(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_with_letters_after_them_are_found() {
        for sql in [
            "select 0x1f from t",
            "select k, 0o17, 0b101 from t",
            "select 1_000 from t",
            "select 12abc from t",
            "select 1.5e3x from t",
            "select .5e from t",
        ] {
            assert!(number_runs_into_word(sql), "{sql}");
        }
    }

    #[test]
    fn ordinary_numbers_and_names_are_not() {
        for sql in [
            "select 1, 1.5, .5, 1e3, 1.5E-3, 2e+2 from t1 where a = $1 and b = $12",
            "select t1.c2, x9 from t2",
            "select arr[1:2], 1::int, 1..5",
            "select '0x1f', \"1abc\", $$1abc$$ from t -- 1abc",
            "select 1 as a, 2 b from t",
            "select 1e3 from t",
            "select 3$ from t",
        ] {
            assert!(!number_runs_into_word(sql), "{sql}");
        }
    }
}
