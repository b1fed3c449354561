//! A reference table keeps one copy on every shard, and every copy must stay the same: a write
//! or a definition that computes a value each server computes its own way (its clock, its
//! randomness, its identity) is refused before any copy changes; the same write with the value
//! computed once runs on every copy alike, and so does a write of the transaction's own time
//! (`now()`), which the proxy gives every shard alike.

mod common;

use common::{code, db_error, TestCluster};

const TABLES: &str = r#"
[tables.currencies]
reference = true
[tables.accounts]
shard_key = "id"
key_type = "bigint"
[routing]
undeclared_tables = "reference"
"#;

/// The rows of `table`, as text, in one order, after checking every shard's copy has them.
async fn the_copy(tc: &TestCluster, table: &str) -> Vec<Vec<Option<String>>> {
    let mut copies = Vec::new();
    for s in 0..3 {
        let rows = tc
            .direct(s)
            .await
            .simple_query(&format!("select * from {table} order by 1"))
            .await
            .unwrap();
        copies.push(common::rows(&rows));
    }
    assert_eq!(
        copies[0], copies[1],
        "shards 0 and 1 hold different copies of {table}"
    );
    assert_eq!(
        copies[0], copies[2],
        "shards 0 and 2 hold different copies of {table}"
    );
    copies.swap_remove(0)
}

