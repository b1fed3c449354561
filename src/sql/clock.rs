//! The transaction's clock in statement text. PostgreSQL gives `now()`, `CURRENT_TIMESTAMP` and
//! their kin one value for a whole transaction: the moment it started. Over several shards each
//! shard's transaction starts when the proxy first sends it something, so the same client
//! transaction would read a different `now()` on each shard. The proxy therefore rewrites those
//! calls to the `shardgate` schema's functions of the same names (created on every shard, see
//! `txn::schema`), which read the time the proxy gave the transaction (`txn::state`) and fall
//! back to the shard's own transaction start where it gave none.
//!
//! Invariants: only statements that run a query are rewritten (a CREATE or ALTER keeps its
//! definition, a column default for instance, as the client wrote it); quoted text, quoted
//! identifiers, dollar quotes and comments are never touched; a replacement keeps the column
//! name PostgreSQL gives the call (`now`, `current_date` ...), since the function it calls has
//! that name; a qualified call (`pg_catalog.now()`), the precision forms
//! (`CURRENT_TIMESTAMP(3)`) and a keyword naming a column (`AS current_date`) are left as
//! written. The text fuzzer checks that sqlparser reads every rewritten text it read before.

use super::tokens::Token;

/// The custom setting the `shardgate` clock functions read: the transaction's time, written
/// as ISO 8601 text in UTC.
pub const TIME_SETTING: &str = "shardgate.transaction_time";

/// Statements whose clock calls are rewritten, by first word: those that run a query.
const QUERIES: &[&str] = &[
    "call", "copy", "declare", "delete", "execute", "explain", "insert", "merge", "prepare",
    "select", "table", "update", "values", "with",
];

/// Calls written with an empty argument list.
const CALLS: &[(&str, &str)] = &[
    ("now", "shardgate.now()"),
    ("transaction_timestamp", "shardgate.transaction_timestamp()"),
];

/// Keywords written without parentheses (SQL's value functions).
const KEYWORDS: &[(&str, &str)] = &[
    ("current_date", "shardgate.\"current_date\"()"),
    ("current_time", "shardgate.\"current_time\"()"),
    ("current_timestamp", "shardgate.\"current_timestamp\"()"),
    ("localtime", "shardgate.\"localtime\"()"),
    ("localtimestamp", "shardgate.\"localtimestamp\"()"),
];

/// `sql` with its calls of the transaction's clock rewritten, None when it has none.
pub fn stamped(sql: &str) -> Option<String> {
    if !may_read_clock(sql.as_bytes()) {
        return None;
    }
    let b = sql.as_bytes();
    let tokens = super::tokens::significant(sql);
    let mut out = String::new();
    let mut copied = 0;
    let mut at_start = true;
    let mut rewriting = false;
    for (i, (token, at)) in tokens.iter().enumerate() {
        match token {
            Token::Semicolon => {
                at_start = true;
                continue;
            }
            // A statement may start with parentheses: `(SELECT ...) UNION ...`.
            Token::Open if at_start => continue,
            Token::Word if at_start => {
                at_start = false;
                rewriting = QUERIES
                    .iter()
                    .any(|q| sql[at.clone()].eq_ignore_ascii_case(q));
                continue;
            }
            _ => at_start = false,
        }
        if !rewriting || *token != Token::Word {
            continue;
        }
        // `x.now`, and a column named `AS current_date` (a keyword may name a column there).
        let named = i > 0 && {
            let (t, r) = &tokens[i - 1];
            (*t == Token::Other && b[r.start] == b'.')
                || (*t == Token::Word && sql[r.clone()].eq_ignore_ascii_case("as"))
        };
        if named {
            continue;
        }
        let word = &sql[at.clone()];
        let next = |k: usize| tokens.get(i + k).map(|(t, _)| *t);
        let replaced = if let Some((_, to)) = find(CALLS, word) {
            (next(1) == Some(Token::Open) && next(2) == Some(Token::Close))
                .then(|| (to, tokens[i + 2].1.end))
        } else if let Some((_, to)) = find(KEYWORDS, word) {
            (next(1) != Some(Token::Open) && value_position(sql, &tokens[i - 1]))
                .then_some((to, at.end))
        } else {
            None
        };
        if let Some((to, end)) = replaced {
            out.push_str(&sql[copied..at.start]);
            out.push_str(to);
            copied = end;
        }
    }
    if copied == 0 {
        return None;
    }
    out.push_str(&sql[copied..]);
    Some(out)
}

