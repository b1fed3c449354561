//! What the pooled relay reads of a statement's text without parsing it: whether it controls
//! the transaction, changes a setting or deallocates a prepared statement. Only the first words
//! count, after any comments; a statement that starts with none of the words that matter costs
//! no allocation, since every Query passes through here. Also the one edit the relay makes to
//! such a text: a statement name replaced by the session's name for it on the shard.

use crate::pool::settings::{self, Change};
pub(super) use crate::sql::without_leading_comments;
use std::borrow::Cow;
use std::ops::Range;

/// The first words of the statements `Stmt::of` tells apart.
const SESSION_WORDS: [&str; 9] = [
    "begin", "start", "commit", "end", "rollback", "abort", "set", "reset", "discard",
];

/// Whether `statement` (a Query's statement after its leading comments) may be one the relay
/// reads: one `Stmt::of` tells apart, or a SQL PREPARE, EXECUTE or DEALLOCATE. A test of the
/// first letters only, so that it takes in every statement those readers take (and a few they
/// then leave, such as `settle`); a statement it turns away needs no other look than for what
/// pins the session.
pub(super) fn may_be_read(statement: &str) -> bool {
    let s = statement.trim_ascii_start().as_bytes();
    SESSION_WORDS
        .iter()
        .chain(&["prepare", "execute", "deallocate"])
        .any(|w| {
            s.get(..w.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(w.as_bytes()))
        })
}

/// A statement of a Query, as far as session settings are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Stmt {
    Begin,
    /// COMMIT or END; `chain`: AND CHAIN opens the next block at once.
    Commit {
        chain: bool,
    },
    Rollback {
        chain: bool,
    },
    RollbackTo,
    /// SET, RESET or DISCARD ALL: the statement's text.
    Change(Box<str>),
    Other,
}

impl Stmt {
    pub(super) fn of(sql: &str) -> Stmt {
        // A comment separates words as a blank does (`set/**/work_mem`): read without them.
        // Nearly every statement has none, and is read in place.
        let sql = crate::sql::without_comments(without_leading_comments(sql));
        let sql = sql.as_ref();
        // Most statements are none of these: told apart by their first word, with nothing
        // allocated.
        // Bytes, not chars: every byte that ends a word is ASCII, so the cut falls between
        // characters.
        let end = sql
            .bytes()
            .position(|c| !crate::sql::is_ident(c))
            .unwrap_or(sql.len());
        let first = &sql[..end];
        if !SESSION_WORDS.iter().any(|w| first.eq_ignore_ascii_case(w)) {
            return Stmt::Other;
        }
        let lower = sql.to_ascii_lowercase();
        let words: Vec<&str> = lower
            .split(|c: char| c.is_ascii_whitespace() || c == ';')
            .filter(|w| !w.is_empty())
            .collect();
        let chain = words.ends_with(&["and", "chain"]) && !words.ends_with(&["no", "chain"]);
        match words.first().copied() {
            Some("begin") | Some("start") => Stmt::Begin,
            Some("commit") | Some("end") if words.get(1) != Some(&"prepared") => {
                Stmt::Commit { chain }
            }
            Some("rollback") | Some("abort") if words.get(1) != Some(&"prepared") => {
                if words.contains(&"to") {
                    Stmt::RollbackTo
                } else {
                    Stmt::Rollback { chain }
                }
            }
            _ if settings::classify(sql) != Change::None => Stmt::Change(sql.into()),
            _ => Stmt::Other,
        }
    }

    pub(super) fn controls_transaction(&self) -> bool {
        !matches!(self, Stmt::Change(_) | Stmt::Other)
    }
}

/// A Query's text, read as ASCII words would be whatever the client encoding.
pub(super) fn query_text(body: &[u8]) -> Cow<'_, str> {
    decoded(&body[..nul_or_end(body)])
}

/// `text` as a string, lossily where it is not UTF-8.
fn decoded(text: &[u8]) -> Cow<'_, str> {
    // Nearly every text is valid UTF-8, which `from_utf8` confirms several times faster than
    // the lossy decoder walks it.
    match std::str::from_utf8(text) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(text),
    }
}

/// A Parse's SQL text.
pub(super) fn parse_text(body: &[u8]) -> Cow<'_, str> {
    decoded(parse_text_bytes(body))
}

/// A Parse's SQL text as it came, undecoded.
pub(super) fn parse_text_bytes(body: &[u8]) -> &[u8] {
    let rest = body.get(nul_or_end(body) + 1..).unwrap_or(&[]);
    &rest[..nul_or_end(rest)]
}

