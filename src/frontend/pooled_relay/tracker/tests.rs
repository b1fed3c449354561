//! Unit tests of the relay's request tracking: settings, pinning, injected Parses, dropped answers.

use super::super::statements::tests::frame;
use super::*;

fn query(t: &mut Tracker, sql: &str) -> Translated {
    t.on_client(
        &frame(b'Q', format!("{sql}\0").as_bytes()),
        1,
        &mut BytesMut::new(),
    )
}

/// The text of the Query in `out`.
fn sent(out: &[u8]) -> String {
    String::from_utf8_lossy(&out[5..])
        .trim_end_matches('\0')
        .to_string()
}

fn complete(t: &mut Tracker, tag: &str) {
    t.on_command_complete(format!("{tag}\0").as_bytes());
}

#[test]
fn a_set_counts_once_it_commits_and_the_connection_goes_back_between_transactions() {
    let mut t = Tracker::new(Settings::new(&[]));
    query(&mut t, "SET work_mem = '8MB'");
    assert!(!t.idle());
    complete(&mut t, "SET");
    let r = t.on_ready(b'I');
    assert!(r.release && r.sent.is_some());
    assert!(t.settings.replay().contains("work_mem"));

    query(&mut t, "BEGIN");
    assert!(!t.on_ready(b'T').release);
    query(&mut t, "SET search_path = app");
    t.on_ready(b'T');
    assert!(!t.settings.replay().contains("search_path"));
    query(&mut t, "ROLLBACK");
    complete(&mut t, "ROLLBACK");
    assert!(t.on_ready(b'I').release);
    assert!(!t.settings.replay().contains("search_path"));

    query(&mut t, "BEGIN");
    t.on_ready(b'T');
    query(&mut t, "SET search_path = app");
    t.on_ready(b'T');
    query(&mut t, "COMMIT");
    complete(&mut t, "COMMIT");
    assert!(t.on_ready(b'I').release);
    assert!(t.settings.replay().contains("search_path"));
    assert!(t.pinned.is_none());
}

#[test]
fn a_failed_set_changes_nothing() {
    let mut t = Tracker::new(Settings::new(&[]));
    query(&mut t, "SET nonsense.x TO");
    t.on_error();
    t.on_ready(b'I');
    assert_eq!(t.settings.fingerprint(), settings::DEFAULTS);
}

#[test]
fn a_query_of_several_statements_is_followed_statement_by_statement() {
    let mut t = Tracker::new(Settings::new(&[]));
    query(&mut t, "SELECT 1; SET work_mem = '1MB'");
    assert!(t.on_ready(b'I').release);
    assert!(t.settings.replay().contains("work_mem = '1MB'"));
    query(&mut t, "begin; set work_mem = '64MB'; select ';'; rollback");
    assert!(t.on_ready(b'I').release);
    assert!(t.settings.replay().contains("work_mem = '1MB'"));
    assert!(!t.settings.replay().contains("64MB"));
    query(&mut t, "begin; set search_path = a; commit; select 1");
    assert!(t.on_ready(b'I').release);
    assert!(t.settings.replay().contains("search_path = a"));
    // A failed block's COMMIT is a ROLLBACK.
    query(&mut t, "begin; set statement_timeout = 5");
    t.on_ready(b'T');
    query(&mut t, "select 1/0");
    t.on_error();
    t.on_ready(b'E');
    query(&mut t, "commit");
    t.on_ready(b'I');
    assert!(!t.settings.replay().contains("statement_timeout"));
    assert!(t.pinned.is_none());
}

#[test]
fn what_the_relay_cannot_follow_pins() {
    let mut t = Tracker::new(Settings::new(&[]));
    query(&mut t, "SET work_mem = '1MB'; COMMIT; SELECT 1/0");
    t.on_error();
    assert!(!t.on_ready(b'I').release);
    assert!(t.pinned.is_some());

    let mut t = Tracker::new(Settings::new(&[]));
    query(&mut t, "BEGIN");
    t.on_ready(b'T');
    query(&mut t, "SAVEPOINT a");
    t.on_ready(b'T');
    query(&mut t, "SET work_mem = '1MB'");
    t.on_ready(b'T');
    query(&mut t, "ROLLBACK TO SAVEPOINT a");
    complete(&mut t, "ROLLBACK");
    t.on_ready(b'T');
    assert!(t.pinned.is_some());

    let mut t = Tracker::new(Settings::new(&[]));
    query(&mut t, "LISTEN jobs");
    assert!(!t.on_ready(b'I').release);

    let mut t = Tracker::new(Settings::new(&[]));
    let parse = frame(b'P', b"\0SET work_mem = '2MB'\0\0\0");
    t.on_client(&parse, 1, &mut BytesMut::new());
    assert!(t.pinned.is_some());
}

