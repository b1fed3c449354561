//! `interval(0) '1.6 seconds'` written as `CAST('1.6 seconds' AS interval(0))`, for the
//! parser's sake.
//!
//! sqlparser reads the first form but drops its precision: a statement the proxy writes anew
//! from the parsed text (a read of several shards) would ask the shards for `interval '1.6
//! seconds'`, 1.6 seconds where PostgreSQL answers 2. The cast means the same to PostgreSQL
//! and keeps the precision through the parser; a shard still runs the client's text whenever
//! that text goes to one shard.

use super::splice::Splice;
use super::tokens::{mentions, significant, Token};

/// `sql` with each `interval(p) '...'` outside quotes and comments written as a cast; None
/// when it has none.
pub fn interval_precision_plain(sql: &str) -> Option<String> {
    // Every text is asked before it is parsed: most answer here.
    if !mentions(sql, b"interval") {
        return None;
    }
    let tokens = significant(sql);
    let text = |i: usize| tokens.get(i).map_or("", |(_, r)| &sql[r.clone()]);
    let mut out = Splice::new(sql);
    let mut i = 0;
    while i < tokens.len() {
        let (token, range) = &tokens[i];
        let starts = *token == Token::Word
            && text(i).eq_ignore_ascii_case("interval")
            && tokens.get(i + 1).is_some_and(|(t, _)| *t == Token::Open)
            // Not `'...'::interval(0)`, whose precision the parser keeps.
            && !(i >= 2 && text(i - 1) == ":" && text(i - 2) == ":");
        if !starts {
            i += 1;
            continue;
        }
        // The digits of the precision, then `)` and a string literal.
        let digits_end = (i + 2..tokens.len())
            .find(|&j| !text(j).bytes().all(|c| c.is_ascii_digit()))
            .unwrap_or(tokens.len());
        let string = digits_end + 1;
        let literal = text(string);
        let is_string = literal.starts_with('\'')
            || literal.len() > 1
                && (literal[..2].eq_ignore_ascii_case("e'") || literal.starts_with('$'));
        if digits_end == i + 2 || text(digits_end) != ")" || !is_string {
            i += 1;
            continue;
        }
        let precision: String = (i + 2..digits_end).map(text).collect();
        out.replace(
            range.start..tokens[string].1.end,
            &format!("CAST({literal} AS interval({precision}))"),
        );
        i = string + 1;
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interval_with_its_precision_before_the_literal_becomes_a_cast() {
        assert_eq!(
            interval_precision_plain("select interval(0) '1.6 seconds' as i, INTERVAL (3) E'1\\'' from t")
                .as_deref(),
            Some("select CAST('1.6 seconds' AS interval(0)) as i, CAST(E'1\\'' AS interval(3)) from t")
        );
    }

    #[test]
    fn other_intervals_stay() {
        for sql in [
            "select interval '1 hour'",
            "select '1.6 s'::interval(0)",
            "select cast('1.6 s' as interval(0))",
            "select interval '1.6' second(0)",
            "select 'interval(0) ''x'''",
            "select my_interval(0) from t",
        ] {
            assert_eq!(interval_precision_plain(sql), None, "{sql}");
        }
    }
}
