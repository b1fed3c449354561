//! COPY's boolean options spelt as PostgreSQL takes them, for the parser's sake.
//!
//! PostgreSQL reads a boolean option's value as `true`, `false`, `on`, `off`, `yes`, `no`, `1`
//! or `0` (pgbench loads its tables with `COPY ... FROM STDIN WITH (FREEZE ON)`); sqlparser
//! reads only `TRUE` and `FALSE`. The proxy plans the text written `true`/`false`, which means
//! the same; the shards still receive the client's text.

use super::splice::Splice;
use super::tokens::{Token, Tokens};

/// The options of COPY whose value is a boolean.
const BOOLEAN_OPTIONS: [&str; 2] = ["freeze", "header"];

/// `sql`, a COPY, with each boolean option's value in its option list written `true` or
/// `false`; None when it is no COPY or has nothing to rewrite.
pub fn copy_options_plain(sql: &str) -> Option<String> {
    if !super::first_word_is(sql, "copy") {
        return None;
    }
    let b = sql.as_bytes();
    let mut out = Splice::new(sql);
    let mut depth = 0usize;
    // Whether the group open at depth 1 is the option list: it follows WITH, STDIN or STDOUT.
    let mut in_options = false;
    let mut last_word: Option<std::ops::Range<usize>> = None;
    // A boolean option's name just read, its value not yet.
    let mut option_named = false;
    for (token, at) in Tokens::new(sql) {
        let text = &sql[at.clone()];
        match token {
            Token::Comment => continue,
            Token::Other if b[at.start].is_ascii_whitespace() => continue,
            Token::Open => {
                depth += 1;
                in_options = depth == 1
                    && last_word.as_ref().is_some_and(|w| {
                        ["with", "stdin", "stdout"]
                            .iter()
                            .any(|k| sql[w.clone()].eq_ignore_ascii_case(k))
                    });
            }
            Token::Close => depth = depth.saturating_sub(1),
            Token::Word | Token::Other if in_options && depth == 1 && option_named => {
                if let Some(value) = boolean(text, b.get(at.end).copied()) {
                    out.replace(at.clone(), value);
                }
            }
            _ => {}
        }
        option_named = token == Token::Word
            && in_options
            && depth == 1
            && BOOLEAN_OPTIONS.iter().any(|o| text.eq_ignore_ascii_case(o));
        last_word = (token == Token::Word).then_some(at);
    }
    out.finish()
}

/// The plain spelling of a boolean option's value `text` (`next`: the byte after it), None
/// when it is one sqlparser reads or no boolean.
fn boolean(text: &str, next: Option<u8>) -> Option<&'static str> {
    // A digit is a token of its own: `10` is no boolean.
    if next.is_some_and(|c| c.is_ascii_digit()) {
        return None;
    }
    match text.to_ascii_lowercase().as_str() {
        "on" | "yes" | "1" => Some("true"),
        "off" | "no" | "0" => Some("false"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boolean_option_values_become_true_or_false() {
        assert_eq!(
            copy_options_plain("copy pgbench_accounts from stdin with (freeze on)").as_deref(),
            Some("copy pgbench_accounts from stdin with (freeze true)")
        );
        assert_eq!(
            copy_options_plain("COPY t (a, b) FROM STDIN (FORMAT csv, HEADER 1, FREEZE Off)")
                .as_deref(),
            Some("COPY t (a, b) FROM STDIN (FORMAT csv, HEADER true, FREEZE false)")
        );
        assert_eq!(
            copy_options_plain("copy t to stdout with ( header /* c */ yes )").as_deref(),
            Some("copy t to stdout with ( header /* c */ true )")
        );
        // Already readable, or no boolean option's value.
        assert_eq!(copy_options_plain("copy t from stdin with (freeze)"), None);
        assert_eq!(copy_options_plain("copy t from stdin (header true)"), None);
        assert_eq!(copy_options_plain("copy t from stdin (header 10)"), None);
        assert_eq!(copy_options_plain("copy t from stdin (null 'on')"), None);
        // Outside the option list the words are the query's.
        assert_eq!(
            copy_options_plain("copy (select header on from t) to stdout"),
            None
        );
        assert_eq!(copy_options_plain("select 'copy' (freeze on)"), None);
    }

    #[test]
    fn the_plain_text_parses() {
        for sql in [
            "copy pgbench_accounts from stdin with (freeze on)",
            "COPY t FROM STDIN (FORMAT csv, HEADER on, FREEZE 0)",
        ] {
            let plain = copy_options_plain(sql).unwrap();
            assert!(
                sqlparser::parser::Parser::parse_sql(
                    &sqlparser::dialect::PostgreSqlDialect {},
                    &plain
                )
                .is_ok(),
                "{plain}"
            );
            assert!(sqlparser::parser::Parser::parse_sql(
                &sqlparser::dialect::PostgreSqlDialect {},
                sql
            )
            .is_err());
        }
    }
}