/// Whether a statement (text, or a message carrying one) calls the `shardgate` clock
/// functions, as `stamped` writes them.
pub fn calls_stamped_clock(b: &[u8]) -> bool {
    memchr::memmem::find(b, b"shardgate.").is_some()
        && CALLS
            .iter()
            .chain(KEYWORDS)
            .any(|(_, to)| memchr::memmem::find(b, to.as_bytes()).is_some())
}

/// How the client wrote a call that `stamped` rewrote (`now()`, `CURRENT_DATE` ...), for
/// messages about it; any other call as `name()`.
pub fn call_as_written(name: &sqlparser::ast::ObjectName) -> String {
    stamped_call(name).map_or_else(|| format!("{name}()"), |written| written.to_string())
}

/// The client's spelling of a call `stamped` wrote, None for any other function.
pub fn stamped_call(name: &sqlparser::ast::ObjectName) -> Option<&'static str> {
    use sqlparser::ast::ObjectNamePart;
    let [ObjectNamePart::Identifier(schema), ObjectNamePart::Identifier(f)] = &name.0[..] else {
        return None;
    };
    if schema.value != "shardgate" {
        return None;
    }
    Some(match f.value.as_str() {
        "now" => "now()",
        "transaction_timestamp" => "transaction_timestamp()",
        "current_date" => "CURRENT_DATE",
        "current_time" => "CURRENT_TIME",
        "current_timestamp" => "CURRENT_TIMESTAMP",
        "localtime" => "LOCALTIME",
        "localtimestamp" => "LOCALTIMESTAMP",
        _ => return None,
    })
}

/// Whether a keyword after `before` stands for a value rather than a column's name: PostgreSQL
/// takes a keyword right after an expression (`SELECT 1 current_date`) as its bare label.
fn value_position(sql: &str, before: &(Token, std::ops::Range<usize>)) -> bool {
    /// Words after which an expression begins (not SET, which a column's name follows).
    const INTRODUCE: &[&str] = &[
        "all",
        "and",
        "any",
        "between",
        "by",
        "case",
        "distinct",
        "else",
        "from",
        "having",
        "ilike",
        "in",
        "is",
        "like",
        "not",
        "on",
        "or",
        "returning",
        "select",
        "similar",
        "some",
        "then",
        "using",
        "when",
        "where",
        "zone",
    ];
    let (token, at) = before;
    match token {
        Token::Open => true,
        Token::Word => INTRODUCE
            .iter()
            .any(|w| sql[at.clone()].eq_ignore_ascii_case(w)),
        Token::Other => matches!(
            sql.as_bytes()[at.start],
            b',' | b'['
                | b'+'
                | b'-'
                | b'*'
                | b'/'
                | b'<'
                | b'>'
                | b'='
                | b'~'
                | b'!'
                | b'@'
                | b'#'
                | b'%'
                | b'^'
                | b'&'
                | b'|'
                | b'?'
        ),
        _ => false,
    }
}

fn find<'a>(list: &'a [(&'a str, &'a str)], word: &str) -> Option<&'a (&'a str, &'a str)> {
    list.iter().find(|(w, _)| word.eq_ignore_ascii_case(w))
}

/// A quick look before any scan: whether `b` holds one of the words, in any case. Most
/// statements hold none, and this is all they pay: it runs on every Query and Parse, so each
/// byte costs one table look-up, and only a byte that can start a word is looked at further.
pub fn may_read_clock(b: &[u8]) -> bool {
    const WORDS: &[&[u8]] = &[b"now", b"current_", b"localtime", b"transaction_timestamp"];
    /// Whether each byte value is a word's first letter, in either case.
    const STARTS: [bool; 256] = {
        let mut t = [false; 256];
        let mut w = 0;
        while w < WORDS.len() {
            let c = WORDS[w][0];
            t[c as usize] = true;
            t[c.to_ascii_uppercase() as usize] = true;
            w += 1;
        }
        t
    };
    b.iter().enumerate().any(|(i, &c)| {
        STARTS[c as usize] && {
            // The second letter, lower-cased, before any whole word is compared.
            let second = b.get(i + 1).map_or(0, |c| c | 0x20);
            WORDS.iter().any(|w| {
                w[1] == second
                    && b.get(i..i + w.len())
                        .is_some_and(|s| s.eq_ignore_ascii_case(w))
            })
        }
    })
}

