//! What every client sends, through the proxy on three unlike shards: each case is one that gave
//! a wrong answer, a desync, a hang or a false refusal. Expected answers come from PostgreSQL
//! itself where they can (the same statement run directly on a shard), not from the proxy.

mod common;

use common::raw::{field, message, piped, query, startup_packet, Raw};
use common::{code, connect, db_error, rows, TestCluster};
use std::time::Duration;
use tokio_postgres::SimpleQueryMessage;

const TABLES: &str = "[tables.items]\nshard_key = \"id\"\nkey_type = \"bigint\"\n[tables.countries]\nreference = true\n[tables.feelings]\nshard_key = \"id\"\nkey_type = \"bigint\"\n";

async fn cluster() -> TestCluster {
    cluster_with("").await
}

/// `cluster`, with more config after the tables (a `[pool]` section).
async fn cluster_with(more: &str) -> TestCluster {
    let tc = TestCluster::start_unlike(3, "", &format!("{TABLES}{more}")).await;
    let values: Vec<String> = (1..=60)
        .map(|g| format!("({g}, 'item{g}', {})", g % 7))
        .collect();
    tc.client()
        .await
        .batch_execute(&format!(
            "create table items (id bigint primary key, name text, qty int);
             create table countries (code text primary key, name text);
             insert into items values {}",
            values.join(", ")
        ))
        .await
        .unwrap();
    tc
}

