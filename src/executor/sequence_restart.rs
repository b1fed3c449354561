//! `ALTER SEQUENCE ... RESTART` and `ALTER TABLE ... ALTER COLUMN ... RESTART` (of an identity
//! column) through the proxy. Both run on every shard as DDL; for a sequence filling a sharded
//! table, the first shard's copy is the cluster's (see `key_sequence`), and a restart back to or
//! below a value the table holds would hand that value out again to a row on another shard,
//! whose index does not see the first: refused, as `sequence_moves` refuses such a `setval`.
//!
//! sqlparser reads neither statement, so the words that matter (the sequence or the table and
//! column, the value after RESTART, a START in the same statement) are read from its tokens.
//! The first shard then reads where the restart leaves the sequence, in the client's
//! transaction: a sequence or column that does not exist is left to the statement itself.

use super::sequence_moves::MoveTo;
use super::session::{Exec, Step, R};
use crate::sql::string_literal;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Token, Tokenizer};

/// One sequence a statement restarts.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Restart {
    /// An SQL expression giving the sequence's regclass, NULL when there is none.
    sequence: String,
    /// The value after RESTART [WITH], when one is given.
    to: Option<i64>,
    /// The value after START [WITH] in the same statement, which a bare RESTART goes back to.
    start: Option<i64>,
    /// The statement, as its refusal names it.
    statement: &'static str,
}

impl Restart {
    /// The first shard's reading of where the restart leaves the sequence (see `MoveTo`); no
    /// row when the sequence does not exist.
    fn reading(&self) -> String {
        let value = |v: Option<i64>| v.map_or("NULL".to_string(), |v| v.to_string());
        format!(
            "SELECT a.s::pg_catalog.text OPERATOR(pg_catalog.||) '|' OPERATOR(pg_catalog.||) \
             COALESCE({}::pg_catalog.int8, {}::pg_catalog.int8, q.seqstart)::pg_catalog.text \
             OPERATOR(pg_catalog.||) '|' OPERATOR(pg_catalog.||) q.seqincrement::pg_catalog.text \
             FROM (SELECT {} AS s) a JOIN pg_catalog.pg_sequence q ON q.seqrelid OPERATOR(pg_catalog.=) a.s",
            value(self.to),
            value(self.start),
            self.sequence
        )
    }
}

/// The tokens of `sql` without whitespace and comments.
fn tokens(sql: &str) -> Option<Vec<Token>> {
    let all = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()?;
    Some(
        all.into_iter()
            .filter(|t| !matches!(t, Token::Whitespace(_)))
            .collect(),
    )
}

fn is(t: Option<&Token>, k: Keyword) -> bool {
    matches!(t, Some(Token::Word(w)) if w.keyword == k && w.quote_style.is_none())
}

/// A name as written at `at` (`name`, `schema.name`, quoted parts kept quoted) and the index
/// after it.
fn name_at(t: &[Token], mut at: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    loop {
        let Some(Token::Word(w)) = t.get(at) else {
            return None;
        };
        name.push_str(&w.to_string());
        at += 1;
        if t.get(at) != Some(&Token::Period) {
            return Some((name, at));
        }
        name.push('.');
        at += 1;
    }
}

/// The integer after `k [WITH]` among `t`, if `k` is there: Some(None) for `k` without one.
fn value_after(t: &[Token], k: Keyword) -> Option<Option<i64>> {
    // The keyword, not a name spelled like it (`OWNED BY t.restart`, `RENAME TO restart`).
    let at = (0..t.len()).find(|&i| {
        is(t.get(i), k)
            && t.get(i + 1) != Some(&Token::Period)
            && (i == 0
                || !(t[i - 1] == Token::Period
                    || is(t.get(i - 1), Keyword::TO)
                    || is(t.get(i - 1), Keyword::SCHEMA)))
    })? + 1;
    let at = if is(t.get(at), Keyword::WITH) {
        at + 1
    } else {
        at
    };
    let (sign, at) = match t.get(at) {
        Some(Token::Minus) => (-1, at + 1),
        Some(Token::Plus) => (1, at + 1),
        _ => (1, at),
    };
    Some(match t.get(at) {
        Some(Token::Number(n, _)) => n.parse::<i64>().ok().map(|n| sign * n),
        _ => None,
    })
}

/// Index after `IF EXISTS` at `at`, or `at`.
fn past_if_exists(t: &[Token], at: usize) -> usize {
    if is(t.get(at), Keyword::IF) && is(t.get(at + 1), Keyword::EXISTS) {
        at + 2
    } else {
        at
    }
}