#[test]
fn a_parse_after_the_same_plain_text_is_still_read_when_its_text_differs() {
    for pinning in [
        &b"\0LISTEN jobs\0\0\0"[..],
        b"\0SET work_mem = '2MB'\0\0\0",
        b"\0select pg_advisory_lock(1)\0\0\0",
        // The same text under another name is the same text.
        b"q\0select pg_advisory_lock(1)\0\0\0",
    ] {
        let mut t = Tracker::new(Settings::new(&[]));
        let plain = frame(b'P', b"\0select abalance from a where aid = $1\0\0\0");
        for _ in 0..2 {
            t.on_client(&plain, 1, &mut BytesMut::new());
            t.on_client_start(b'S');
            t.on_parse_complete();
            t.on_ready(b'I');
        }
        assert!(t.pinned.is_none());
        t.on_client(&frame(b'P', pinning), 1, &mut BytesMut::new());
        assert!(t.pinned.is_some(), "{:?}", String::from_utf8_lossy(pinning));
    }
}

#[test]
fn an_unsynced_batch_holds_the_connection_and_an_injected_parse_is_answered_by_the_proxy() {
    let mut t = Tracker::new(Settings::new(&[]));
    let parse = frame(b'P', b"S_1\0select 1\0\0\0");
    t.on_client(&parse, 1, &mut BytesMut::new());
    assert!(!t.idle());
    assert!(!t.on_parse_complete(), "the client's own ParseComplete");
    t.on_client_start(b'S');
    assert!(t.on_ready(b'I').release);

    let bind = frame(b'B', b"\0S_1\0\0\0\0\0\0\0");
    let mut out = BytesMut::new();
    assert_eq!(t.on_client(&bind, 2, &mut out), Translated::Rewritten);
    t.on_client_start(b'E');
    t.on_client_start(b'S');
    assert!(t.on_parse_complete(), "the proxy's Parse on connection 2");
    assert!(t.on_ready(b'I').release);
}

#[test]
fn deallocate_is_sent_under_the_sessions_name_and_discard_all_forgets_everything() {
    let mut t = Tracker::new(Settings::new(&[]));
    let parse = frame(b'P', b"q\0select 1\0\0\0");
    t.on_client(&parse, 1, &mut BytesMut::new());
    t.on_parse_complete();
    t.on_client_start(b'S');
    t.on_ready(b'I');
    let mut out = BytesMut::new();
    let sent = t.on_client(&frame(b'Q', b"deallocate q\0"), 1, &mut out);
    assert_eq!(sent, Translated::Rewritten);
    let text = String::from_utf8_lossy(&out[5..]).to_string();
    assert!(
        text.starts_with("DEALLOCATE \"sg") && text.contains(":q\""),
        "{text}"
    );
    t.on_ready(b'I');

    query(&mut t, "SET work_mem = '1MB'");
    t.on_ready(b'I');
    query(&mut t, "DISCARD ALL");
    complete(&mut t, "DISCARD ALL");
    let r = t.on_ready(b'I');
    assert!(r.wiped && r.release);
    assert_eq!(t.settings.fingerprint(), settings::DEFAULTS);
}

#[test]
fn a_reset_is_followed_by_the_startup_sets_whose_answers_are_dropped() {
    let startup = [("application_name".to_string(), "app".to_string())];
    let mut t = Tracker::new(Settings::new(&startup));
    let mut out = BytesMut::new();
    let q = frame(b'Q', b"reset all; select 1\0");
    assert_eq!(t.on_client(&q, 1, &mut out), Translated::Rewritten);
    assert!(query_text(&out[5..]).contains("SET application_name = 'app'"));
    let dropped: Vec<bool> = ["RESET", "SET", "SELECT 1"]
        .iter()
        .map(|tag| t.on_command_complete(format!("{tag}\0").as_bytes()))
        .collect();
    assert_eq!(dropped, [false, true, false]);
    assert!(t.client_position().is_some());
    assert!(t.on_ready(b'I').release);

    let mut t = Tracker::new(Settings::new(&[]));
    assert_eq!(query(&mut t, "reset all"), Translated::Same);
}

