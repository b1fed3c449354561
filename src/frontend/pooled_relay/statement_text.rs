//! What the pooled relay reads of a statement's text without parsing it: whether it controls
//! the transaction, changes a setting or deallocates a prepared statement. Only the first words
//! count, after any comments; a statement that starts with none of the words that matter costs
//! no allocation, since every Query passes through here.

use crate::pool::settings::{self, Change};
pub(super) use crate::sql::without_leading_comments;
use std::borrow::Cow;
use std::ops::Range;

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
        let sql = without_leading_comments(sql);
        // Most statements are none of these: told apart by their first word, with nothing
        // allocated.
        let first = sql
            .split(|c: char| c.is_ascii_whitespace() || c == ';' || c == '(')
            .next()
            .unwrap_or("");
        const WORDS: [&str; 9] = [
            "begin", "start", "commit", "end", "rollback", "abort", "set", "reset", "discard",
        ];
        if !WORDS.iter().any(|w| first.eq_ignore_ascii_case(w)) {
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
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    let text = &body[..end];
    // Nearly every text is valid UTF-8, which `from_utf8` confirms several times faster than
    // the lossy decoder walks it.
    match std::str::from_utf8(text) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(text),
    }
}

/// A Parse's SQL text.
pub(super) fn parse_text(body: &[u8]) -> Cow<'_, str> {
    let name_end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    query_text(body.get(name_end + 1..).unwrap_or(&[]))
}

/// SQL DEALLOCATE: `Some(None)` for ALL, `Some(Some(name))` for one statement.
pub(super) fn deallocation(text: &str) -> Option<Option<String>> {
    // Read for every Query: most start with another word, told by their first letter.
    if !text
        .trim_start()
        .as_bytes()
        .first()?
        .eq_ignore_ascii_case(&b'd')
    {
        return None;
    }
    let text = text.trim().trim_end_matches(';').trim_end();
    let mut words = text.split_whitespace();
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
    at += text[at..].len() - text[at..].trim_start().len();
    let mut types = Vec::new();
    if text[at..].starts_with('(') {
        let close = at + closing_paren(&text[at..])?;
        types = split_top_level(&text[at + 1..close]);
        if types.iter().any(|t| t.is_empty()) {
            return None;
        }
        at = close + 1;
        at += text[at..].len() - text[at..].trim_start().len();
    }
    let word = text.get(at..at + 2)?;
    let after = &text[at + 2..];
    let body = after.trim_start();
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
    parts.iter().map(|p| p.trim().to_string()).collect()
}

/// The name that follows the keyword `word` at the start of `text`, and where it sits.
fn name_after(text: &str, word: &str) -> Option<(String, Range<usize>)> {
    let rest = text.get(..word.len())?;
    if !rest.eq_ignore_ascii_case(word) {
        return None;
    }
    let after = &text[word.len()..];
    let start = text.len() - after.trim_start().len();
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
