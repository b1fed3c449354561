//! Hostile input on a cluster of three unlike shards: malformed messages, protocol misuse and
//! SQL that cannot be analysed. Each case is a few bytes from a client that has logged in; each
//! must end with a clear error (08P01 for a malformed message, which ends that session), and
//! never with a crash, a hang, a leaked shard connection or a write on the wrong shard. After
//! each case another client is still served.

mod common;

use common::raw::{field, message, query, Raw};
use common::TestCluster;
use std::time::Duration;

const TABLES: &str = r#"
[tables.accounts]
shard_key = "id"
key_type = "bigint"
"#;

async fn cluster() -> TestCluster {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    tc.client()
        .await
        .batch_execute("create table accounts (id bigint primary key, owner text)")
        .await
        .unwrap();
    tc
}

fn parse(name: &str, sql: &str, types: &[u32]) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    shardgate::protocol::build::parse(name, sql, types, &mut out);
    out.to_vec()
}

fn sync() -> Vec<u8> {
    message(b'S', b"")
}

/// The proxy still serves a new client, on every shard.
async fn still_serves(tc: &TestCluster) {
    let c = tc.client().await;
    let n: i64 = c
        .query_one("select count(*) from accounts", &[])
        .await
        .expect("another client is served")
        .get(0);
    assert!(n >= 0);
}

