//! Transaction pooling, on one shard (the relay) and on three unlike shards (the planner): many
//! clients over few server connections, each keeping its own settings and prepared statements,
//! and the session state that cannot move between connections pinning its session instead of
//! leaking.

mod common;

use common::{code, connect, rows, TestCluster};
use std::time::Duration;

const TABLES: &str = "[tables.items]\nshard_key = \"id\"\nkey_type = \"bigint\"\n";

/// Each test runs on one shard, where the proxy relays, and on three, where it plans.
macro_rules! on_one_and_three_shards {
    ($($name:ident),*) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn one_shard() {
                super::$name(1).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn three_shards() {
                super::$name(3).await
            }
        }
    )*};
}

on_one_and_three_shards!(
    forty_clients_keep_their_own_settings_over_four_connections,
    prepared_statements_follow_the_client_across_connections,
    a_statement_whose_columns_changed_is_refused_on_every_connection,
    state_that_lives_on_a_connection_pins_its_session,
    a_client_that_waits_too_long_for_a_connection_gets_53300,
    a_cancel_reaches_the_connection_running_the_query,
    session_mode_keeps_a_connection_per_shard_for_each_client,
    a_reset_goes_back_to_the_clients_startup_parameters,
    a_statement_whose_parse_was_skipped_is_prepared_again,
    a_changed_session_user_never_reaches_another_client,
    a_deallocate_answers_where_its_statement_cannot_be_prepared_again,
    a_close_skipped_after_an_error_leaves_the_statement,
    sql_execute_runs_a_statement_the_driver_prepared,
    sql_prepare_follows_its_session_across_connections,
    a_parse_of_execute_runs_the_statement_the_name_has_now,
    executes_among_several_statements_find_the_sessions_statement,
    deallocates_among_several_statements_remove_the_sessions_statement,
    idle_and_old_server_connections_are_replaced,
    the_greeting_reports_what_a_reused_connection_reported_before,
    a_sessions_own_notification_names_it_by_its_pid,
    currval_and_lastval_never_show_another_clients_value
);

/// With standard_conforming_strings off, `'\''` is a whole string to PostgreSQL, while the
/// relay's readers take plain strings as with it on and would find no LISTEN after it. A session
/// that sets it is therefore pinned, and what it runs afterwards never stays on a connection
/// another client gets. One connection, so that the next client gets the one left behind.
/// (Several shards refuse the setting off.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_with_nonstandard_strings_keeps_its_connection() {
    let tc = cluster(1, "size = 1").await;
    let at_login = format!(
        "{}?options=-c%20standard_conforming_strings%3Doff",
        tc.url("app", "secret")
    );
    // Turned off by SET, and at login.
    for by_set in [true, false] {
        let a = if by_set {
            let a = tc.client().await;
            a.batch_execute("set standard_conforming_strings = off")
                .await
                .unwrap();
            a
        } else {
            connect(&at_login).await.unwrap()
        };
        let shown = rows(
            &a.simple_query("select '\\''; listen sg_hidden_jobs")
                .await
                .unwrap(),
        );
        assert_eq!(
            shown[0][0].as_deref(),
            Some("'"),
            "read with the setting off"
        );
        drop(a);
        let b = tc.client().await;
        let channels = rows(
            &b.simple_query("select pg_listening_channels()")
                .await
                .unwrap(),
        );
        assert!(
            channels.is_empty(),
            "turned off by SET: {by_set}: {channels:?}"
        );
        let setting = b
            .query_one("select current_setting('standard_conforming_strings')", &[])
            .await
            .unwrap();
        assert_eq!(setting.get::<_, String>(0), "on");
    }
}

/// `currval()` and `lastval()` read values a server connection keeps, which another client may
/// have left there. On one shard a session's first statement naming either runs on a
/// connection cleared of them and pins the session; several shards refuse both.
async fn currval_and_lastval_never_show_another_clients_value(shards: usize) {
    // Two sessions below end up pinned; the others share the third connection.
    let tc = cluster(shards, "size = 3").await;
    let a = tc.client().await;
    if shards > 1 {
        for sql in ["select currval('s')", "select 1 + lastval()"] {
            let simple = a.simple_query(sql).await.unwrap_err();
            assert_eq!(code(&simple), "0A000", "{sql}");
            let extended = a.query(sql, &[]).await.unwrap_err();
            assert_eq!(code(&extended), "0A000", "{sql}");
        }
        return;
    }
    a.batch_execute("create sequence s").await.unwrap();
    assert_eq!(next(&a).await, 1);
    // B's first statement takes the connection A used last (the pool hands out the one
    // returned most recently), where A's value still is.
    let b = tc.client().await;
    let never = b.simple_query("select currval('s')").await.unwrap_err();
    assert_eq!(code(&never), "55000", "{never:?}");
    let never = b.query_one("select lastval()", &[]).await.unwrap_err();
    assert_eq!(code(&never), "55000", "{never:?}");
    // B's own value stays its own while other clients draw, over transactions, in both
    // protocols.
    let own = next(&b).await;
    for _ in 0..3 {
        next(&a).await;
        next(&tc.client().await).await;
    }
    let r = rows(
        &b.simple_query("select currval('s'), lastval()")
            .await
            .unwrap(),
    );
    assert_eq!(r, vec![vec![Some(own.to_string()), Some(own.to_string())]]);
    let r = b.query_one("select lastval()", &[]).await.unwrap();
    assert_eq!(r.get::<_, i64>(0), own);
    // A first use through the extended protocol, on a connection others drew on.
    let c = tc.client().await;
    let never = c.query_one("select currval('s')", &[]).await.unwrap_err();
    assert_eq!(code(&never), "55000", "{never:?}");
    // nextval() and currval() in one Query are one transaction's: they agree.
    let d = tc.client().await;
    let r = rows(
        &d.simple_query("begin; select nextval('s') = currval('s'); commit")
            .await
            .unwrap(),
    );
    assert_eq!(r, vec![vec![Some("t".to_string())]]);
}

async fn next(c: &tokio_postgres::Client) -> i64 {
    let r = c.query_one("select nextval('s')", &[]).await.unwrap();
    r.get(0)
}

/// PostgreSQL names a session's own notifications by the pid it gave the session. Under
/// transaction pooling that pid is the proxy's, not a server connection's, so the proxy names
/// them so (a client telling its own notifications from others' compares the two).
async fn a_sessions_own_notification_names_it_by_its_pid(shards: usize) {
    use common::raw::{message, query, Raw};
    let tc = cluster(shards, "size = 2").await;
    let (mut raw, greeting) = Raw::login(tc.port).await;
    let pid_of = |body: &[u8]| i32::from_be_bytes(body[..4].try_into().unwrap());
    let pid = greeting
        .iter()
        .find(|m| m.0 == b'K')
        .map(|m| pid_of(&m.1))
        .expect("BackendKeyData");
    raw.send(&query("listen jobs")).await;
    raw.until_ready().await;
    raw.send(&query("notify jobs, 'self'")).await;
    let answer = raw.until_ready().await;
    let own = answer
        .iter()
        .find(|m| m.0 == b'A')
        .expect("own notification");
    assert_eq!(pid_of(&own.1), pid, "{shards} shard(s)");
    // Another session's notification keeps that session's pid.
    let other = tc.client().await;
    other.simple_query("notify jobs, 'other'").await.unwrap();
    let (tag, body) = raw.recv().await.expect("the other session's notification");
    assert_eq!(tag, b'A');
    assert_ne!(pid_of(&body), pid);
    raw.send(&message(b'X', &[])).await;
    assert!(raw.is_closed().await);
}

