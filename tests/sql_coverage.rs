//! SQL that applications send and that a sharding proxy must carry over several shards: COPY,
//! cursors, SQL-level PREPARE/EXECUTE, DO and CALL, and the utility statements, on three unlike
//! shards. Where rows land is checked on the shards themselves, against rows the proxy placed
//! with plain INSERTs (a different path to the same placement).

mod common;

use common::raw::{self, Raw};
use common::{answer, code, copy_in, db_error, rows, TestCluster};
use futures_util::{SinkExt, StreamExt};
use std::process::Command;
use tokio_postgres::SimpleQueryMessage;

const TABLES: &str = "[tables.items]\nshard_key = \"id\"\nkey_type = \"bigint\"\n[tables.copied]\nshard_key = \"id\"\nkey_type = \"bigint\"\n[tables.tagged]\nshard_key = \"tag\"\nkey_type = \"text\"\n[tables.countries]\nreference = true\n";

const ROWS: i64 = 60;

async fn cluster() -> TestCluster {
    cluster_with(TABLES).await
}

/// `items` (filled) and empty `copied`, `tagged` and `countries` on three unlike shards
/// configured with `tail` (which declares them).
async fn cluster_with(tail: &str) -> TestCluster {
    let tc = TestCluster::start_unlike(3, "", tail).await;
    let values: Vec<String> = (1..=ROWS)
        .map(|g| format!("({g}, 'item{g}', {})", g % 7))
        .collect();
    tc.client()
        .await
        .batch_execute(&format!(
            "create table items (id bigint primary key, name text, qty int);
             create table copied (id bigint primary key, name text, qty int);
             create table tagged (tag text primary key, note text);
             create table countries (code text primary key, name text);
             insert into items values {}",
            values.join(", ")
        ))
        .await
        .unwrap();
    tc
}

/// On every shard, `copied` holds exactly the ids that `items` holds there: the rows went
/// where the proxy's INSERT routing put the same keys.
async fn placed_like_items(tc: &TestCluster, expected_total: i64) {
    let mut total = 0;
    for i in 0..3 {
        let row = tc
            .direct(i)
            .await
            .query_one(
                "select (select count(*) from copied),
                        (select count(*) from copied c join items t using (id))",
                &[],
            )
            .await
            .unwrap();
        let (held, matched): (i64, i64) = (row.get(0), row.get(1));
        assert_eq!(
            held, matched,
            "shard {i} holds rows of copied that items has elsewhere"
        );
        assert!(held > 0, "shard {i} got no rows");
        total += held;
    }
    assert_eq!(total, expected_total);
}

