//! What ties a session to its server connections in transaction mode.
//!
//! Some session state lives only on the server connection that made it, and no replay can
//! carry it to another: a LISTEN, a session-level advisory lock, a cursor WITH HOLD, a SQL
//! PREPARE the proxy cannot carry, a SET SESSION AUTHORIZATION, a setting changed by
//! `set_config()`. A statement that may create such
//! state pins the session: from then on it keeps the connections it holds (and those it takes
//! later) until it ends, as in session mode. Pinning on a statement that turns out to create
//! nothing costs only pool capacity; not pinning would let the state leak into another client's
//! session or vanish from this one, so the test errs on the side of pinning.

/// Why a Query's text pins its session, if any statement in it may (a text of several
/// statements is read statement by statement, each after its leading comments), leaving out
/// SQL PREPARE when `prepares_carried`: the caller keeps those statements itself.
pub fn pins_in(text: &str, prepares_carried: bool) -> Option<&'static str> {
    let pins = |piece: &str| {
        pins(crate::sql::without_leading_comments(piece))
            .filter(|&why| !(prepares_carried && why == PREPARE))
    };
    // Nearly every Query is one statement, perhaps ended by its `;`: no split (and no
    // allocation for it) on that path. A text whose only `;` ends it cannot hold two.
    match memchr::memchr(b';', text.as_bytes()) {
        None => return pins(text),
        Some(end) if text[end + 1..].trim_ascii().is_empty() => return pins(&text[..end]),
        Some(_) => {}
    }
    if let Some(one) = crate::sql::single_statement(text) {
        return pins(one);
    }
    crate::sql::split_statements(text)
        .into_iter()
        .find_map(pins)
}

/// The reason a SQL PREPARE of a statement gives (PREPARE TRANSACTION gives another).
pub const PREPARE: &str = "PREPARE";

/// Why `sql`, one statement, pins its session, if it may.
pub fn pins(sql: &str) -> Option<&'static str> {
    // A comment separates words as a blank does (`listen/**/jobs`, `with -- c` + newline +
    // `hold`): read without them. Nearly every statement has none, and is read in place.
    let sql = crate::sql::without_comments(sql);
    let sql = sql.as_ref();
    // Runs on every statement in transaction mode: the first word is compared in place.
    let (first, rest) = next_word(sql);
    let is = |word: &str| first.eq_ignore_ascii_case(word);
    if is("listen") {
        return Some("LISTEN");
    }
    if is("prepare") {
        let transaction = next_word(rest).0.eq_ignore_ascii_case("transaction");
        return Some(if transaction {
            "PREPARE TRANSACTION"
        } else {
            PREPARE
        });
    }
    // What any statement is checked for is found in one pass over its bytes; a lower-case
    // copy is made only for the rarer statements that need a closer look.
    let marks = Marks::of(sql.as_bytes());
    let lower = || words_in_lower_case(sql);
    if marks.advisory_lock {
        let lower = lower();
        if lower.contains("pg_advisory_lock") || lower.contains("pg_try_advisory_lock") {
            return Some("a session-level advisory lock");
        }
    }
    if is("declare") {
        let lower = lower();
        if lower.contains(" hold") && !lower.contains("without hold") {
            return Some("a cursor WITH HOLD");
        }
    }
    // Temporary tables live as long as their connection. Several shards refuse them anyway.
    if (is("create") || is("select")) && marks.temp {
        let lower = lower();
        if lower.contains(" temp ") || lower.contains(" temporary ") {
            return Some("a temporary table");
        }
    }
    if is("set") {
        let lower = lower();
        if lower.contains("session authorization") {
            return Some("SET SESSION AUTHORIZATION");
        }
        // With it off, a backslash ends plain strings elsewhere than the proxy's readers of
        // statement text (these pins among them) take them to end: from then on this session
        // is read unreliably, so its state stays on its own connection.
        if lower.contains("standard_conforming_strings") {
            return Some("SET standard_conforming_strings");
        }
    }
    // A setting changed by a function rather than SET: the proxy cannot tell its scope or
    // value, so the connection that carries it stays this session's.
    if marks.set_config {
        return Some("set_config()");
    }
    None
}