/// A login's greeting reports the session's own values even on a pooled connection that
/// already reported them to an earlier session: PostgreSQL sends a ParameterStatus only for a
/// value that differs from the last one it sent on that connection, so `dmy, iso` after
/// `iso, dmy` (both `ISO, DMY`) makes it send none. With one connection in the pool every
/// login reuses it. One shard also takes other client encodings (`euc-jp` after `eucjp`).
async fn the_greeting_reports_what_a_reused_connection_reported_before(shards: usize) {
    let tc = cluster(shards, "size = 1").await;
    let mut cases = vec![
        ("datestyle", "iso, dmy", "DateStyle", "ISO, DMY"),
        ("datestyle", "dmy, iso", "DateStyle", "ISO, DMY"),
        ("datestyle", "ISO,DMY", "DateStyle", "ISO, DMY"),
        ("datestyle", "iso, mdy", "DateStyle", "ISO, MDY"),
    ];
    if shards == 1 {
        cases.extend([
            ("client_encoding", "eucjp", "client_encoding", "EUC_JP"),
            ("client_encoding", "euc-jp", "client_encoding", "EUC_JP"),
            ("client_encoding", "utf8", "client_encoding", "UTF8"),
        ]);
    }
    for (parameter, spelling, reported_as, expected) in cases {
        let (reported, shown) = greeting_and_show(&tc, parameter, spelling, reported_as).await;
        assert_eq!(reported.as_deref(), Some(expected), "login with {spelling}");
        assert_eq!(shown, expected, "{spelling}");
    }
}

/// Logs in with `parameter` set to `value`: what the greeting reports as `reported_as`, and
/// what SHOW says.
async fn greeting_and_show(
    tc: &TestCluster,
    parameter: &str,
    value: &str,
    reported_as: &str,
) -> (Option<String>, String) {
    use common::raw::{message, query, startup_packet, Raw};
    let mut raw = Raw::connect(tc.port).await;
    let startup = [
        ("user", "trustuser"),
        ("database", "postgres"),
        (parameter, value),
    ];
    raw.send(&startup_packet(196608, &startup)).await;
    let greeting = raw.until_ready().await;
    let reported = greeting.iter().find_map(|(tag, body)| {
        let mut parts = body.split(|b| *b == 0);
        let name = parts.next()?;
        let value = parts.next()?;
        (*tag == b'S' && name == reported_as.as_bytes())
            .then(|| String::from_utf8_lossy(value).to_string())
    });
    raw.send(&query(&format!("show {parameter}"))).await;
    let answer = raw.until_ready().await;
    let row = &answer
        .iter()
        .find(|(tag, _)| *tag == b'D')
        .expect("a row")
        .1;
    // One column: a count, a length, the value.
    let shown = String::from_utf8_lossy(&row[6..]).to_string();
    raw.send(&message(b'X', &[])).await;
    assert!(raw.is_closed().await);
    (reported, shown)
}

async fn cluster(shards: usize, pool: &str) -> TestCluster {
    let tc = TestCluster::start_unlike(shards, "", &format!("{TABLES}[pool]\n{pool}\n")).await;
    let values: Vec<String> = (1..=60).map(|i| format!("({i}, {})", i * 10)).collect();
    tc.client()
        .await
        .batch_execute(&format!(
            "create table items (id bigint primary key, qty int);
             insert into items values {}",
            values.join(", ")
        ))
        .await
        .unwrap();
    tc
}

/// Rows of `items`, through the proxy.
async fn items(c: &tokio_postgres::Client) -> i64 {
    c.query_one("select count(*) from items", &[])
        .await
        .unwrap()
        .get(0)
}

/// Server connections the proxy holds on each shard for sessions.
async fn per_shard(tc: &TestCluster) -> Vec<i64> {
    tc.count_on_each_shard(
        "select count(*) from pg_stat_activity where backend_type = 'client backend' \
         and application_name not in ('shardgate-control', 'shardgate-test-count')",
    )
    .await
}

/// A raw client that prepared statement `q` (`sql`) through the protocol.
async fn raw_with_statement(tc: &TestCluster, sql: &str) -> common::raw::Raw {
    use common::raw::{message, Raw};
    let (mut raw, _) = Raw::login(tc.port).await;
    let mut body = format!("q\0{sql}\0").into_bytes();
    body.extend_from_slice(&[0, 0]);
    raw.send(&[message(b'P', &body), message(b'S', b"")].concat())
        .await;
    let answer = raw.until_ready().await;
    assert_eq!(answer.first().map(|m| m.0), Some(b'1'), "{answer:?}");
    raw
}

/// How many statements a simple Query's answer says ran (its CommandCompletes).
fn command_completes(messages: &[tokio_postgres::SimpleQueryMessage]) -> usize {
    messages
        .iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::CommandComplete(_)))
        .count()
}

/// Another client, in a transaction that holds the connection the pool hands out next (the
/// one used last), so that a session's next batch runs on a connection it never used.
async fn holding_the_last_connection(tc: &TestCluster) -> tokio_postgres::Client {
    let holder = tc.client().await;
    holder
        .batch_execute("begin; select count(*) from items")
        .await
        .unwrap();
    holder
}

/// Sends a batch that fails first (a division by zero), then `rest`, then Sync: PostgreSQL
/// skips `rest`. Returns the answer, after checking the error is the division's.
async fn after_a_failure(raw: &mut common::raw::Raw, rest: &[Vec<u8>]) -> Vec<(u8, Vec<u8>)> {
    use common::raw::message;
    let mut batch = [
        message(b'P', b"\0select 1/0\0\0\0"),
        message(b'B', b"\0\0\0\0\0\0\0\0"),
        message(b'E', b"\0\0\0\0\0"),
    ]
    .concat();
    batch.extend(rest.concat());
    batch.extend(message(b'S', b""));
    raw.send(&batch).await;
    let answer = raw.until_ready().await;
    let error = answer
        .iter()
        .find(|m| m.0 == b'E')
        .expect("the division fails");
    assert_eq!(common::raw::field(&error.1, b'C').as_deref(), Some("22012"));
    answer
}