fn tag(messages: &[SimpleQueryMessage]) -> Option<u64> {
    messages.iter().rev().find_map(|m| match m {
        SimpleQueryMessage::CommandComplete(n) => Some(*n),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_returning_gives_each_row_once() {
    let tc = cluster().await;
    let c = tc.client().await;
    // Simple protocol: one row, and a count that agrees.
    let m = c
        .simple_query("insert into countries values ('ke', 'Kenya') returning code")
        .await
        .unwrap();
    assert_eq!(rows(&m), vec![vec![Some("ke".to_string())]]);
    assert_eq!(tag(&m), Some(1));
    // Extended protocol, several rows.
    let r = c
        .query(
            "insert into countries values ($1, 'France'), ($2, 'Peru') returning code",
            &[&"fr", &"pe"],
        )
        .await
        .unwrap();
    assert_eq!(r.len(), 2);
    let r = c
        .query(
            "update countries set name = upper(name) returning code, name",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.len(), 3, "one row per country, not per copy");
    assert_eq!(
        c.execute("delete from countries where code <> 'ke'", &[])
            .await
            .unwrap(),
        2
    );
    // Every copy has the same rows.
    assert_eq!(
        tc.count_on_each_shard("select count(*) from countries")
            .await,
        vec![1, 1, 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_transaction_works_where_postgresql_allows_it() {
    let tc = cluster().await;
    let c = tc.client().await;
    let levels = "select distinct current_setting('transaction_isolation') from items";
    // After BEGIN, before the first query, reaching every shard (separate Queries).
    c.simple_query("begin").await.unwrap();
    c.simple_query("set transaction isolation level repeatable read")
        .await
        .unwrap();
    let m = c.simple_query(levels).await.unwrap();
    assert_eq!(rows(&m), vec![vec![Some("repeatable read".to_string())]]);
    // After a query it is too late, as in PostgreSQL.
    let e = c
        .simple_query("set transaction isolation level read committed")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "25001");
    c.simple_query("rollback").await.unwrap();

    // In one Query with BEGIN, and in the extended protocol.
    let m = c
        .simple_query(&format!(
            "start transaction; set transaction read only; {levels}"
        ))
        .await
        .unwrap();
    assert_eq!(rows(&m), vec![vec![Some("read committed".to_string())]]);
    let e = c
        .simple_query("insert into items values (1000, 'x', 1)")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "25006", "read only reached the write's shard");
    c.simple_query("rollback").await.unwrap();
    c.query("begin", &[]).await.unwrap();
    c.query("set transaction isolation level repeatable read", &[])
        .await
        .unwrap();
    let r = c.query(levels, &[]).await.unwrap();
    assert_eq!(r[0].get::<_, String>(0), "repeatable read");
    assert_eq!(r.len(), 1);
    c.query("commit", &[]).await.unwrap();

    // Session characteristics apply to later transactions on every shard.
    c.simple_query("set session characteristics as transaction isolation level repeatable read")
        .await
        .unwrap();
    c.simple_query("begin").await.unwrap();
    let m = c.simple_query(levels).await.unwrap();
    assert_eq!(rows(&m), vec![vec![Some("repeatable read".to_string())]]);
    c.simple_query("commit").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_the_servers_code_message_and_position() {
    let tc = cluster().await;
    let c = tc.client().await;
    let direct = tc.direct(0).await;
    let texts = [
        "selec 1",
        "select 1 from items where id = 1 and",
        "select nosuch from items where id = 1",
        "select 1; select nosuch from items where id = 1",
        "select 'ö'; selec 2",
    ];
    for sql in texts {
        let want = direct.simple_query(sql).await.unwrap_err();
        let got = c.simple_query(sql).await.unwrap_err();
        let (w, g) = (db_error(&want), db_error(&got));
        assert_eq!(
            (g.code(), g.message(), g.position()),
            (w.code(), w.message(), w.position()),
            "{sql}"
        );
    }
    // The first statement of a transaction block, which the proxy sends behind BEGIN.
    c.simple_query("begin").await.unwrap();
    let got = c
        .simple_query("select nosuch from items where id = 1")
        .await
        .unwrap_err();
    let want = direct
        .simple_query("select nosuch from items where id = 1")
        .await
        .unwrap_err();
    assert_eq!(db_error(&got).position(), db_error(&want).position());
    c.simple_query("rollback").await.unwrap();
    // A syntax error anywhere in a Query means nothing in it runs, as in PostgreSQL.
    let e = c
        .simple_query("insert into items values (500, 'x', 1); selec 2")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42601");
    let m = c
        .simple_query("select count(*) from items where id = 500")
        .await
        .unwrap();
    assert_eq!(rows(&m), vec![vec![Some("0".to_string())]]);
    // Valid SQL the proxy cannot route is still refused, and says so.
    let e = c
        .simple_query("select * from items a join items b on a.qty = b.id")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_in_from_are_not_tables() {
    let tc = cluster().await;
    let c = tc.client().await;
    let m = c
        .simple_query("select * from generate_series(1, 3)")
        .await
        .unwrap();
    assert_eq!(rows(&m).len(), 3);
    let r = c
        .query(
            "select key, value from json_each($1::text::json)",
            &[&r#"{"a":1,"b":2}"#],
        )
        .await
        .unwrap();
    assert_eq!(r.len(), 2);
    let m = c
        .simple_query("select * from regexp_split_to_table('a b c', ' ')")
        .await
        .unwrap();
    assert_eq!(rows(&m).len(), 3);
    // Joined with a sharded table, over every shard: each shard's rows times three.
    let m = c
        .simple_query("select count(*) from items, generate_series(1, 3) g")
        .await
        .unwrap();
    assert_eq!(rows(&m), vec![vec![Some("180".to_string())]]);
    // Inserting a function's rows into a reference table writes every copy alike.
    c.simple_query("insert into countries select 'c' || g, 'n' from generate_series(1, 4) g")
        .await
        .unwrap();
    assert_eq!(
        tc.count_on_each_shard("select count(*) from countries")
            .await,
        vec![4, 4, 4]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_matches_the_rows_that_follow() {
    let tc = cluster().await;
    let c = tc.client().await;
    // Parse/Describe/Bind/Execute of statements every shard runs, or the proxy answers.
    let r = c
        .query(
            "select set_config('application_name', $1, false)",
            &[&"described"],
        )
        .await
        .unwrap();
    assert_eq!(r[0].get::<_, String>(0), "described");
    let r = c.query("show shardgate.consistency", &[]).await.unwrap();
    assert_eq!(r[0].get::<_, String>(0), "shard");
    let s = c.prepare("show shardgate.snapshot_scope").await.unwrap();
    assert_eq!(s.columns()[0].name(), "shardgate.snapshot_scope");
    assert_eq!(
        c.query(&s, &[]).await.unwrap()[0].get::<_, String>(0),
        "all"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_results_arrive_before_sync() {
    let tc = cluster().await;
    let (mut raw, _) = Raw::login(tc.port).await;
    // A read of every shard and a point read, each followed by Flush, never by Sync.
    for sql in [
        "select count(*) from items",
        "select name from items where id = 7",
    ] {
        let mut batch = unsynced(sql);
        batch.extend(message(b'H', &[]));
        raw.send(&batch).await;
        let mut seen = Vec::new();
        while let Some((tag, body)) = raw.recv().await {
            seen.push(tag);
            if tag == b'D' {
                let text = String::from_utf8_lossy(&body[6..]).into_owned();
                assert!(text == "60" || text == "item7", "{sql}: {text}");
            }
            if tag == b'C' || tag == b'E' {
                break;
            }
        }
        assert_eq!(seen, b"12DC".to_vec(), "{sql}");
    }
    raw.send(&message(b'S', &[])).await;
    assert_eq!(raw.until_ready().await.last().map(|m| m.0), Some(b'Z'));
}

/// Parse, Bind and Execute of `sql` with no Sync or Flush after them.
fn unsynced(sql: &str) -> Vec<u8> {
    let mut batch = parse("", sql);
    batch.extend(message(b'B', &[0, 0, 0, 0, 0, 0, 0, 0]));
    batch.extend(message(b'E', &[0, 0, 0, 0, 0]));
    batch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_without_sync_run_and_their_error_arrives() {
    // libpq's pipeline mode sends statements and reads their results before it syncs; a server
    // runs each as it comes, sends an error at once, and holds results until a Flush or Sync
    // (psycopg's pipelines tell their results apart by that). A user table may be named
    // pg_anything.
    let tail = format!("{TABLES}[routing]\nundeclared_tables = \"reference\"\n");
    let tc = TestCluster::start_unlike(3, "", &tail).await;
    tc.client()
        .await
        .batch_execute("create table pg_pipeline (id int primary key)")
        .await
        .unwrap();
    let (mut raw, _) = Raw::login(tc.port).await;
    raw.send(&query("begin")).await;
    raw.until_ready().await;
    raw.send(&unsynced("insert into pg_pipeline values (1)"))
        .await;
    // It ran: its row lock is on the shards. Its answer waits for the Flush.
    let locked = "select count(*) from pg_locks l join pg_class c on c.oid = l.relation \
                  where c.relname = 'pg_pipeline' and l.mode = 'RowExclusiveLock'";
    let shard = tc.direct(0).await;
    for round in 0.. {
        let n: i64 = shard.query_one(locked, &[]).await.unwrap().get(0);
        if n == 1 {
            break;
        }
        assert!(round < 600, "the unsynced insert never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        raw.silent_for(Duration::from_millis(500)).await,
        "a result came before Flush or Sync"
    );
    raw.send(&message(b'H', &[])).await;
    let mut seen = Vec::new();
    while let Some((tag, _)) = raw.recv().await {
        seen.push(tag);
        if tag == b'C' || tag == b'E' {
            break;
        }
    }
    assert_eq!(seen, b"12C".to_vec());
    raw.send(&unsynced("select no_such_function(1)")).await;
    let (tag, body) = raw.recv().await.expect("the error arrives before Sync");
    assert_eq!(tag, b'E');
    assert_eq!(field(&body, b'C').as_deref(), Some("42883"));
    raw.send(&message(b'S', &[])).await;
    let ready = raw.until_ready().await;
    assert_eq!(
        ready.last().map(|m| (m.0, m.1.clone())),
        Some((b'Z', b"E".to_vec()))
    );
    raw.send(&query("commit")).await;
    raw.until_ready().await;
    for i in 0..3 {
        let n: i64 = tc
            .direct(i)
            .await
            .query_one("select count(*) from pg_pipeline", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "shard {i} kept a row of a failed transaction");
    }
}

/// Bind of `statement` to the unnamed portal with text parameters, then Execute and Sync.
fn bind_execute(statement: &str, params: &[&str]) -> Vec<u8> {
    let mut bind = vec![0u8];
    bind.extend_from_slice(statement.as_bytes());
    bind.push(0);
    bind.extend_from_slice(&0i16.to_be_bytes());
    bind.extend_from_slice(&(params.len() as i16).to_be_bytes());
    for p in params {
        bind.extend_from_slice(&(p.len() as i32).to_be_bytes());
        bind.extend_from_slice(p.as_bytes());
    }
    bind.extend_from_slice(&0i16.to_be_bytes());
    let mut out = message(b'B', &bind);
    out.extend(message(b'E', &[0, 0, 0, 0, 0]));
    out.extend(message(b'S', &[]));
    out
}

fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut body = name.as_bytes().to_vec();
    body.push(0);
    body.extend_from_slice(sql.as_bytes());
    body.extend_from_slice(&[0, 0, 0]);
    message(b'P', &body)
}

/// The `code` field of each ErrorResponse up to the next ReadyForQuery.
async fn errors_until_ready(raw: &mut Raw, code: u8) -> Vec<Option<String>> {
    raw.until_ready()
        .await
        .into_iter()
        .filter(|(t, _)| *t == b'E')
        .map(|(_, body)| field(&body, code))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_runs_each_query_where_its_own_statement_goes() {
    // psycopg's pipelines (and libpq's pipeline mode) parse the unnamed statement again for
    // every query and sync once at the end. Each Bind runs the statement parsed just before
    // it, and must go where that statement and its values send it, not where the batch's
    // last statement would.
    let tc = cluster().await;
    let (mut raw, _) = Raw::login(tc.port).await;
    let ids: Vec<i64> = (1001..1010).collect();
    for &id in &ids {
        let mut batch = piped("insert into items (id, name) values ($1, 'piped')", id);
        batch.extend(piped(
            "select count(*) from countries where code = $1::text",
            id,
        ));
        batch.extend(message(b'S', &[]));
        raw.send(&batch).await;
        let errors = errors_until_ready(&mut raw, b'M').await;
        assert!(errors.is_empty(), "{id}: {errors:?}");
    }
    let c = tc.client().await;
    for id in &ids {
        let found = c
            .query("select name from items where id = $1", &[id])
            .await
            .unwrap();
        assert_eq!(found.len(), 1, "item {id} where its key sends it");
    }
    let counts = tc
        .count_on_each_shard("select count(*) from items where name = 'piped'")
        .await;
    assert_eq!(counts.iter().sum::<i64>(), ids.len() as i64, "{counts:?}");

    // Writes on two shards and a read after them, one Sync: one implicit transaction, so the
    // second write's error undoes the first.
    let shard_of = |id: i64| {
        let c = &c;
        async move {
            let route = rows(
                &c.simple_query(&format!("show shardgate.route items {id}"))
                    .await
                    .unwrap(),
            );
            route[0][3].clone()
        }
    };
    let (one, mut other) = (1i64, 2i64);
    while shard_of(other).await == shard_of(one).await {
        other += 1;
    }
    let mut batch = piped("update items set qty = 100 where id = $1", one);
    batch.extend(piped("update items set qty = qty / 0 where id = $1", other));
    batch.extend(piped(
        "select count(*) from countries where code = $1::text",
        one,
    ));
    batch.extend(message(b'S', &[]));
    raw.send(&batch).await;
    let error = raw
        .until_ready()
        .await
        .into_iter()
        .find(|(t, _)| *t == b'E')
        .map(|(_, body)| field(&body, b'C'));
    assert_eq!(error, Some(Some("22012".to_string())));
    let qty = c
        .query_one("select qty from items where id = $1", &[&one])
        .await
        .unwrap();
    assert_eq!(
        qty.get::<_, i32>(0),
        (one % 7) as i32,
        "the first write undone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_in_a_pipeline_undoes_what_ran_before_it() {
    // Up to its Sync a batch is one implicit transaction: an error anywhere in it, the proxy's
    // own refusal included, undoes the writes before it, on one shard as on several; sent in
    // one write, or query by query with pauses between, as psycopg's pipelines send them (the
    // proxy then runs each part as it arrives, before the Sync).
    let tc = cluster().await;
    let (mut raw, _) = Raw::login(tc.port).await;
    let refused = "select i.id from items i join feelings f on i.qty = f.id where i.id > $1";
    // A shard's error in a read of every shard after the writes.
    let failing = "select count(*) / (count(*) - count(*)) from items where id > $1";
    for paused in [false, true] {
        for (first, second, last) in [
            (5001, 5001, refused),
            (5002, 5003, refused),
            (5004, 5005, refused),
            (5006, 5007, failing),
            (5008, 5008, failing),
        ] {
            let insert = "insert into items (id, name) values ($1, 'undone')";
            let mut parts = vec![piped(insert, first)];
            if second != first {
                parts.push(piped(insert, second));
            }
            parts.push(piped(last, 0));
            parts.push(message(b'S', &[]));
            if paused {
                for part in parts {
                    raw.send(&part).await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            } else {
                raw.send(&parts.concat()).await;
            }
            let codes = errors_until_ready(&mut raw, b'C').await;
            assert_eq!(codes.len(), 1, "{codes:?}");
            let left = tc
                .count_on_each_shard("select count(*) from items where name = 'undone'")
                .await;
            assert_eq!(
                left,
                vec![0, 0, 0],
                "{first} {second} {last}, paused: {paused}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_unnamed_statement_survives_the_proxys_own() {
    // The proxy re-binds statements it runs on every shard under the unnamed statement; the
    // client's unnamed statement, prepared before, must still be the one its Bind runs.
    let tc = cluster().await;
    let (mut raw, _) = Raw::login(tc.port).await;
    let mut first = parse("", "select $1::int + 1 as answer");
    first.extend(message(b'S', &[]));
    raw.send(&first).await;
    raw.until_ready().await;
    let mut everywhere = parse("s1", "select set_config('application_name', $1, false)");
    everywhere.extend(bind_execute("s1", &["unnamed-test"]));
    raw.send(&everywhere).await;
    let answer = raw.until_ready().await;
    assert!(answer.iter().any(|m| m.0 == b'D'), "{answer:?}");
    raw.send(&bind_execute("", &["41"])).await;
    let answer = raw.until_ready().await;
    let row = answer.iter().find(|m| m.0 == b'D').expect("a row");
    assert_eq!(&row.1[6..], b"42", "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_cursors_portal_closes_the_cursor() {
    let tc = cluster().await;
    for declare in [
        "declare c cursor for select id from items where id = 3",
        "declare c cursor for select id from items",
    ] {
        let (mut raw, _) = Raw::login(tc.port).await;
        raw.send(&query(&format!("begin; {declare}"))).await;
        raw.until_ready().await;
        let mut close = message(b'C', b"Pc\0");
        close.extend(message(b'S', &[]));
        raw.send(&close).await;
        let tags: Vec<u8> = raw.until_ready().await.iter().map(|m| m.0).collect();
        assert_eq!(tags, b"3Z".to_vec(), "{declare}");
        let mut describe = message(b'D', b"Pc\0");
        describe.extend(message(b'S', &[]));
        raw.send(&describe).await;
        let answer = raw.until_ready().await;
        assert_eq!(answer[0].0, b'E', "{declare}");
        assert_eq!(field(&answer[0].1, b'C').as_deref(), Some("34000"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_and_a_shards_fatal_reach_an_idle_client() {
    for mode in ["session", "transaction"] {
        notifications_reach_an_idle_client_in(mode).await;
    }
}

async fn notifications_reach_an_idle_client_in(mode: &str) {
    let tc = cluster_with(&format!("[pool]\nmode = \"{mode}\"\n")).await;
    let (mut listener, greeting) = Raw::login(tc.port).await;
    let pid = greeting
        .iter()
        .find(|m| m.0 == b'K')
        .map(|m| i32::from_be_bytes(m.1[..4].try_into().unwrap()))
        .unwrap();
    // In session mode the pid the client was given is the one the server reports for it; in
    // transaction mode no server connection stays the client's, and the pid is the proxy's.
    listener.send(&query("select pg_backend_pid()")).await;
    let answer = listener.until_ready().await;
    let reported = answer.iter().find(|m| m.0 == b'D').unwrap();
    let reported = String::from_utf8_lossy(&reported.1[6..]).to_string();
    if mode == "session" {
        assert_eq!(reported, pid.to_string());
    } else {
        assert!(
            pid > 1 << 22 && reported != pid.to_string(),
            "{pid} {reported}"
        );
    }
    listener.send(&query("listen jobs")).await;
    listener.until_ready().await;
    // Its own notification names it by that pid.
    listener.send(&query("notify jobs, 'self'")).await;
    let answer = listener.until_ready().await;
    let own = answer
        .iter()
        .find(|m| m.0 == b'A')
        .expect("own notification");
    assert_eq!(i32::from_be_bytes(own.1[..4].try_into().unwrap()), pid);

    // Another session's NOTIFY reaches the listener while it waits, without a query.
    let other = tc.client().await;
    other.simple_query("notify jobs, 'hello'").await.unwrap();
    let (tag, body) = listener.recv().await.expect("a notification while idle");
    assert_eq!(tag, b'A');
    assert!(String::from_utf8_lossy(&body).contains("hello"));
    other
        .simple_query("select pg_notify('jobs', 'again')")
        .await
        .unwrap();
    let (tag, _) = listener.recv().await.expect("pg_notify while idle");
    assert_eq!(tag, b'A');

    // An administrator ends the listener's backend on a shard: the client hears that FATAL,
    // not a generic lost connection, and at once.
    drop(other);
    // In transaction mode the listener is pinned to the connection that ran its LISTEN, on the
    // first shard, and holds no other.
    let admin = tc.direct(if mode == "session" { 1 } else { 0 }).await;
    admin
        .simple_query(
            "select pg_terminate_backend(pid) from pg_stat_activity where backend_type = 'client backend' and application_name <> 'shardgate-control' and pid <> pg_backend_pid()",
        )
        .await
        .unwrap();
    let (tag, body) = listener.recv().await.expect("the shard's FATAL");
    assert_eq!(tag, b'E');
    assert_eq!(field(&body, b'C').as_deref(), Some("57P01"));
    assert!(listener.is_closed().await);
    // Other clients are unaffected.
    let c = tc.client().await;
    c.simple_query("select count(*) from items").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_names_database_options_and_encoding() {
    let tc = cluster().await;
    // A database the proxy does not serve.
    let url = format!("postgres://app:secret@127.0.0.1:{}/nosuchdb", tc.port);
    let Err(e) = connect(&url).await else {
        panic!("an unknown database must be refused")
    };
    assert_eq!(code(&e), "3D000");
    // shardgate's own settings are the proxy's; the rest apply on every shard.
    let url = format!(
        "{}?options=-c%20shardgate.snapshot_scope%3Dall%20-c%20work_mem%3D7MB",
        tc.url("app", "secret")
    );
    let c = connect(&url).await.unwrap();
    let m = c
        .simple_query("show shardgate.snapshot_scope")
        .await
        .unwrap();
    assert_eq!(rows(&m), vec![vec![Some("all".to_string())]]);
    let m = c
        .simple_query("select count(*) from items where current_setting('work_mem') = '7MB'")
        .await
        .unwrap();
    assert_eq!(rows(&m), vec![vec![Some("60".to_string())]]);
    let url = format!(
        "{}?options=-c%20shardgate.consistency%3Dsometimes",
        tc.url("app", "secret")
    );
    let Err(e) = connect(&url).await else {
        panic!("a bad setting must be refused")
    };
    assert_eq!(code(&e), "22023");

    // Encodings: UTF-8 text round-trips; another encoding is refused, never misread.
    let c = tc.client().await;
    c.simple_query("insert into items values (900, 'café ☕', 1)")
        .await
        .unwrap();
    let m = c
        .simple_query("select name from items where id = 900")
        .await
        .unwrap();
    assert_eq!(rows(&m), vec![vec![Some("café ☕".to_string())]]);
    let e = c
        .simple_query("set client_encoding to latin9")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000");
    c.simple_query("set names 'UTF8'").await.unwrap();
    let mut raw = Raw::connect(tc.port).await;
    raw.send(&startup_packet(
        196608,
        &[
            ("user", "trustuser"),
            ("database", "postgres"),
            ("client_encoding", "LATIN1"),
        ],
    ))
    .await;
    let answer = raw.until_ready().await;
    let refused = answer.iter().find(|m| m.0 == b'E').expect("refused");
    assert_eq!(field(&refused.1, b'C').as_deref(), Some("0A000"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_that_is_not_utf8_is_an_error_not_the_end() {
    let tc = cluster().await;
    let (mut raw, _) = Raw::login(tc.port).await;
    let mut body = b"select '".to_vec();
    body.extend_from_slice(&[0xe9, b'\'', 0]);
    raw.send(&message(b'Q', &body)).await;
    let answer = raw.until_ready().await;
    let e = answer.iter().find(|m| m.0 == b'E').expect("an error");
    assert_eq!(field(&e.1, b'C').as_deref(), Some("22021"));
    assert_eq!(answer.last().map(|m| m.0), Some(b'Z'));
    raw.send(&query("select count(*) from items")).await;
    let answer = raw.until_ready().await;
    assert!(answer.iter().any(|m| m.0 == b'D'), "the session goes on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_every_driver_sends() {
    let tc = cluster().await;
    let c = tc.client().await;
    for sql in [
        "listen ch",
        "unlisten *",
        "notify ch, 'x'",
        "close all",
        "select",
        "checkpoint",
        "create domain posint as int check (value > 0)",
        "drop domain posint",
    ] {
        c.simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    c.simple_query("begin").await.unwrap();
    c.simple_query("lock items in share mode").await.unwrap();
    c.simple_query("commit").await.unwrap();
    // Temporary tables are refused before anything is created, in and out of a transaction.
    let e = c
        .simple_query("create temp table scratch (a int)")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000");
    assert_eq!(
        tc.count_on_each_shard("select count(*) from pg_class where relname = 'scratch'")
            .await,
        vec![0, 0, 0]
    );
}

/// Shards whose databases use `collate`, `ctype` and `provider` (each shard gets the same).
async fn cluster_with_collation(create: &str) -> TestCluster {
    let (shards, dir) = tokio::task::spawn_blocking(|| common::start_unlike_shards(3))
        .await
        .unwrap();
    for s in &shards {
        let c = connect(&s.url("postgres")).await.unwrap();
        c.batch_execute(&format!("create database sorted {create}"))
            .await
            .unwrap();
    }
    let port = shardgate::localpg::free_port().unwrap();
    let text = format!("{}\n{TABLES}", common::config_for(port, &shards, ""))
        .replace("/postgres\"", "/sorted\"");
    let config = shardgate::config::Config::from_toml(&text).unwrap();
    let proxy = shardgate::server::Proxy::start(&config).await.unwrap();
    let tc = TestCluster {
        port: proxy.local_addr.port(),
        shards,
        dir,
        proxy: Some(proxy),
        config,
    };
    let url = format!("postgres://app:secret@127.0.0.1:{}/sorted", tc.port);
    let c = connect(&url).await.unwrap();
    c.batch_execute(
        "create table items (id bigint primary key, name text, qty int);
         insert into items values (1, 'b', 1), (2, 'B', 2), (3, 'a', 3), (4, 'é', 4), (5, 'Z', 5), (6, 'z', 6)",
    )
    .await
    .unwrap();
    tc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_order_merges_under_code_point_collations() {
    let tc = cluster_with_collation(
        "template template0 encoding 'UTF8' lc_collate 'C.UTF-8' lc_ctype 'C.UTF-8'",
    )
    .await;
    let url = format!("postgres://app:secret@127.0.0.1:{}/sorted", tc.port);
    let c = connect(&url).await.unwrap();
    let direct = connect(&tc.shards[0].url("sorted")).await.unwrap();
    let expected: Vec<String> = direct
        .query(
            "select v from unnest(array['b','B','a','é','Z','z']) v order by v",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for sql in [
        "select name from items order by name",
        "select name from items order by name collate \"C\"",
        "select name from items order by name collate \"POSIX\"",
    ] {
        let got: Vec<String> = c
            .query(sql, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(got, expected, "{sql}");
    }
    let e = c
        .query(
            "select name from items order by name collate \"und-x-icu\"",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000");
    assert!(db_error(&e).hint().unwrap().contains("COLLATE \"C\""));
    // A column declared with its own collation sorts by it on each shard: refused, plain and
    // grouped, while COLLATE "C" on it merges.
    c.batch_execute(
        "alter table items add column label text collate \"und-x-icu\"; update items set label = name",
    )
    .await
    .unwrap();
    for sql in [
        "select label from items order by label",
        "select label, count(*) from items group by label order by label",
    ] {
        let e = c.query(sql, &[]).await.unwrap_err();
        assert_eq!(code(&e), "0A000", "{sql}");
    }
    let got: Vec<String> = c
        .query("select label from items order by label collate \"C\"", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_order_under_another_collation_is_refused_with_a_hint_that_works() {
    let tc = cluster_with_collation(
        "template template0 encoding 'UTF8' locale_provider icu icu_locale 'und' lc_collate 'C.UTF-8' lc_ctype 'C.UTF-8'",
    )
    .await;
    let url = format!("postgres://app:secret@127.0.0.1:{}/sorted", tc.port);
    let c = connect(&url).await.unwrap();
    let e = c
        .query("select name from items order by name", &[])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000");
    let e = c
        .query("select max(name) from items", &[])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000");
    // The hint's way works, and gives code-point order.
    let got: Vec<String> = c
        .query("select name from items order by name collate \"C\"", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(got, ["B", "Z", "a", "b", "z", "é"]);
}

/// Fails with the server's message if `answer` holds an ErrorResponse.
fn no_error(answer: &[(u8, Vec<u8>)], what: &str) {
    if let Some(e) = answer.iter().find(|m| m.0 == b'E') {
        panic!("{what}: {:?}", field(&e.1, b'M'));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_defined_types_keep_the_first_shards_oids() {
    let tc = cluster().await;
    let c = tc.client().await;
    c.batch_execute(
        "create type mood as enum ('sad', 'ok', 'happy');
         create table feelings (id bigint primary key, m mood);
         insert into feelings values (1, 'sad'), (2, 'ok'), (3, 'happy'), (4, 'sad'), (5, 'ok'), (6, 'happy')",
    )
    .await
    .unwrap();
    let mut oids = Vec::new();
    for i in 0..3 {
        let row = tc
            .direct(i)
            .await
            .query_one("select 'mood'::regtype::oid", &[])
            .await
            .unwrap();
        oids.push(row.get::<_, u32>(0));
    }
    assert!(
        oids[0] != oids[1] && oids[1] != oids[2],
        "the shards must know the type by different OIDs: {oids:?}"
    );
    let home = oids[0];
    // Tables are numbered by each shard's history too; clients see the first shard's number.
    let table: u32 = tc
        .direct(0)
        .await
        .query_one("select 'feelings'::regclass::oid", &[])
        .await
        .unwrap()
        .get(0);
    // Descriptions carry the first shard's OID: a read of every shard, and point reads of
    // each row (whichever shard holds it).
    let s = c
        .prepare("select id, m from feelings order by id")
        .await
        .unwrap();
    assert_eq!(s.columns()[1].type_().oid(), home);
    assert_eq!(s.columns()[1].type_().name(), "mood");
    let s = c
        .prepare("select m from feelings where id = $1")
        .await
        .unwrap();
    let (mut raw, _) = Raw::login(tc.port).await;
    for id in 1..=6 {
        assert_eq!(s.columns()[0].type_().oid(), home);
        raw.send(&common::raw::one_shot(
            "select m from feelings where id = $1",
            &[20],
            &[&id.to_string()],
        ))
        .await;
        let answer = raw.until_ready().await;
        let desc = answer.iter().find(|m| m.0 == b'T').expect("a description");
        // The last (only) field ends with table OID, attribute number, type OID, and 8 bytes.
        let at = desc.1.len() - 18;
        let number = |from: usize, len: usize| {
            desc.1[from..from + len]
                .iter()
                .fold(0u32, |n, b| n << 8 | u32::from(*b))
        };
        assert_eq!(number(at + 6, 4), home, "type of row {id}");
        assert_eq!(
            (number(at, 4), number(at + 4, 2)),
            (table, 2),
            "table and column of row {id}, as the first shard numbers them"
        );
    }
    // Parameters the client declares with the first shard's OID reach every shard as that
    // shard's own type: a point read on each shard, and a read of all of them.
    for id in 1..=6 {
        raw.send(&common::raw::one_shot(
            "select id from feelings where id = $1 and m = $2",
            &[20, home],
            &[
                id.to_string().as_str(),
                if id % 3 == 1 {
                    "sad"
                } else if id % 3 == 2 {
                    "ok"
                } else {
                    "happy"
                },
            ],
        ))
        .await;
        let answer = raw.until_ready().await;
        no_error(&answer, &format!("row {id}"));
        assert_eq!(answer.iter().filter(|m| m.0 == b'D').count(), 1, "row {id}");
    }
    raw.send(&common::raw::one_shot(
        "select id from feelings where m = $1",
        &[home],
        &["ok"],
    ))
    .await;
    let answer = raw.until_ready().await;
    assert!(answer.iter().all(|m| m.0 != b'E'));
    assert_eq!(answer.iter().filter(|m| m.0 == b'D').count(), 2);
    // A multi-row insert over several shards with the type declared.
    raw.send(&common::raw::one_shot(
        "insert into feelings values ($1, $2), ($3, $4)",
        &[20, home, 20, home],
        &["7", "ok", "8", "sad"],
    ))
    .await;
    let answer = raw.until_ready().await;
    assert!(answer.iter().all(|m| m.0 != b'E'));
    let m = c
        .simple_query("select count(*) from feelings")
        .await
        .unwrap();
    assert_eq!(rows(&m), vec![vec![Some("8".to_string())]]);
}

/// A type created in a transaction that has not committed is invisible to every connection but
/// the transaction's own; the client already uses its OID, and so must every shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_made_in_the_open_transaction_is_usable_before_it_commits() {
    let tc = cluster().await;
    let (mut raw, _) = Raw::login(tc.port).await;
    for sql in [
        "begin",
        // A shell type first: looking it up must not abort the transaction.
        "create type \"not-yet\"",
        "create type mood as enum ('sad', 'ok', 'happy')",
        "create table feelings (id bigint primary key, m mood)",
        "insert into feelings values (1, 'sad'), (2, 'ok'), (3, 'happy'), (4, 'sad'), (5, 'ok'), (6, 'happy')",
    ] {
        raw.send(&query(sql)).await;
        let answer = raw.until_ready().await;
        assert!(answer.iter().all(|m| m.0 != b'E'), "{sql}");
    }
    raw.send(&query("select 'mood'::regtype::oid")).await;
    let answer = raw.until_ready().await;
    let row = answer.iter().find(|m| m.0 == b'D').expect("a row");
    // One column: count, length, then the text.
    let home: u32 = String::from_utf8_lossy(&row.1[6..]).parse().unwrap();
    for (id, mood) in [
        (1, "sad"),
        (2, "ok"),
        (3, "happy"),
        (4, "sad"),
        (5, "ok"),
        (6, "happy"),
    ] {
        raw.send(&common::raw::one_shot(
            "select m from feelings where id = $1 and m = $2",
            &[20, home],
            &[&id.to_string(), mood],
        ))
        .await;
        let answer = raw.until_ready().await;
        no_error(&answer, &format!("row {id}"));
        assert_eq!(answer.iter().filter(|m| m.0 == b'D').count(), 1, "row {id}");
        let desc = answer.iter().find(|m| m.0 == b'T').expect("a description");
        let at = desc.1.len() - 12;
        let oid = u32::from_be_bytes(desc.1[at..at + 4].try_into().unwrap());
        assert_eq!(oid, home, "type of row {id}");
    }
    // Rolled back, it is gone everywhere.
    raw.send(&query("rollback")).await;
    raw.until_ready().await;
    for i in 0..3 {
        let gone = tc
            .direct(i)
            .await
            .query_one("select to_regtype('mood') is null", &[])
            .await
            .unwrap();
        assert!(gone.get::<_, bool>(0), "shard {i}");
    }
}

/// A statement every shard runs alike raises the same notice on each; the client hears it once,
/// as from one server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_every_shard_raises_reaches_the_client_once() {
    let tc = cluster().await;
    let (mut raw, _) = Raw::login(tc.port).await;
    for sql in [
        "drop table if exists no_such_table",
        "begin",
        "drop table if exists no_such_table",
        "commit",
    ] {
        raw.send(&query(sql)).await;
        let answer = raw.until_ready().await;
        no_error(&answer, sql);
        let notices: Vec<String> = answer
            .iter()
            .filter(|m| m.0 == b'N')
            .filter_map(|m| field(&m.1, b'M'))
            .collect();
        if sql.starts_with("drop") {
            assert_eq!(
                notices,
                vec!["table \"no_such_table\" does not exist, skipping".to_string()],
                "{sql}"
            );
        }
    }
}