#[test]
fn a_sql_prepare_is_kept_under_the_sessions_name_unless_postgresql_refuses_it() {
    let mut t = Tracker::new(Settings::new(&[]));
    let mut out = BytesMut::new();
    let sql = b"PREPARE q (int8, varchar(3)) AS select $1, $2\0";
    assert_eq!(
        t.on_client(&frame(b'Q', sql), 1, &mut out),
        Translated::Rewritten
    );
    let text = String::from_utf8_lossy(&out[5..]).to_string();
    assert!(
        text.starts_with("PREPARE \"sg") && text.contains(":q\" (int8, varchar(3)) AS select"),
        "{text}"
    );
    complete(&mut t, "PREPARE");
    assert!(t.on_ready(b'I').release, "no pin");
    assert!(t.pinned.is_none());

    // On a connection that lacks it, EXECUTE is preceded by the PREPARE, types as written.
    let mut out = BytesMut::new();
    t.on_client(&frame(b'Q', b"EXECUTE q(1, 'x')\0"), 2, &mut out);
    let text = String::from_utf8_lossy(&out[5..]).to_string();
    assert!(text.starts_with("PREPARE \"sg"), "{text}");
    assert!(text.contains("(int8, varchar(3)) AS select $1, $2\n;\nEXECUTE \"sg"));
    assert!(complete_is_ours(&mut t, "PREPARE"));
    assert!(!complete_is_ours(&mut t, "SELECT 1"));
    t.on_ready(b'I');

    // A name in use: PostgreSQL's refusal, raised on the shard.
    let mut out = BytesMut::new();
    t.on_client(&frame(b'Q', b"prepare Q as select 2\0"), 1, &mut out);
    let text = String::from_utf8_lossy(&out[5..]).to_string();
    assert!(text.contains("42P05") && text.contains("\"q\""), "{text}");
    t.on_error();
    t.on_ready(b'I');

    // A PREPARE that fails leaves no statement behind.
    query(&mut t, "PREPARE r AS select nothing");
    t.on_error();
    t.on_ready(b'I');
    let mut out = BytesMut::new();
    assert_eq!(
        t.on_client(&frame(b'Q', b"EXECUTE r\0"), 1, &mut out),
        Translated::Same
    );
    t.on_ready(b'I');
}

#[test]
fn executes_among_several_statements_are_renamed_and_given_once() {
    let mut t = Tracker::new(Settings::new(&[]));
    query(&mut t, "PREPARE q (int8, varchar(3)) AS select $1, $2");
    complete(&mut t, "PREPARE");
    t.on_ready(b'I');

    // Connection 2 lacks it: one PREPARE, in front of the first EXECUTE, serves both.
    let sql = "select 1; /* run */ EXECUTE q(1, 'x');execute Q (2, 'y')";
    let (translated, text) = query_on(&mut t, sql, 2);
    assert_eq!(translated, Translated::Rewritten);
    let (before, after) = text.split_once("\n;\n").expect(&text);
    assert!(
        before.starts_with("select 1; /* run */ PREPARE \"sg") && before.ends_with("select $1, $2"),
        "{text}"
    );
    let shard = &before["select 1; /* run */ PREPARE ".len()..before.find(" (int8").unwrap()];
    assert_eq!(
        after,
        format!("EXECUTE {shard}(1, 'x');execute {shard} (2, 'y')")
    );
    assert!(!complete_is_ours(&mut t, "SELECT 1"));
    assert!(complete_is_ours(&mut t, "PREPARE"));
    assert!(!complete_is_ours(&mut t, "SELECT 1"));
    assert!(!complete_is_ours(&mut t, "SELECT 1"));
    t.on_ready(b'I');
    let (_, text) = query_on(&mut t, "select 2; EXECUTE q(1, 'x')", 2);
    assert_eq!(text, format!("select 2; EXECUTE {shard}(1, 'x')"));
    t.on_ready(b'I');

    // An error before the PREPARE skips it: connection 3 still lacks the statement.
    for _ in 0..2 {
        let (_, text) = query_on(&mut t, "select 1/0; EXECUTE q(1, 'x')", 3);
        assert!(text.starts_with("select 1/0; PREPARE"), "{text}");
        t.on_error();
        t.on_ready(b'I');
    }
    // A PREPARE of the name among other statements goes under the session's name, for the
    // shard to refuse (42P05).
    let (_, text) = query_on(&mut t, "select 1; PREPARE q AS select 3", 2);
    assert_eq!(text, format!("select 1; PREPARE {shard} AS select 3"));
    t.on_error();
    t.on_ready(b'I');
    // A name the session does not keep is left as written.
    let (translated, _) = query_on(&mut t, "select 1; EXECUTE other", 2);
    assert_eq!(translated, Translated::Same);
    t.on_ready(b'I');
}

