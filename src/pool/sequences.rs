//! `currval()` and `lastval()` under transaction pooling.
//!
//! PostgreSQL keeps the values a session's `nextval()` returned on the backend that ran it,
//! where `currval()` and `lastval()` read them. In transaction mode a server connection serves
//! other sessions between this one's transactions: it may hold their values, and this
//! session's may sit on a connection it no longer holds. Read there, another client's value
//! would be a wrong answer.
//!
//! So the first statement of a session that calls `currval` or `lastval` pins the session to
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

/// Whether `sql` may call `currval()` or `lastval()`: either name, in any case, as a word
/// followed by `(`. A call in a string or a comment counts too; it costs a pin and a discard,
/// never an answer. A word that only contains either name (a column `lastvalue`) does not:
/// DISCARD SEQUENCES in front of a statement that must run alone (VACUUM) would fail it.
pub fn named_in(b: &[u8]) -> bool {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
    // Both names end in "val"; a 'v' or 'V' is rare enough in SQL to anchor the search.
    memchr::memchr2_iter(b'v', b'V', b).any(|i| {
        let Some(start) = i.checked_sub(4) else {
            return false;
        };
        let name = &b[start..i];
        (name.eq_ignore_ascii_case(b"curr") || name.eq_ignore_ascii_case(b"last"))
            && b.get(i + 1..i + 3)
                .is_some_and(|w| w.eq_ignore_ascii_case(b"al"))
            && (start == 0 || !word(b[start - 1]))
            && b[i + 3..]
                .iter()
                // A quoted name ("currval") ends in its quote.
                .skip(usize::from(b.get(i + 3) == Some(&b'"')))
                .find(|c| !c.is_ascii_whitespace())
                .is_some_and(|&c| c == b'(')
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
        assert!(named_in("select currval\n ('s')".as_bytes()));
        assert!(named_in("currval('s')".as_bytes()));
        assert!(named_in("select pg_catalog.\"currval\"('s')".as_bytes()));
        assert!(!named_in("select lastvalue from t".as_bytes()));
        assert!(!named_in(
            "create index concurrently i on t (my_lastval)".as_bytes()
        ));
        assert!(!named_in("vacuum t_currval".as_bytes()));
        assert!(!named_in("select currval".as_bytes()));
        assert!(!named_in("select xcurrval(1)".as_bytes()));
    }
}