/// A malformed message gets FATAL 08P01 and the connection is closed.
async fn assert_protocol_violation(raw: &mut Raw) {
    let msgs = raw.until_ready().await;
    let err = msgs
        .iter()
        .find(|(t, _)| *t == b'E')
        .unwrap_or_else(|| panic!("an ErrorResponse, got {msgs:?}"));
    assert_eq!(field(&err.1, b'C').as_deref(), Some("08P01"), "{msgs:?}");
    assert_eq!(field(&err.1, b'S').as_deref(), Some("FATAL"));
    assert!(raw.is_closed().await, "the session ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_array_claiming_two_billion_elements_is_an_error_not_an_allocation() {
    let tc = cluster().await;
    let (mut raw, _) = Raw::login(tc.port).await;
    let mut array = Vec::new();
    for v in [1i32, 0, 20, i32::MAX, 1] {
        array.extend_from_slice(&v.to_be_bytes());
    }
    let mut bind = b"\0\0".to_vec();
    bind.extend_from_slice(&[0, 1, 0, 1]); // one format: binary
    bind.extend_from_slice(&[0, 1]);
    bind.extend_from_slice(&(array.len() as i32).to_be_bytes());
    bind.extend_from_slice(&array);
    bind.extend_from_slice(&[0, 0]);
    let mut out = parse("", "select * from accounts where id = any($1)", &[1016]);
    out.extend(message(b'B', &bind));
    out.extend(message(b'E', b"\0\0\0\0\0"));
    out.extend(sync());
    raw.send(&out).await;
    let msgs = raw.until_ready().await;
    let err = msgs.iter().find(|(t, _)| *t == b'E').expect("an error");
    assert!(field(&err.1, b'C').is_some(), "{msgs:?}");
    assert_eq!(msgs.last().map(|m| m.0), Some(b'Z'), "the session goes on");
    raw.send(&query("select 1")).await;
    assert!(raw.until_ready().await.iter().any(|(t, _)| *t == b'D'));
    still_serves(&tc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_extended_messages_end_the_session_with_08p01() {
    let tc = cluster().await;
    let scatter = parse("s", "select * from accounts order by id", &[]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "Bind with result-format count -1 on a scatter statement",
            [
                scatter.clone(),
                message(b'B', b"\0s\0\0\0\0\0\xff\xff"),
                message(b'E', b"\0\0\0\0\0"),
                sync(),
            ]
            .concat(),
        ),
        (
            "Describe with an empty body",
            [message(b'D', b""), sync()].concat(),
        ),
        (
            "Close with an empty body",
            [message(b'C', b""), sync()].concat(),
        ),
        (
            "Bind with a negative parameter-format count",
            [
                scatter.clone(),
                message(b'B', b"\0s\0\xff\xfe\0\0\0\0"),
                sync(),
            ]
            .concat(),
        ),
        (
            "Bind with a negative value count",
            [
                scatter.clone(),
                message(b'B', b"\0s\0\0\0\x80\0\0\0"),
                sync(),
            ]
            .concat(),
        ),
        (
            "Bind claiming more values than it holds",
            [
                scatter.clone(),
                message(b'B', b"\0s\0\0\0\x7f\xff\0\0"),
                sync(),
            ]
            .concat(),
        ),
        (
            "Execute without its row limit",
            [message(b'E', b"\0"), sync()].concat(),
        ),
        (
            "Parse whose parameter-type count is negative",
            [message(b'P', b"\0select 1\0\xff\xff"), sync()].concat(),
        ),
        ("Query without a terminator", message(b'Q', b"select 1")),
    ];
    for (what, bytes) in cases {
        let (mut raw, _) = Raw::login(tc.port).await;
        raw.send(&bytes).await;
        eprintln!("case: {what}");
        assert_protocol_violation(&mut raw).await;
        still_serves(&tc).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_while_its_query_is_ignored_frees_its_shard_connections() {
    let tc = cluster().await;
    let before = tc.session_backends().await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        let (mut raw, _) = Raw::login(tc.port).await;
        // A syntax error, then Flush, then a simple Query: PostgreSQL ignores the Query until
        // Sync, so no answer comes. The session must still notice the client leaving.
        raw.send(
            &[
                parse("", "selec nonsense", &[]),
                message(b'H', b""),
                query("select 1"),
            ]
            .concat(),
        )
        .await;
        let (tag, body) = raw.recv().await.expect("the Parse error");
        assert_eq!(tag, b'E');
        assert_eq!(field(&body, b'C').as_deref(), Some("42601"));
        clients.push(raw);
    }
    // While they stay, a Sync brings one back.
    let mut first = clients.remove(0);
    first.send(&sync()).await;
    assert_eq!(first.until_ready().await.last().map(|m| m.0), Some(b'Z'));
    first.send(&query("select 1")).await;
    assert!(first.until_ready().await.iter().any(|(t, _)| *t == b'D'));
    drop(first);
    drop(clients);
    let now = tc
        .session_backends_settled(before, Duration::from_secs(20))
        .await;
    assert_eq!(
        now, before,
        "every shard connection of the departed clients is closed"
    );
    still_serves(&tc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_the_parser_cannot_read_never_reaches_several_shards_whole() {
    let tc = cluster().await;
    let c = tc.client().await;
    for sql in [
        "set application_name='a'; insert into accounts (id) values (777); select * from accounts where id between symmetric 1 and 5",
        "vacuum accounts; insert into accounts (id) values (778); select * from accounts where id between symmetric 1 and 5",
        "show server_version; insert into accounts (id) values (779); select * from accounts where id between symmetric 1 and 5",
        "begin; insert into accounts (id) values (780); select * from accounts where id between symmetric 1 and 5",
    ] {
        let e = c.simple_query(sql).await.map(|_| ()).expect_err(sql);
        assert!(e.code().is_some(), "{sql}: {e}");
        let _ = c.simple_query("rollback").await;
    }
    // Client two-phase commands are refused, alone or behind a SET.
    for sql in [
        "set search_path=public; prepare transaction 'y5'",
        "begin; insert into accounts (id) values (781); prepare transaction 'y6'",
        "prepare transaction 'y7'",
        "commit prepared 'y7'",
    ] {
        let e = c.simple_query(sql).await.map(|_| ()).expect_err(sql);
        assert!(e.code().is_some(), "{sql}: {e}");
        let _ = c.simple_query("rollback").await;
    }
    // Not one of those rows reached any shard, and no shard holds a prepared transaction.
    assert_eq!(
        tc.count_on_each_shard("select count(*) from accounts where id between 777 and 781")
            .await,
        [0, 0, 0],
        "a shard has a row it must not have"
    );
    assert_eq!(
        tc.count_on_each_shard("select count(*) from pg_prepared_xacts")
            .await,
        [0, 0, 0],
        "a shard holds a prepared transaction"
    );
    // The extended protocol refuses several statements in one Parse, as PostgreSQL does, and
    // the name stays unusable.
    let (mut raw, _) = Raw::login(tc.port).await;
    raw.send(
        &[
            parse(
                "two",
                "set application_name='a'; insert into accounts (id) values (782)",
                &[],
            ),
            sync(),
            message(b'B', b"\0two\0\0\0\0\0\0\0"),
            message(b'E', b"\0\0\0\0\0"),
            sync(),
        ]
        .concat(),
    )
    .await;
    let first = raw.until_ready().await;
    let e = first
        .iter()
        .find(|(t, _)| *t == b'E')
        .expect("Parse refused");
    assert_eq!(field(&e.1, b'C').as_deref(), Some("42601"));
    let second = raw.until_ready().await;
    let e = second
        .iter()
        .find(|(t, _)| *t == b'E')
        .expect("Bind refused");
    assert_eq!(field(&e.1, b'C').as_deref(), Some("26000"));
    assert_eq!(
        tc.count_on_each_shard("select count(*) from accounts where id = 782")
            .await,
        [0, 0, 0]
    );
    still_serves(&tc).await;
}

/// The kinds of message (and SQLSTATE of an error) PostgreSQL's answer to one simple Query
/// holds, from the proxy (the test's trust user) or from a shard directly (its superuser).
async fn answer_kinds(port: u16, user: &str, sql: &str) -> Vec<String> {
    let mut raw = Raw::connect(port).await;
    raw.send(&common::raw::startup_packet(
        196608,
        &[("user", user), ("database", "postgres")],
    ))
    .await;
    raw.until_ready().await;
    raw.send(&query(sql)).await;
    raw.until_ready()
        .await
        .iter()
        .map(|(tag, body)| match tag {
            b'E' => format!("E {}", field(body, b'C').unwrap_or_default()),
            _ => (*tag as char).to_string(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_statements_end_is_read_as_postgresql_reads_it() {
    let tc = cluster().await;
    // A piece of nothing but comments is no statement, and a comment never closed is an
    // error: the proxy answers each text as a shard does.
    for sql in [
        "-- nothing to run",
        "/* a /* nested */ comment */ ;",
        "select 1; -- done",
        "select 1; /* never closed",
    ] {
        let proxy = answer_kinds(tc.port, "trustuser", sql).await;
        let shard = answer_kinds(tc.shards[1].port, "postgres", sql).await;
        assert_eq!(proxy, shard, "{sql}");
    }
    let c = tc.client().await;
    // Statements that reach different shards, with a comment after the last: each lands
    // where the key's own lookup finds it.
    c.simple_query(
        "insert into accounts (id, owner) values (801, 'a'); \
         insert into accounts (id, owner) values (802, 'b'); \
         insert into accounts (id, owner) values (803, 'c'); -- three owners",
    )
    .await
    .unwrap();
    for id in [801_i64, 802, 803] {
        let found = c
            .query_one("select count(*) from accounts where id = $1", &[&id])
            .await
            .unwrap()
            .get::<_, i64>(0);
        assert_eq!(found, 1, "row {id} is not on the shard its key names");
    }
    let spread = tc
        .count_on_each_shard("select count(*) from accounts where id between 801 and 803")
        .await;
    assert_eq!(spread.iter().sum::<i64>(), 3, "{spread:?}");
    assert!(spread.iter().filter(|n| **n > 0).count() > 1, "{spread:?}");
    // A Parse whose one statement is followed by a comment after its `;` is one statement
    // to PostgreSQL, not several.
    let row = c
        .query_one(
            "select owner from accounts where id = $1; -- by its key",
            &[&802_i64],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "b");
    c.simple_query("delete from accounts where id between 801 and 803")
        .await
        .unwrap();
    still_serves(&tc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strings_read_otherwise_than_the_proxy_reads_them_are_refused() {
    let tc = cluster().await;
    let c = tc.client().await;
    let code = |e: tokio_postgres::Error| e.code().map(|c| c.code().to_string());
    // With standard_conforming_strings off, this is one SELECT of one string to PostgreSQL,
    // and three statements to a reader that takes `'\'` for a whole string.
    let smuggled = "select '\\'; insert into accounts (id, owner) values (790, 'x'); select 1 --'";
    for sql in [
        "set standard_conforming_strings = off",
        "SET SESSION standard_conforming_strings TO 'false'",
        "select set_config('standard_conforming_strings', 'off', false)",
        &format!("set standard_conforming_strings to off; {smuggled}"),
    ] {
        let e = c.simple_query(sql).await.map(|_| ()).expect_err(sql);
        assert_eq!(code(e).as_deref(), Some("0A000"), "{sql}");
    }
    // Bound as parameters, as drivers send set_config.
    let e = c
        .query(
            "select set_config($1, $2, false)",
            &[&"standard_conforming_strings", &"off"],
        )
        .await
        .expect_err("set_config of the setting, bound");
    assert_eq!(code(e).as_deref(), Some("0A000"));
    // Other settings, and this one kept on, pass.
    let set = c
        .query_one(
            "select set_config($1, $2, false)",
            &[&"application_name", &"strings"],
        )
        .await
        .unwrap();
    assert_eq!(set.get::<_, String>(0), "strings");
    c.simple_query("set standard_conforming_strings to on")
        .await
        .unwrap();
    // The session reads plain strings as before, on every shard.
    let row = c
        .query_one(
            "select '\\'::text, current_setting('standard_conforming_strings')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "\\");
    assert_eq!(row.get::<_, String>(1), "on");
    // Nor may a login turn it off.
    let url = format!(
        "{}?options=-c%20standard_conforming_strings%3Doff",
        tc.url("app", "secret")
    );
    let e = common::connect(&url)
        .await
        .map(|_| ())
        .expect_err("a login with it off");
    assert_eq!(code(e).as_deref(), Some("0A000"));
    assert_eq!(
        tc.count_on_each_shard("select count(*) from accounts where id = 790")
            .await,
        [0, 0, 0]
    );
    still_serves(&tc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_that_reads_strings_otherwise_gets_no_statement() {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    // Configured on the shard, before the proxy opens a session connection to it.
    tc.direct(2)
        .await
        .batch_execute("alter database postgres set standard_conforming_strings = off")
        .await
        .unwrap();
    let c = tc.client().await;
    let e = c
        .batch_execute("create table accounts (id bigint primary key, owner text)")
        .await
        .expect_err("DDL reaching the shard");
    let db = e.as_db_error().expect("an error from the proxy");
    assert_eq!(db.code().code(), "0A000", "{db:?}");
    assert!(
        db.message().contains("standard_conforming_strings"),
        "{db:?}"
    );
    // Nothing was created anywhere: the broadcast never began.
    assert_eq!(
        tc.count_on_each_shard("select count(*) from pg_class where relname = 'accounts'")
            .await,
        [0, 0, 0]
    );
    tc.direct(2)
        .await
        .batch_execute("alter database postgres reset standard_conforming_strings")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cast_that_changes_a_key_never_routes_by_the_uncast_value() {
    let tc = TestCluster::start_unlike(
        3,
        "",
        "[tables.people]\nshard_key = \"name\"\nkey_type = \"text\"\n",
    )
    .await;
    let c = tc.client().await;
    c.batch_execute("create table people (name text primary key)")
        .await
        .unwrap();
    // An explicit cast to varchar(2) keeps two characters: the row is 'ab', and must be
    // where a lookup of 'ab' finds it.
    c.batch_execute("insert into people values ('abc'::varchar(2))")
        .await
        .unwrap();
    let found = |sql: &'static str| {
        let c = &c;
        async move {
            c.query_one(sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .get::<_, i64>(0)
        }
    };
    assert_eq!(
        found("select count(*) from people where name = 'ab'").await,
        1
    );
    let values: Vec<String> = (0..12).map(|i| format!("('ab{i}')")).collect();
    c.batch_execute(&format!("insert into people values {}", values.join(", ")))
        .await
        .unwrap();
    // Casts that change the value compared: every row PostgreSQL would match, from every
    // shard that holds one.
    assert_eq!(
        found("select count(*) from people where name::varchar(2) = 'ab'").await,
        13
    );
    assert_eq!(
        found("select count(*) from people where name = 'ab0 '::char(3)").await,
        1
    );
    assert_eq!(
        found("select count(*) from people where 'abc'::varchar(2) = name").await,
        1
    );
    // A cast that keeps the value still routes to one shard, and finds its row.
    assert_eq!(
        found("select count(*) from people where name = 'ab7'::varchar").await,
        1
    );
    let spread = tc.count_on_each_shard("select count(*) from people").await;
    assert_eq!(spread.iter().sum::<i64>(), 13, "{spread:?}");
}

/// Freezes every process of a shard (SIGSTOP) until dropped, as a wedged server would be.
struct Frozen(String);

impl Frozen {
    fn shard(tc: &TestCluster, i: usize) -> Frozen {
        let pid = std::fs::read_to_string(tc.shards[i].data_dir.join("postmaster.pid"))
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .to_string();
        signal_tree("STOP", &pid);
        Frozen(pid)
    }
}

fn signal_tree(sig: &str, pid: &str) {
    let _ = std::process::Command::new("pkill")
        .args([&format!("-{sig}"), "-P", pid])
        .status();
    let _ = std::process::Command::new("kill")
        .args([&format!("-{sig}"), pid])
        .status();
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal_tree("CONT", &self.0);
    }
}

fn key_on(tc: &TestCluster, shard: usize) -> i64 {
    let p = tc.config.placement().unwrap();
    (1..)
        .find(|&i| p.shard_of(&shardgate::placement::KeyValue::Integer(i)) == shard)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_shard_is_given_up_once_its_health_probes_fail() {
    // Default timeouts: no response timeout, so only the health probe can release the session.
    stopped_shard(
        "health_check_interval_secs = 1\nconnect_timeout_secs = 2",
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_shard_is_given_up_after_the_response_timeout() {
    stopped_shard(
        "health_check_interval_secs = 0\nshard_response_timeout_secs = 2",
        false,
    )
    .await;
}

/// A shard is stopped (SIGSTOP) under a proxy configured with `server`: a statement waiting on
/// it ends with an error instead of waiting forever, a session on the other shards goes on, new
/// logins are told which shard is down (when `probes` run), and all is well once it resumes.
async fn stopped_shard(server: &str, probes: bool) {
    let tc = TestCluster::start_unlike(3, server, TABLES).await;
    let setup = tc.client().await;
    setup
        .batch_execute("create table accounts (id bigint primary key, owner text)")
        .await
        .unwrap();
    let (k0, k2) = (key_on(&tc, 0), key_on(&tc, 2));
    for k in [k0, k2] {
        setup
            .execute("insert into accounts (id, owner) values ($1, 'x')", &[&k])
            .await
            .unwrap();
    }
    let spared = tc.client().await;
    let stuck = tc.client().await;
    // An answer waited for before the stop: the session's wait for the shard's health is
    // registered then and kept, and must still end the wait below.
    stuck
        .query_one("select owner from accounts where id = $1", &[&k2])
        .await
        .unwrap();
    let frozen = Frozen::shard(&tc, 2);
    // A statement on the stopped shard ends with a connection error instead of waiting forever.
    let e = tokio::time::timeout(
        Duration::from_secs(60),
        stuck.query_one("select owner from accounts where id = $1", &[&k2]),
    )
    .await
    .expect("the session gives up on the stopped shard")
    .expect_err("no answer from a stopped shard");
    assert!(e.is_closed() || e.code().is_some(), "{e}");
    // A session that only touches the other shards goes on.
    let owner: String = spared
        .query_one("select owner from accounts where id = $1", &[&k0])
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, "x");
    // Once the health probe has seen it, a new login is told which shard is down at once.
    let mut refusal = String::new();
    for _ in 0..if probes { 60 } else { 0 } {
        match tokio::time::timeout(
            Duration::from_secs(20),
            common::connect(&tc.url("app", "secret")),
        )
        .await
        {
            Ok(Err(e)) if e.code().is_some_and(|c| c.code() == "08001") => {
                refusal = common::db_error(&e).message().to_string();
                if refusal.contains("health probe") {
                    break;
                }
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    assert!(
        !probes || refusal.contains("s2") && refusal.contains("health probe"),
        "{refusal}"
    );
    drop(frozen);
    // When it answers again, so do logins.
    let again = tc
        .client_eventually(Duration::from_secs(20))
        .await
        .expect("logins work again once the shard answers");
    let n: i64 = again
        .query_one("select count(*) from accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_messages_without_a_sync_run_as_one_batch() {
    let tc = cluster().await;
    let (mut raw, _) = Raw::login(tc.port).await;
    // 12 inserts and 3,000 point reads of keys on every shard, with no Sync until the end: the
    // proxy runs them before the Sync arrives instead of holding them all.
    let mut out = parse(
        "q",
        "select $1::bigint + 1 from accounts where id = $1",
        &[20],
    );
    out.extend(parse("c", "select count(*) from accounts", &[]));
    // An INSERT without a column list among the first messages, which run before the Sync
    // arrives: its key must still be found by the table's column order.
    out.extend(parse(
        "ins",
        "insert into accounts values ($1, 'early')",
        &[20],
    ));
    for k in 900_000..900_012i64 {
        let mut bind = b"\0ins\0\0\x01\0\x01\0\x01\0\0\0\x08".to_vec();
        bind.extend_from_slice(&k.to_be_bytes());
        bind.extend_from_slice(&[0, 0]);
        out.extend(message(b'B', &bind));
        out.extend(message(b'E', b"\0\0\0\0\0"));
    }
    for i in 0..3_000i64 {
        let mut bind = b"\0q\0\0\x01\0\x01\0\x01\0\0\0\x08".to_vec();
        bind.extend_from_slice(&i.to_be_bytes());
        bind.extend_from_slice(&[0, 0]);
        out.extend(message(b'B', &bind));
        out.extend(message(b'E', b"\0\0\0\0\0"));
    }
    out.extend(message(b'B', b"\0c\0\0\0\0\0\0\0"));
    out.extend(message(b'E', b"\0\0\0\0\0"));
    out.extend(sync());
    raw.send(&out).await;
    let msgs = raw.until_ready().await;
    assert!(
        !msgs.iter().any(|(t, _)| *t == b'E'),
        "{:?}",
        msgs.iter().find(|(t, _)| *t == b'E')
    );
    let completes = msgs.iter().filter(|(t, _)| *t == b'C').count();
    assert_eq!(completes, 3_013);
    assert_eq!(msgs.last().map(|m| m.0), Some(b'Z'));
    // Each early row is on the shard that owns its key, and only there.
    let p = tc.config.placement().unwrap();
    let mut expected = vec![0i64; 3];
    for k in 900_000..900_012i64 {
        expected[p.shard_of(&shardgate::placement::KeyValue::Integer(k))] += 1;
    }
    assert_eq!(
        tc.count_on_each_shard("select count(*) from accounts where owner = 'early'")
            .await,
        expected
    );
    still_serves(&tc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_too_long_to_analyse_is_refused_not_parsed() {
    let tc = cluster().await;
    let c = tc.client().await;
    let list: Vec<String> = (0..400_000).map(|i| i.to_string()).collect();
    let sql = format!("select * from accounts where id in ({})", list.join(","));
    assert!(sql.len() > 2 << 20);
    let e = c.simple_query(&sql).await.map(|_| ()).expect_err("refused");
    assert_eq!(e.code().map(|c| c.code()), Some("54000"));
    let e = c
        .prepare(&sql)
        .await
        .map(|_| ())
        .expect_err("refused at Parse");
    assert_eq!(e.code().map(|c| c.code()), Some("54000"));
    // The same question as a bound array routes.
    let ids: Vec<i64> = (0..400_000).collect();
    let rows = c
        .query("select id from accounts where id = any($1)", &[&ids])
        .await
        .unwrap();
    assert!(rows.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_and_dates_at_the_ends_of_their_range_merge_in_order() {
    let tc = TestCluster::start_unlike(
        3,
        "",
        "[tables.events]\nshard_key = \"id\"\nkey_type = \"bigint\"\n",
    )
    .await;
    let c = tc.client().await;
    c.batch_execute("create table events (id bigint primary key, at timestamp, day date)")
        .await
        .unwrap();
    // In ascending order; ids spread them over the shards.
    let values = [
        ("-infinity", "-infinity"),
        ("4713-01-01 00:00:00 BC", "4713-01-01 BC"),
        ("1999-12-31 23:59:59.999999", "1999-12-31"),
        ("294247-01-10 04:00:54.775807", "294247-01-10"),
        ("294247-01-10 04:00:54.775808", "294248-01-10"),
        ("294276-12-31 23:59:59.999999", "5874897-12-31"),
        ("infinity", "infinity"),
    ];
    for (i, (at, day)) in values.iter().enumerate() {
        c.batch_execute(&format!(
            "insert into events (id, at, day) values ({}, '{at}', '{day}')",
            (i as i64 * 7919) % 1000
        ))
        .await
        .unwrap();
    }
    let expected: Vec<i64> = (0..values.len() as i64)
        .map(|i| (i * 7919) % 1000)
        .collect();
    for column in ["at", "day"] {
        for sql in [
            format!("select id from events order by {column}"),
            format!("select id, {column} from events order by {column}"),
        ] {
            // Text results (simple protocol) and binary ones (extended protocol).
            let ids: Vec<i64> = c
                .simple_query(&sql)
                .await
                .unwrap()
                .iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0)?.parse().ok(),
                    _ => None,
                })
                .collect();
            assert_eq!(ids, expected, "{sql} (text)");
            assert_eq!(binary_ids(&c, &sql).await, expected, "{sql} (binary)");
        }
        let desc = binary_ids(&c, &format!("select id from events order by {column} desc")).await;
        assert_eq!(desc, expected.iter().rev().copied().collect::<Vec<_>>());
    }
    // Other DateStyles write day and month in orders the text alone does not tell: merged in
    // text they are refused, never read as other dates; binary results merge as before.
    for style in ["Postgres, DMY", "Postgres, MDY", "SQL, DMY", "German"] {
        c.batch_execute(&format!("set datestyle = '{style}'"))
            .await
            .unwrap();
        for column in ["at", "day"] {
            let sql = format!("select id from events order by {column}");
            match c.simple_query(&sql).await {
                Ok(rows) => panic!(
                    "{style}: {sql} merged text dates: {:?}",
                    common::rows(&rows)
                ),
                Err(e) => {
                    assert_eq!(common::code(&e), "0A000", "{style}: {sql}: {e}");
                    assert!(
                        common::db_error(&e).message().contains("DateStyle ISO"),
                        "{style}: {e}"
                    );
                }
            }
            assert_eq!(
                binary_ids(&c, &sql).await,
                expected,
                "{style}: {sql} (binary)"
            );
        }
    }
}

/// The first column of `sql`'s rows, read in binary (the extended protocol).
async fn binary_ids(c: &tokio_postgres::Client, sql: &str) -> Vec<i64> {
    c.query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scattered_result_handed_out_in_parts_is_bounded() {
    let tc = cluster().await;
    let c = tc.client().await;
    for id in 0..80i64 {
        c.execute(
            "insert into accounts (id, owner) values ($1, repeat('x', 1000000))",
            &[&id],
        )
        .await
        .unwrap();
    }
    // An Execute with a row limit over all shards: the merged result would be 80 MB.
    let (mut raw, _) = Raw::login(tc.port).await;
    raw.send(
        &[
            parse("", "select owner from accounts order by id", &[]),
            message(b'B', b"\0\0\0\0\0\0\0\0"),
            message(b'E', b"\0\0\0\0\x01"),
            sync(),
        ]
        .concat(),
    )
    .await;
    let msgs = raw.until_ready().await;
    let err = msgs
        .iter()
        .find(|(t, _)| *t == b'E')
        .expect("refused over the bound");
    assert_eq!(field(&err.1, b'C').as_deref(), Some("54000"));
    assert!(raw.is_closed().await);
    // Without a row limit the same result streams through.
    let rows = c
        .query("select owner from accounts order by id", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 80);
    still_serves(&tc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avg_of_real_matches_one_postgresql_to_the_last_digit() {
    let tc = TestCluster::start_unlike(
        3,
        "",
        "[tables.readings]\nshard_key = \"id\"\nkey_type = \"bigint\"\n",
    )
    .await;
    let c = tc.client().await;
    c.batch_execute("create table readings (id bigint primary key, g int, v real)")
        .await
        .unwrap();
    // The same rows in one plain table on one server, for PostgreSQL's own answer. real values
    // of this range add up exactly in double precision, so the order of addition (which differs
    // between one server and several shards) cannot change the result: any difference would be
    // the proxy's.
    let plain = tc.direct(0).await;
    plain
        .batch_execute("create table plain_readings (id bigint primary key, g int, v real)")
        .await
        .unwrap();
    let mut rows = Vec::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for id in 0..300i64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let v = format!("{}.{:02}", (x % 20_000) as i64 - 10_000, (x >> 20) % 100);
        rows.push(format!("({id}, {}, {v})", id % 3));
    }
    for table in ["readings", "plain_readings"] {
        let sql = format!("insert into {table} (id, g, v) values {}", rows.join(","));
        if table == "readings" {
            c.batch_execute(&sql).await.unwrap();
        } else {
            plain.batch_execute(&sql).await.unwrap();
        }
    }
    for query in [
        "select avg(v) from {t}",
        "select g, avg(v), count(*) from {t} group by g order by g",
        "select avg(v), min(v), max(v) from {t} where g <> 1",
    ] {
        let text = |t: &str| query.replace("{t}", t);
        let through = c.simple_query(&text("readings")).await.unwrap();
        let direct = plain.simple_query(&text("plain_readings")).await.unwrap();
        let rows_of = |msgs: &[tokio_postgres::SimpleQueryMessage]| -> Vec<Vec<String>> {
            msgs.iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                        (0..r.len())
                            .map(|i| r.get(i).unwrap_or("NULL").to_string())
                            .collect(),
                    ),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(rows_of(&through), rows_of(&direct), "{query} (text)");
        // Binary results: the same float8 bits.
        let bits = |rows: Vec<tokio_postgres::Row>| -> Vec<u64> {
            rows.iter()
                .flat_map(|r| {
                    (0..r.len())
                        .filter(|&i| r.columns()[i].type_() == &tokio_postgres::types::Type::FLOAT8)
                        .map(|i| r.get::<_, f64>(i).to_bits())
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let through = bits(c.query(&text("readings"), &[]).await.unwrap());
        let direct = bits(plain.query(&text("plain_readings"), &[]).await.unwrap());
        assert!(!through.is_empty());
        assert_eq!(through, direct, "{query} (binary)");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_stream_through_intact() {
    let tc = cluster().await;
    let c = tc.client().await;
    // Three keys on one shard, so the reads below take the relay paths (not a merge).
    let p = tc.config.placement().unwrap();
    let keys: Vec<i64> = (1..)
        .filter(|&i| p.shard_of(&shardgate::placement::KeyValue::Integer(i)) == 1)
        .take(4)
        .collect();
    let value = |k: i64| format!("{}{k}", "ab".repeat(1_500_000 + k as usize));
    for &k in &keys[..3] {
        c.execute(
            "insert into accounts (id, owner) values ($1, $2)",
            &[&k, &value(k)],
        )
        .await
        .unwrap();
    }
    c.execute(
        "insert into accounts (id, owner) values ($1, 'small')",
        &[&keys[3]],
    )
    .await
    .unwrap();
    // Extended protocol, binary: the big rows and the small one, in order.
    let rows = c
        .query(
            "select id, owner from accounts where id = any($1) order by id",
            &[&keys],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 4);
    for r in &rows[..3] {
        let (k, owner): (i64, String) = (r.get(0), r.get(1));
        assert!(owner == value(k), "row {k} arrived changed");
    }
    assert_eq!(rows[3].get::<_, String>(1), "small");
    // Simple protocol, one key at a time and all at once.
    for &k in &keys[..3] {
        let msgs = c
            .simple_query(&format!("select owner from accounts where id = {k}"))
            .await
            .unwrap();
        let got: Vec<&str> = msgs
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0),
                _ => None,
            })
            .collect();
        assert!(got == [value(k).as_str()], "row {k} arrived changed");
    }
    let n: i64 = c
        .query_one("select count(*) from accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 4, "the session is in step after the streamed rows");
    still_serves(&tc).await;
}

/// The proxy's own questions to a shard inside a client's session (a table's column order for
/// an INSERT without a column list, the rows procedural code touched) name everything in
/// pg_catalog: a session that puts a schema of its own first in its search_path, with look-alike
/// catalogs there, cannot steer a row to the wrong shard or past the guard on DO.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_alike_catalogs_in_a_search_path_do_not_steer_the_proxy() {
    let tc = TestCluster::start_unlike(
        3,
        "",
        "[tables.pairs]\nshard_key = \"a\"\nkey_type = \"bigint\"\n",
    )
    .await;
    let c = tc.client().await;
    c.batch_execute(
        "create table pairs (a bigint primary key, b bigint);
         create schema shadow;
         create view shadow.pg_attribute as
           select attrelid, attname, (1000 - attnum)::int2 as attnum, attisdropped
             from pg_catalog.pg_attribute;
         create view shadow.pg_stat_xact_user_tables as
           select relname, 0::bigint as n_tup_ins, 0::bigint as n_tup_upd, 0::bigint as n_tup_del,
                  0::bigint as seq_scan, 0::bigint as idx_scan
             from pg_catalog.pg_stat_xact_user_tables",
    )
    .await
    .unwrap();
    // A session of its own, so that nothing it read before the look-alikes is remembered.
    let shadowed = tc.client().await;
    shadowed
        .batch_execute("set search_path = shadow, pg_catalog, public")
        .await
        .unwrap();
    // Read in reverse, the columns would put b's value where the key is.
    let (a, b) = (key_on(&tc, 0), key_on(&tc, 1));
    shadowed
        .batch_execute(&format!("insert into pairs values ({a}, {b})"))
        .await
        .unwrap();
    assert_eq!(
        tc.count_on_each_shard("select count(*) from pairs").await,
        [1, 0, 0]
    );
    // Counted as nothing, the rows DO wrote would pass the guard, on every shard.
    let code = format!(
        "do $$ begin insert into pairs values ({}, 0); end $$",
        key_on(&tc, 2)
    );
    let e = shadowed
        .batch_execute(&code)
        .await
        .expect_err("DO that writes");
    assert_eq!(e.code().map(|c| c.code()), Some("0A000"), "{e}");
    assert_eq!(
        tc.count_on_each_shard("select count(*) from pairs").await,
        [1, 0, 0]
    );
    c.batch_execute("drop schema shadow cascade").await.unwrap();
}