async fn forty_clients_keep_their_own_settings_over_four_connections(shards: usize) {
    let tc = cluster(shards, "size = 4").await;
    let url = tc.url("app", "secret");
    let mut tasks = Vec::new();
    for i in 0..40 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let c = connect(&url).await.unwrap();
            let mine = format!("{}kB", 100 + i);
            c.batch_execute(&format!("set work_mem = '{mine}'"))
                .await
                .unwrap();
            // A comment separates words as a blank does, for PostgreSQL and for the proxy.
            let set = if i % 2 == 0 { "set " } else { "set/* mine */" };
            c.batch_execute(&format!("{set}application_name = 'client{i}'"))
                .await
                .unwrap();
            for round in 0..10i64 {
                // A SET in a transaction that rolls back is undone, as in PostgreSQL.
                c.batch_execute("begin; set work_mem = '64MB'; select 1 from items where id = 1; rollback")
                    .await
                    .unwrap();
                let shown = rows(&c.simple_query("show work_mem").await.unwrap());
                assert_eq!(shown[0][0].as_deref(), Some(mine.as_str()), "client {i}");
                // A point read, a read of every shard, and the settings seen by the shard
                // that serves the client's key.
                let key = (i * 7 + round) % 60 + 1;
                let row = c
                    .query_one(
                        "select qty, current_setting('work_mem'), current_setting('application_name') from items where id = $1",
                        &[&key],
                    )
                    .await
                    .unwrap();
                assert_eq!(row.get::<_, i32>(0) as i64, key * 10);
                assert_eq!(row.get::<_, String>(1), mine, "client {i} on key {key}");
                assert_eq!(row.get::<_, String>(2), format!("client{i}"));
                let total: i64 = c
                    .query_one("select sum(qty) from items", &[])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(total, 18300);
            }
            c
        }));
    }
    // While they run, no shard serves the sessions with more than the pool's size.
    let mut most = 0;
    let mut clients = Vec::new();
    for t in tasks {
        most = most.max(per_shard(&tc).await.into_iter().max().unwrap());
        clients.push(t.await.unwrap());
    }
    assert!(
        most <= 4,
        "a shard saw {most} session connections with size = 4"
    );
    // A RESET goes back to the server's default, on whichever connection serves it next.
    let c = &clients[0];
    c.batch_execute("reset work_mem").await.unwrap();
    let default = rows(
        &tc.direct(shards - 1)
            .await
            .simple_query("show work_mem")
            .await
            .unwrap(),
    );
    let shown = rows(&c.simple_query("show work_mem").await.unwrap());
    assert_eq!(shown, default);
}

async fn prepared_statements_follow_the_client_across_connections(shards: usize) {
    let tc = cluster(shards, "size = 2").await;
    let url = tc.url("app", "secret");
    let mut tasks = Vec::new();
    for i in 0..16i64 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let c = connect(&url).await.unwrap();
            // tokio-postgres names its statements s0, s1 ... in every session alike.
            let by_key = c
                .prepare("select qty from items where id = $1")
                .await
                .unwrap();
            let sum = c
                .prepare("select sum(qty) from items where id <= $1")
                .await
                .unwrap();
            for round in 0..12 {
                let key = (i * 5 + round) % 60 + 1;
                let qty: i32 = c.query_one(&by_key, &[&key]).await.unwrap().get(0);
                assert_eq!(qty as i64, key * 10);
                let s: i64 = c.query_one(&sum, &[&3i64]).await.unwrap().get(0);
                assert_eq!(s, 60);
            }
            // Closed, then a new statement under the name tokio-postgres gives next.
            drop(by_key);
            let again = c
                .prepare("select id from items where id = $1")
                .await
                .unwrap();
            let id: i64 = c.query_one(&again, &[&(i + 1)]).await.unwrap().get(0);
            assert_eq!(id, i + 1);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // SQL DEALLOCATE of a protocol-level statement by the client's name.
    let c = tc.client().await;
    c.batch_execute("deallocate all").await.unwrap();
    let e = c.batch_execute("deallocate nosuch").await.unwrap_err();
    assert_eq!(code(&e), "26000");
}

/// PostgreSQL fixes a prepared statement's result columns: after DDL that changes them it
/// refuses the statement (0A000) and drivers prepare it again. Prepared again by the proxy on
/// another shard or server connection, it must not silently take the new columns, which the
/// client would decode with the old ones.
async fn a_statement_whose_columns_changed_is_refused_on_every_connection(shards: usize) {
    let tc = cluster(shards, "size = 2").await;
    let c = tc.client().await;
    let by_key = c
        .prepare("select * from items where id = $1")
        .await
        .unwrap();
    let every = c.prepare("select * from items order by id").await.unwrap();
    let unchanged = c
        .prepare("select id, qty from items where id = $1")
        .await
        .unwrap();
    c.batch_execute("alter table items add column note text")
        .await
        .unwrap();
    // Another client in a transaction holds the connection this one used last, so the
    // statements must be prepared again on another.
    let other = tc.client().await;
    other.batch_execute("begin; select 1").await.unwrap();
    for key in 1..=60i64 {
        let e = c.query(&by_key, &[&key]).await.unwrap_err();
        assert_eq!(code(&e), "0A000", "key {key}: {e}");
        let db = common::db_error(&e);
        assert_eq!(db.message(), "cached plan must not change result type");
        // Drivers (asyncpg) recognise it by PostgreSQL's routine and prepare again.
        assert_eq!(db.routine(), Some("RevalidateCachedQuery"));
        let row = c.query_one(&unchanged, &[&key]).await.unwrap();
        assert_eq!(row.get::<_, i32>(1) as i64, key * 10);
    }
    let e = c.query(&every, &[]).await.unwrap_err();
    assert_eq!(code(&e), "0A000", "{e}");
    other.batch_execute("commit").await.unwrap();
    // In a transaction the refusal aborts it, as PostgreSQL's does.
    c.batch_execute("begin").await.unwrap();
    let e = c.query(&every, &[]).await.unwrap_err();
    assert_eq!(code(&e), "0A000", "{e}");
    let e = c.query_one(&unchanged, &[&1i64]).await.unwrap_err();
    assert_eq!(code(&e), "25P02", "{e}");
    c.batch_execute("rollback").await.unwrap();
    // Prepared anew, the statements have the new columns on every shard.
    let by_key = c
        .prepare("select * from items where id = $1")
        .await
        .unwrap();
    for key in 1..=60i64 {
        let row = c.query_one(&by_key, &[&key]).await.unwrap();
        assert_eq!(row.len(), 3);
        assert_eq!(row.get::<_, Option<String>>(2), None);
    }
    let every = c.prepare("select * from items order by id").await.unwrap();
    let all = c.query(&every, &[]).await.unwrap();
    assert_eq!(all.len(), 60);
    assert!(all.iter().all(|r| r.len() == 3));
}