/// Where the NUL that ends the string at the start of `bytes` is (its length without one). A
/// vectorised search: a statement's text is read this way at every Query and Parse.
fn nul_or_end(bytes: &[u8]) -> usize {
    memchr::memchr(0, bytes).unwrap_or(bytes.len())
}

/// The text of the last Parse found to neither pin its session nor change a setting. Drivers
/// parse the same unnamed statement again for every query; that text is not read twice. What
/// the relay reads of a Parse depends on its text alone, so the same text needs no new look.
#[derive(Debug, Default)]
pub(super) struct PlainParse(Vec<u8>);

impl PlainParse {
    /// Longer texts are read every time rather than kept for as long as the session lives.
    const LONGEST: usize = 4096;

    pub(super) fn is(&self, text: &[u8]) -> bool {
        !self.0.is_empty() && self.0 == text
    }

    pub(super) fn remember(&mut self, text: &[u8]) {
        self.0.clear();
        if text.len() <= Self::LONGEST {
            self.0.extend_from_slice(text);
        }
    }
}

/// SQL DEALLOCATE: `Some(None)` for ALL, `Some(Some(name))` for one statement.
pub(super) fn deallocation(text: &str) -> Option<Option<String>> {
    // Read for every Query: most start with another word, told by their first letter.
    if !text
        .trim_ascii_start()
        .as_bytes()
        .first()?
        .eq_ignore_ascii_case(&b'd')
    {
        return None;
    }
    let text = text.trim_ascii().trim_end_matches(';').trim_ascii_end();
    let mut words = text.split_ascii_whitespace();
    if !words.next()?.eq_ignore_ascii_case("deallocate") {
        return None;
    }
    let mut name = words.next()?;
    if name.eq_ignore_ascii_case("prepare") {
        name = words.next()?;
    }
    if words.next().is_some() {
        return None;
    }
    if name.eq_ignore_ascii_case("all") {
        return Some(None);
    }
    Some(Some(
        match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
            Some(quoted) => quoted.replace("\"\"", "\""),
            None => name.to_ascii_lowercase(),
        },
    ))
}

/// SQL `DEALLOCATE [PREPARE] name` (not ALL), `text` starting at its first word: the name as
/// PostgreSQL reads it and where it sits in `text`. None when anything but a `;` follows it.
pub(super) fn deallocation_of(text: &str) -> Option<(String, Range<usize>)> {
    let (mut name, mut range) = name_after(text, "deallocate")?;
    if text[range.clone()].eq_ignore_ascii_case("prepare") {
        if let Some((n, r)) = name_after(&text[range.start..], "prepare") {
            (name, range) = (n, range.start + r.start..range.start + r.end);
        }
    }
    let rest = text[range.end..].trim_ascii();
    let all = text[range.clone()].eq_ignore_ascii_case("all");
    (!all && matches!(rest, "" | ";")).then_some((name, range))
}

/// SQL EXECUTE: the statement's name as PostgreSQL reads it (unquoted names fold to lower
/// case) and where the name sits in `text`, which starts at the statement's first word.
pub(super) fn execution(text: &str) -> Option<(String, Range<usize>)> {
    name_after(text, "execute")
}

/// SQL PREPARE of a statement, read far enough to give it to another connection.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Preparation {
    /// As PostgreSQL reads it, and where it sits in the text.
    pub name: String,
    pub name_range: Range<usize>,
    /// The declared parameter types, as written.
    pub types: Vec<String>,
    /// Where the prepared statement starts, after `AS`.
    pub body_at: usize,
}

/// SQL `PREPARE name [(type, ...)] AS statement`, `text` starting at its first word (PREPARE
/// TRANSACTION is not one).
pub(super) fn preparation(text: &str) -> Option<Preparation> {
    let (name, name_range) = name_after(text, "prepare")?;
    let mut at = name_range.end;
    at += text[at..].len() - text[at..].trim_ascii_start().len();
    let mut types = Vec::new();
    if text[at..].starts_with('(') {
        let close = at + closing_paren(&text[at..])?;
        types = split_top_level(&text[at + 1..close]);
        if types.iter().any(|t| t.is_empty()) {
            return None;
        }
        at = close + 1;
        at += text[at..].len() - text[at..].trim_ascii_start().len();
    }
    let word = text.get(at..at + 2)?;
    let after = &text[at + 2..];
    let body = after.trim_ascii_start();
    if !word.eq_ignore_ascii_case("as") || after.len() == body.len() || body.is_empty() {
        return None;
    }
    Some(Preparation {
        name,
        name_range,
        types,
        body_at: text.len() - body.len(),
    })
}

