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
    // Nearly every Query is one statement: no split (and no allocation for it) on that path.
    if !text.contains(';') {
        return pins(text);
    }
    crate::sql::split_statements(text)
        .into_iter()
        .find_map(pins)
}

/// The reason a SQL PREPARE of a statement gives (PREPARE TRANSACTION gives another).
pub const PREPARE: &str = "PREPARE";

/// Why `sql`, one statement, pins its session, if it may.
pub fn pins(sql: &str) -> Option<&'static str> {
    // Runs on every statement in transaction mode: one lowercase copy, then substring searches.
    let lower = sql.to_ascii_lowercase();
    let first = lower.split_whitespace().next().unwrap_or("");
    let has = |word: &str| lower.contains(word);
    match first {
        "listen" => return Some("LISTEN"),
        "prepare" if lower.split_whitespace().nth(1) == Some("transaction") => {
            return Some("PREPARE TRANSACTION")
        }
        "prepare" => return Some(PREPARE),
        _ => {}
    }
    if has("pg_advisory_lock") || has("pg_try_advisory_lock") {
        return Some("a session-level advisory lock");
    }
    if first == "declare" && has(" hold") && !has("without hold") {
        return Some("a cursor WITH HOLD");
    }
    // Temporary tables live as long as their connection. Several shards refuse them anyway.
    if (first == "create" || first == "select") && (has(" temp ") || has(" temporary ")) {
        return Some("a temporary table");
    }
    if first == "set" && has("session authorization") {
        return Some("SET SESSION AUTHORIZATION");
    }
    // A setting changed by a function rather than SET: the proxy cannot tell its scope or
    // value, so the connection that carries it stays this session's.
    if has("set_config") {
        return Some("set_config()");
    }
    None
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
    fn transaction_scoped_state_does_not() {
        assert!(pins("SELECT pg_advisory_xact_lock(42)").is_none());
        assert!(pins("DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1").is_none());
        assert!(pins("DECLARE c CURSOR FOR SELECT 1").is_none());
        assert!(pins("select * from t where id = 1").is_none());
        assert!(pins("SET work_mem = '8MB'").is_none());
    }
}