/// Blanks as PostgreSQL's lexer takes them, and the vertical tab, so as to err on pinning.
fn blank(c: &u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// The first word of `sql` (after blanks) and what follows it: a word ends where an identifier
/// does, at a blank or at a quote, parenthesis or operator (`listen"jobs"` is LISTEN).
fn next_word(sql: &str) -> (&str, &str) {
    // Bytes, not chars: every byte that ends a word is ASCII, so each cut falls between
    // characters.
    let b = sql.as_bytes();
    let start = b.iter().position(|c| !blank(c)).unwrap_or(b.len());
    let end = b[start..]
        .iter()
        .position(|&c| !crate::sql::is_ident(c))
        .map_or(b.len(), |n| start + n);
    (&sql[start..end], &sql[end..])
}

/// `sql` in lower case with each run of blanks made one space, for the closer looks that
/// search it for words (`with hold` however many tabs or lines apart).
fn words_in_lower_case(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 2);
    let mut after_blank = false;
    for c in sql.chars() {
        if c.is_ascii() && blank(&(c as u8)) {
            if !after_blank {
                out.push(' ');
            }
            after_blank = true;
        } else {
            out.push(c.to_ascii_lowercase());
            after_blank = false;
        }
    }
    out
}

/// Which of the words every statement is checked for occur in it, in any case. Each is a
/// prefix of the words `pins` then looks for.
#[derive(Debug, Default, PartialEq, Eq)]
struct Marks {
    advisory_lock: bool,
    temp: bool,
    set_config: bool,
}

