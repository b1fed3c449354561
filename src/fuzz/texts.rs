//! Fuzzing of what the proxy reads of statement text without sqlparser, against sqlparser's
//! reading of the same text (which follows PostgreSQL's scanner):
//! - the recogniser of `pg_cancel_backend` / `pg_terminate_backend` calls (`sql::signal_call`),
//!   which reads every Query and Parse in transaction pooling: a text it takes for a call must
//!   be one sqlparser reads as a single statement that, written back, is the same call, since
//!   the one-shard relay reads the raw text and the several-shard path sqlparser's;
//! - the statement splitter (`sql::split_statements`): where it finds as many statements as
//!   sqlparser, each piece must be the statement sqlparser read there, since the several-shard
//!   path then runs each piece as the client wrote it, routed by sqlparser's statement;
//! - what pins a session (`pool::pins`): a Query in which sqlparser reads a LISTEN must pin;
//! - the clock calls rewritten in every Query and Parse (`sql::clock`): the rewrite must leave
//!   nothing to rewrite again (`clock_texts` gives tests/clock_rewrite.rs texts to compare
//!   with a server's reading).
//!
//! Inputs are call texts, Queries and near misses, mutated byte-wise and token-wise (blanks,
//! comments, quotes, dollar quotes, `$`, casts, case).

use super::{mutate, Report, Rng};
use crate::sql::signal_call;
use sqlparser::ast::Statement;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// A check of one text against sqlparser's reading, counted in the report.
type Check = fn(&[u8], &mut Report);

/// One generated call text and one Query, each followed by `mutations` mutants of it.
pub(super) fn round(rng: &mut Rng, mutations: u32, report: &mut Report) {
    let checks: [(&[&str], Check); 3] = [
        (CALLS, recognise),
        (QUERIES, split_and_pin),
        (CLOCKS, stamp_clock),
    ];
    for (texts, check) in checks {
        let text = texts[rng.below(texts.len())].as_bytes();
        check(text, report);
        for _ in 0..mutations {
            let mut mutant = text.to_vec();
            mutate_text(rng, &mut mutant);
            check(&mutant, report);
        }
    }
}

/// Texts of calls the proxy answers, and of statements that only look like them.
const CALLS: &[&str] = &[
    "select pg_terminate_backend($1)",
    "SELECT pg_cancel_backend(4194305::int) AS c;",
    "select pg_catalog.pg_terminate_backend( -12 ) as x",
    "/* note */ select pg_cancel_backend($2::integer)",
    "-- note\nselect pg_terminate_backend(42)\n",
    "select pg_cancel_backend(1) from accounts",
    "select pg_terminate_backend(pg_backend_pid())",
    "select pg_cancel_backend(1), 2",
];

/// Queries of several statements, with what the splitter must step over and what pins.
const QUERIES: &[&str] = &[
    "set application_name = 'a'; insert into accounts (id) values (1)",
    "select 1; listen jobs",
    "-- note\nlisten jobs; select 2",
    "/* a /* b; */ */ select 1; listen jobs",
    "select 'a;b', \"c;d\"; select 3",
    "select $$;$$; listen x; select $1",
    "do $f$ begin perform 1; end $f$; listen x",
    "begin; select 1; commit",
    "select E'\\';x'; listen y",
    "select 1 -- c\r; listen z\n; select 2",
];

/// Statements calling the transaction's clock, and text that only looks like such calls.
const CLOCKS: &[&str] = &[
    "select now(), current_date, localtime from t where at > now() - interval '1 day'",
    "update t set at = current_timestamp where id = 1 returning localtimestamp, current_time",
    "insert into t values (1, transaction_timestamp()); select 'now()', \"now\"()",
    "select 1 as current_date, now as x, t.localtime from t",
    "select pg_catalog.now(), current_timestamp(3), $$now()$$ -- now()",
    "create table t (at timestamptz default now()); select now()",
    "with x as (select now() as n) select n from x",
];

/// Pieces of SQL that turn one of those into a near miss.
const TOKENS: &[&str] = &[
    " ",
    "\n",
    "\r",
    "\t",
    "$",
    "1",
    "0",
    "::",
    "int",
    "int8",
    "(",
    ")",
    "as",
    " as ",
    ";",
    "-",
    "--",
    "/*",
    "*/",
    "'",
    "\"",
    "é",
    "pg_",
    ".",
    ",",
    "select",
    "from",
    "x",
    "\u{a0}",
    "$$",
    "$f$",
    "E'",
    "\\",
    "listen ",
    "begin",
    "end",
    "now()",
    "current_date",
    "localtime",
];