async fn copy_out(c: &tokio_postgres::Client, sql: &str) -> Vec<u8> {
    let stream = c.copy_out(sql).await.unwrap();
    futures_util::pin_mut!(stream);
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_from_stdin_splits_rows_by_key_in_text_csv_and_binary() {
    let tc = cluster().await;
    let c = tc.client().await;
    // Text, with escapes in a value and a key that is not the first column.
    let text: String = (1..=20)
        .map(|i| format!("item\\t{i}\\\\x\t{i}\t{}\n", i % 7))
        .collect();
    let n = copy_in(
        &c,
        "copy copied (name, id, qty) from stdin",
        text.as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(n, 20);
    // CSV with a header, a quoted delimiter and a quoted newline, sent in small pieces.
    let mut csv = String::from("id,name,qty\n");
    for i in 21..=40 {
        csv.push_str(&format!("{i},\"a,b\nline {i}\",{}\n", i % 7));
    }
    let sink = c
        .copy_in("copy copied from stdin with (format csv, header true)")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    for piece in csv.as_bytes().chunks(7) {
        sink.send(bytes::Bytes::copy_from_slice(piece))
            .await
            .unwrap();
    }
    assert_eq!(sink.finish().await.unwrap(), 20);
    // Binary, as the proxy's own COPY TO wrote it.
    let binary = copy_out(
        &c,
        "copy (select id, name, qty from items where id > 40) to stdout (format binary)",
    )
    .await;
    let n = copy_in(&c, "copy copied from stdin (format binary)", &binary)
        .await
        .unwrap();
    assert_eq!(n, 20);
    placed_like_items(&tc, 60).await;
    // Values arrive as the client wrote them.
    let row = c
        .query_one("select name from copied where id = 7", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "item\t7\\x");
    let row = c
        .query_one("select name from copied where id = 25", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "a,b\nline 25");
    // A text key decoded from its escapes lands where an INSERT of the same value does.
    copy_in(&c, "copy tagged from stdin", b"caf\\303\\251\tescaped\n")
        .await
        .unwrap();
    let found = c
        .query("select note from tagged where tag = 'café'", &[])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_that_fails_keeps_nothing_on_any_shard() {
    let tc = cluster().await;
    let c = tc.client().await;
    // A key the proxy cannot read: the line is named, and no shard keeps a row.
    let err = copy_in(
        &c,
        "copy copied from stdin",
        b"1\ta\t1\n2\tb\t2\nnope\tc\t3\n4\td\t4\n",
    )
    .await
    .unwrap_err();
    assert_eq!(code(&err), "22P04");
    assert!(
        db_error(&err).detail().unwrap_or("").contains("line 3"),
        "{err:?}"
    );
    // A shard's own error (a duplicate key) fails every shard's part.
    let err = copy_in(&c, "copy copied from stdin", b"5\ta\t1\n6\tb\t2\n5\tc\t3\n")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "23505");
    // Inside a transaction that rolls back.
    c.batch_execute("begin").await.unwrap();
    copy_in(&c, "copy copied from stdin", b"7\ta\t1\n8\tb\t2\n9\tc\t3\n")
        .await
        .unwrap();
    let seen = c
        .query_one("select count(*) from copied", &[])
        .await
        .unwrap();
    assert_eq!(
        seen.get::<_, i64>(0),
        3,
        "the transaction sees its own rows"
    );
    c.batch_execute("rollback").await.unwrap();
    assert_eq!(
        tc.count_on_each_shard("select count(*) from copied").await,
        vec![0, 0, 0]
    );
    // The session goes on.
    let n = c
        .query_one("select count(*) from items", &[])
        .await
        .unwrap();
    assert_eq!(n.get::<_, i64>(0), ROWS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_to_stdout_streams_every_shard_once() {
    let tc = cluster().await;
    let c = tc.client().await;
    let text = String::from_utf8(copy_out(&c, "copy items to stdout").await).unwrap();
    let mut ids: Vec<i64> = text
        .lines()
        .map(|l| l.split('\t').next().unwrap().parse().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, (1..=ROWS).collect::<Vec<_>>());
    // One header line, not one per shard.
    let csv = String::from_utf8(
        copy_out(
            &c,
            "copy (select id, name from items where qty = 3) to stdout with csv header",
        )
        .await,
    )
    .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "id,name");
    assert_eq!(lines.len() - 1, (1..=ROWS).filter(|g| g % 7 == 3).count());
    assert!(!lines[1..].contains(&"id,name"));
    // A reference table's copy comes from one shard.
    c.batch_execute("insert into countries values ('fr', 'France'), ('de', 'Germany')")
        .await
        .unwrap();
    let out = copy_out(&c, "copy countries to stdout").await;
    assert_eq!(String::from_utf8(out).unwrap().lines().count(), 2);
    // What a stream cannot merge is refused, with a way out.
    let err = c
        .copy_out("copy (select id from items order by id) to stdout")
        .await
        .err()
        .unwrap();
    assert_eq!(code(&err), "0A000");
    assert!(db_error(&err).hint().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_copy_and_psql_copy_reach_every_shard() {
    let tc = cluster().await;
    let dir = common::TempDir::new("copy");
    let file = dir.path().join("countries.csv");
    std::fs::write(&file, "code,name\nfr,France\nde,Germany\nit,Italy\n").unwrap();
    let out = Command::new("psql")
        .args([
            &tc.url("app", "secret"),
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            &format!(
                "\\copy countries from '{}' with (format csv, header)",
                file.display()
            ),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("COPY 3"));
    assert_eq!(
        tc.count_on_each_shard("select count(*) from countries")
            .await,
        vec![3, 3, 3]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_prepare_and_execute_route_by_their_arguments() {
    let tc = cluster().await;
    let c = tc.client().await;
    c.batch_execute("prepare put (bigint, text) as insert into copied values ($1, $2, 0)")
        .await
        .unwrap();
    for i in 1..=ROWS {
        c.batch_execute(&format!("execute put({i}, 'n{i}')"))
            .await
            .unwrap();
    }
    placed_like_items(&tc, ROWS).await;
    c.batch_execute("prepare get (bigint) as select name from copied where id = $1")
        .await
        .unwrap();
    let m = c.simple_query("execute get(42)").await.unwrap();
    assert_eq!(rows(&m), vec![vec![Some("n42".to_string())]]);
    // PostgreSQL's own answers to the mistakes.
    let err = c.batch_execute("execute get(1, 2)").await.unwrap_err();
    assert_eq!(code(&err), "42601");
    let err = c
        .batch_execute("prepare get as select 1")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "42P05");
    let err = c
        .batch_execute("prepare bad as select * from no_such_table")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "42P01");
    c.batch_execute("deallocate get").await.unwrap();
    let err = c.batch_execute("execute get(1)").await.unwrap_err();
    assert_eq!(code(&err), "26000");
    // An argument is a value, never more SQL.
    c.batch_execute("prepare echo (text) as select $1")
        .await
        .unwrap();
    let m = c
        .simple_query("execute echo('x''); drop table items; --')")
        .await
        .unwrap();
    assert_eq!(
        rows(&m),
        vec![vec![Some("x'); drop table items; --".to_string())]]
    );
    c.batch_execute("deallocate all").await.unwrap();
    let n = c
        .query_one("select count(*) from items", &[])
        .await
        .unwrap();
    assert_eq!(n.get::<_, i64>(0), ROWS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_runs_through_the_extended_protocol_and_by_a_protocol_name() {
    let tc = cluster().await;
    let c = tc.client().await;
    c.batch_execute(
        "prepare put (bigint, text) as insert into copied values ($1, $2, 0) returning id",
    )
    .await
    .unwrap();
    // tokio-postgres describes `EXECUTE ...` and asks for binary results, as asyncpg does.
    for i in 1..=ROWS {
        let row = c
            .query_one(&format!("execute put({i}, 'n{i}')"), &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), i);
    }
    placed_like_items(&tc, ROWS).await;
    c.batch_execute("prepare get (bigint) as select id, name from copied where id = $1")
        .await
        .unwrap();
    for i in [1, 42, ROWS] {
        let row = c
            .query_one(&format!("execute get({i})"), &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), i);
        assert_eq!(row.get::<_, String>(1), format!("n{i}"));
    }
    // A statement prepared through the protocol, run by SQL EXECUTE: the parameter type the
    // shard inferred applies to the argument, and its key routes it.
    let (mut raw, _) = Raw::login(tc.port).await;
    // Name, text, and no declared parameter types.
    let parse = b"by_proto\0select name, $1 + 1 from copied where id = $1\0\0\0";
    raw.send(&raw::message(b'P', parse)).await;
    raw.send(&raw::message(b'S', &[])).await;
    assert!(raw.until_ready().await.iter().all(|(tag, _)| *tag != b'E'));
    for (arg, name) in [("'41'", "n41"), ("7", "n7")] {
        raw.send(&raw::query(&format!("execute by_proto({arg})")))
            .await;
        let answer = raw.until_ready().await;
        let data: Vec<&Vec<u8>> = answer
            .iter()
            .filter(|(tag, _)| *tag == b'D')
            .map(|(_, body)| body)
            .collect();
        assert_eq!(data.len(), 1, "{answer:?}");
        let text = String::from_utf8_lossy(data[0]);
        assert!(text.contains(name), "{text}");
    }
    // One namespace, as in PostgreSQL.
    raw.send(&raw::query("prepare by_proto as select 1")).await;
    let answer = raw.until_ready().await;
    let error = answer
        .iter()
        .find(|(tag, _)| *tag == b'E')
        .expect("an error");
    assert_eq!(raw::field(&error.1, b'C').as_deref(), Some("42P05"));
    c.batch_execute("deallocate get").await.unwrap();
    let err = c.query("execute get(1)", &[]).await.unwrap_err();
    assert_eq!(code(&err), "26000");
    c.batch_execute("prepare get as select 5").await.unwrap();
    let row = c.query_one("execute get", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_on_one_shard_and_over_several() {
    let tc = cluster().await;
    let c = tc.client().await;
    c.batch_execute("begin").await.unwrap();
    // One shard by key: every direction works, as on PostgreSQL.
    c.batch_execute("declare one scroll cursor for select id from items where id = 17")
        .await
        .unwrap();
    let m = c.simple_query("fetch next from one").await.unwrap();
    assert_eq!(rows(&m), vec![vec![Some("17".to_string())]]);
    let m = c.simple_query("fetch prior from one").await.unwrap();
    assert!(rows(&m).is_empty());
    c.batch_execute("close one").await.unwrap();
    // Several shards: batches of 7 (simple and extended protocol), then MOVE, then ALL.
    c.batch_execute("declare many cursor for select id, name from items where qty <> 0")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let m = c.simple_query("fetch 7 from many").await.unwrap();
    seen.extend(
        rows(&m)
            .into_iter()
            .map(|r| r[0].clone().unwrap().parse::<i64>().unwrap()),
    );
    let typed = c.query("fetch forward 7 from many", &[]).await.unwrap();
    assert_eq!(typed.len(), 7);
    seen.extend(typed.iter().map(|r| r.get::<_, i64>(0)));
    let m = c.simple_query("move 3 from many").await.unwrap();
    assert!(matches!(
        m.last(),
        Some(SimpleQueryMessage::CommandComplete(3))
    ));
    let m = c.simple_query("fetch all from many").await.unwrap();
    seen.extend(
        rows(&m)
            .into_iter()
            .map(|r| r[0].clone().unwrap().parse::<i64>().unwrap()),
    );
    let expected = (1..=ROWS).filter(|g| g % 7 != 0).count();
    assert_eq!(seen.len() + 3, expected);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no row twice");
    assert!(seen.iter().all(|id| id % 7 != 0));
    let m = c.simple_query("fetch many").await.unwrap();
    assert!(rows(&m).is_empty());
    // Backwards cannot be served from shards read in turn: refused, not wrong.
    let err = c.batch_execute("fetch prior from many").await.unwrap_err();
    assert_eq!(code(&err), "0A000");
    c.batch_execute("rollback").await.unwrap();
    // Under ORDER BY each FETCH merges the shards' cursors (tests/ordered_cursors.rs).
    c.batch_execute("begin; declare sorted cursor for select id from items order by id")
        .await
        .unwrap();
    let m = c.simple_query("fetch 3 from sorted").await.unwrap();
    assert_eq!(
        rows(&m),
        (1..=3)
            .map(|i| vec![Some(i.to_string())])
            .collect::<Vec<_>>()
    );
    c.batch_execute("rollback").await.unwrap();
    // WITH HOLD outlives its transaction; CLOSE ALL (asyncpg sends it on every pool release).
    c.batch_execute("declare kept cursor with hold for select id from items")
        .await
        .unwrap();
    let m = c.simple_query("move all from kept").await.unwrap();
    assert!(matches!(m.last(), Some(SimpleQueryMessage::CommandComplete(n)) if *n == ROWS as u64));
    c.batch_execute("close all").await.unwrap();
    let err = c.batch_execute("fetch kept").await.unwrap_err();
    assert_eq!(code(&err), "34000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn do_and_call_run_everywhere_but_never_write_sharded_rows_everywhere() {
    let tc = cluster().await;
    let c = tc.client().await;
    c.batch_execute("do $$ begin insert into countries values ('nl', 'Netherlands'); end $$")
        .await
        .unwrap();
    assert_eq!(
        tc.count_on_each_shard("select count(*) from countries")
            .await,
        vec![1, 1, 1]
    );
    let err = c
        .batch_execute("do $$ begin insert into copied values (1000, 'x', 0); end $$")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "0A000");
    assert!(db_error(&err).hint().is_some());
    assert_eq!(
        tc.count_on_each_shard("select count(*) from copied").await,
        vec![0, 0, 0]
    );
    // Reading a sharded table would give each copy of a reference row a different value.
    let err = c
        .batch_execute(
            "do $$ begin insert into countries select 'n' || count(*), 'x' from items; end $$",
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), "0A000");
    assert_eq!(
        tc.count_on_each_shard("select count(*) from countries")
            .await,
        vec![1, 1, 1]
    );
    // Inside a transaction, the refusal fails it like any error.
    c.batch_execute("begin").await.unwrap();
    let err = c
        .batch_execute("do $$ begin update items set qty = qty + 1; end $$")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "0A000");
    c.batch_execute("rollback").await.unwrap();
    let total = c
        .query_one("select sum(qty) from items", &[])
        .await
        .unwrap();
    assert_eq!(
        total.get::<_, i64>(0),
        (1..=ROWS).map(|g| g % 7).sum::<i64>()
    );
    // CALL: a procedure made on every shard answers once.
    c.batch_execute(
        "create procedure bump(inout x int) language plpgsql as $$ begin x := x + 1; end $$",
    )
    .await
    .unwrap();
    let m = c.simple_query("call bump(41)").await.unwrap();
    assert_eq!(rows(&m), vec![vec![Some("42".to_string())]]);
    // A SQL-standard body holds semicolons of its own, and CASE ... END inside it; the text
    // after it is a statement of its own.
    let m = c
        .simple_query(
            "create function twice(x int) returns int language sql begin atomic \
             select case when x is null then 0 else x * 2 end; end; select twice(21)",
        )
        .await
        .unwrap();
    assert_eq!(rows(&m), vec![vec![Some("42".to_string())]]);
    assert_eq!(
        tc.count_on_each_shard("select count(*) from pg_proc where proname = 'twice'")
            .await,
        vec![1, 1, 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utility_statements_are_never_left_unanalysed() {
    let tc = cluster().await;
    let c = tc.client().await;
    for sql in [
        "create domain posint as int check (value > 0)",
        "alter domain posint add constraint small check (value < 1000000)",
        "create type mood as enum ('sad')",
        "alter type mood add value 'happy'",
        "create user shardgate_probe",
        "alter user shardgate_probe with connection limit 3",
        "grant select on items to shardgate_probe",
        "revoke select on items from shardgate_probe",
        "create materialized view mv as select 1 as one",
        "refresh materialized view mv",
        "reindex table items",
        "cluster items using items_pkey",
        "alter default privileges grant select on tables to public",
        "alter default privileges revoke select on tables from public",
        "comment on table items is 'things'",
        "load 'plpgsql'",
        "checkpoint",
        "vacuum items",
        "analyze items",
        "drop materialized view mv",
        "drop owned by shardgate_probe",
        "drop user shardgate_probe",
        "drop type mood",
        "drop domain posint",
        "table countries",
        "notify ch, 'x'",
        "explain insert into countries values ('zz', 'Z')",
    ] {
        if let Err(e) = c.batch_execute(sql).await {
            panic!("{sql}: {e:?}");
        }
    }
    // EXPLAIN ANALYZE of a reference write runs it on every copy, as the write would.
    c.batch_execute("explain analyze insert into countries values ('ke', 'Kenya')")
        .await
        .unwrap();
    assert_eq!(
        tc.count_on_each_shard("select count(*) from countries where code = 'ke'")
            .await,
        vec![1, 1, 1]
    );
    // What would be wrong on every shard is refused with the reason.
    let err = c
        .batch_execute("create subscription s connection 'host=x' publication p")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "0A000");
    assert!(!db_error(&err).message().contains("could not analyse"));
}

/// The parser reads `ONLY` before a table as a table named `only`: planned so, `FROM ONLY
/// (items)` ran on one shard and counted its rows alone. Refused instead, in both protocols,
/// and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_before_a_table_is_refused_not_answered_by_one_shard() {
    let tc = cluster().await;
    let c = tc.client().await;
    let before = tc.count_on_each_shard("select count(*) from items").await;
    for sql in [
        "select count(*) from only (items)",
        "select count(*) from only items",
        "select i.name from countries c join only (items) i on true",
        "update only items set qty = 0 where id = 5",
        "delete from only items where id = 5",
    ] {
        let e = c.simple_query(sql).await.unwrap_err();
        assert_eq!(code(&e), "0A000", "{sql}: {e:?}");
        let e = c.query(sql, &[]).await.unwrap_err();
        assert_eq!(code(&e), "0A000", "{sql}: {e:?}");
    }
    assert_eq!(
        tc.count_on_each_shard("select count(*) from items").await,
        before
    );
    assert_eq!(
        tc.count_on_each_shard("select count(*) from items where id = 5 and qty = 5")
            .await
            .iter()
            .sum::<i64>(),
        1
    );
    // DDL holding such a query goes to every shard as written, as before.
    c.batch_execute("create view only_items as select * from only items; drop view only_items")
        .await
        .unwrap();
    // TRUNCATE ONLY is read as PostgreSQL reads it, on every copy.
    c.batch_execute("insert into countries values ('fr', 'France'); truncate only countries")
        .await
        .unwrap();
    assert_eq!(
        tc.count_on_each_shard("select count(*) from countries")
            .await,
        vec![0, 0, 0]
    );
}

/// `FROM tagged AS t (note, tag)` renames the table's columns by position: `tag` there is the
/// note column. Planned by the names, `WHERE tag = 'x'` went to the shard owning the key 'x'
/// and counted the notes there alone; refused instead. Column lists of functions stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_tables_columns_renamed_by_its_alias_are_refused() {
    let tc = cluster().await;
    let c = tc.client().await;
    let values: Vec<String> = (1..=30).map(|g| format!("('t{g}', 'x')")).collect();
    c.batch_execute(&format!("insert into tagged values {}", values.join(", ")))
        .await
        .unwrap();
    for sql in [
        "select count(*) from tagged as t (note, tag) where tag = 'x'",
        "select i.id from items i join tagged t (k) on t.k = 'x' where i.id = 1",
    ] {
        let e = c.simple_query(sql).await.unwrap_err();
        assert_eq!(code(&e), "0A000", "{sql}: {e:?}");
        let e = c.query(sql, &[]).await.unwrap_err();
        assert_eq!(code(&e), "0A000", "{sql}: {e:?}");
    }
    let n = c
        .query_one(
            "select count(*) from tagged t, generate_series(1, 2) as g (n) where t.note = 'x'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(n.get::<_, i64>(0), 60);
}

/// `interval(0) '1.6 seconds'` is 2 seconds. The parser drops that precision, and a read of
/// several shards, which the proxy writes anew, asked the shards for 1.6 seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interval_literals_precision_holds_over_several_shards() {
    let tc = cluster().await;
    let c = tc.client().await;
    let sql = "select id, interval(0) '1.6 seconds' as i from items order by id limit 2";
    let simple = rows(&c.simple_query(sql).await.unwrap());
    assert_eq!(simple.len(), 2);
    assert!(
        simple.iter().all(|r| r[1].as_deref() == Some("00:00:02")),
        "{simple:?}"
    );
    let typed = c
        .query(&format!("select i::text from ({sql}) s"), &[])
        .await
        .unwrap();
    assert!(typed.iter().all(|r| r.get::<_, String>(0) == "00:00:02"));
}

/// Forms the parser misreads, over several shards, where the proxy writes the statement anew.
/// `x ISNULL` is PostgreSQL's `x IS NULL`; the parser read it in a select list as `x` under an
/// alias, and the shards were asked for the column's values instead of booleans. A number run
/// into letters (`0x1f`), which PostgreSQL 15 rejects and 16 reads as an integer, was written
/// anew as a bit string, `2 ^-1` (the operator `^-`) as `2 ^ -1`, and `==` as `=`. A typed
/// constant (`mood 'ok'`) was read as a name under a string alias, which every shard then
/// refused as a syntax error, and a string continued over a line break was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_the_parser_misreads_mean_what_postgresql_reads() {
    let tc = cluster().await;
    let c = tc.client().await;
    let read = "select id, nullif(qty, 0) ISNULL from items where id in (6, 7, 8) order by id";
    let expected = |id: &str, none: &str| vec![Some(id.into()), Some(none.into())];
    assert_eq!(
        rows(&c.simple_query(read).await.unwrap()),
        vec![expected("6", "f"), expected("7", "t"), expected("8", "f")]
    );
    let typed = c.query(read, &[]).await.unwrap();
    let nones: Vec<bool> = typed.iter().map(|r| r.get(1)).collect();
    assert_eq!(nones, [false, true, false]);
    let counted = c
        .query_one(
            "select count(*) from items where nullif(qty, 0) isnull",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(counted.get::<_, i64>(0), ROWS / 7);
    for sql in [
        "select id, 0x1f from items where id in (6, 7, 8)",
        "select id, 1_000 from items order by id limit 2",
        // PostgreSQL's operator `^-`, not `^` before a negative number.
        "select id, 2 ^-1 from items where id in (6, 7, 8)",
        "select id, id == 7 from items where id in (6, 7, 8)",
    ] {
        assert!(c.simple_query(sql).await.is_err(), "{sql}");
        assert!(c.query(sql, &[]).await.is_err(), "{sql}");
    }
    c.batch_execute("create type mood as enum ('sad', 'ok')")
        .await
        .unwrap();
    let typed = "select id, mood 'ok', qty = pg_catalog.int4 '0' from items \
                 where id in (6, 7, 8) order by id";
    let typed_row =
        |id: &str, zero: &str| vec![Some(id.into()), Some("ok".into()), Some(zero.into())];
    assert_eq!(
        rows(&c.simple_query(typed).await.unwrap()),
        vec![
            typed_row("6", "f"),
            typed_row("7", "t"),
            typed_row("8", "f")
        ]
    );
    // PostgreSQL's string continued over a line break, which the parser read as an alias.
    let continued = rows(
        &c.simple_query("select 'it'\n  'em' || id from items where id in (6, 7, 8) order by id")
            .await
            .unwrap(),
    );
    assert_eq!(
        continued,
        [6, 7, 8].map(|id| vec![Some(format!("item{id}"))])
    );
    // A string after AS stays PostgreSQL's syntax error, never a constant.
    let err = c
        .simple_query("select id as 'x' from items where id in (6, 7, 8)")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "42601");
    c.batch_execute("drop type mood").await.unwrap();
}

/// Where the proxy writes a statement anew for the shards (a read of several shards, each
/// shard's part of an INSERT split by key), `- -3` must not come back as `--3`, a comment to
/// the end of the line, nor `@ -3.5` as an operator `@-`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_operators_written_back_keep_their_operands_apart() {
    let tc = cluster().await;
    let c = tc.client().await;
    let read = "select id, - -id as n, @ -3.5 as a, ~ -5 as b from items order by id limit 2";
    assert_eq!(
        rows(&c.simple_query(read).await.unwrap()),
        vec![
            vec![
                Some("1".into()),
                Some("1".into()),
                Some("3.5".into()),
                Some("4".into())
            ],
            vec![
                Some("2".into()),
                Some("2".into()),
                Some("3.5".into()),
                Some("4".into())
            ],
        ]
    );
    let keys: Vec<i64> = (0..3).map(|s| tc.keys_on(s, 100..200, 1)[0]).collect();
    let values: Vec<String> = keys.iter().map(|k| format!("({k}, 'n', - -{k})")).collect();
    c.batch_execute(&format!("insert into items values {}", values.join(", ")))
        .await
        .unwrap();
    let qty = c
        .query(
            "select id, qty from items where id = any($1) order by id",
            &[&keys],
        )
        .await
        .unwrap();
    assert_eq!(qty.len(), 3);
    assert!(qty
        .iter()
        .all(|r| r.get::<_, i64>(0) == i64::from(r.get::<_, i32>(1))));
}

/// `FOR NO KEY UPDATE` and `FOR KEY SHARE` (Django's `select_for_update(no_key=True)`,
/// SQLAlchemy's `with_for_update(key_share=True)`) run. On one shard the lock is taken as
/// written: the shard's own session may still take the locks it leaves free, not the others.
/// A read of several shards, which the proxy writes anew, holds at least that lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weaker_row_locks_run_and_lock() {
    let tc = cluster().await;
    let mut c = tc.client().await;
    let (on_0, elsewhere) = (tc.keys_on(0, 1..61, 2), tc.keys_on(1, 1..61, 1)[0]);
    let shard = tc.direct(0).await;
    // Whether the shard's own session can lock `id` with `lock` now.
    let free = |id: i64, lock: &'static str| {
        let shard = &shard;
        async move {
            let sql = format!("select id from items where id = {id} for {lock} nowait");
            match shard.simple_query(&sql).await {
                Ok(_) => true,
                Err(e) if code(&e) == "55P03" => false,
                Err(e) => panic!("{sql}: {e:?}"),
            }
        }
    };
    for bound in [false, true] {
        let t = c.transaction().await.unwrap();
        let one = "select id from items where id = $1 for no key update";
        let key_share = "select id from items where id = $1 for key share";
        let several = "select id from items where id in ($1, $2) order by id for key share";
        let counts = if bound {
            vec![
                t.query(one, &[&on_0[0]]).await.unwrap().len(),
                t.query(key_share, &[&on_0[1]]).await.unwrap().len(),
            ]
        } else {
            vec![
                rows(
                    &t.simple_query(&one.replace("$1", &on_0[0].to_string()))
                        .await
                        .unwrap(),
                )
                .len(),
                rows(
                    &t.simple_query(&key_share.replace("$1", &on_0[1].to_string()))
                        .await
                        .unwrap(),
                )
                .len(),
            ]
        };
        assert_eq!(counts, vec![1, 1]);
        // NO KEY UPDATE leaves KEY SHARE free, not SHARE; KEY SHARE leaves NO KEY UPDATE free,
        // not UPDATE.
        assert!(free(on_0[0], "key share").await, "bound: {bound}");
        assert!(!free(on_0[0], "share").await, "bound: {bound}");
        assert!(free(on_0[1], "no key update").await, "bound: {bound}");
        assert!(!free(on_0[1], "update").await, "bound: {bound}");
        t.rollback().await.unwrap();

        let t = c.transaction().await.unwrap();
        let locked = if bound {
            t.query(several, &[&elsewhere, &on_0[0]])
                .await
                .unwrap()
                .len()
        } else {
            let several = several
                .replace("$1", &elsewhere.to_string())
                .replace("$2", &on_0[0].to_string());
            rows(&t.simple_query(&several).await.unwrap()).len()
        };
        assert_eq!(locked, 2);
        assert!(!free(on_0[0], "update").await, "bound: {bound}");
        t.rollback().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orm_shapes_bind_limit_offset_and_having_values() {
    let tc = cluster().await;
    let c = tc.client().await;
    // tokio-postgres binds integers in binary, as asyncpg and the ORMs on it do.
    let page = c
        .query(
            "select id from items order by id limit $1 offset $2",
            &[&5i64, &10i64],
        )
        .await
        .unwrap();
    let ids: Vec<i64> = page.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, vec![11, 12, 13, 14, 15]);
    let groups = c
        .query(
            "select qty, count(*) from items group by qty having count(*) > $1 order by qty",
            &[&8i64],
        )
        .await
        .unwrap();
    let expected: Vec<i32> = (0..7)
        .filter(|q| (1..=ROWS).filter(|g| g % 7 == *q as i64).count() > 8)
        .collect();
    let got: Vec<i32> = groups.iter().map(|r| r.get(0)).collect();
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeclared_tables_can_live_on_one_named_shard() {
    let tail = format!("{TABLES}[routing]\nundeclared_tables = \"s1\"\n");
    let tc = TestCluster::start_unlike(3, "", &tail).await;
    let c = tc.client().await;
    c.batch_execute(
        "create table items (id bigint primary key, name text, qty int);
         create table countries (code text primary key, name text);
         create table django_migrations (id serial primary key, app text, name text);
         insert into countries values ('fr', 'France')",
    )
    .await
    .unwrap();
    // Its own serial key works: the table is one ordinary table on one shard.
    let ids: Vec<i32> = c
        .query(
            "insert into django_migrations (app, name) values ('auth', '0001'), ('auth', '0002') returning id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, vec![1, 2]);
    copy_in(
        &c,
        "copy django_migrations (app, name) from stdin",
        b"fr\t0001\n",
    )
    .await
    .unwrap();
    assert_eq!(
        tc.count_on_each_shard("select count(*) from django_migrations")
            .await,
        vec![0, 3, 0]
    );
    c.batch_execute("update django_migrations set name = name || '_done' where app = 'auth'")
        .await
        .unwrap();
    let done = c
        .query_one(
            "select count(*) from django_migrations where name like '%_done'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(done.get::<_, i64>(0), 2);
    // With a reference table it joins on its shard; with a sharded table it cannot.
    let joined = c
        .query(
            "select m.name from django_migrations m join countries c on c.code = m.app",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(joined.len(), 1);
    let err = c
        .query(
            "select * from django_migrations m join items i on i.id = m.id",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), "0A000");
    assert!(db_error(&err)
        .hint()
        .unwrap_or("")
        .contains("undeclared_tables"));
    // A WITH that writes it is a write on its shard: with a row of another shard written in the
    // same transaction, both commit in two phases (each prepared branch leaves a marker on its
    // shard). Read as a query, it was committed after the decision, as a read.
    let markers = || async {
        answer(
            &tc.direct(1).await,
            "select count(*) from shardgate.txn_marker",
        )
        .await[0][0]
            .clone()
    };
    c.batch_execute("insert into items select g, 'i', 0 from generate_series(1, 20) g")
        .await
        .unwrap();
    let before = markers().await;
    let elsewhere = answer(&tc.direct(0).await, "select min(id) from items").await[0][0]
        .clone()
        .unwrap();
    c.batch_execute(&format!(
        "begin;
         update items set qty = 100 where id = {elsewhere};
         with w as (select 'de' as app) insert into django_migrations (app, name) select app, '0001' from w;
         commit"
    ))
    .await
    .unwrap();
    let after = markers().await;
    assert_eq!(
        after.and_then(|a| a.parse::<i64>().ok()),
        before.and_then(|b| b.parse::<i64>().ok()).map(|b| b + 1),
        "shard s1 took part in the two-phase commit"
    );
    assert_eq!(
        tc.count_on_each_shard("select count(*) from django_migrations where app = 'de'")
            .await,
        vec![0, 1, 0]
    );
    // Writing a reference table beside it would write one copy: refused.
    let sql = "with w as (insert into countries values ('de', 'Germany') returning code) insert into django_migrations (app, name) select code, '1' from w";
    let err = c.simple_query(sql).await.unwrap_err();
    assert_eq!(code(&err), "0A000", "{err:?}");
    assert_eq!(
        tc.count_on_each_shard("select count(*) from countries where code = 'de'")
            .await,
        vec![0, 0, 0]
    );
    // A reference table filled from it: read on its shard once, written alike on every copy
    // (each copy read its own shard's table before).
    c.batch_execute(
        "insert into countries (code, name) select app, name from django_migrations where app = 'de'",
    )
    .await
    .unwrap();
    assert_eq!(
        tc.count_on_each_shard("select count(*) from countries where code = 'de'")
            .await,
        vec![1, 1, 1]
    );
    // Other writes of a reference table reading it are refused.
    for sql in [
        "update countries set name = (select max(name) from django_migrations)",
        "delete from countries where code in (select app from django_migrations)",
    ] {
        let err = c.simple_query(sql).await.unwrap_err();
        assert_eq!(code(&err), "0A000", "{sql}: {err:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeclared_reference_tables_keep_identical_copies_under_concurrent_serial_inserts() {
    let tail = format!("{TABLES}[routing]\nundeclared_tables = \"reference\"\n");
    let tc = TestCluster::start_unlike(3, "", &tail).await;
    tc.client()
        .await
        .batch_execute("create table auth_user (id serial primary key, name text unique)")
        .await
        .unwrap();
    // One copy takes a random moment before it draws each id, as a busy shard would: without
    // turns, concurrent writers then draw in different orders on different copies.
    tc.direct(1)
        .await
        .batch_execute(
            "create function slow_nextval() returns int language sql as
               $$ select pg_sleep(random() * 0.004); select nextval('auth_user_id_seq')::int $$;
             alter table auth_user alter column id set default slow_nextval()",
        )
        .await
        .unwrap();
    let mut writers = Vec::new();
    for w in 0..6 {
        let c = tc.client().await;
        writers.push(tokio::spawn(async move {
            for i in 0..15 {
                c.execute(
                    "insert into auth_user (name) values ($1)",
                    &[&format!("w{w}-{i}")],
                )
                .await
                .unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    // Every copy gave every name the same id.
    let mut copies = Vec::new();
    for i in 0..3 {
        let rows = tc
            .direct(i)
            .await
            .query("select id, name from auth_user order by id", &[])
            .await
            .unwrap();
        copies.push(
            rows.iter()
                .map(|r| (r.get::<_, i32>(0), r.get::<_, String>(1)))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(copies[0].len(), 90);
    assert_eq!(copies[0], copies[1]);
    assert_eq!(copies[0], copies[2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_insert_returning_keeps_the_clients_row_order() {
    let tc = cluster().await;
    let c = tc.client().await;
    // Rows of one INSERT on every shard, keys out of order: RETURNING follows the VALUES.
    let keys: Vec<i64> = vec![907, 3, 512, 77, 1000, 41, 250, 8, 600, 19];
    let values: Vec<String> = keys.iter().map(|k| format!("({k}, 'r{k}', 0)")).collect();
    let m = c
        .simple_query(&format!(
            "insert into copied values {} returning id",
            values.join(", ")
        ))
        .await
        .unwrap();
    let back: Vec<i64> = rows(&m)
        .iter()
        .map(|r| r[0].clone().unwrap().parse().unwrap())
        .collect();
    assert_eq!(back, keys);
    let shards = tc.count_on_each_shard("select count(*) from copied").await;
    assert!(shards.iter().filter(|n| **n > 0).count() > 1, "{shards:?}");
    // The same with bound values (extended protocol).
    let more: Vec<i64> = vec![4000, 12, 3333, 5];
    let rows = c
        .query(
            "insert into copied (id, name, qty) values ($1, 'a', 0), ($2, 'b', 0), ($3, 'c', 0), ($4, 'd', 0) returning id",
            &[&more[0], &more[1], &more[2], &more[3]],
        )
        .await
        .unwrap();
    let back: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(back, more);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_without_its_sequence_columns_gets_cluster_wide_values() {
    let tail = "[tables.events]\nshard_key = \"id\"\nkey_type = \"integer\"\n[tables.fresh]\nshard_key = \"id\"\nkey_type = \"bigint\"\n[tables.parts]\nshard_key = \"owner\"\nkey_type = \"bigint\"\n[tables.plain]\nshard_key = \"id\"\nkey_type = \"bigint\"\n";
    let tc = TestCluster::start_unlike(3, "", tail).await;
    let c = tc.client().await;
    c.batch_execute(
        "create table events (id serial primary key, note text);
         create table parts (id bigserial primary key, owner bigint, note text);
         create table plain (id bigint primary key, note text)",
    )
    .await
    .unwrap();
    let text: String = (0..30).map(|i| format!("t{i}\n")).collect();
    let csv: String = (0..30)
        .map(|i| format!("\"c{i}\nsecond line\"\r\n"))
        .collect();
    let mut binary = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0".to_vec();
    for i in 0..30 {
        let note = format!("b{i}");
        binary.extend_from_slice(&1i16.to_be_bytes());
        binary.extend_from_slice(&(note.len() as i32).to_be_bytes());
        binary.extend_from_slice(note.as_bytes());
    }
    binary.extend_from_slice(&(-1i16).to_be_bytes());
    for (sql, data) in [
        ("copy events (note) from stdin", text.as_bytes()),
        (
            "copy events (note) from stdin with (format csv)",
            csv.as_bytes(),
        ),
        (
            "copy events (note) from stdin with (format binary)",
            &binary[..],
        ),
    ] {
        assert_eq!(copy_in(&c, sql, data).await.unwrap(), 30, "{sql}");
    }
    // Each row on the shard that owns its key, every key unique, the rows spread out.
    let mut ids = Vec::new();
    for i in 0..3 {
        for r in tc
            .direct(i)
            .await
            .query("select id from events", &[])
            .await
            .unwrap()
        {
            let id: i32 = r.get(0);
            let routed = c
                .query_one(&format!("show shardgate.route events {id}"), &[])
                .await
                .unwrap();
            assert_eq!(routed.get::<_, String>(3), format!("s{i}"), "key {id}");
            ids.push(id);
        }
    }
    assert_eq!(ids.len(), 90);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 90, "a key was handed out twice");
    let notes = rows(
        &c.simple_query(
            "select count(*) from events where note like 'c%' || chr(10) || 'second line'",
        )
        .await
        .unwrap(),
    );
    assert_eq!(notes[0][0].as_deref(), Some("30"));
    // The key given, another serial column left out: its values are unique too.
    let owners: String = (0..40).map(|i| format!("{i}\tp{i}\n")).collect();
    assert_eq!(
        copy_in(&c, "copy parts (owner, note) from stdin", owners.as_bytes())
            .await
            .unwrap(),
        40
    );
    let mut part_ids = Vec::new();
    for i in 0..3 {
        for r in tc
            .direct(i)
            .await
            .query("select id from parts", &[])
            .await
            .unwrap()
        {
            part_ids.push(r.get::<_, i64>(0));
        }
    }
    part_ids.sort();
    part_ids.dedup();
    assert_eq!(part_ids.len(), 40, "a serial value was used on two shards");
    // Without the key and without a sequence to fill it: refused, with the way out.
    let err = copy_in(&c, "copy plain (note) from stdin", b"x\n")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "0A000");
    assert!(db_error(&err).hint().unwrap_or("").contains("sequence"));
    // A table made in a session's own open transaction, which only that transaction sees:
    // a COPY there, which occupies the transaction, is refused up front; an INSERT gets keys.
    // (tokio-postgres loses its place after a COPY that fails before it starts, against
    // PostgreSQL too, so each step has its own connection.)
    let c = tc.client().await;
    c.batch_execute("begin; create table fresh (id bigserial primary key, note text)")
        .await
        .unwrap();
    let err = copy_in(&c, "copy fresh (note) from stdin", text.as_bytes())
        .await
        .unwrap_err();
    assert_eq!(code(&err), "0A000");
    // Its transaction ends with the connection (the next CREATE waits for that).
    drop(c);
    tc.client()
        .await
        .batch_execute(
            "begin; create table fresh (id bigserial primary key, note text);
             insert into fresh (note) values ('x'), ('y'), ('z'), ('w'), ('v'), ('u'); commit",
        )
        .await
        .unwrap();
    let fresh = tc
        .count_on_each_shard("select count(distinct id) from fresh")
        .await;
    assert_eq!(fresh.iter().sum::<i64>(), 6);
    assert!(fresh.iter().filter(|n| **n > 0).count() > 1, "{fresh:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_keys_from_a_sequence_are_unique_across_the_cluster() {
    let tail = "[tables.orders]\nshard_key = \"id\"\nkey_type = \"bigint\"\n[tables.tickets]\nshard_key = \"id\"\nkey_type = \"integer\"\n[tables.badseq]\nshard_key = \"id\"\nkey_type = \"bigint\"\n[tables.lines]\nshard_key = \"order_id\"\nkey_type = \"bigint\"\n";
    let tc = TestCluster::start_unlike(3, "", tail).await;
    let c = tc.client().await;
    c.batch_execute(
        "create table orders (id bigserial primary key, note text);
         create table tickets (id integer generated by default as identity primary key, note text)",
    )
    .await
    .unwrap();
    // An ALWAYS identity could not be filled in: refused at CREATE, with the reason.
    for sql in [
        "create table badseq (id bigint primary key, n bigint generated always as identity)",
        "create table badseq (id bigint generated always as identity primary key)",
    ] {
        let err = c.batch_execute(sql).await.unwrap_err();
        assert_eq!(code(&err), "0A000", "{sql}");
    }
    // Simple protocol, several rows, RETURNING gives the keys back in row order.
    let m = c
        .simple_query("insert into orders (note) values ('a'), ('b'), ('c') returning id, note")
        .await
        .unwrap();
    let first: Vec<Vec<Option<String>>> = rows(&m);
    assert_eq!(first.len(), 3);
    assert_eq!(
        first
            .iter()
            .map(|r| r[1].clone().unwrap())
            .collect::<Vec<_>>(),
        vec!["a", "b", "c"]
    );
    // Extended protocol (a prepared INSERT reused), DEFAULT, no column list, identity key,
    // and several sessions at once.
    let mut writers = Vec::new();
    for w in 0..4 {
        let c = tc.client().await;
        writers.push(tokio::spawn(async move {
            let put = c
                .prepare("insert into orders (note) values ($1) returning id")
                .await
                .unwrap();
            let mut ids = Vec::new();
            for i in 0..25 {
                let row = c.query_one(&put, &[&format!("w{w}-{i}")]).await.unwrap();
                ids.push(row.get::<_, i64>(0));
            }
            ids
        }));
    }
    let mut ids: Vec<i64> = Vec::new();
    for w in writers {
        ids.extend(w.await.unwrap());
    }
    c.batch_execute(
        "insert into orders values (default, 'd');
         insert into orders (id, note) values (default, 'e');
         insert into tickets (note) values ('t1'), ('t2')",
    )
    .await
    .unwrap();
    // Every key unique across the shards, and each row on the shard that owns its key.
    let mut all: Vec<i64> = Vec::new();
    for i in 0..3 {
        let rows = tc
            .direct(i)
            .await
            .query("select id from orders", &[])
            .await
            .unwrap();
        for r in rows {
            let id: i64 = r.get(0);
            let routed = c
                .query_one(&format!("show shardgate.route orders {id}"), &[])
                .await
                .unwrap();
            assert_eq!(routed.get::<_, String>(3), format!("s{i}"), "key {id}");
            all.push(id);
        }
    }
    assert_eq!(all.len(), 3 + 100 + 2);
    let mut unique = all.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), all.len(), "a key was handed out twice");
    assert!(ids.iter().all(|id| all.contains(id)));
    assert!(
        tc.count_on_each_shard("select count(*) from orders")
            .await
            .iter()
            .filter(|n| **n > 0)
            .count()
            > 1,
        "keys from one sequence spread over the shards"
    );
    let n = c
        .query_one("select count(*) from tickets", &[])
        .await
        .unwrap();
    assert_eq!(n.get::<_, i64>(0), 2);
    // A child table sharded by its parent's key keeps its own serial id, and a column taking
    // nextval of a sequence of its own: both unique across the shards.
    c.batch_execute(
        "create sequence line_no;
         create table lines (id bigserial primary key, order_id bigint, no bigint default nextval('line_no'), note text)",
    )
    .await
    .unwrap();
    for order in all.iter().take(40) {
        c.execute(
            "insert into lines (order_id, note) values ($1, 'x'), ($1, 'y')",
            &[order],
        )
        .await
        .unwrap();
    }
    let mut line_ids = Vec::new();
    let mut line_nos = Vec::new();
    for i in 0..3 {
        for r in tc
            .direct(i)
            .await
            .query("select id, no from lines", &[])
            .await
            .unwrap()
        {
            line_ids.push(r.get::<_, i64>(0));
            line_nos.push(r.get::<_, i64>(1));
        }
    }
    assert_eq!(line_ids.len(), 80);
    for v in [&mut line_ids, &mut line_nos] {
        v.sort();
        v.dedup();
        assert_eq!(v.len(), 80, "a sequence value was used on two shards");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subqueries_tied_by_the_shard_key_run_on_each_shard() {
    let tc = cluster().await;
    let c = tc.client().await;
    // `copied` is sharded like `items`: rows of equal keys share a shard.
    let some: Vec<i64> = (1..=ROWS).filter(|g| g % 4 == 0).collect();
    let values: Vec<String> = some.iter().map(|k| format!("({k}, 'c', 1)")).collect();
    c.batch_execute(&format!("insert into copied values {}", values.join(", ")))
        .await
        .unwrap();
    let ids = |rows: Vec<tokio_postgres::Row>| {
        let mut v: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        v.sort();
        v
    };
    let found = c
        .query(
            "select i.id from items i where exists (select 1 from copied c where c.id = i.id and c.qty > 0)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(ids(found), some);
    let found = c
        .query(
            "select id from items where id in (select id from copied) and qty <> $1",
            &[&99i32],
        )
        .await
        .unwrap();
    assert_eq!(ids(found), some);
    let found = c
        .query(
            "select i.id from items i where not exists (select 1 from copied c where i.id = c.id)",
            &[],
        )
        .await
        .unwrap();
    let rest: Vec<i64> = (1..=ROWS).filter(|g| g % 4 != 0).collect();
    assert_eq!(ids(found), rest);
    // The count an ORM asks for, merged over the shards.
    let n = c
        .query_one(
            "select count(*) from items i where exists (select 1 from copied c where c.id = i.id)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(n.get::<_, i64>(0), some.len() as i64);
    // NOT IN over every shard's keys (one NULL among them would make it false everywhere):
    // the subquery is answered first, as a whole.
    let found = c
        .query(
            "select id from items where id not in (select id from copied)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(ids(found), rest);
    // Sorted by a tied subquery: each shard computes it for its rows, the merge sorts by it.
    let counted = c
        .query(
            "select i.id, (select count(*) from copied c where c.id = i.id) from items i order by (select count(*) from copied c where c.id = i.id) desc, i.id limit 5",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(i64, i64)> = counted.iter().map(|r| (r.get(0), r.get(1))).collect();
    let want: Vec<(i64, i64)> = some.iter().take(5).map(|&k| (k, 1)).collect();
    assert_eq!(got, want);
    // Under DISTINCT, the subquery's count(*) is its own, not an aggregate of the outer rows.
    let distinct = c
        .query(
            "select distinct (select count(*) from copied c where c.id = i.id) as n from items i order by n",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<i64> = distinct.iter().map(|r| r.get(0)).collect();
    assert_eq!(got, vec![0, 1]);
    // Not tied by the key: the inner values are read first (as the IN beside it reads them).
    let ids =
        |rows: Vec<tokio_postgres::Row>| -> Vec<i64> { rows.iter().map(|r| r.get(0)).collect() };
    let exists = c
        .query(
            "select id from items i where exists (select 1 from copied c where c.qty = i.qty) order by id",
            &[],
        )
        .await
        .unwrap();
    let within = c
        .query(
            "select id from items i where i.qty in (select qty from copied) order by id",
            &[],
        )
        .await
        .unwrap();
    assert!(!within.is_empty());
    assert_eq!(ids(exists), ids(within));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_a_derived_table_of_each_shards_rows_merges() {
    let tc = cluster().await;
    let c = tc.client().await;
    // SQLAlchemy's legacy Query.count(): count(*) over the query as a subquery.
    let n = c
        .query_one(
            "select count(*) as count_1 from (select items.id as items_id, items.name from items where items.qty > $1) as anon_1",
            &[&2i32],
        )
        .await
        .unwrap();
    assert_eq!(
        n.get::<_, i64>(0),
        (1..=ROWS).filter(|g| g % 7 > 2).count() as i64
    );
    let top = c
        .query(
            "select s.id from (select id, qty from items where qty = 5) s order by s.id desc limit 3",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<i64> = top.iter().map(|r| r.get(0)).collect();
    let mut want: Vec<i64> = (1..=ROWS).filter(|g| g % 7 == 5).collect();
    want.reverse();
    want.truncate(3);
    assert_eq!(got, want);
    // Distinct values of one column: collected across shards, never summed per shard.
    let n = c
        .query_one(
            "select count(*) from (select distinct qty from items) s",
            &[],
        )
        .await
        .unwrap();
    let distinct: std::collections::BTreeSet<i64> = (1..=ROWS).map(|g| g % 7).collect();
    assert_eq!(n.get::<_, i64>(0), distinct.len() as i64);
    // Distinct rows of several columns: grouped on each shard, counted across shards.
    let n = c
        .query_one(
            "select count(*) from (select distinct qty, name like 'item1%' from items) s",
            &[],
        )
        .await
        .unwrap();
    let pairs: std::collections::BTreeSet<(i64, bool)> = (1..=ROWS)
        .map(|g| (g % 7, format!("item{g}").starts_with("item1")))
        .collect();
    assert_eq!(n.get::<_, i64>(0), pairs.len() as i64);
    // A derived table that limits its rows is answered first: the five it picks, counted.
    let n = c
        .query_one(
            "select count(*) from (select distinct qty, name from items order by qty limit 5) s",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(n.get::<_, i64>(0), 5);
    // A derived table of one sharded table's rows, key selected, stands for the table: its
    // key routes, joins on it are co-located and subqueries tie to it.
    let one = c
        .query(
            "select a.id, (select count(*) from items i where i.id = a.id) from (select * from items where qty > 2) a where a.id = $1",
            &[&12i64],
        )
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!((one[0].get::<_, i64>(0), one[0].get::<_, i64>(1)), (12, 1));
    let n = c
        .query_one(
            "select count(*) from (select id as k, qty from items where qty > 2) a join items i on i.id = a.k where exists (select 1 from items j where j.id = a.k and j.qty < 6)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        n.get::<_, i64>(0),
        (1..=ROWS).filter(|g| (3..6).contains(&(g % 7))).count() as i64
    );
    // Grouped other than by the key, it combines every shard's rows: answered first (here as
    // a CTE read once, with a bound value), then read as a list of its rows.
    let n = c
        .query_one(
            "with s as (select qty, count(*) n from items group by qty) select count(*) from s where s.n > $1",
            &[&8i64],
        )
        .await
        .unwrap();
    let mut per_qty = std::collections::BTreeMap::new();
    for g in 1..=ROWS {
        *per_qty.entry(g % 7).or_insert(0) += 1;
    }
    assert_eq!(
        n.get::<_, i64>(0),
        per_qty.values().filter(|&&k| k > 8).count() as i64
    );
    // Its key renamed by a column list, it no longer stands for the table: refused.
    let err = c
        .query(
            "select count(*) from (select * from items) a (k) join items i on i.id = a.k",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), "0A000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_select_from_every_shard_places_each_row_by_its_key() {
    let tc = cluster_with(&format!("{TABLES}[transactions]\nsnapshot = true\n")).await;
    let c = tc.client().await;
    // Rows read from every shard, written by their key in one distributed transaction.
    let m = c
        .simple_query("insert into copied select id, name, qty from items where qty > 2")
        .await
        .unwrap();
    let expected = (1..=ROWS).filter(|g| g % 7 > 2).count() as u64;
    assert!(matches!(
        m.last(),
        Some(SimpleQueryMessage::CommandComplete(n)) if *n == expected
    ));
    placed_like_items(&tc, expected as i64).await;
    // Bound values, RETURNING, inside the client's transaction.
    c.batch_execute("begin").await.unwrap();
    let back = c
        .query(
            "insert into copied select id + $1, name, qty from items where qty <= $2 returning id",
            &[&1000i64, &2i32],
        )
        .await
        .unwrap();
    assert_eq!(back.len() as u64, ROWS as u64 - expected);
    c.batch_execute("rollback").await.unwrap();
    // A source that fails on one shard writes nothing anywhere.
    let err = c
        .simple_query("insert into copied select id + 5000, name, 1 / (id - 7)::int from items")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "22012");
    placed_like_items(&tc, expected as i64).await;
    // In snapshot consistency the shard-by-shard read would take no cut: refused.
    c.batch_execute("set shardgate.consistency = 'snapshot'")
        .await
        .unwrap();
    let err = c
        .simple_query("insert into copied select id + 9000, name, qty from items")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "0A000");
    placed_like_items(&tc, expected as i64).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_select_from_functions_and_values_places_every_row() {
    let tail = format!("{TABLES}[tables.orders]\nshard_key = \"id\"\nkey_type = \"bigint\"\n");
    let tc = TestCluster::start_unlike(3, "", &tail).await;
    let c = tc.client().await;
    let values: Vec<String> = (1..=ROWS).map(|g| format!("({g}, 'item{g}', 0)")).collect();
    c.batch_execute(&format!(
        "create table items (id bigint primary key, name text, qty int);
         create table copied (id bigint primary key, name text, qty int);
         create table orders (id bigserial primary key, note text);
         insert into items values {}",
        values.join(", ")
    ))
    .await
    .unwrap();
    // Generated rows, each on the shard that owns its key.
    let m = c
        .simple_query(
            "insert into copied select g, 'gen' || g, g % 3 from generate_series(1, 60) g",
        )
        .await
        .unwrap();
    assert!(matches!(
        m.last(),
        Some(SimpleQueryMessage::CommandComplete(60))
    ));
    placed_like_items(&tc, ROWS).await;
    // Django's bulk_create: UNNEST of bound arrays, keys from the sequence, RETURNING in order.
    let notes: Vec<String> = (0..12).map(|i| format!("n{i}")).collect();
    let back = c
        .query(
            "insert into orders (note) select * from unnest($1::text[]) returning id, note",
            &[&notes],
        )
        .await
        .unwrap();
    let got: Vec<String> = back.iter().map(|r| r.get(1)).collect();
    assert_eq!(got, notes);
    let ids: Vec<i64> = back.iter().map(|r| r.get(0)).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    // SQLAlchemy's insertmanyvalues: a sorted VALUES source.
    let back = c
        .query(
            "INSERT INTO orders (note) SELECT p0::VARCHAR FROM (VALUES ($1, 0), ($2, 1), ($3, 2)) AS imp_sen(p0, sen_counter) ORDER BY sen_counter RETURNING orders.id, orders.note",
            &[&"x", &"y", &"z"],
        )
        .await
        .unwrap();
    let got: Vec<String> = back.iter().map(|r| r.get(1)).collect();
    assert_eq!(got, vec!["x", "y", "z"]);
    assert!(
        tc.count_on_each_shard("select count(*) from orders")
            .await
            .iter()
            .filter(|n| **n > 0)
            .count()
            > 1
    );
    // A source with no rows inserts none, with the answer PostgreSQL gives.
    let m = c
        .simple_query("insert into copied (id) select g from generate_series(1, 0) g returning id")
        .await
        .unwrap();
    assert!(matches!(
        m.last(),
        Some(SimpleQueryMessage::CommandComplete(0))
    ));
    // Bound, and with an upsert the empty source never reaches.
    let none = c
        .query(
            "insert into copied (id, name) select g, $1 from generate_series(1, 0) g on conflict (id) do update set name = $1 returning id",
            &[&"x"],
        )
        .await
        .unwrap();
    assert!(none.is_empty());
    // A source over several shards whose rows need merging is read once through the merge.
    let inserted = c
        .query(
            "insert into copied select id + 1000, name, qty from items order by id limit 5 returning id",
            &[],
        )
        .await
        .unwrap();
    let ids: Vec<i64> = inserted.iter().map(|r| r.get(0)).collect();
    let want: Vec<i64> = c
        .query("select id + 1000 from items order by id limit 5", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_case_sequence_column_is_filled_under_its_own_name() {
    let tail = "[tables.parts]\nshard_key = \"order_id\"\nkey_type = \"bigint\"\n";
    let tc = TestCluster::start_unlike(3, "", tail).await;
    let c = tc.client().await;
    c.batch_execute(
        r#"create table parts ("PartNo" serial primary key, order_id bigint not null, note text)"#,
    )
    .await
    .unwrap();
    // Left out, given DEFAULT, and with no column list: the proxy names the column itself.
    let mut numbers = Vec::new();
    for sql in [
        r#"insert into parts (order_id, note) values (1, 'a'), (2, 'b') returning "PartNo""#,
        r#"insert into parts ("PartNo", order_id) values (default, 3) returning "PartNo""#,
        r#"insert into parts values (default, 4, 'd') returning "PartNo""#,
    ] {
        for r in rows(&c.simple_query(sql).await.unwrap()) {
            numbers.push(r[0].clone().unwrap());
        }
    }
    assert_eq!(numbers.len(), 4);
    let mut unique = numbers.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 4, "{numbers:?}");
    let counts = tc.count_on_each_shard("select count(*) from parts").await;
    assert_eq!(counts.iter().sum::<i64>(), 4);
}

/// A join `USING` the shard key of two tables sharded on it (the form `JOIN ... USING (id)`
/// that hand-written SQL and query builders use) runs on each shard, as the same join written
/// with ON does: the rows it pairs share their key, and so their shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_using_the_shard_key_run_on_each_shard() {
    let tc = cluster().await;
    let c = tc.client().await;
    c.batch_execute("insert into copied select id, 'copy' || id, qty from items where id % 3 = 0")
        .await
        .unwrap();
    let joined = rows(
        &c.simple_query(
            "select id, i.name, c.name from items i join copied c using (id) \
             where id <= 12 order by id",
        )
        .await
        .unwrap(),
    );
    let expected: Vec<Vec<Option<String>>> = [3, 6, 9, 12]
        .iter()
        .map(|id| {
            vec![
                Some(id.to_string()),
                Some(format!("item{id}")),
                Some(format!("copy{id}")),
            ]
        })
        .collect();
    assert_eq!(joined, expected);
    let outer = c
        .query_one(
            "select count(*), count(c.name) from items i left join copied c using (id)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (outer.get::<_, i64>(0), outer.get::<_, i64>(1)),
        (ROWS, ROWS / 3)
    );
    let one = c
        .query(
            "select id, c.qty from items join copied c using (id) where id = $1",
            &[&9i64],
        )
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].get::<_, i32>(1), 9 % 7);
}
