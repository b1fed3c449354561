//! Splitting a simple-protocol Query text into its statements without parsing them.
//!
//! When sqlparser cannot read a text, the proxy must still know where each statement starts, so
//! that a leading `SET` cannot carry an `INSERT` to every shard. The splitter follows the lexical
//! rules PostgreSQL's own scanner uses for the places a `;` does not end a statement: quoted
//! strings (`'...'` with `''`, `E'...'` with backslash escapes), quoted identifiers, dollar-quoted
//! bodies, `--` and nested `/* */` comments, parentheses, and the body of a SQL-standard
//! function (`CREATE [OR REPLACE] FUNCTION|PROCEDURE ... BEGIN ATOMIC ...; END`), whose BEGIN,
//! CASE and END it counts as psql's own splitter does. It never guesses beyond that; a piece it
//! produces that is not one analysable statement is refused by the planner, never sent anywhere
//! whole.

use super::tokens::{is_ident, Token, Tokens};
use std::borrow::Cow;

/// `sql` as its one statement, trimmed (empty for none), when that is plain without the scan:
/// nothing but a trailing `;` and nothing the scanner must step over. None: `split_statements`
/// must scan it.
pub fn single_statement(sql: &str) -> Option<&str> {
    // Nearly every Query is one statement, perhaps with its `;`, and nothing to step over.
    let body = sql.trim_ascii_end().trim_end_matches(';');
    let b = body.as_bytes();
    (memchr::memchr3(b';', b'\'', b'"', b).is_none()
        && memchr::memchr3(b'-', b'/', b'$', b).is_none())
    .then(|| body.trim_ascii())
}

/// The statements of `sql` when PostgreSQL's scanner finds more than one; None for one or none.
pub fn several_statements(sql: &str) -> Option<Vec<&str>> {
    // Without a `;` before its last statement's end a text holds one statement at most: the
    // common case, told by one vectorised pass.
    let body = sql.trim_ascii_end().trim_end_matches(';');
    memchr::memchr(b';', body.as_bytes())?;
    let pieces = split_statements(sql);
    (pieces.len() > 1).then_some(pieces)
}

/// The statements of `sql`, trimmed, empty ones and those of nothing but comments dropped (the
/// scanner reads no statement there).
pub fn split_statements(sql: &str) -> Vec<&str> {
    if let Some(piece) = single_statement(sql) {
        return if piece.is_empty() {
            Vec::new()
        } else {
            vec![piece]
        };
    }
    let mut out = Vec::new();
    let mut start = 0;
    let mut nesting = Nesting::default();
    for (token, at) in Tokens::new(sql) {
        match token {
            Token::Semicolon if nesting.at_top() => {
                push(&mut out, &sql[start..at.start]);
                start = at.end;
                nesting = Nesting::default();
            }
            Token::Open => nesting.parens += 1,
            Token::Close => nesting.parens = nesting.parens.saturating_sub(1),
            Token::Word => nesting.word(&sql.as_bytes()[at]),
            _ => {}
        }
    }
    push(&mut out, &sql[start..]);
    out
}

/// What keeps a `;` from ending the statement: open parentheses, and the BEGIN ... END blocks
/// of a SQL-standard function body. Which words open a block follows psql's lexer: the
/// statement must start CREATE [OR REPLACE] FUNCTION or PROCEDURE, and outside parentheses
/// BEGIN opens a block, CASE inside one opens another, END closes one.
#[derive(Default)]
struct Nesting {
    parens: u32,
    blocks: u32,
    /// Words of the statement so far, and the first letters of its first four when they are
    /// CREATE, OR, REPLACE, FUNCTION or PROCEDURE (0 for any other word).
    words: usize,
    leading: [u8; 4],
}

impl Nesting {
    fn at_top(&self) -> bool {
        self.parens == 0 && self.blocks == 0
    }

    fn word(&mut self, word: &[u8]) {
        let is = |w: &str| word.eq_ignore_ascii_case(w.as_bytes());
        if self.words < self.leading.len()
            && ["create", "or", "replace", "function", "procedure"]
                .iter()
                .any(|w| is(w))
        {
            self.leading[self.words] = word[0].to_ascii_lowercase();
        }
        self.words += 1;
        let l = self.leading;
        let routine = l[0] == b'c'
            && (matches!(l[1], b'f' | b'p')
                || (l[1] == b'o' && l[2] == b'r' && matches!(l[3], b'f' | b'p')));
        if !routine || self.parens > 0 {
            return;
        }
        if is("begin") || (is("case") && self.blocks > 0) {
            self.blocks += 1;
        } else if is("end") {
            self.blocks = self.blocks.saturating_sub(1);
        }
    }
}