/// One to three text-aware mutations (a token put in, a run of characters taken out, a letter's
/// case changed), or the byte mutations the decoders get.
fn mutate_text(rng: &mut Rng, text: &mut Vec<u8>) {
    if rng.chance(4) {
        return mutate(rng, text);
    }
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(text.len() + 1);
        match rng.below(3) {
            0 => {
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                text.splice(at..at, token.iter().copied());
            }
            1 => {
                let end = (at + 1 + rng.below(4)).min(text.len());
                text.drain(at..end);
            }
            _ => {
                if let Some(b) = text.get_mut(at) {
                    *b = if b.is_ascii_lowercase() {
                        b.to_ascii_uppercase()
                    } else {
                        b.to_ascii_lowercase()
                    };
                }
            }
        }
    }
}

/// Gives `text` to the call recogniser as the relay does, and checks a call it finds against
/// sqlparser's reading.
fn recognise(text: &[u8], report: &mut Report) {
    report.texts += 1;
    let may_be = signal_call::may_be_call(text);
    let Some(call) = std::str::from_utf8(text).ok().and_then(signal_call::parse) else {
        return;
    };
    report.calls += 1;
    let sql = std::str::from_utf8(text).unwrap_or_default();
    if beyond_sqlparser(sql) {
        return;
    }
    let read_alike = match Parser::parse_sql(&PostgreSqlDialect {}, sql).as_deref() {
        Ok([Statement::Query(q)]) => signal_call::parse(&q.to_string()) == Some(call),
        _ => false,
    };
    if !read_alike || !may_be {
        report.calls_misread += 1;
    }
}

/// Checks the splitter and the pins against sqlparser's reading of a Query `text` it reads.
fn split_and_pin(text: &[u8], report: &mut Report) {
    let Ok(sql) = std::str::from_utf8(text) else {
        return;
    };
    if beyond_sqlparser(sql) {
        return;
    }
    let Ok(statements) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else {
        return;
    };
    // sqlparser reads `-/*` as an operator, where PostgreSQL's scanner ends the operator at the
    // comment (which then runs on): no second reading of such a text either.
    if statements.iter().any(|s| {
        let s = s.to_string();
        s.contains("/*") || s.contains("--")
    }) {
        return;
    }
    report.queries += 1;
    let pieces = crate::sql::split_statements(sql);
    if statements.len() > 1 && pieces.len() == statements.len() {
        let alike =
            pieces.iter().zip(&statements).all(|(piece, statement)| {
                match Parser::parse_sql(&PostgreSqlDialect {}, piece).as_deref() {
                    Ok([one]) => one.to_string() == statement.to_string(),
                    _ => false,
                }
            });
        if !alike {
            report.splits_misread += 1;
        }
    }
    let listens = statements
        .iter()
        .any(|s| matches!(s, Statement::LISTEN { .. }));
    if listens && crate::pool::pins::pins_in(sql, false).is_none() {
        report.listens_unpinned += 1;
    }
}

/// Checks the clock rewrite of `text`: what it wrote has nothing left to rewrite. (Whether
/// PostgreSQL reads the rewritten text wherever it read the client's is checked against a
/// server, in tests/clock_rewrite.rs: sqlparser takes reserved words for names where
/// PostgreSQL does not, so it is no reference for where a keyword stands.)
fn stamp_clock(text: &[u8], report: &mut Report) {
    let Ok(sql) = std::str::from_utf8(text) else {
        return;
    };
    let Some(stamped) = crate::sql::clock::stamped(sql) else {
        return;
    };
    report.clock_texts += 1;
    if crate::sql::clock::stamped(&stamped).is_some() {
        report.clock_misread += 1;
    }
}

/// `n` texts calling the clock or looking like it, mutated as the fuzzer mutates them.
pub fn clock_texts(seed: u64, n: usize) -> Vec<String> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let mut text = CLOCKS[rng.below(CLOCKS.len())].as_bytes().to_vec();
            mutate_text(&mut rng, &mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
        .collect()
}

/// Whether `sql` holds what sqlparser reads otherwise than PostgreSQL's scanner, so that its
/// reading is no reference: a form feed (a blank to PostgreSQL); a `$` that starts neither a
/// parameter nor a dollar quote sqlparser knows (`$E'...'` is a lone `$` and an escape string,
/// `$é$` a dollar quote); and a bit or national string (`x'\'` ends at its second quote).
fn beyond_sqlparser(sql: &str) -> bool {
    let b = sql.as_bytes();
    let token_start = |i: usize| i == 0 || !crate::sql::is_ident(b[i - 1]);
    b.contains(&0x0c)
        || (0..b.len()).any(|i| match b[i] {
            b'$' if token_start(i) => {
                let tag = b[i + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                    .count();
                let after = b.get(i + 1 + tag);
                b.get(i + 1).is_some_and(|c| *c >= 0x80)
                    || (tag > 0 && !b[i + 1].is_ascii_digit() && after != Some(&b'$'))
            }
            b'x' | b'X' | b'b' | b'B' | b'n' | b'N' => {
                token_start(i) && b.get(i + 1) == Some(&b'\'')
            }
            _ => false,
        })
}
