//! `currval()` and `lastval()` under transaction pooling.
//!
//! PostgreSQL keeps the values a session's `nextval()` returned on the backend that ran it,
//! where `currval()` and `lastval()` read them. In transaction mode a server connection serves
//! other sessions between this one's transactions: it may hold their values, and this
//! session's may sit on a connection it no longer holds. Read there, another client's value
//! would be a wrong answer.
//!
//! So the first statement of a session that names `currval` or `lastval` pins the session to
//! its connection, and goes behind `DISCARD SEQUENCES`: whatever values the connection held are
//! gone, and the two functions answer as PostgreSQL does for a session that has not called
//! `nextval()` yet (55000), never with another session's value. From then on the connection is
//! the session's, and they answer as on a direct connection.
//!
//! Always discarding, rather than only when the connection might hold other sessions' values,
//! keeps the rule one a user can predict: a pool that is warm hands out used connections, so a
//! finer test would spare the discard mostly in development, and the first such statement
//! would then fail in production only.

/// What clears a connection's sequence values, and its command tag.
pub const DISCARD: &str = "DISCARD SEQUENCES";

/// Whether `sql` may call `currval()` or `lastval()`: either word, in any case, anywhere in
/// the text. A word in a string or a comment counts too; it costs a pin, never an answer.
pub fn named_in(b: &[u8]) -> bool {
    // Both words end in "val"; a 'v' or 'V' is rare enough in SQL to anchor the search.
    memchr::memchr2_iter(b'v', b'V', b).any(|i| {
        i >= 4
            && (b[i - 4..i].eq_ignore_ascii_case(b"curr")
                || b[i - 4..i].eq_ignore_ascii_case(b"last"))
            && b.get(i + 1..i + 3)
                .is_some_and(|w| w.eq_ignore_ascii_case(b"al"))
    })
}

#[cfg(test)]
mod tests {
    use super::named_in;

    #[test]
    fn either_function_is_found_in_any_case() {
        assert!(named_in("select currval('s')".as_bytes()));
        assert!(named_in("SELECT LASTVAL()".as_bytes()));
        assert!(named_in(
            "insert into t values (1) returning pg_catalog.CurrVal('t_id_seq')".as_bytes()
        ));
        assert!(!named_in("select nextval('s')".as_bytes()));
        assert!(!named_in("select setval('s', 3)".as_bytes()));
        assert!(!named_in(
            "select interval '1 day', 'curr' || 'val'".as_bytes()
        ));
        assert!(!named_in("val".as_bytes()));
        assert!(!named_in("lastv".as_bytes()));
        assert!(!named_in("".as_bytes()));
        assert!(named_in("select 'ü', lastval()".as_bytes()));
    }
}