impl Marks {
    /// One vectorised pass that stops only at underscores and p's, both rare in statements, where
    /// each word has its anchor.
    fn of(sql: &[u8]) -> Marks {
        let at = |i: usize, word: &[u8]| {
            sql.get(i..i + word.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(word))
        };
        let mut m = Marks::default();
        for i in memchr::memchr3_iter(b'_', b'p', b'P', sql) {
            if sql[i] == b'_' {
                m.advisory_lock |= i >= 8 && at(i - 8, b"advisory_lock");
                m.set_config |= i >= 3 && at(i - 3, b"set_config");
            } else {
                // `temp` as a word's start, whatever stands before it (a tab, a comment).
                m.temp |=
                    i >= 3 && at(i - 3, b"temp") && (i == 3 || !crate::sql::is_ident(sql[i - 4]));
            }
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::pins;

    #[test]
    fn any_statement_of_a_text_pins_it() {
        use super::pins_in;
        assert!(pins_in(
            "select 1; set session authorization bob; reset session authorization",
            false
        )
        .is_some());
        assert!(pins_in("/* x */ LISTEN jobs", false).is_some());
        assert!(pins_in("select 1; -- c\n select pg_advisory_lock(1)", false).is_some());
        assert!(pins_in("select 'listen'; select 2", false).is_none());
        // One statement ended by its `;` (and blanks).
        assert_eq!(pins_in("LISTEN jobs;", false), Some("LISTEN"));
        assert!(pins_in("/* x */ select pg_advisory_lock(1) ; \n", false).is_some());
        assert!(pins_in("select 1;", false).is_none());
        assert!(pins_in("select ';'; listen jobs;", false).is_some());
        assert!(pins_in("select 1;; listen jobs", false).is_some());
    }

    #[test]
    fn setting_how_strings_are_read_pins() {
        assert!(pins("set standard_conforming_strings = off").is_some());
        assert!(pins("SET SESSION Standard_Conforming_Strings TO 'false'").is_some());
        assert!(pins("set escape_string_warning = off").is_none());
    }

    #[test]
    fn a_prepare_the_caller_carries_does_not_pin() {
        use super::pins_in;
        assert_eq!(pins_in("PREPARE q AS SELECT 1", false), Some("PREPARE"));
        assert_eq!(pins_in("PREPARE q AS SELECT 1", true), None);
        assert_eq!(
            pins_in("prepare q as select 1; listen jobs", true),
            Some("LISTEN")
        );
        assert_eq!(
            pins_in("PREPARE TRANSACTION 'x'", true),
            Some("PREPARE TRANSACTION")
        );
    }

    #[test]
    fn state_that_lives_on_one_connection_pins() {
        assert!(pins("LISTEN jobs").is_some());
        assert!(pins("select pg_advisory_lock(42)").is_some());
        assert!(pins("SELECT pg_try_advisory_lock_shared(1, 2)").is_some());
        assert!(pins("DECLARE c CURSOR WITH HOLD FOR SELECT 1").is_some());
        assert!(pins("PREPARE q AS SELECT 1").is_some());
        assert!(pins("SET SESSION AUTHORIZATION bob").is_some());
        assert!(pins("Select PG_ADVISORY_LOCK(1)").is_some());
        assert!(pins("select pg_catalog.set_config('search_path', 'x', false)").is_some());
        assert!(pins("CREATE TEMP TABLE t (x int)").is_some());
        assert!(pins("create temporary table t as select 1").is_some());
        assert!(pins("select 1 into temp t").is_some());
    }

    #[test]
    fn words_are_split_where_postgresql_splits_them() {
        use super::next_word;
        assert_eq!(next_word("  LISTEN\tjobs"), ("LISTEN", "\tjobs"));
        assert_eq!(next_word("\x0bprepare\x0c transaction 'x'").0, "prepare");
        assert_eq!(next_word("select(1)"), ("select", "(1)"));
        assert_eq!(next_word("listen\"jobs\""), ("listen", "\"jobs\""));
        assert_eq!(next_word("my$name x"), ("my$name", " x"));
        assert_eq!(next_word(""), ("", ""));
        assert_eq!(next_word(" \n "), ("", ""));
        assert_eq!(next_word("écoute\u{a0}x y"), ("écoute\u{a0}x", " y"));
        assert!(pins("prepare\n\ttransaction 'x'") == Some("PREPARE TRANSACTION"));
        // A comment separates words as a blank does.
        assert_eq!(pins("listen/**/jobs"), Some("LISTEN"));
        assert_eq!(pins("listen-- c\rjobs"), Some("LISTEN"));
        assert_eq!(
            pins("declare c cursor with/* c */hold for select 1"),
            Some("a cursor WITH HOLD")
        );
        assert_eq!(
            pins("create/**/temp\ttable t (x int)"),
            Some("a temporary table")
        );
        assert_eq!(
            pins("set session/**/authorization bob"),
            Some("SET SESSION AUTHORIZATION")
        );
        assert_eq!(pins("declare c cursor without\t\thold for select 1"), None);
        // In a quoted string, a comment marker is text.
        assert_eq!(pins("select '/*' listen"), None);
    }

    #[test]
    fn transaction_scoped_state_does_not() {
        assert!(pins("SELECT pg_advisory_xact_lock(42)").is_none());
        assert!(pins("DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1").is_none());
        assert!(pins("DECLARE c CURSOR FOR SELECT 1").is_none());
        assert!(pins("select * from t where id = 1").is_none());
        assert!(pins("SET work_mem = '8MB'").is_none());
        assert!(pins("select pg_try_advisory_xact_lock(1)").is_none());
    }

    #[test]
    fn one_pass_finds_what_a_lower_case_search_finds() {
        use super::Marks;
        let texts = [
            "select pg_advisory_lock(1)",
            "SELECT PG_TRY_ADVISORY_LOCK_SHARED(1)",
            "select pg_advisory_xact_lock(1)",
            "advisory_lock",
            "dvisory_lock x",
            "select set_config('a', 'b', false)",
            "SELECT SET_CONFIG",
            "set_confi",
            "_set_config_",
            "create TEMP table t (x int)",
            "select 1 into  temporary t",
            "select temperature from t",
            " temp",
            "tEmp",
            "create\ttemp table t (x int)",
            "create/**/temp table t (x int)",
            "select x_temp from t",
            "select 'ü' || x from pgbench_accounts where aid = 1",
            "",
        ];
        for t in texts {
            let lower = t.to_ascii_lowercase();
            let expected = Marks {
                advisory_lock: lower.contains("advisory_lock"),
                temp: lower
                    .match_indices("temp")
                    .any(|(i, _)| i == 0 || !crate::sql::is_ident(lower.as_bytes()[i - 1])),
                set_config: lower.contains("set_config"),
            };
            assert_eq!(Marks::of(t.as_bytes()), expected, "{t}");
        }
    }

    #[test]
    fn long_and_non_ascii_texts_are_read_alike() {
        let long = format!("SELECT {} pg_advisory_lock(1)", "x, ".repeat(100));
        assert_eq!(pins(&long), Some("a session-level advisory lock"));
        assert_eq!(pins(&format!("SELECT {} 1", "x, ".repeat(100))), None);
        assert_eq!(
            pins("SELECT 'Ünïcode', Set_Config('a', 'b', false)"),
            Some("set_config()")
        );
        assert_eq!(
            pins("Prepare  Transaction 'x'"),
            Some("PREPARE TRANSACTION")
        );
        assert_eq!(pins("SELECT 'ÄÖ' FROM t"), None);
    }
}