#[test]
fn deallocates_among_several_statements_forget_the_statement_once_they_ran() {
    let mut t = Tracker::new(Settings::new(&[]));
    query(&mut t, "PREPARE q AS select 1");
    complete(&mut t, "PREPARE");
    t.on_ready(b'I');

    // Connection 2 lacks it: a stand-in goes ahead, and an error before both keeps `q`.
    let (_, text) = query_on(&mut t, "select 1/0; DEALLOCATE q", 2);
    let shard = &text["select 1/0; PREPARE ".len()..text.find(" AS SELECT 1;\n").expect(&text)];
    assert_eq!(
        text,
        format!("select 1/0; PREPARE {shard} AS SELECT 1;\nDEALLOCATE {shard}")
    );
    t.on_error();
    t.on_ready(b'I');
    // On connection 1, which holds it: renamed alone; gone once its answer came, so that an
    // EXECUTE after it in the Query goes as written and is refused under the client's name.
    let (_, text) = query_on(&mut t, "DEALLOCATE q; EXECUTE q", 1);
    assert_eq!(text, format!("DEALLOCATE {shard}; EXECUTE q"));
    assert!(!complete_is_ours(&mut t, "DEALLOCATE"));
    t.on_error();
    t.on_ready(b'I');
    let (translated, _) = query_on(&mut t, "select 1; EXECUTE q", 1);
    assert_eq!(translated, Translated::Same);
    t.on_ready(b'I');
}

#[test]
fn a_prepare_after_a_deallocate_of_its_name_in_one_query_is_refused() {
    let mut t = Tracker::new(Settings::new(&[]));
    query(&mut t, "PREPARE q AS select 1");
    complete(&mut t, "PREPARE");
    t.on_ready(b'I');
    let (_, text) = query_on(&mut t, "DEALLOCATE q; PREPARE q AS select 2", 1);
    assert!(
        text.starts_with("DO $shardgate$") && text.contains("'0A000'"),
        "{text}"
    );
    t.on_error();
    t.on_ready(b'I');
    // `q` lives on; a name the session does not keep is PostgreSQL's to refuse.
    let (_, text) = query_on(&mut t, "select 1; EXECUTE q", 1);
    assert!(text.starts_with("select 1; EXECUTE \"sg"), "{text}");
    t.on_ready(b'I');
    let (translated, _) = query_on(&mut t, "DEALLOCATE r; PREPARE r AS select 2", 1);
    assert_eq!(translated, Translated::Same);
}

/// `sql` sent as a Query on connection `conn`: how it was translated, and the text sent
/// instead (empty when it goes as written).
fn query_on(t: &mut Tracker, sql: &str, conn: u64) -> (Translated, String) {
    let mut out = BytesMut::new();
    let translated = t.on_client(&frame(b'Q', format!("{sql}\0").as_bytes()), conn, &mut out);
    let text = if out.is_empty() {
        String::new()
    } else {
        sent(&out)
    };
    (translated, text)
}

#[test]
fn a_sql_prepare_the_relay_cannot_carry_pins() {
    // A parameter type that is not built in: no OID the relay could give a Parse.
    let mut t = Tracker::new(Settings::new(&[]));
    assert_eq!(
        query(&mut t, "PREPARE q (mood) AS select $1"),
        Translated::Same
    );
    assert_eq!(t.pinned, Some("PREPARE"));
    // Several statements in one Query.
    let mut t = Tracker::new(Settings::new(&[]));
    query(&mut t, "PREPARE q AS select 1; EXECUTE q");
    assert_eq!(t.pinned, Some("PREPARE"));
}

fn complete_is_ours(t: &mut Tracker, tag: &str) -> bool {
    t.on_command_complete(format!("{tag}\0").as_bytes())
}