async fn state_that_lives_on_a_connection_pins_its_session(shards: usize) {
    // Pinned sessions keep their connections: the listener and the lock holder take two.
    let tc = cluster(shards, "size = 3").await;
    // LISTEN: the notification reaches the listener, whose connection stays its own.
    let (listener, mut conn) =
        tokio_postgres::connect(&tc.url("app", "secret"), tokio_postgres::NoTls)
            .await
            .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        use futures_util::StreamExt;
        while let Some(Ok(m)) = stream.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                let _ = tx.send(n.payload().to_string());
            }
        }
    });
    // After a comment that a carriage return ends, as PostgreSQL reads it.
    listener
        .batch_execute("-- the queue\rlisten jobs")
        .await
        .unwrap();
    // Other clients keep working with the rest of the pool.
    for _ in 0..3 {
        let other = tc.client().await;
        other.batch_execute("notify jobs, 'one'").await.unwrap();
    }
    listener.batch_execute("select 1").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the notification arrives")
        .unwrap();
    assert_eq!(got, "one");

    // A session advisory lock outlives its transaction and stays the holder's.
    let holder = tc.client().await;
    let other = tc.client().await;
    holder
        .batch_execute("select pg_advisory_lock(7)")
        .await
        .unwrap();
    holder.batch_execute("select 1").await.unwrap();
    let free: bool = other
        .query_one("select pg_try_advisory_lock(7)", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!free, "the lock is still held by its session");
    let released: bool = holder
        .query_one("select pg_advisory_unlock(7)", &[])
        .await
        .unwrap()
        .get(0);
    assert!(released, "the holder still holds it, on its own connection");
    drop(holder);
    drop(other);

    // A cursor WITH HOLD is read after its transaction.
    let c = tc.client().await;
    c.batch_execute(
        "begin; declare held cursor with hold for select id from items where id = 3; commit",
    )
    .await
    .unwrap();
    c.batch_execute("select 1").await.unwrap();
    let r = rows(&c.simple_query("fetch all from held").await.unwrap());
    assert_eq!(r, vec![vec![Some("3".to_string())]]);

    // Temporary tables are refused on several shards, pooled or not; on one shard a temporary
    // table pins its session, and outlives its transaction.
    let made = c.batch_execute("create temp table t (x int)").await;
    if shards > 1 {
        assert_eq!(code(&made.unwrap_err()), "0A000");
    } else {
        made.unwrap();
        c.batch_execute("insert into t values (1)").await.unwrap();
        for _ in 0..3 {
            let other = tc.client().await;
            other.batch_execute("select 1").await.unwrap();
        }
        let r = rows(&c.simple_query("select x from t").await.unwrap());
        assert_eq!(r, vec![vec![Some("1".to_string())]]);
    }
    drop(c);

    // A setting changed by set_config() stays with its session's connection.
    let d = tc.client().await;
    d.batch_execute("select set_config('work_mem', '2345kB', false)")
        .await
        .unwrap();
    for _ in 0..5 {
        let other = tc.client().await;
        let shown = rows(&other.simple_query("show work_mem").await.unwrap());
        assert_ne!(shown[0][0].as_deref(), Some("2345kB"));
    }
    let shown = rows(&d.simple_query("show work_mem").await.unwrap());
    assert_eq!(shown[0][0].as_deref(), Some("2345kB"));
}

async fn a_client_that_waits_too_long_for_a_connection_gets_53300(shards: usize) {
    let tc = cluster(shards, "size = 1\ncheckout_timeout_secs = 1").await;
    let holder = tc.client().await;
    // An open transaction on every shard holds the only connection of each.
    holder
        .batch_execute("begin; select sum(qty) from items")
        .await
        .unwrap();
    // Logging in needs a connection to the first shard.
    let e = connect(&tc.url("app", "secret")).await.unwrap_err();
    assert_eq!(code(&e), "53300", "{e}");
    let db = common::db_error(&e);
    assert!(
        db.message().contains("no connection to shard s0"),
        "{}",
        db.message()
    );
    assert!(db.hint().is_some());
    // The holder is unaffected, and once it commits the next client gets in.
    holder.batch_execute("commit").await.unwrap();
    let next = tc.client().await;
    assert_eq!(items(&next).await, 60);
}

async fn a_cancel_reaches_the_connection_running_the_query(shards: usize) {
    let tc = cluster(shards, "size = 2").await;
    let c = tc.client().await;
    // Some transactions first, so the connection that runs the sleep is not the login's.
    for i in 1..=5i64 {
        c.query_one("select qty from items where id = $1", &[&i])
            .await
            .unwrap();
    }
    let token = c.cancel_token();
    let cancel = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    });
    let e = c
        .query("select pg_sleep(30) from items where id = 42", &[])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "57014");
    cancel.await.unwrap();
    // The session goes on.
    assert_eq!(items(&c).await, 60);
}

async fn session_mode_keeps_a_connection_per_shard_for_each_client(shards: usize) {
    let tc = cluster(
        shards,
        "mode = \"session\"\nsize = 2\ncheckout_timeout_secs = 1",
    )
    .await;
    // Two clients fill the pool (once the setup client's session has ended).
    let within = Duration::from_secs(10);
    let a = tc.client_eventually(within).await.unwrap();
    let b = tc.client_eventually(within).await.unwrap();
    a.batch_execute("set work_mem = '1234kB'").await.unwrap();
    let e = connect(&tc.url("app", "secret")).await.unwrap_err();
    assert_eq!(code(&e), "53300");
    let shown = rows(&a.simple_query("show work_mem").await.unwrap());
    assert_eq!(shown[0][0].as_deref(), Some("1234kB"));
    let until = std::time::Instant::now() + within;
    let mut held = per_shard(&tc).await;
    while held != vec![2; shards] && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        held = per_shard(&tc).await;
    }
    assert_eq!(held, vec![2; shards]);
    drop(b);
    let c = tc.client_eventually(Duration::from_secs(10)).await;
    assert!(c.is_some(), "a client gets in once another leaves");
}

/// PostgreSQL's RESET goes back to the value the client's startup packet gave, which a pooled
/// connection only has because the proxy replayed it.
async fn a_reset_goes_back_to_the_clients_startup_parameters(shards: usize) {
    let tc = cluster(shards, "size = 2").await;
    let url = format!("{}?application_name=from_startup", tc.url("app", "secret"));
    let c = connect(&url).await.unwrap();
    for reset in [
        "reset all",
        "reset application_name",
        "begin; reset application_name; commit",
    ] {
        c.batch_execute("set application_name = 'changed'")
            .await
            .unwrap();
        // The connection goes back to the pool, and this client's next transaction gets it
        // again (the most recently returned one goes first).
        c.batch_execute(reset).await.unwrap();
        let shown = rows(&c.simple_query("show application_name").await.unwrap());
        assert_eq!(
            shown[0][0].as_deref(),
            Some("from_startup"),
            "after {reset}"
        );
    }
    // Within the transaction that resets, and in the Query that resets, as PostgreSQL shows it.
    for (reset, show) in [
        (
            "begin; set application_name = 'changed'; reset all",
            "show application_name",
        ),
        ("begin", "reset application_name; show application_name"),
        (
            "set application_name = 'changed'",
            "reset all; show application_name",
        ),
    ] {
        c.batch_execute(reset).await.unwrap();
        let shown = rows(&c.simple_query(show).await.unwrap());
        assert_eq!(
            shown.last().unwrap()[0].as_deref(),
            Some("from_startup"),
            "{reset}, then {show}"
        );
        c.batch_execute("commit").await.ok();
    }
    // The client's answers and error positions are as if the proxy had added nothing.
    let sql = "reset all -- back to the start\n; show application_name; select nosuch from items";
    let e = c.batch_execute(sql).await.unwrap_err();
    let db = e.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "42703");
    let at = sql.find("nosuch").unwrap() as u32 + 1;
    match db.position() {
        Some(p) => assert_eq!(p, &tokio_postgres::error::ErrorPosition::Original(at)),
        // On several shards a scattered read runs a text the proxy wrote, and its errors
        // carry no position rather than a wrong one.
        None => assert!(shards > 1, "the relay keeps the position"),
    }
    let shown = c
        .simple_query(&sql[..sql.find("; select").unwrap()])
        .await
        .unwrap();
    let completes = command_completes(&shown);
    assert_eq!(
        completes, 2,
        "the proxy's own SETs are not answered to the client"
    );
    let shown = rows(&shown);
    assert_eq!(shown[0][0].as_deref(), Some("from_startup"));
    // A RESET and an EXECUTE of the session's statement in one Query, on a connection that
    // lacks the statement: both find what PostgreSQL would.
    c.batch_execute("PREPARE q AS select 7").await.unwrap();
    c.batch_execute("set application_name = 'changed'")
        .await
        .unwrap();
    let holder = holding_the_last_connection(&tc).await;
    let got = c
        .simple_query("reset application_name; EXECUTE q; show application_name")
        .await
        .unwrap();
    let completes = command_completes(&got);
    assert_eq!(completes, 3, "the proxy's own statements are not answered");
    let got: Vec<_> = rows(&got).into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(got, [Some("7".into()), Some("from_startup".into())]);
    holder.batch_execute("rollback").await.unwrap();
}