fn refused(e: &tokio_postgres::Error, sql: &str) {
    assert_eq!(code(e), "0A000", "{sql}: {e:?}");
    let db = db_error(e);
    assert!(
        db.message().contains("copy would get its own"),
        "{sql}: {}",
        db.message()
    );
    assert!(db.hint().is_some_and(|h| h.contains("once")), "{sql}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_computing_a_value_per_server_are_refused_and_copies_stay_alike() {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let c = tc.client().await;
    c.batch_execute(
        "create table currencies (code text primary key, name text, added timestamptz, tag uuid, n int);
         insert into currencies values ('EUR', 'Euro', '2024-01-01 00:00:00+00', null, 1),
                                       ('USD', 'US dollar', null, null, 2)",
    )
    .await
    .unwrap();
    for sql in [
        "insert into currencies (code, added) values ('JPY', 'now'::timestamptz)",
        "insert into currencies (code, added) values ('JPY', pg_catalog.now())",
        "insert into currencies (code, tag) values ('JPY', gen_random_uuid())",
        "insert into currencies (code, n) select 'JPY', pg_backend_pid()",
        "update currencies set name = random()::text where code = 'EUR'",
        "update currencies set added = clock_timestamp()",
        "insert into currencies (code) values ('EUR') on conflict (code) do update set added = statement_timestamp()",
        "delete from currencies where added < clock_timestamp() - interval '1 year'",
    ] {
        let e = c.simple_query(sql).await.expect_err(sql);
        refused(&e, sql);
        // Bound and prepared, as drivers send them, the same.
        let e = c.execute(sql, &[]).await.expect_err(sql);
        refused(&e, sql);
    }
    // Inside a transaction the refusal fails it, as any error would, and nothing stays.
    c.batch_execute("begin; update currencies set n = n + 1")
        .await
        .unwrap();
    let e = c
        .simple_query("update currencies set added = clock_timestamp()")
        .await
        .unwrap_err();
    refused(&e, "in a transaction");
    c.batch_execute("rollback").await.unwrap();

    // The value computed once, then written: every copy the same.
    let now: std::time::SystemTime = c.query_one("select now()", &[]).await.unwrap().get(0);
    c.execute(
        "insert into currencies (code, name, added, n) values ('JPY', lower('YEN'), $1, 3)",
        &[&now],
    )
    .await
    .unwrap();
    c.batch_execute("update currencies set n = n * 10, name = upper(name) where code <> 'USD'")
        .await
        .unwrap();
    let all = the_copy(&tc, "currencies").await;
    assert_eq!(all.len(), 3);
    assert_eq!(
        all[1][1].as_deref(),
        Some("YEN"),
        "JPY, between EUR and USD"
    );
    assert_eq!(
        all[0][4].as_deref(),
        Some("10"),
        "the rolled-back +1 is gone"
    );
}

/// `now()` and its kin read the transaction's time, which the proxy gives every shard alike:
/// a write of one to a reference table leaves every copy the same, alone or in a transaction
/// that reached a shard long before, in both protocols.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_of_the_transactions_time_keep_the_copies_alike() {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let c = tc.client().await;
    c.batch_execute(
        "create table currencies (code text primary key, added timestamptz, day date);
         create table accounts (id bigint primary key);
         insert into accounts select generate_series(1, 12)",
    )
    .await
    .unwrap();
    c.batch_execute("insert into currencies values ('EUR', now(), current_date)")
        .await
        .unwrap();
    c.execute(
        "insert into currencies values ('USD', CURRENT_TIMESTAMP, CURRENT_DATE)",
        &[],
    )
    .await
    .unwrap();
    let first = the_copy(&tc, "currencies").await;
    assert!(first.iter().all(|r| r[1].is_some()), "{first:?}");
    // A transaction that began on one shard a while before it writes every copy.
    c.batch_execute("begin; select id from accounts where id = 1")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    c.execute(
        "update currencies set added = transaction_timestamp() where code = $1",
        &[&"EUR"],
    )
    .await
    .unwrap();
    c.batch_execute("insert into currencies values ('JPY', localtimestamp, current_date); commit")
        .await
        .unwrap();
    let copy = the_copy(&tc, "currencies").await;
    assert_eq!(copy.len(), 3);
    assert_eq!(
        copy[0][1], copy[1][1],
        "EUR and JPY: one transaction, one time"
    );
    c.batch_execute("delete from currencies where added < now() - interval '1 year'")
        .await
        .unwrap();
    assert_eq!(the_copy(&tc, "currencies").await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_tables_may_not_default_to_a_value_per_server() {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let c = tc.client().await;
    c.batch_execute("create table currencies (code text primary key, name text)")
        .await
        .unwrap();
    c.batch_execute("insert into currencies values ('EUR', 'Euro'), ('USD', 'US dollar')")
        .await
        .unwrap();
    for sql in [
        // Undeclared, so a reference table here.
        "create table audit_log (id serial primary key, at timestamptz default now())",
        "create table tokens (t uuid default gen_random_uuid() primary key)",
        "create table stamped as select 1 as n, clock_timestamp() as at",
        // Filling existing rows, or future inserts that leave the column out.
        "alter table currencies add column seen timestamptz default now()",
        "alter table currencies add column u uuid not null default gen_random_uuid()",
        "alter table currencies alter column name set default random()::text",
    ] {
        let e = c.simple_query(sql).await.expect_err(sql);
        assert_eq!(code(&e), "0A000", "{sql}: {e:?}");
        assert!(db_error(&e).message().contains("reference table"), "{sql}");
        assert!(
            db_error(&e)
                .hint()
                .is_some_and(|h| h.contains("declare the table sharded")),
            "{sql}"
        );
    }
    for s in 0..3 {
        let n: i64 = tc
            .direct(s)
            .await
            .query_one(
                "select (select count(*) from pg_class where relname in ('audit_log', 'tokens', 'stamped'))
                      + (select count(*) from pg_attribute where attrelid = 'currencies'::regclass and attnum > 2)",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "shard {s} has nothing of the refused definitions");
    }
    // Defaults every server computes alike, and a sharded table's own defaults, run.
    c.batch_execute(
        "create table audit_log (id serial primary key, at timestamptz, kind text default 'x');
         alter table currencies add column n int not null default 7;
         create table accounts (id bigint primary key, opened timestamptz default now())",
    )
    .await
    .unwrap();
    c.batch_execute("insert into audit_log (at) values ('2024-05-01 10:00:00+00')")
        .await
        .unwrap();
    assert_eq!(the_copy(&tc, "audit_log").await.len(), 1);
    assert_eq!(
        the_copy(&tc, "currencies").await[0][2].as_deref(),
        Some("7")
    );
    // A column filled from a sequence for the rows a copy holds numbers them in that copy's
    // physical order, which a VACUUM on one shard changes for the rows written after it.
    c.batch_execute(
        "insert into currencies (code, name) select 'C' || g, 'c' from generate_series(1, 40) g;
         delete from currencies where code in ('C3', 'C4', 'C5')",
    )
    .await
    .unwrap();
    tc.direct(1)
        .await
        .batch_execute("vacuum currencies")
        .await
        .unwrap();
    c.batch_execute("insert into currencies (code, name) values ('Z1', 'z'), ('Z2', 'z')")
        .await
        .unwrap();
    for sql in [
        "alter table currencies add column seq serial",
        "alter table currencies add column seq int generated by default as identity",
        "alter table currencies add column seq bigint default nextval('audit_log_id_seq')",
        "alter table currencies alter column n type bigint using nextval('audit_log_id_seq')",
    ] {
        let e = c.simple_query(sql).await.expect_err(sql);
        assert_eq!(code(&e), "0A000", "{sql}: {e:?}");
        assert!(
            db_error(&e).message().contains("physical order"),
            "{sql}: {e:?}"
        );
    }
    // As the hint says: numbered by key, then the default for the rows to come.
    c.batch_execute(
        "alter table currencies add column seq int;
         update currencies set seq = 1 where code = 'EUR';
         alter table currencies alter column seq set default nextval('audit_log_id_seq')",
    )
    .await
    .unwrap();
    assert_eq!(the_copy(&tc, "currencies").await.len(), 41);
    c.batch_execute("drop table audit_log, accounts, currencies")
        .await
        .unwrap();
}

/// `WITH ... INSERT/UPDATE/DELETE` of a reference table, and a SELECT whose WITH list writes
/// one, are writes of it: every copy takes them, its writers taking turns (a serial default
/// hands out one id everywhere), and the client gets one copy's rows. Before, the proxy read
/// them as queries and ran them on the first shard only. A statement that would also need a
/// sharded table, or write two reference tables at once, is refused with nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_inside_with_reach_every_copy() {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let c = tc.client().await;
    c.batch_execute(
        "create table tags (id serial primary key, name text unique, n int);
         create table currencies (code text primary key, name text);
         create table accounts (id bigint primary key, n int);
         insert into accounts select generate_series(1, 6), 0",
    )
    .await
    .unwrap();
    c.batch_execute(
        "with w as (select 'a' as name) insert into tags (name) select name from w;
         with w as (select 'b' as name) insert into tags (name, n) select name, 2 from w",
    )
    .await
    .unwrap();
    let returned = c
        .query(
            "with w as (insert into tags (name) values ($1) returning id, name) select name from w",
            &[&"c"],
        )
        .await
        .unwrap();
    assert_eq!(returned.len(), 1, "one copy's rows");
    assert_eq!(returned[0].get::<_, &str>(0), "c");
    let updated = common::rows(
        &c.simple_query(
            "with w as (select 'b' as name) update tags set n = 20 where name in (select name from w) returning name",
        )
        .await
        .unwrap(),
    );
    assert_eq!(updated, vec![vec![Some("b".to_string())]]);
    let deleted = common::answer(
        &c,
        "with d as (delete from tags where name = 'a' returning *) select count(*) from d",
    )
    .await;
    assert_eq!(deleted[0][0].as_deref(), Some("1"));
    // In a transaction with a sharded table's write: both kept.
    c.batch_execute(
        "begin;
         update accounts set n = 1 where id = 3;
         with w as (select 'd' as name) insert into tags (name) select name from w;
         commit",
    )
    .await
    .unwrap();
    let copy = the_copy(&tc, "tags").await;
    let held: Vec<(Option<String>, Option<String>)> =
        copy.iter().map(|r| (r[0].clone(), r[1].clone())).collect();
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        held,
        vec![(s("2"), s("b")), (s("3"), s("c")), (s("4"), s("d"))],
        "one id each, alike on every copy"
    );
    assert_eq!(copy[0][2].as_deref(), Some("20"));
    assert_eq!(
        common::answer(&c, "select n from accounts where id = 3").await[0][0].as_deref(),
        Some("1")
    );

    for sql in [
        "with w as (insert into tags (name) values ('x') returning id) select * from w, accounts a where a.id = 1",
        "with w as (select id from accounts) insert into tags (name) select 'x' from w",
        "with w as (insert into currencies values ('EUR', 'Euro') returning code) insert into tags (name) values ('x')",
    ] {
        let e = c.simple_query(sql).await.expect_err(sql);
        assert_eq!(code(&e), "0A000", "{sql}: {e:?}");
        assert!(
            db_error(&e)
                .hint()
                .is_some_and(|h| h.contains("statement of its own")),
            "{sql}: {e:?}"
        );
    }
    let e = c
        .simple_query("copy (with w as (insert into tags (name) values ('x') returning id) select * from w) to stdout")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000", "{e:?}");
    let e = c
        .simple_query("with w as (insert into tags (name, n) values ('x', random()) returning id) select * from w")
        .await
        .unwrap_err();
    refused(&e, "random() in a WITH");
    assert_eq!(the_copy(&tc, "tags").await.len(), 3, "nothing written");
    assert!(the_copy(&tc, "currencies").await.is_empty());
    c.batch_execute("drop table tags, currencies, accounts")
        .await
        .unwrap();
}

/// An INSERT ... SELECT into a reference table runs on every copy, and each copy read its
/// source its own way: a serial numbered the rows in each copy's physical order (which a
/// `CLUSTER` on one shard changes), a LIMIT without ORDER BY picked each copy's first rows.
/// Where the order decides what is written, the source is now read once and its rows written
/// alike on every copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_select_into_a_reference_table_reads_its_source_once() {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let c = tc.client().await;
    c.batch_execute(
        "create table src (id int primary key, name text);
         create table dst (id serial primary key, name text);
         create table firsts (code text primary key, name text);
         insert into src select g, 'n' || g from generate_series(1, 8) g;
         update src set name = name || 'x' where id in (1, 2, 3);",
    )
    .await
    .unwrap();
    // One shard's copy of the source put in key order, the others keep updated rows last.
    tc.direct(1)
        .await
        .batch_execute("cluster src using src_pkey")
        .await
        .unwrap();
    c.batch_execute("insert into dst (name) select name from src")
        .await
        .unwrap();
    let copy = the_copy(&tc, "dst").await;
    assert_eq!(copy.len(), 8);
    c.execute(
        "insert into dst (name) select name from src where id > $1 limit 2",
        &[&0i32],
    )
    .await
    .unwrap();
    assert_eq!(the_copy(&tc, "dst").await.len(), 10);
    // ON CONFLICT keeps the first row of each key the source returns.
    c.batch_execute(
        "insert into firsts select left(name, 1), name from src on conflict (code) do nothing",
    )
    .await
    .unwrap();
    assert_eq!(the_copy(&tc, "firsts").await.len(), 1);
    // Rows the transaction wrote are read; a source without rows writes none anywhere.
    c.batch_execute(
        "begin;
         insert into src values (9, 'n9');
         insert into dst (name) select name from src where id = 9;
         commit",
    )
    .await
    .unwrap();
    let none = c
        .query(
            "insert into dst (name) select name from src where id < 0 returning id",
            &[],
        )
        .await
        .unwrap();
    assert!(none.is_empty());
    let none = c
        .query(
            "insert into firsts select left(name, 1), name from src where id < $1 on conflict (code) do update set name = $2 returning code",
            &[&0i32, &"x"],
        )
        .await
        .unwrap();
    assert!(none.is_empty());
    let copy = the_copy(&tc, "dst").await;
    assert_eq!(copy.len(), 11);
    assert_eq!(copy[10][1].as_deref(), Some("n9"));
    // Other writes picking rows by the order they come in, or by a system column, are
    // refused; ordered by a key they run.
    for sql in [
        "delete from dst where id in (select id from dst limit 2)",
        "update dst set name = 'z' where ctid = '(0,1)'",
        "delete from dst where id = (select id from dst offset 3 fetch first 1 row only)",
        "update dst set name = (select name from src limit 1)",
        "insert into dst (name) values ((select name from src limit 1))",
        "update dst set name = 'q' where id = (select id from dst order by id limit 1 for update skip locked)",
        "update dst set name = (select string_agg(n::text, ',') from (select row_number() over () as n from src) s)",
    ] {
        let e = c.simple_query(sql).await.expect_err(sql);
        assert_eq!(code(&e), "0A000", "{sql}: {e:?}");
        assert!(
            db_error(&e).message().contains("pick its own rows"),
            "{sql}: {e:?}"
        );
    }
    c.batch_execute("delete from dst where id in (select id from dst order by id limit 2)")
        .await
        .unwrap();
    assert_eq!(the_copy(&tc, "dst").await.len(), 9);
    c.batch_execute("drop table src, dst, firsts")
        .await
        .unwrap();
}