#[test]
fn a_first_currval_pins_and_runs_behind_discard_sequences() {
    let mut t = Tracker::new(Settings::new(&[]));
    let mut out = BytesMut::new();
    let sql = "select currval('s')";
    let q = frame(b'Q', format!("{sql}\0").as_bytes());
    assert_eq!(t.on_client(&q, 5, &mut out), Translated::Rewritten);
    assert_eq!(query_text(&out[5..]), format!("DISCARD SEQUENCES;\n{sql}"));
    assert!(t.pinned.is_some());
    // The DISCARD's answer is the proxy's; an error position is the client's.
    assert!(t.on_command_complete(b"DISCARD SEQUENCES\0"));
    let to_client = t.client_position().expect("positions move");
    assert_eq!(to_client(19 + 8), Some(8));
    assert!(!t.on_command_complete(b"SELECT 1\0"));
    assert!(!t.on_ready(b'I').release);
    // Only the first such statement is sent behind a DISCARD.
    assert_eq!(query(&mut t, "select lastval()"), Translated::Same);

    // Other statements neither pin nor discard.
    let mut t = Tracker::new(Settings::new(&[]));
    assert_eq!(query(&mut t, "select nextval('s')"), Translated::Same);
    assert!(t.on_ready(b'I').release);
    assert!(t.pinned.is_none());
}

#[test]
fn a_parse_naming_lastval_goes_behind_the_proxys_own_discard() {
    let mut t = Tracker::new(Settings::new(&[]));
    let parse = frame(b'P', b"\0select lastval()\0\0\0");
    let mut out = BytesMut::new();
    assert_eq!(t.on_client(&parse, 9, &mut out), Translated::Rewritten);
    assert!(t.pinned.is_some());
    let tags: Vec<u8> = {
        let mut tags = Vec::new();
        let mut rest = &out[..];
        while rest.len() >= 5 {
            let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
            tags.push(rest[0]);
            rest = &rest[1 + len..];
        }
        tags
    };
    // The proxy's Parse, Bind, Execute and two Closes, then the client's Parse as it came.
    assert_eq!(tags, b"PBECCP");
    assert!(out.ends_with(&parse));
    assert!(out.windows(17).any(|w| w == b"DISCARD SEQUENCES"));
    t.on_client_start(b'S');
    for tag in [b'1', b'2', b'C', b'3', b'3'] {
        assert!(t.on_own_answer(tag), "{}", tag as char);
    }
    // The client's ParseComplete is its own.
    assert!(!t.on_own_answer(b'1'));
    assert!(!t.on_parse_complete());
    // Settled: the same text again goes as it came.
    let mut out = BytesMut::new();
    assert_eq!(t.on_client(&parse, 9, &mut out), Translated::Same);
}

#[test]
fn a_discard_skipped_after_an_error_goes_again_with_the_next_such_statement() {
    let mut t = Tracker::new(Settings::new(&[]));
    query(&mut t, "BEGIN");
    t.on_ready(b'T');
    query(&mut t, "select 1/0");
    t.on_error();
    t.on_ready(b'E');
    // In the failed block the DISCARD fails before anything runs (25P02).
    assert_eq!(query(&mut t, "select currval('s')"), Translated::Rewritten);
    t.on_error();
    t.on_ready(b'E');
    query(&mut t, "ROLLBACK");
    t.on_ready(b'I');
    assert_eq!(query(&mut t, "select lastval()"), Translated::Rewritten);
    assert!(t.on_command_complete(b"DISCARD SEQUENCES\0"));
    t.on_ready(b'I');
    assert_eq!(query(&mut t, "select lastval()"), Translated::Same);
}

fn with_startup() -> Tracker {
    Tracker::new(Settings::new(&[
        ("application_name".to_string(), "app".to_string()),
        ("DateStyle".to_string(), "ISO, DMY".to_string()),
    ]))
}

/// Which of the CommandCompletes tagged `tags`, in order, are the proxy's.
fn ours(t: &mut Tracker, tags: &[&str]) -> Vec<bool> {
    tags.iter().map(|tag| complete_is_ours(t, tag)).collect()
}