/// A statement prepared on one server connection and used on another is prepared there first,
/// within the client's batch. If an earlier message of that batch fails, the shard skips the
/// proxy's Parse with the rest: the next use on that connection must prepare it again rather
/// than assume it is there (PostgreSQL would answer 26000).
async fn a_statement_whose_parse_was_skipped_is_prepared_again(shards: usize) {
    use common::raw::message;
    let tc = cluster(shards, "size = 2").await;
    let mut raw = raw_with_statement(&tc, "select qty from items where id = $1").await;
    let sync = message(b'S', b"");

    // Another client holds the connection that has the statement, so the next batch runs on
    // a new one.
    let holder = holding_the_last_connection(&tc).await;

    let bind_q = message(b'B', b"\0q\0\0\0\0\x01\0\0\0\x017\0\0");
    let execute = message(b'E', b"\0\0\0\0\0");
    after_a_failure(&mut raw, &[bind_q.clone(), execute.clone()]).await;

    raw.send(&[bind_q, execute, sync].concat()).await;
    let answer = raw.until_ready().await;
    if let Some(e) = answer.iter().find(|m| m.0 == b'E') {
        panic!(
            "the statement is usable: {:?}",
            common::raw::field(&e.1, b'M')
        );
    }
    let row = answer.iter().find(|m| m.0 == b'D').expect("a row");
    assert!(row.1.ends_with(b"70"), "{row:?}");
    holder.batch_execute("rollback").await.unwrap();
}

/// SET SESSION AUTHORIZATION lives on the server connection and RESET ALL does not undo it,
/// so a session that runs it keeps its connections to the end, even when it is one statement
/// of several in a Query; and a replay starts from the login's identity. One connection per
/// shard, so that the next client gets whatever connection the first one left behind.
async fn a_changed_session_user_never_reaches_another_client(shards: usize) {
    let tc = cluster(shards, "size = 1").await;
    let url = tc.url("app", "secret");
    let who = |c: tokio_postgres::Client| async move {
        let r = c
            .query_one("select session_user::text, current_user::text", &[])
            .await
            .unwrap();
        (r.get::<_, String>(0), r.get::<_, String>(1))
    };
    let (login, _) = who(connect(&url).await.unwrap()).await;
    tc.client()
        .await
        .batch_execute("create role sg_someone_else")
        .await
        .unwrap();

    // Set and reset in one Query: the client is itself again afterwards.
    let a = connect(&url).await.unwrap();
    a.batch_execute(
        "select 1; set session authorization sg_someone_else; reset session authorization",
    )
    .await
    .unwrap();
    assert_eq!(who(a).await, (login.clone(), login.clone()));

    // Set and left set: only this client runs as that role, and the next one does not.
    let b = connect(&url).await.unwrap();
    b.batch_execute("select 1; set session authorization sg_someone_else")
        .await
        .unwrap();
    let shown = rows(&b.simple_query("select current_user").await.unwrap());
    assert_eq!(shown[0][0].as_deref(), Some("sg_someone_else"));
    drop(b);
    let c = connect(&url).await.unwrap();
    assert_eq!(who(c).await, (login.clone(), login.clone()));
    tc.client()
        .await
        .batch_execute("drop role sg_someone_else")
        .await
        .unwrap();
}

/// SQL DEALLOCATE of a statement that another server connection holds, after DDL made the
/// statement impossible to prepare again: PostgreSQL just deallocates it, and so must the
/// proxy, on whichever connection serves the DEALLOCATE. (A Parse sent ahead of it to give the
/// connection the statement would fail, and PostgreSQL then skips the DEALLOCATE too, waiting
/// for a Sync: the client would wait forever.)
async fn a_deallocate_answers_where_its_statement_cannot_be_prepared_again(shards: usize) {
    use common::raw::message;
    let tc = cluster(shards, "size = 2").await;
    let admin = tc.client().await;
    admin
        .batch_execute("alter table items add column passing int")
        .await
        .unwrap();
    let mut raw = raw_with_statement(&tc, "select passing from items where id = $1").await;
    let sync = message(b'S', b"");

    admin
        .batch_execute("alter table items drop column passing")
        .await
        .unwrap();
    // Another client holds the connection that has the statement, so the DEALLOCATE runs on
    // one that lacks it.
    let holder = holding_the_last_connection(&tc).await;

    let mut query = b"DEALLOCATE q".to_vec();
    query.push(0);
    raw.send(&message(b'Q', &query)).await;
    let answer = raw.until_ready().await;
    assert_eq!(
        answer.last().map(|m| m.0),
        Some(b'Z'),
        "no answer: {answer:?}"
    );
    if let Some(e) = answer.iter().find(|m| m.0 == b'E') {
        panic!("DEALLOCATE failed: {:?}", common::raw::field(&e.1, b'M'));
    }
    let tags: Vec<&[u8]> = answer
        .iter()
        .filter(|m| m.0 == b'C')
        .map(|m| &m.1[..])
        .collect();
    assert_eq!(tags, [&b"DEALLOCATE\0"[..]], "{answer:?}");

    // It is gone, as PostgreSQL would have it.
    let bind = message(b'B', b"\0q\0\0\0\0\x01\0\0\0\x017\0\0");
    raw.send(&[bind, message(b'E', b"\0\0\0\0\0"), sync].concat())
        .await;
    let answer = raw.until_ready().await;
    let error = answer.iter().find(|m| m.0 == b'E').expect("an error");
    assert_eq!(common::raw::field(&error.1, b'C').as_deref(), Some("26000"));
    holder.batch_execute("rollback").await.unwrap();
}

