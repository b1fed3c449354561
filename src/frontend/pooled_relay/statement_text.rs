//! What the pooled relay reads of a statement's text without parsing it: whether it controls
//! the transaction, changes a setting or deallocates a prepared statement. Only the first words
//! count, after any comments; a statement that starts with none of the words that matter costs
//! no allocation, since every Query passes through here.

use crate::pool::settings::{self, Change};
pub(super) use crate::sql::without_leading_comments;
use std::borrow::Cow;

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
    String::from_utf8_lossy(&body[..end])
}

/// A Parse's SQL text.
pub(super) fn parse_text(body: &[u8]) -> Cow<'_, str> {
    let name_end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    query_text(body.get(name_end + 1..).unwrap_or(&[]))
}

/// SQL DEALLOCATE: `Some(None)` for ALL, `Some(Some(name))` for one statement.
pub(super) fn deallocation(text: &str) -> Option<Option<String>> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