/// A reference table filled from a table living on the first shard: each other copy read its
/// own shard's empty table of that name. The source is read on the first shard once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_table_filled_from_a_table_on_the_first_shard_gets_its_rows_everywhere() {
    let tail = "[tables.currencies]\nreference = true\n[routing]\nundeclared_tables = \"s0\"\n";
    let tc = TestCluster::start_unlike(3, "", tail).await;
    let c = tc.client().await;
    c.batch_execute(
        "create table currencies (code text primary key, name text);
         create table staged (code text, name text);
         insert into staged values ('EUR', 'Euro'), ('USD', 'US dollar');
         insert into currencies select code, name from staged",
    )
    .await
    .unwrap();
    assert_eq!(the_copy(&tc, "currencies").await.len(), 2);
    c.batch_execute("drop table currencies, staged")
        .await
        .unwrap();
}

/// A DO block runs on every copy, so it takes every reference table's writers' turn before its
/// code runs, as a write of one table takes that table's: while another transaction's write of
/// a reference table is open, the DO waits on the first shard for the turn, and runs once the
/// writer commits. Each copy then hands out the serial values in the same order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_do_block_waits_for_the_turn_of_reference_table_writers() {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let c = tc.client().await;
    c.batch_execute("create table currencies (id serial primary key, code text)")
        .await
        .unwrap();
    let writer = tc.client().await;
    writer
        .batch_execute("begin; insert into currencies (code) values ('w1')")
        .await
        .unwrap();
    let block = tokio::spawn({
        let c = tc.client().await;
        async move {
            c.batch_execute(
                "do $$ begin insert into currencies (code) values ('d1'), ('d2'); end $$",
            )
            .await
        }
    });
    let home = tc.direct(0).await;
    loop {
        assert!(
            !block.is_finished(),
            "the DO block ran while a writer of the reference table held its turn"
        );
        let waiting = home
            .simple_query(
                "select count(*) from pg_stat_activity where wait_event_type = 'Lock' \
                 and query like '%pg_advisory_xact_lock%'",
            )
            .await
            .unwrap();
        if common::rows(&waiting)[0][0].as_deref() != Some("0") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    writer
        .batch_execute("insert into currencies (code) values ('w2'); commit")
        .await
        .unwrap();
    block.await.unwrap().unwrap();
    let rows = the_copy(&tc, "currencies").await;
    let codes: Vec<_> = rows.iter().map(|r| r[1].as_deref().unwrap()).collect();
    assert_eq!(codes, ["w1", "w2", "d1", "d2"]);
}