/// PostgreSQL skips everything after an error up to the Sync, a Close of a statement included:
/// the statement lives on, and the client may go on using it (and may not Parse its name
/// again). The proxy must not take such a Close as done.
async fn a_close_skipped_after_an_error_leaves_the_statement(shards: usize) {
    use common::raw::{field, message};
    let tc = cluster(shards, "size = 2").await;
    let mut raw = raw_with_statement(&tc, "select qty from items where id = $1").await;
    let sync = message(b'S', b"");
    let parse = message(b'P', b"q\0select qty from items where id = $1\0\0\0");

    let execute = message(b'E', b"\0\0\0\0\0");
    let answer = after_a_failure(&mut raw, &[message(b'C', b"Sq\0")]).await;
    assert!(answer.iter().all(|m| m.0 != b'3'), "the Close was skipped");

    // Another client holds the connection that has the statement, so the next batches run
    // on a new one.
    let holder = holding_the_last_connection(&tc).await;
    let bind = message(b'B', b"\0q\0\0\0\0\x01\0\0\0\x017\0\0");
    raw.send(&[bind, execute, sync.clone()].concat()).await;
    let answer = raw.until_ready().await;
    if let Some(e) = answer.iter().find(|m| m.0 == b'E') {
        panic!("the statement is gone: {:?}", field(&e.1, b'M'));
    }
    let row = answer.iter().find(|m| m.0 == b'D').expect("a row");
    assert!(row.1.ends_with(b"70"), "{row:?}");

    // Its name is still taken, as PostgreSQL has it.
    raw.send(&[parse, sync.clone()].concat()).await;
    let answer = raw.until_ready().await;
    let error = answer.iter().find(|m| m.0 == b'E').expect("42P05");
    assert_eq!(field(&error.1, b'C').as_deref(), Some("42P05"));

    // A Close that is carried out ends it.
    raw.send(&[message(b'C', b"Sq\0"), sync].concat()).await;
    let answer = raw.until_ready().await;
    assert_eq!(answer.first().map(|m| m.0), Some(b'3'), "{answer:?}");
    holder.batch_execute("rollback").await.unwrap();
}

/// PostgreSQL keeps protocol-level and SQL-level prepared statements in one namespace, so SQL
/// `EXECUTE` runs a statement a driver prepared with Parse: on the connection that has it, and
/// on one that never saw it.
async fn sql_execute_runs_a_statement_the_driver_prepared(shards: usize) {
    use common::raw::{field, message};
    let tc = cluster(shards, "size = 2").await;
    let mut raw = raw_with_statement(&tc, "select qty from items where id = $1").await;
    let sync = message(b'S', b"");

    let query = |sql: &str| {
        let mut body = sql.as_bytes().to_vec();
        body.push(0);
        message(b'Q', &body)
    };
    let qty = |answer: &[(u8, Vec<u8>)]| -> String {
        if let Some(e) = answer.iter().find(|m| m.0 == b'E') {
            panic!("EXECUTE failed: {:?}", field(&e.1, b'M'));
        }
        let row = answer.iter().find(|m| m.0 == b'D').expect("a row");
        String::from_utf8_lossy(&row.1[row.1.len() - 2..]).into_owned()
    };
    raw.send(&query("EXECUTE q(3)")).await;
    assert_eq!(qty(&raw.until_ready().await), "30");

    // Another client holds the connection that has the statement.
    let holder = holding_the_last_connection(&tc).await;
    raw.send(&query("/* c */ execute Q (7);")).await;
    let answer = raw.until_ready().await;
    assert_eq!(qty(&answer), "70");
    let tags: Vec<&[u8]> = answer
        .iter()
        .filter(|m| m.0 == b'C')
        .map(|m| &m.1[..])
        .collect();
    assert_eq!(
        tags,
        [&b"SELECT 1\0"[..]],
        "only the client's answer: {answer:?}"
    );
    // The connection now has it: the protocol-level Bind finds it there too.
    let bind = message(b'B', b"\0q\0\0\0\0\x01\0\0\0\x019\0\0");
    raw.send(&[bind, message(b'E', b"\0\0\0\0\0"), sync].concat())
        .await;
    assert_eq!(qty(&raw.until_ready().await), "90");

    // A name the session never prepared is PostgreSQL's to refuse, under the client's name.
    raw.send(&query("EXECUTE nothing(1)")).await;
    let answer = raw.until_ready().await;
    let error = answer.iter().find(|m| m.0 == b'E').expect("26000");
    assert_eq!(field(&error.1, b'C').as_deref(), Some("26000"));
    assert!(field(&error.1, b'M').unwrap().contains("\"nothing\""));
    holder.batch_execute("rollback").await.unwrap();

    // A Parse that declared its parameter's type (int8) is prepared with it.
    let mut body = b"r\0select qty from items where id = $1\0\0\x01".to_vec();
    body.extend_from_slice(&20u32.to_be_bytes());
    raw.send(&[message(b'P', &body), message(b'S', b"")].concat())
        .await;
    let answer = raw.until_ready().await;
    assert_eq!(answer.first().map(|m| m.0), Some(b'1'), "{answer:?}");
    let holder = holding_the_last_connection(&tc).await;
    raw.send(&query("EXECUTE r('5')")).await;
    assert_eq!(qty(&raw.until_ready().await), "50");
    holder.batch_execute("rollback").await.unwrap();

    // A Parse that left its parameter's type open: PostgreSQL inferred text, and EXECUTE
    // gives the argument that type on a connection that never prepared the statement too.
    raw.send(
        &[
            message(b'P', b"t\0select $1 as v\0\0\0"),
            message(b'S', b""),
        ]
        .concat(),
    )
    .await;
    let answer = raw.until_ready().await;
    assert_eq!(answer.first().map(|m| m.0), Some(b'1'), "{answer:?}");
    let holder = holding_the_last_connection(&tc).await;
    raw.send(&query("EXECUTE t(5)")).await;
    let answer = raw.until_ready().await;
    assert!(!answer.iter().any(|m| m.0 == b'E'), "{answer:?}");
    let columns = answer.iter().find(|m| m.0 == b'T').expect("a description");
    let text_oid = 25u32.to_be_bytes();
    assert_eq!(
        &columns.1[10..14],
        &text_oid,
        "{shards} shard(s): {answer:?}"
    );
    let row = answer.iter().find(|m| m.0 == b'D').expect("a row");
    assert_eq!(&row.1[row.1.len() - 1..], b"5");
    holder.batch_execute("rollback").await.unwrap();

    // A driver's Parse of EXECUTE (asyncpg's fetch('EXECUTE name')) is described with the
    // statement's columns, and runs.
    raw.send(
        &[
            message(b'P', b"two\0select 2 as y\0\0\0"),
            message(b'S', b""),
        ]
        .concat(),
    )
    .await;
    raw.until_ready().await;
    raw.send(
        &[
            message(b'P', b"\0EXECUTE two\0\0\0"),
            message(b'D', b"S\0"),
            message(b'B', b"\0\0\0\0\0\0\0\0"),
            message(b'E', b"\0\0\0\0\0"),
            message(b'S', b""),
        ]
        .concat(),
    )
    .await;
    let answer = raw.until_ready().await;
    let tags: Vec<u8> = answer.iter().map(|m| m.0).collect();
    assert_eq!(tags, b"1tT2DCZ", "{shards} shard(s): {answer:?}");
    // A second Parse of a live name is refused under the client's name for it.
    raw.send(&[message(b'P', b"two\0select 3\0\0\0"), message(b'S', b"")].concat())
        .await;
    let answer = raw.until_ready().await;
    let error = answer.iter().find(|m| m.0 == b'E').expect("42P05");
    assert_eq!(field(&error.1, b'C').as_deref(), Some("42P05"));
    assert_eq!(
        field(&error.1, b'M').as_deref(),
        Some("prepared statement \"two\" already exists"),
        "{shards} shard(s)"
    );
}