/// The byte offset of the parenthesis that closes the one `text` starts with.
fn closing_paren(text: &str) -> Option<usize> {
    let mut depth = 0u32;
    let mut quote = None;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// `text` split at its commas outside parentheses, each part trimmed.
fn split_top_level(text: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut depth = 0u32;
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(String::new());
                continue;
            }
            _ => {}
        }
        if let Some(last) = parts.last_mut() {
            last.push(c);
        }
    }
    parts.iter().map(|p| p.trim_ascii().to_string()).collect()
}

/// The name that follows the keyword `word` at the start of `text`, and where it sits.
fn name_after(text: &str, word: &str) -> Option<(String, Range<usize>)> {
    let rest = text.get(..word.len())?;
    if !rest.eq_ignore_ascii_case(word) {
        return None;
    }
    let after = &text[word.len()..];
    let start = text.len() - after.trim_ascii_start().len();
    if start == word.len() {
        return None; // no whitespace after the word: another word (`executed`) or nothing
    }
    let tail = &text[start..];
    if let Some(quoted) = tail.strip_prefix('"') {
        // A quoted name ends at a quote not doubled.
        let mut name = String::new();
        let mut chars = quoted.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if chars.peek().map(|&(_, n)| n) == Some('"') {
                    chars.next();
                    name.push('"');
                    continue;
                }
                return Some((name, start..start + 1 + i + 1));
            }
            name.push(c);
        }
        return None;
    }
    let len = tail
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
        .unwrap_or(tail.len());
    (len > 0).then(|| (tail[..len].to_lowercase(), start..start + len))
}