/// `sql` with each comment made one space, as PostgreSQL's scanner reads a comment: a reader of
/// words then finds `set/**/x` and `listen -- c` + newline + `jobs` to be the words they are.
/// Quoted text and dollar quotes are kept as they are. Borrowed when there is no comment.
pub fn without_comments(sql: &str) -> Cow<'_, str> {
    let b = sql.as_bytes();
    // Nearly every statement has no `--` or `/*`: one vectorised pass, and no scan.
    let marker = |i: usize| b.get(i + 1) == Some(if b[i] == b'-' { &b'-' } else { &b'*' });
    if !memchr::memchr2_iter(b'-', b'/', b).any(marker) {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len());
    let mut copied = 0;
    for (token, at) in Tokens::new(sql) {
        if token == Token::Comment {
            out.push_str(&sql[copied..at.start]);
            out.push(' ');
            copied = at.end;
        }
    }
    out.push_str(&sql[copied..]);
    Cow::Owned(out)
}

/// `sql` after any comments and blanks it starts with.
pub fn without_leading_comments(mut sql: &str) -> &str {
    loop {
        sql = sql.trim_ascii_start();
        if let Some(rest) = sql.strip_prefix("--") {
            sql = rest.find(['\n', '\r']).map_or("", |i| &rest[i + 1..]);
        } else if let Some(rest) = sql.strip_prefix("/*") {
            // PostgreSQL's block comments nest.
            let mut depth = 1;
            let b = rest.as_bytes();
            let mut i = 0;
            while i + 1 < b.len() && depth > 0 {
                match &b[i..i + 2] {
                    b"/*" => {
                        depth += 1;
                        i += 2;
                    }
                    b"*/" => {
                        depth -= 1;
                        i += 2;
                    }
                    _ => i += 1,
                }
            }
            sql = if depth == 0 { &rest[i..] } else { "" };
        } else {
            return sql;
        }
    }
}

/// Whether the first word of `sql` (after comments and blanks) is `word`, an ASCII keyword given
/// in lower case, in any case.
pub fn first_word_is(sql: &str, word: &str) -> bool {
    let b = without_leading_comments(sql).as_bytes();
    b.len() >= word.len()
        && b[..word.len()].eq_ignore_ascii_case(word.as_bytes())
        && !b.get(word.len()).is_some_and(|&c| is_ident(c))
}