/// A statement prepared with SQL PREPARE follows its session from one server connection to
/// the next as one prepared with Parse does: the session is not pinned, and EXECUTE, a
/// driver's Parse of EXECUTE, a protocol Bind and DEALLOCATE find it wherever they run, while
/// other sessions never see it.
async fn sql_prepare_follows_its_session_across_connections(shards: usize) {
    use common::raw::{field, message, Raw};
    let tc = cluster(shards, "size = 2\ncheckout_timeout_secs = 2").await;
    // Everybody logs in first: a login needs a connection too.
    let c = tc.client().await;
    let other = tc.client().await;
    let (h1, h2) = (tc.client().await, tc.client().await);
    let (mut raw, _) = Raw::login(tc.port).await;
    async fn qty(c: &tokio_postgres::Client, sql: &str) -> String {
        rows(&c.simple_query(sql).await.unwrap())[0][0]
            .clone()
            .unwrap()
    }
    c.batch_execute("PREPARE q (bigint) AS select qty from items where id = $1")
        .await
        .unwrap();
    assert_eq!(qty(&c, "EXECUTE q(3)").await, "30");

    // Not pinned: two other sessions hold both connections at once.
    for h in [&h1, &h2] {
        h.batch_execute("begin; select count(*) from items")
            .await
            .unwrap();
    }
    h2.batch_execute("rollback").await.unwrap();
    // The session's next statements run on the connection h2 used, or on the one the
    // statement was prepared on: either way they find it.
    assert_eq!(qty(&c, "/* c */ execute Q (7);").await, "70");
    let r = c.query("EXECUTE q(5)", &[]).await.unwrap();
    assert_eq!(r[0].get::<_, i32>(0), 50);
    h1.batch_execute("rollback").await.unwrap();

    // Another session's statement of the same name is its own.
    let e = other.batch_execute("EXECUTE q(3)").await.unwrap_err();
    assert_eq!(code(&e), "26000", "{e}");
    other
        .batch_execute("PREPARE q AS select qty + 1 from items where id = $1")
        .await
        .unwrap();
    assert_eq!(qty(&other, "EXECUTE q(3)").await, "31");
    assert_eq!(qty(&c, "EXECUTE q(3)").await, "30");

    // A name in use is refused as PostgreSQL refuses it, and the statement stays.
    let e = c.batch_execute("PREPARE q AS select 1").await.unwrap_err();
    assert_eq!(code(&e), "42P05", "{e}");
    assert!(common::db_error(&e).message().contains("\"q\""), "{e}");
    assert_eq!(qty(&c, "EXECUTE q(4)").await, "40");

    // A protocol Bind of a SQL-prepared statement, on a connection that never saw it (on
    // several shards the planner binds only statements prepared with Parse).
    if shards == 1 {
        let sync = message(b'S', b"");
        let query = |sql: &str| message(b'Q', format!("{sql}\0").as_bytes());
        raw.send(&query(
            "PREPARE p (bigint) AS select qty from items where id = $1",
        ))
        .await;
        let answer = raw.until_ready().await;
        assert!(answer.iter().all(|m| m.0 != b'E'), "{answer:?}");
        let holder = holding_the_last_connection(&tc).await;
        let bind = message(b'B', b"\0p\0\0\0\0\x01\0\0\0\x019\0\0");
        raw.send(&[bind, message(b'E', b"\0\0\0\0\0"), sync].concat())
            .await;
        let answer = raw.until_ready().await;
        if let Some(e) = answer.iter().find(|m| m.0 == b'E') {
            panic!("Bind failed: {:?}", field(&e.1, b'M'));
        }
        let row = answer.iter().find(|m| m.0 == b'D').expect("a row");
        assert_eq!(&row.1[row.1.len() - 2..], b"90");
        holder.batch_execute("rollback").await.unwrap();
    }

    // DEALLOCATE ends it, wherever the session runs next.
    c.batch_execute("DEALLOCATE q").await.unwrap();
    let e = c.batch_execute("EXECUTE q(3)").await.unwrap_err();
    assert_eq!(code(&e), "26000", "{e}");
    assert!(common::db_error(&e).message().contains("\"q\""), "{e}");
    assert_eq!(qty(&other, "EXECUTE q(3)").await, "31");
}

/// SQL EXECUTE of a statement the session prepared, among other statements of one Query, on
/// a connection that lacks it: each EXECUTE finds it, error positions point into the client's
/// text, and a PREPARE the proxy sent ahead that an earlier error skipped is sent again.
async fn executes_among_several_statements_find_the_sessions_statement(shards: usize) {
    let tc = cluster(shards, "size = 2").await;
    let c = tc.client().await;
    let values = |messages: Vec<tokio_postgres::SimpleQueryMessage>| -> Vec<String> {
        rows(&messages)
            .into_iter()
            .map(|r| r[0].clone().unwrap_or_default())
            .collect()
    };
    c.batch_execute("PREPARE q (bigint) AS select qty from items where id = $1")
        .await
        .unwrap();
    // The pool hands out the connection returned last: the holder takes the one that has the
    // statement, so the session's next Queries run on one that lacks it.
    let holder = holding_the_last_connection(&tc).await;
    let e = c
        .simple_query("select 1/0; EXECUTE q(3)")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "22012", "{e}");
    // A statement of comments alone has no answer, and does not move the proxy's count of
    // answers: the PREPARE it sends ahead stays hidden.
    let got = c
        .simple_query("select 1; /* nothing */; /* then */ EXECUTE q(3);execute Q (7)")
        .await
        .unwrap();
    let completes = command_completes(&got);
    assert_eq!(values(got), ["1", "30", "70"]);
    assert_eq!(completes, 3, "the proxy's PREPARE is not answered");
    let sql = "EXECUTE q(3); select nothing_here";
    let e = c.simple_query(sql).await.unwrap_err();
    assert_eq!(code(&e), "42703", "{e}");
    let at = sql.find("nothing_here").unwrap() as u32 + 1;
    assert_eq!(
        common::db_error(&e).position(),
        Some(&tokio_postgres::error::ErrorPosition::Original(at)),
        "{e}"
    );
    // PREPARE of the name among other statements is refused as PostgreSQL refuses it, after
    // the statements before it ran.
    let e = c
        .simple_query("EXECUTE q(3); PREPARE q AS select 2")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42P05", "{e}");
    assert!(common::db_error(&e).message().contains("\"q\""), "{e}");
    holder.batch_execute("rollback").await.unwrap();
    // On the connection that had it all along too.
    let got = c.simple_query("EXECUTE q(5); EXECUTE q(5)").await.unwrap();
    assert_eq!(values(got), ["50", "50"]);
    // Once deallocated, no statement of that name is left anywhere.
    c.batch_execute("DEALLOCATE q").await.unwrap();
    for _ in 0..2 {
        let e = c.simple_query("select 1; EXECUTE q(5)").await.unwrap_err();
        assert_eq!(code(&e), "26000", "{e}");
    }
}

