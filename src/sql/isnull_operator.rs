//! `x ISNULL` written as `x IS NULL`, for the parser's sake.
//!
//! PostgreSQL reads `ISNULL` after an operand as `IS NULL` (as it reads `NOTNULL` as `IS NOT
//! NULL`, which sqlparser knows). sqlparser does not know the word: in a select list it reads
//! `SELECT txt ISNULL FROM t` as the column `txt` under the alias `isnull`. A read of several
//! shards, written anew from that parse, asked the shards for the column's values where
//! PostgreSQL answers booleans. The text is given to the parser with the operator spelled out;
//! a shard still runs the client's text whenever that text goes to one shard.

use super::splice::Splice;
use super::tokens::{mentions, significant, Token};

/// Words after which `isnull` names something (a function, a type, an output column) instead
/// of testing the operand before it.
const NAMING: [&str; 7] = [
    "as",
    "function",
    "type",
    "procedure",
    "routine",
    "aggregate",
    "domain",
];

/// `sql` with each `ISNULL` operator outside quotes and comments written `IS NULL`; None when
/// it has none.
pub fn isnull_operators_plain(sql: &str) -> Option<String> {
    // Every text is asked before it is parsed: most answer here.
    if !mentions(sql, b"isnull") {
        return None;
    }
    let tokens = significant(sql);
    let text = |i: usize| tokens.get(i).map_or("", |(_, r)| &sql[r.clone()]);
    let mut out = Splice::new(sql);
    for (i, (token, range)) in tokens.iter().enumerate() {
        let operator = *token == Token::Word
            && text(i).eq_ignore_ascii_case("isnull")
            && i > 0
            // Not `t.isnull` (a column), `x::isnull` (a type) or `isnull(x)` (a function).
            && !matches!(text(i - 1), "." | ":")
            && !NAMING.iter().any(|w| text(i - 1).eq_ignore_ascii_case(w))
            && tokens.get(i + 1).is_none_or(|(t, _)| *t != Token::Open);
        if operator {
            out.replace(range.clone(), "IS NULL");
        }
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_is_spelled_out() {
        assert_eq!(
            isnull_operators_plain("select txt isnull, (k) ISNULL from t where a isnull")
                .as_deref(),
            Some("select txt IS NULL, (k) IS NULL from t where a IS NULL")
        );
        assert_eq!(
            isnull_operators_plain("select k /* c */ IsNull\nfrom t").as_deref(),
            Some("select k /* c */ IS NULL\nfrom t")
        );
    }

    #[test]
    fn names_and_quoted_text_stay() {
        for sql in [
            "select isnull(a, 0) from t",
            "select a as isnull from t",
            "select t.isnull from t",
            "select 'x isnull', \"isnull\" from t",
            "select a -- isnull\nfrom t",
            "select x::isnull from t",
            "drop function isnull",
            "select a is null from t",
            "select not_isnull from t",
        ] {
            assert_eq!(isnull_operators_plain(sql), None, "{sql}");
        }
    }
}