fn push<'a>(out: &mut Vec<&'a str>, piece: &'a str) {
    let piece = piece.trim_ascii();
    let comments_only =
        (piece.starts_with("--") || piece.starts_with("/*")) && super::tokens::only_comments(piece);
    if !piece.is_empty() && !comments_only {
        out.push(piece);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_word_after_comments_in_any_case() {
        assert!(first_word_is("insert into t values (1)", "insert"));
        assert!(first_word_is(
            " -- c\n/* a /* b */ */\tINSERT\ninto t",
            "insert"
        ));
        assert!(first_word_is("Insert", "insert"));
        assert!(!first_word_is("inserted", "insert"));
        assert!(!first_word_is("select 'insert'", "insert"));
        assert!(!first_word_is("ins", "insert"));
        assert!(!first_word_is("é", "insert"));
        // PostgreSQL's blanks are ASCII: a no-break space belongs to the word after it.
        assert!(!first_word_is("\u{a0}insert into t values (1)", "insert"));
        assert_eq!(without_leading_comments("\u{a0}listen x"), "\u{a0}listen x");
        assert_eq!(without_leading_comments("-- c\rlisten x"), "listen x");
        assert_eq!(single_statement(" \tselect 1 ;\n"), Some("select 1"));
        // Every text sqlparser reads as an INSERT starts with the word.
        for sql in [
            "insert into t values (1)",
            "/* x */ INSERT INTO t SELECT 1",
            "insert into t(a) values ($1) returning *",
            "with x as (select 1) insert into t select * from x",
            "select 1",
            "(select 1)",
        ] {
            let parsed = sqlparser::parser::Parser::parse_sql(
                &sqlparser::dialect::PostgreSqlDialect {},
                sql,
            )
            .unwrap();
            if matches!(parsed[0], sqlparser::ast::Statement::Insert(_)) {
                assert!(first_word_is(sql, "insert"), "{sql}");
            }
        }
    }

    #[test]
    fn splits_at_top_level_semicolons_only() {
        assert_eq!(
            split_statements(
                "set application_name='a'; insert into accounts (id) values (777); checkpoint"
            ),
            vec![
                "set application_name='a'",
                "insert into accounts (id) values (777)",
                "checkpoint"
            ]
        );
        assert_eq!(
            split_statements("select 'a;b', \"c;d\", E'\\';x' ; ;select 2;"),
            vec!["select 'a;b', \"c;d\", E'\\';x'", "select 2"]
        );
        assert_eq!(
            split_statements("do $f$ begin perform 1; end $f$; select $1; select $$;$$"),
            vec![
                "do $f$ begin perform 1; end $f$",
                "select $1",
                "select $$;$$"
            ]
        );
        assert_eq!(
            split_statements("select 1 -- c;\n; /* a /* b; */ ; */ select 2"),
            vec!["select 1 -- c;", "/* a /* b; */ ; */ select 2"]
        );
        // A carriage return ends a `--` comment, as for PostgreSQL and sqlparser.
        assert_eq!(
            split_statements("select 1 -- c\r; insert into t values (1)\n; select 2"),
            vec!["select 1 -- c", "insert into t values (1)", "select 2"]
        );
        // `$` continues a word, so it starts no dollar quote there; after a `$` that starts
        // none, `E'` is an escape string.
        assert_eq!(
            split_statements("select as$$$; listen x; select $1"),
            vec!["select as$$$", "listen x", "select $1"]
        );
        assert_eq!(
            split_statements("select $E'\\'; listen y'; select 2"),
            vec!["select $E'\\'; listen y'", "select 2"]
        );
        assert_eq!(
            without_comments("set/* a /* b */ */x = '/*' -- c\r, y"),
            "set x = '/*'  , y"
        );
        assert!(matches!(without_comments("select 1"), Cow::Borrowed(_)));
        // An identifier ending in e is not an escape string prefix.
        assert_eq!(
            split_statements("select name'x';select 3"),
            vec!["select name'x'", "select 3"]
        );
    }

    #[test]
    fn sql_standard_function_bodies_and_parentheses_hold_their_semicolons() {
        assert_eq!(
            split_statements(
                "create function f() returns int language sql begin atomic select 1; \
                 select case when true then 2 end; end; select f()"
            ),
            vec![
                "create function f() returns int language sql begin atomic select 1; \
                 select case when true then 2 end; end",
                "select f()"
            ]
        );
        assert_eq!(
            split_statements(
                "CREATE OR REPLACE PROCEDURE p() BEGIN ATOMIC INSERT INTO t VALUES (1); END;CALL p()"
            ),
            vec![
                "CREATE OR REPLACE PROCEDURE p() BEGIN ATOMIC INSERT INTO t VALUES (1); END",
                "CALL p()"
            ]
        );
        // Elsewhere BEGIN and END are transaction control, and CASE is an expression.
        assert_eq!(
            split_statements("begin; select case when x then 1 end from t; end; commit"),
            vec![
                "begin",
                "select case when x then 1 end from t",
                "end",
                "commit"
            ]
        );
        assert_eq!(
            split_statements("select (1; 2); select 3"),
            vec!["select (1; 2)", "select 3"]
        );
        // A function with a quoted body is split as before.
        assert_eq!(
            split_statements(
                "create function g() returns int as $$ select 1; $$ language sql; select 2"
            ),
            vec![
                "create function g() returns int as $$ select 1; $$ language sql",
                "select 2"
            ]
        );
    }

    #[test]
    fn unterminated_quotes_swallow_the_rest() {
        assert_eq!(
            split_statements("set x = 'a; insert into t values (1)"),
            vec!["set x = 'a; insert into t values (1)"]
        );
    }

    #[test]
    fn pieces_of_nothing_but_comments_are_no_statements() {
        assert_eq!(
            split_statements("select 1; -- done\n; /* a /* b */ */ ;\t/* c */ -- d"),
            vec!["select 1"]
        );
        assert!(split_statements("-- only\n/* this */").is_empty());
        // PostgreSQL refuses a comment never closed: the piece stays, to be refused.
        assert_eq!(
            split_statements("select 1; /* a /* b */ open"),
            vec!["select 1", "/* a /* b */ open"]
        );
    }

    #[test]
    fn several_statements_only_where_the_scanner_finds_them() {
        for one in [
            "select 1",
            "select 1;",
            "select 1; ;\n",
            "select 'a;b' -- c;",
            "select 1; -- and a comment",
            "insert into t values ($$;$$)",
        ] {
            assert_eq!(several_statements(one), None, "{one:?}");
        }
        // sqlparser reads a bit string with a backslash on to the last quote, one statement;
        // PostgreSQL's scanner ends it at its second quote and finds three.
        assert_eq!(
            several_statements("select x'\\'; insert into t values (1); select 1 --'"),
            Some(vec![
                "select x'\\'",
                "insert into t values (1)",
                "select 1 --'"
            ])
        );
    }

    #[test]
    fn a_single_statement_needs_no_scan_and_splits_the_same() {
        for text in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1;",
            "  select 1 ;; ",
            "select (1)",
            "",
            " ; ",
            "begin atomic end;",
        ] {
            let mut scanned = Vec::new();
            let mut start = 0;
            for (i, c) in text.char_indices() {
                if c == ';' {
                    push(&mut scanned, &text[start..i]);
                    start = i + 1;
                }
            }
            push(&mut scanned, &text[start..]);
            assert_eq!(split_statements(text), scanned, "{text:?}");
        }
    }
}