/// The sequences an `ALTER SEQUENCE` or `ALTER TABLE` text restarts (none for any other text).
pub(super) fn restarts(sql: &str) -> Vec<Restart> {
    // Every DDL text comes here: most are not tokenized at all.
    if !sql.to_ascii_lowercase().contains("restart") {
        return Vec::new();
    }
    let Some(t) = tokens(sql) else {
        return Vec::new();
    };
    if !is(t.first(), Keyword::ALTER) {
        return Vec::new();
    }
    if is(t.get(1), Keyword::SEQUENCE) {
        let Some((name, at)) = name_at(&t, past_if_exists(&t, 2)) else {
            return Vec::new();
        };
        let Some(to) = value_after(&t[at..], Keyword::RESTART) else {
            return Vec::new();
        };
        return vec![Restart {
            sequence: format!("pg_catalog.to_regclass({})", string_literal(&name)),
            to,
            start: value_after(&t[at..], Keyword::START).flatten(),
            statement: "ALTER SEQUENCE ... RESTART",
        }];
    }
    if !is(t.get(1), Keyword::TABLE) {
        return Vec::new();
    }
    let mut at = past_if_exists(&t, 2);
    if is(t.get(at), Keyword::ONLY) {
        at += 1;
    }
    let Some((table, at)) = name_at(&t, at) else {
        return Vec::new();
    };
    // Actions are separated by commas outside parentheses.
    let mut actions: Vec<&[Token]> = Vec::new();
    let (mut depth, mut from) = (0usize, at);
    for (i, x) in t.iter().enumerate().skip(at) {
        match x {
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            Token::Comma | Token::SemiColon if depth == 0 => {
                actions.push(&t[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    actions.push(&t[from..]);
    actions
        .into_iter()
        .filter_map(|a| identity_restart(&table, a))
        .collect()
}

/// `ALTER [COLUMN] column ... RESTART [[WITH] n]`, one action of an ALTER TABLE of `table`.
fn identity_restart(table: &str, action: &[Token]) -> Option<Restart> {
    if !is(action.first(), Keyword::ALTER) {
        return None;
    }
    let at = if is(action.get(1), Keyword::COLUMN) {
        2
    } else {
        1
    };
    let Some(Token::Word(w)) = action.get(at) else {
        return None;
    };
    // The catalog's name: unquoted names are folded to lower case.
    let column = match w.quote_style {
        Some(_) => w.value.clone(),
        None => w.value.to_lowercase(),
    };
    let to = value_after(&action[at + 1..], Keyword::RESTART)?;
    Some(Restart {
        sequence: format!(
            "(SELECT d.objid::pg_catalog.regclass FROM pg_catalog.pg_depend d \
             JOIN pg_catalog.pg_attribute c ON c.attrelid OPERATOR(pg_catalog.=) d.refobjid \
               AND c.attnum OPERATOR(pg_catalog.=) d.refobjsubid \
             WHERE d.refobjid OPERATOR(pg_catalog.=) pg_catalog.to_regclass({}) \
               AND c.attname OPERATOR(pg_catalog.=) {} AND d.deptype OPERATOR(pg_catalog.=) 'i' \
               AND d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass)",
            string_literal(table),
            string_literal(&column)
        ),
        to,
        start: value_after(&action[at + 1..], Keyword::START).flatten(),
        statement: "ALTER TABLE ... RESTART",
    })
}

impl Exec<'_> {
    /// Before DDL runs on every shard: Failed, the refusal written, when it restarts a sequence
    /// back to or below a value a sharded table it fills holds (see the module comment).
    pub(super) async fn restart_checked(&mut self, sql: &str) -> R<Step> {
        for restart in restarts(sql) {
            let mut q = bytes::BytesMut::new();
            crate::protocol::build::query(&restart.reading(), &mut q);
            let read = match self
                .read_in_transaction(crate::router::plan::HOME, &q.freeze())
                .await?
            {
                Ok(read) => read,
                Err(()) => return Ok(Step::Failed),
            };
            let Some(to) = read.first().and_then(|l| MoveTo::read(l)) else {
                continue;
            };
            if self.kept_past_use(&to, restart.statement).await?.is_err() {
                return Ok(Step::Failed);
            }
        }
        Ok(Step::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(sql: &str) -> Vec<(String, Option<i64>, Option<i64>)> {
        restarts(sql)
            .into_iter()
            .map(|r| (r.sequence, r.to, r.start))
            .collect()
    }

    #[test]
    fn a_sequence_restart_is_read_with_its_value() {
        let seq = |n: &str| format!("pg_catalog.to_regclass('{n}')");
        assert_eq!(
            read("ALTER SEQUENCE lines_id_seq RESTART"),
            vec![(seq("lines_id_seq"), None, None)]
        );
        assert_eq!(
            read("alter sequence if exists public.\"Lines_id_seq\" restart with 5;"),
            vec![(seq("public.\"Lines_id_seq\""), Some(5), None)]
        );
        assert_eq!(
            read("ALTER SEQUENCE s INCREMENT BY 2 START WITH 10 RESTART -- why\n"),
            vec![(seq("s"), None, Some(10))]
        );
        assert_eq!(
            read("ALTER SEQUENCE s MINVALUE -9 RESTART -3"),
            vec![(seq("s"), Some(-3), None)]
        );
        assert!(read("ALTER SEQUENCE s START WITH 10").is_empty());
        assert!(read("ALTER SEQUENCE s OWNED BY t.restart").is_empty());
        assert!(read("ALTER SEQUENCE restart RENAME TO s").is_empty());
        assert!(read("ALTER SEQUENCE s RENAME TO restart").is_empty());
        assert!(read("ALTER SEQUENCE s SET SCHEMA restart").is_empty());
        assert!(read("SELECT 'ALTER SEQUENCE s RESTART'").is_empty());
    }

    #[test]
    fn an_identity_restart_is_read_per_column() {
        let found = read(
            "ALTER TABLE ONLY public.lines ALTER COLUMN id RESTART WITH 7, \
             ALTER \"Other\" SET INCREMENT BY 2 RESTART, ADD CHECK (x IN (1, 2)), \
             ALTER note TYPE text",
        );
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].0.contains("to_regclass('public.lines')"),
            "{}",
            found[0].0
        );
        assert!(found[0].0.contains("attname OPERATOR(pg_catalog.=) 'id'"));
        assert_eq!((found[0].1, found[0].2), (Some(7), None));
        assert!(found[1].0.contains("'Other'"), "{}", found[1].0);
        assert_eq!((found[1].1, found[1].2), (None, None));
        assert!(read("ALTER TABLE lines ADD COLUMN restart int").is_empty());
        assert!(read("ALTER TABLE lines ALTER COLUMN id SET DEFAULT 1").is_empty());
    }
}