/// A server connection idle past `idle_timeout_secs` is closed, and one older than
/// `lifetime_secs` is not taken back: the next transaction runs on a new one.
async fn idle_and_old_server_connections_are_replaced(shards: usize) {
    let (tc, c, first) = served_twice(shards, "idle_timeout_secs = 0.4").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // The reaper closed it while it sat idle.
    let held = per_shard(&tc).await;
    assert!(held.iter().all(|&n| n == 0), "{held:?}");
    assert_ne!(backend_pid(&c).await, first);
    drop(c);
    drop(tc);

    let (tc, c, first) = served_twice(shards, "lifetime_secs = 0.5").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let second = backend_pid(&c).await;
    assert_ne!(second, first);
    assert_eq!(backend_pid(&c).await, second);
    let held = per_shard(&tc).await;
    assert!(held.iter().all(|&n| n <= 1), "{held:?}");
}

/// A cluster with one connection per shard and `limit`, a client, and the backend that served
/// two transactions of it in a row (one just returned serves again).
async fn served_twice(shards: usize, limit: &str) -> (TestCluster, tokio_postgres::Client, i32) {
    let tc = cluster(shards, &format!("size = 1\n{limit}")).await;
    let c = tc.client().await;
    let first = backend_pid(&c).await;
    assert_eq!(
        backend_pid(&c).await,
        first,
        "one just returned serves again"
    );
    (tc, c, first)
}

/// The PostgreSQL backend serving `c`'s next transaction.
async fn backend_pid(c: &tokio_postgres::Client) -> i32 {
    c.query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

/// SQL DEALLOCATE of a statement the session prepared, among other statements of one Query:
/// it removes the statement on a connection that lacks it too, as soon as it runs (DEALLOCATE
/// is not undone when a later statement fails), and not when an earlier error skips it. A
/// PREPARE of the name after it in the same Query is refused on one shard, where the relay
/// cannot follow the statement it would define; on several it runs.
async fn deallocates_among_several_statements_remove_the_sessions_statement(shards: usize) {
    let tc = cluster(shards, "size = 2").await;
    let c = tc.client().await;
    let prepare =
        |plus: i32| format!("PREPARE q (bigint) AS select qty + {plus} from items where id = $1");
    let qty = |messages: Vec<tokio_postgres::SimpleQueryMessage>| -> Vec<String> {
        rows(&messages)
            .into_iter()
            .map(|r| r[0].clone().unwrap_or_default())
            .collect()
    };
    c.batch_execute(&prepare(0)).await.unwrap();
    // The session's next Queries run on a connection that lacks the statement.
    let holder = holding_the_last_connection(&tc).await;
    let e = c
        .simple_query("select 1/0; DEALLOCATE q")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "22012", "{e}");
    assert_eq!(qty(c.simple_query("EXECUTE q(3)").await.unwrap()), ["30"]);
    let got = c.simple_query("select 7; DEALLOCATE q").await.unwrap();
    assert_eq!(qty(got), ["7"]);
    for sql in ["EXECUTE q(3)", "select 1; EXECUTE q(3)"] {
        let e = c.simple_query(sql).await.unwrap_err();
        assert_eq!(code(&e), "26000", "{sql}: {e}");
        assert!(common::db_error(&e).message().contains("\"q\""), "{e}");
    }
    holder.batch_execute("rollback").await.unwrap();

    // Gone although the statement after it failed; an EXECUTE after it finds nothing.
    c.batch_execute(&prepare(1)).await.unwrap();
    let e = c
        .simple_query("DEALLOCATE q; select 1/0")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "22012", "{e}");
    let e = c.simple_query("EXECUTE q(3)").await.unwrap_err();
    assert_eq!(code(&e), "26000", "{e}");
    c.batch_execute(&prepare(2)).await.unwrap();
    let e = c
        .simple_query("DEALLOCATE q; EXECUTE q(3)")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "26000", "{e}");
    assert!(common::db_error(&e).message().contains("\"q\""), "{e}");

    // The name is free again.
    c.batch_execute(&prepare(3)).await.unwrap();
    let again = format!("DEALLOCATE q; {}", prepare(4));
    if shards == 1 {
        let e = c.simple_query(&again).await.unwrap_err();
        assert_eq!(code(&e), "0A000", "{e}");
        assert!(common::db_error(&e).hint().is_some(), "{e}");
        // Nothing of that Query ran.
        assert_eq!(qty(c.simple_query("EXECUTE q(3)").await.unwrap()), ["33"]);
    } else {
        c.simple_query(&again).await.unwrap();
        assert_eq!(qty(c.simple_query("EXECUTE q(3)").await.unwrap()), ["34"]);
    }
}

/// A driver's statement `EXECUTE foo(3)` runs whatever `foo` is when it runs, as PostgreSQL
/// looks the name up at every execution: after the client deallocates `foo` and prepares it
/// again, on the connection it ran on and on one it never saw, and with `foo` gone (26000).
async fn a_parse_of_execute_runs_the_statement_the_name_has_now(shards: usize) {
    let tc = cluster(shards, "size = 2\ncheckout_timeout_secs = 2").await;
    let c = tc.client().await;
    let prepare =
        |plus: i32| format!("PREPARE foo (bigint) AS select qty + {plus} from items where id = $1");
    c.batch_execute(&prepare(0)).await.unwrap();
    let st = c.prepare("EXECUTE foo(3)").await.unwrap();
    let qty = |rows: Vec<tokio_postgres::Row>| rows[0].get::<_, i32>(0);
    assert_eq!(qty(c.query(&st, &[]).await.unwrap()), 30);

    c.batch_execute("DEALLOCATE foo").await.unwrap();
    c.batch_execute(&prepare(1)).await.unwrap();
    assert_eq!(qty(c.query(&st, &[]).await.unwrap()), 31);
    // On a connection the statement never reached.
    let holder = holding_the_last_connection(&tc).await;
    assert_eq!(qty(c.query(&st, &[]).await.unwrap()), 31);
    holder.batch_execute("rollback").await.unwrap();

    c.batch_execute("DEALLOCATE foo").await.unwrap();
    let e = c.query(&st, &[]).await.unwrap_err();
    assert_eq!(code(&e), "26000", "{e}");
    assert!(common::db_error(&e).message().contains("\"foo\""), "{e}");

    c.batch_execute(&prepare(2)).await.unwrap();
    assert_eq!(qty(c.query(&st, &[]).await.unwrap()), 32);
    // Another session's `foo` is its own.
    let other = tc.client().await;
    other.batch_execute(&prepare(5)).await.unwrap();
    assert_eq!(qty(c.query(&st, &[]).await.unwrap()), 32);
}
