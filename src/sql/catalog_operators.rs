//! `OPERATOR(pg_catalog.=)` written as the plain operator, for the parser's sake.
//!
//! pg_dump and psql qualify every operator they use (`c.relkind OPERATOR(pg_catalog.=) ANY
//! (array[...])`), and sqlparser cannot read that form before ANY or ALL. pg_catalog is
//! searched first unless a search_path names it later, so the plain operator means the same
//! to PostgreSQL; the proxy reads such a text only to plan it, and a shard runs the client's
//! text as it was whenever that text goes to one shard.

use super::splice::Splice;
use super::tokens::{Token, Tokens};

/// Characters PostgreSQL's operators are made of.
fn is_operator(op: &str) -> bool {
    !op.is_empty() && op.bytes().all(|c| b"+-*/<>=~!@#%^&|`?".contains(&c))
}

/// `sql` with each `OPERATOR(pg_catalog.<op>)` outside quotes and comments written `<op>`;
/// None when it has none.
pub fn catalog_operators_plain(sql: &str) -> Option<String> {
    // Every text the parser cannot read is asked: most answer here.
    if !sql
        .as_bytes()
        .windows(9)
        .any(|w| w.eq_ignore_ascii_case(b"operator("))
    {
        return None;
    }
    let mut out = Splice::new(sql);
    let mut tokens = Tokens::new(sql).peekable();
    while let Some((token, range)) = tokens.next() {
        if token != Token::Word || !sql[range.clone()].eq_ignore_ascii_case("operator") {
            continue;
        }
        if !matches!(tokens.peek(), Some((Token::Open, open)) if open.start == range.end) {
            continue;
        }
        let open = tokens.next().map(|(_, r)| r).unwrap_or(range.clone());
        let Some(close) = tokens
            .by_ref()
            .find(|(t, _)| *t != Token::Word && *t != Token::Other)
        else {
            break;
        };
        let (Token::Close, close) = close else {
            continue;
        };
        let inside = sql[open.end..close.start].trim();
        let Some(op) = inside
            .get(..11)
            .filter(|p| p.eq_ignore_ascii_case("pg_catalog."))
            .map(|_| inside[11..].trim())
        else {
            continue;
        };
        if !is_operator(op) {
            continue;
        }
        out.replace(range.start..close.end, &format!(" {op} "));
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_operators_become_plain_outside_quotes() {
        assert_eq!(
            catalog_operators_plain(
                "select 1 from pg_catalog.pg_class c where c.relkind OPERATOR(pg_catalog.=) ANY (array['r'])"
            )
            .as_deref(),
            Some("select 1 from pg_catalog.pg_class c where c.relkind  =  ANY (array['r'])")
        );
        assert_eq!(
            catalog_operators_plain(
                "select a operator( pg_catalog.~ ) 'x', 'OPERATOR(pg_catalog.=)'"
            )
            .as_deref(),
            Some("select a  ~  'x', 'OPERATOR(pg_catalog.=)'")
        );
        for unchanged in [
            "select 1",
            "select 'OPERATOR(pg_catalog.=)'",
            "select a OPERATOR(myschema.=) b",
            "select a OPERATOR(pg_catalog.=",
            "select -- OPERATOR(pg_catalog.=)\n 1",
            "select operator (pg_catalog.=) b",
        ] {
            assert_eq!(catalog_operators_plain(unchanged), None, "{unchanged}");
        }
    }
}