/// The transaction time written for `TIME_SETTING`: UTC, to the microsecond, in ISO 8601,
/// which PostgreSQL reads the same under every DateStyle.
pub fn time_text(at: std::time::SystemTime) -> String {
    let micros = match at.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i64,
        Err(e) => -(e.duration().as_micros() as i64),
    };
    super::calendar::unix_micros_text(micros)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn the_quick_look_finds_every_word_in_any_case_and_nothing_else() {
        for text in [
            "select NOW()",
            "select Current_Date",
            "x LOCALTIME",
            "TRANSACTION_TIMESTAMP()",
            "now",
            "select x from t where t.at < current_timestamp",
        ] {
            assert!(may_read_clock(text.as_bytes()), "{text}");
        }
        for text in [
            "",
            "n",
            "no",
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
            "select current from local_times",
            "select nonce, transaction_id, locale, cur_",
        ] {
            assert!(!may_read_clock(text.as_bytes()), "{text}");
        }
    }

    #[test]
    fn calls_and_keywords_are_rewritten_in_queries() {
        assert_eq!(
            stamped("SELECT now(), CURRENT_TIMESTAMP, current_date").as_deref(),
            Some(
                "SELECT shardgate.now(), shardgate.\"current_timestamp\"(), \
                 shardgate.\"current_date\"()"
            )
        );
        assert_eq!(
            stamped("update t set at = NOW ( ) where id = 1 returning localtime").as_deref(),
            Some("update t set at = shardgate.now() where id = 1 returning shardgate.\"localtime\"()")
        );
        assert_eq!(
            stamped("insert into t values (1, transaction_timestamp())").as_deref(),
            Some("insert into t values (1, shardgate.transaction_timestamp())")
        );
        assert_eq!(
            stamped(
                "select x - current_date, coalesce(a, localtime) from t where d between \
                 current_date and current_date + 1 order by current_time"
            )
            .as_deref(),
            Some(
                "select x - shardgate.\"current_date\"(), coalesce(a, shardgate.\"localtime\"()) \
                 from t where d between shardgate.\"current_date\"() and \
                 shardgate.\"current_date\"() + 1 order by shardgate.\"current_time\"()"
            )
        );
        assert_eq!(
            stamped("(select localtimestamp) union all (select current_time)").as_deref(),
            Some(
                "(select shardgate.\"localtimestamp\"()) union all \
                 (select shardgate.\"current_time\"())"
            )
        );
    }

    #[test]
    fn text_that_only_looks_like_a_call_is_left_alone() {
        for sql in [
            "SELECT 'now()', \"now\"(), $$current_date$$ -- now()\n",
            "SELECT now FROM t",
            "SELECT pg_catalog.now(), CURRENT_TIMESTAMP(3), now(1)",
            "SELECT current_user, current_setting('x'), nowhere()",
            "SELECT 1 AS current_date, 2 as localtime",
            "SELECT 1 current_date, x localtime, count(*) current_time FROM t",
            "UPDATE t SET current_date = 1",
            "SELECT 1 /* current_date */",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 7",
        ] {
            assert_eq!(stamped(sql), None, "{sql}");
        }
    }

    #[test]
    fn rewritten_calls_are_found_again() {
        let sql = stamped("select id, current_time from t").unwrap();
        assert!(calls_stamped_clock(sql.as_bytes()));
        assert!(!calls_stamped_clock(b"select shardgate.other() from t"));
    }

    #[test]
    fn messages_name_a_call_as_the_client_wrote_it() {
        use sqlparser::dialect::PostgreSqlDialect;
        use sqlparser::parser::Parser;
        let sql = stamped("select now(), current_date, lower('x')").unwrap();
        let stmt = &Parser::parse_sql(&PostgreSqlDialect {}, &sql).unwrap()[0];
        let mut names = Vec::new();
        let _ = sqlparser::ast::visit_expressions(stmt, |e| {
            if let sqlparser::ast::Expr::Function(f) = e {
                names.push(call_as_written(&f.name));
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
        assert_eq!(names, ["now()", "CURRENT_DATE", "lower()"]);
    }

    #[test]
    fn definitions_keep_the_clock_as_written() {
        assert_eq!(
            stamped("CREATE TABLE t (at timestamptz DEFAULT now())"),
            None
        );
        assert_eq!(
            stamped("ALTER TABLE t ALTER at SET DEFAULT current_timestamp; SELECT now()")
                .as_deref(),
            Some("ALTER TABLE t ALTER at SET DEFAULT current_timestamp; SELECT shardgate.now()")
        );
        assert_eq!(stamped("CREATE VIEW v AS SELECT now()"), None);
    }

    #[test]
    fn the_time_is_written_in_utc_iso_text() {
        assert_eq!(time_text(UNIX_EPOCH), "1970-01-01 00:00:00.000000+00");
        // 2025-12-04 22:26:22.698738 UTC.
        let at = UNIX_EPOCH + Duration::from_micros(1_764_887_182_698_738);
        assert_eq!(time_text(at), "2025-12-04 22:26:22.698738+00");
        // A leap day.
        let at = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(time_text(at), "2000-02-29 00:00:00.000000+00");
    }
}