#[test]
fn each_reset_of_a_startup_parameter_is_followed_by_its_set() {
    let mut t = with_startup();
    let sql = "select 1; reset all -- c\n; /* only */; reset datestyle; select x";
    let (translated, text) = query_on(&mut t, sql, 1);
    assert_eq!(translated, Translated::Rewritten);
    assert_eq!(
        text,
        "select 1; reset all -- c\n;SET application_name = 'app'; SET DateStyle = 'ISO, DMY'\n\
         \n; /* only */; reset datestyle\n;SET DateStyle = 'ISO, DMY'\n; select x"
    );
    let tags = [
        "SELECT 1", "RESET", "SET", "SET", "RESET", "SET", "SELECT 1",
    ];
    assert_eq!(
        ours(&mut t, &tags),
        [false, false, true, true, false, true, false]
    );
}

#[test]
fn a_function_body_of_several_statements_is_answered_once() {
    let mut t = with_startup();
    let sql = "create function f() returns int language sql begin atomic select 1; end; reset all";
    let (_, text) = query_on(&mut t, sql, 1);
    assert!(text.starts_with(sql), "{text}");
    let tags = ["CREATE FUNCTION", "RESET", "SET", "SET"];
    assert_eq!(ours(&mut t, &tags), [false, false, true, true]);
}

#[test]
fn error_positions_after_a_restoring_set_go_back_to_the_clients_text() {
    let mut t = with_startup();
    let sql = "reset application_name; select x; reset all; select y";
    let (_, text) = query_on(&mut t, sql, 1);
    let to_client = t.client_position().unwrap();
    for word in ["select x", "select y", "reset all"] {
        let shard = text.find(word).unwrap() as u64 + 1;
        let client = sql.find(word).unwrap() as u64 + 1;
        assert_eq!(to_client(shard), Some(client), "{word}");
    }
    assert_eq!(to_client(1), Some(1));
    let inside = text.find("SET").unwrap() as u64 + 1;
    assert_eq!(
        to_client(inside),
        Some("reset application_name".len() as u64)
    );
}

#[test]
fn texts_without_a_reset_of_a_startup_parameter_go_as_they_came() {
    for sql in ["reset work_mem", "set application_name = 'x'", "select 1"] {
        assert_eq!(query(&mut with_startup(), sql), Translated::Same, "{sql}");
    }
    let mut none = Tracker::new(Settings::new(&[]));
    assert_eq!(query(&mut none, "reset all"), Translated::Same);
}

#[test]
fn a_reset_and_an_execute_in_one_query_are_both_rewritten() {
    let mut t = with_startup();
    query(&mut t, "PREPARE q AS select 1");
    complete(&mut t, "PREPARE");
    t.on_ready(b'I');
    // Connection 2 lacks the statement: it is prepared there ahead of the EXECUTE, and the
    // RESET is followed by the SETs, each answer the proxy's counted once.
    let sql = "reset application_name; EXECUTE q; select x";
    let (translated, text) = query_on(&mut t, sql, 2);
    assert_eq!(translated, Translated::Rewritten);
    let (first, rest) = text
        .split_once("\n;SET application_name = 'app'\n")
        .expect(&text);
    assert_eq!(first, "reset application_name");
    assert!(rest.starts_with("; PREPARE \"sg"), "{text}");
    let shard = &rest["; PREPARE ".len()..rest.find(" AS").unwrap()];
    assert!(
        rest.ends_with(&format!("\n;\nEXECUTE {shard}; select x")),
        "{text}"
    );
    let to_client = t.client_position().unwrap();
    let at = |s: &str, w: &str| s.find(w).unwrap() as u64 + 1;
    assert_eq!(to_client(at(&text, "select x")), Some(at(sql, "select x")));
    let tags = ["RESET", "SET", "PREPARE", "SELECT 1", "SELECT 1"];
    assert_eq!(ours(&mut t, &tags), [false, true, true, false, false]);
}

#[test]
fn statements_of_comments_alone_are_not_counted_among_the_answers() {
    let mut t = Tracker::new(Settings::new(&[]));
    query(&mut t, "PREPARE q AS select 1");
    complete(&mut t, "PREPARE");
    t.on_ready(b'I');
    let (_, text) = query_on(&mut t, "select 1; /* nothing */; EXECUTE q", 2);
    assert!(
        text.starts_with("select 1; /* nothing */; PREPARE \"sg"),
        "{text}"
    );
    // PostgreSQL answers the SELECT, then the PREPARE, then the EXECUTE.
    let tags = ["SELECT 1", "PREPARE", "SELECT 1"];
    assert_eq!(ours(&mut t, &tags), [false, true, false]);
}