/// `text` with the statement name at `name` (a byte range of `statement`, a slice of `text`)
/// replaced by `shard`, quoted; with the characters before the name, and how many longer the
/// name became, for moving error positions back.
pub(super) fn renamed(
    text: &str,
    statement: &str,
    name: Range<usize>,
    shard: &str,
) -> (String, u64, u64) {
    let at = statement.as_ptr() as usize - text.as_ptr() as usize;
    let (name_at, name_end) = (at + name.start, at + name.end);
    let shard = crate::sql::identifier(shard);
    let sent = format!("{}{shard}{}", &text[..name_at], &text[name_end..]);
    let chars = |s: &str| s.chars().count() as u64;
    let grown = chars(&shard).saturating_sub(chars(&text[name_at..name_end]));
    (sent, chars(&text[..name_at]), grown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_turned_away_is_none_that_any_reader_takes() {
        let read = [
            "SET x = 1",
            "set search_path to a",
            "  reset all",
            "Discard all",
            "begin",
            "START TRANSACTION",
            "commit and chain",
            "END",
            "ROLLBACK TO s",
            "abort",
            "PREPARE q AS SELECT 1",
            "execute q(1)",
            "EXECUTE Q",
            "DEALLOCATE ALL",
            "deallocate prepare q",
            "settle_up()",
        ];
        for s in read {
            assert!(may_be_read(s), "{s}");
        }
        let plain = [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1",
            "select set_config('a', 'b', false)",
            "insert into t values (1)",
            "update t set a = 1",
            "delete from t",
            "with x as (select 1) select * from x",
            "values (1)",
            "table t",
            "drop table t",
            "explain execute q",
            // A no-break space is part of the word after it, as PostgreSQL reads it.
            "\u{a0}deallocate q",
            "",
        ];
        for s in plain {
            assert!(!may_be_read(s), "{s}");
        }
        // What is turned away, every reader leaves alone.
        for s in plain {
            assert_eq!(Stmt::of(s), Stmt::Other, "{s}");
            assert_eq!(deallocation(s), None, "{s}");
            assert_eq!(deallocation_of(s), None, "{s}");
            assert_eq!(execution(s), None, "{s}");
            assert_eq!(preparation(s), None, "{s}");
        }
    }

    #[test]
    fn deallocation_of_reads_the_name_and_where_it_is() {
        assert_eq!(deallocation_of("DEALLOCATE q"), Some(("q".into(), 11..12)));
        assert_eq!(
            deallocation_of("deallocate prepare \"A b\" ;"),
            Some(("A b".into(), 19..24))
        );
        assert_eq!(deallocation_of("DEALLOCATE Q;"), Some(("q".into(), 11..12)));
        assert_eq!(
            deallocation_of("DEALLOCATE \"all\""),
            Some(("all".into(), 11..16))
        );
        assert_eq!(deallocation_of("DEALLOCATE ALL"), None);
        assert_eq!(deallocation_of("DEALLOCATE PREPARE all"), None);
        assert_eq!(deallocation_of("DEALLOCATE q r"), None);
        assert_eq!(deallocation_of("DEALLOCATED q"), None);
        assert_eq!(deallocation_of("SELECT 1"), None);
    }

    #[test]
    fn execution_reads_the_name_and_where_it_is() {
        assert_eq!(execution("EXECUTE q(1)"), Some(("q".into(), 8..9)));
        assert_eq!(execution("execute  S_1 ;"), Some(("s_1".into(), 9..12)));
        assert_eq!(
            execution("EXECUTE \"A\"\"b\" (2, 'x')"),
            Some(("A\"b".into(), 8..14))
        );
        assert_eq!(execution("EXECUTED"), None);
        assert_eq!(execution("EXECUTE"), None);
        assert_eq!(execution("EXECUTE \"open"), None);
        assert_eq!(execution("SELECT 1"), None);
    }

    #[test]
    fn preparation_reads_the_name_the_types_and_the_statement() {
        let text = "PREPARE q (int, numeric(10, 2), \"my type\") AS SELECT $1";
        let p = preparation(text).unwrap();
        assert_eq!((p.name.as_str(), p.name_range), ("q", 8..9));
        assert_eq!(p.types, vec!["int", "numeric(10, 2)", "\"my type\""]);
        assert_eq!(&text[p.body_at..], "SELECT $1");
        let p = preparation("prepare \"Q\"as\n select 1").unwrap();
        assert_eq!((p.name.as_str(), p.types.len()), ("Q", 0));
        assert_eq!(preparation("PREPARE TRANSACTION 'x'"), None);
        assert_eq!(preparation("PREPARE q (int AS SELECT 1"), None);
        assert_eq!(preparation("PREPARE q () AS SELECT 1"), None);
        assert_eq!(preparation("PREPARE q AS"), None);
        assert_eq!(preparation("PREPARE q ASSELECT 1"), None);
    }

    #[test]
    fn deallocation_reads_the_name() {
        assert_eq!(deallocation("DEALLOCATE ALL"), Some(None));
        assert_eq!(
            deallocation("deallocate prepare S_1;"),
            Some(Some("s_1".into()))
        );
        assert_eq!(deallocation("DEALLOCATE \"S_1\""), Some(Some("S_1".into())));
        assert_eq!(deallocation("DEALLOCATE"), None);
        assert_eq!(deallocation("SELECT 1"), None);
        assert_eq!(deallocation("  deallocate  all ;"), Some(None));
        assert_eq!(deallocation("DROP TABLE t"), None);
        // A no-break space is part of a word to PostgreSQL, never a blank.
        assert_eq!(deallocation("deallocate\u{a0}s_1"), None);
        assert_eq!(deallocation(""), None);
        assert_eq!(query_text(b"SELECT 'caf\xc3\xa9'\0"), "SELECT 'caf\u{e9}'");
        assert_eq!(query_text(b"SELECT '\xff'\0"), "SELECT '\u{fffd}'");
        assert_eq!(
            without_leading_comments("-- x\n /* a /* b */ */ SET y"),
            "SET y"
        );
        assert_eq!(
            Stmt::of("/* c */ set work_mem = 1"),
            Stmt::Change("set work_mem = 1".into())
        );
        assert_eq!(Stmt::of("COMMIT AND CHAIN"), Stmt::Commit { chain: true });
        assert_eq!(Stmt::of("rollback to savepoint a"), Stmt::RollbackTo);
        assert_eq!(Stmt::of("commit prepared 'x'"), Stmt::Other);
    }

    #[test]
    fn a_parse_text_is_cut_from_its_name_and_parameter_types() {
        assert_eq!(parse_text_bytes(b"S_1\0select 1\0\0\0"), b"select 1");
        assert_eq!(parse_text_bytes(b"\0select 1\0\0\0"), b"select 1");
        assert_eq!(parse_text_bytes(b"\0select 1"), b"select 1");
        assert_eq!(parse_text_bytes(b"S_1"), b"");
        assert_eq!(parse_text(b"\0SELECT '\xff'\0\0\0"), "SELECT '\u{fffd}'");
    }

    #[test]
    fn a_plain_parse_is_known_again_only_by_the_same_text() {
        let mut plain = PlainParse::default();
        assert!(
            !plain.is(b""),
            "nothing is known at first, not even the empty text"
        );
        plain.remember(b"select 1");
        assert!(plain.is(b"select 1"));
        assert!(!plain.is(b"select 2"));
        assert!(!plain.is(b"select 1 "));
        plain.remember(b"select 2");
        assert!(plain.is(b"select 2") && !plain.is(b"select 1"));
        let long = vec![b'x'; PlainParse::LONGEST + 1];
        plain.remember(&long);
        assert!(!plain.is(&long), "too long to keep");
        assert!(!plain.is(b"select 2"), "the earlier text is forgotten too");
    }
}
