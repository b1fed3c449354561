//! One transaction, one clock: `now()`, `CURRENT_TIMESTAMP` and their kin answer the same value
//! on every shard a transaction reaches, as PostgreSQL answers the transaction's start, however
//! late a shard joins and whichever protocol sends the statement; a read of several shards
//! outside a transaction block reads one value too. Column names and types stay PostgreSQL's,
//! definitions (a column default) keep the call as written, and the functions the proxy calls
//! answer as PostgreSQL's own where it gave no time. Also in a session's first transaction that
//! calls the clock after it reached shards, after a savepoint is rolled back to, and after
//! RESET ALL. On three unlike shards.

mod common;

use common::{answer, code, TestCluster};
use shardgate::placement::KeyValue;
use std::collections::BTreeSet;
use std::time::Duration;

const TABLES: &str = "[tables.events]\nshard_key = \"id\"\nkey_type = \"bigint\"\n";

const SCHEMA: &str = "create table events (id bigint primary key, at timestamptz, day date);
    insert into events select g, null, null from generate_series(1, 12) g";

/// A key of `events` on each shard, in shard order.
fn key_on_each_shard(tc: &TestCluster) -> Vec<i64> {
    let placement = tc.config.placement().unwrap();
    (0..3)
        .map(|shard| {
            (1..=12i64)
                .find(|&k| placement.shard_of(&KeyValue::Integer(k)) == shard)
                .unwrap()
        })
        .collect()
}

/// Runs `sql` (one statement or several), which must succeed.
async fn run(c: &tokio_postgres::Client, sql: impl AsRef<str>) {
    c.batch_execute(sql.as_ref()).await.unwrap();
}

/// The distinct values in `sql`'s rows, every column's.
async fn distinct(c: &tokio_postgres::Client, sql: &str) -> BTreeSet<Option<String>> {
    answer(c, sql).await.into_iter().flatten().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_reads_one_clock_on_every_shard() {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let c = tc.client().await;
    run(&c, SCHEMA).await;
    let spread = tc.count_on_each_shard("select count(*) from events").await;
    assert!(spread.iter().all(|n| *n > 0), "{spread:?}");
    let keys = key_on_each_shard(&tc);

    // Simple protocol: the first shard joins at once, the others a while later.
    run(
        &c,
        format!("begin; select id from events where id = {}", keys[0]),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    run(
        &c,
        format!(
            "update events set at = now(), day = current_date where id = {}",
            keys[0]
        ),
    )
    .await;
    run(
        &c,
        "update events set at = current_timestamp where at is null",
    )
    .await;
    let within = distinct(
        &c,
        "select now(), transaction_timestamp(), current_timestamp from events",
    )
    .await;
    assert_eq!(within.len(), 1, "{within:?}");
    // Beside an aggregate, as a constant of the read.
    let counted = answer(&c, "select count(*), now() from events").await;
    assert_eq!(counted[0][0].as_deref(), Some("12"));
    assert!(within.contains(&counted[0][1]), "{counted:?}");
    run(&c, "commit").await;
    let written = distinct(&c, "select at from events").await;
    assert_eq!(
        written, within,
        "one time in every row, the transaction's own"
    );

    // Extended protocol, a prepared statement run on each shard in turn, each joining later.
    let stamp = c
        .prepare("update events set at = now(), day = current_date where id = $1")
        .await
        .unwrap();
    run(&c, "begin").await;
    for k in &keys {
        c.execute(&stamp, &[k]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let read = c
        .query("select now()::text, localtimestamp::text from events", &[])
        .await
        .unwrap();
    run(&c, "commit").await;
    let seen: BTreeSet<String> = read.iter().map(|r| r.get::<_, String>(0)).collect();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let written = distinct(
        &c,
        &format!(
            "select at::text from events where id in ({}, {}, {})",
            keys[0], keys[1], keys[2]
        ),
    )
    .await;
    assert_eq!(written.len(), 1, "{written:?}");
    assert_eq!(
        written.iter().next().unwrap().as_deref(),
        seen.iter().next().map(|s| s.as_str())
    );

    // A shard that joined after a savepoint keeps the time when the savepoint is rolled back to.
    run(
        &c,
        format!(
            "begin; select id from events where id = {}; savepoint s",
            keys[0]
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    run(
        &c,
        format!(
            "select id from events where id = {}; rollback to s",
            keys[1]
        ),
    )
    .await;
    run(&c, "update events set at = now()").await;
    let after_savepoint = distinct(&c, "select at from events").await;
    run(&c, "commit").await;
    assert_eq!(after_savepoint.len(), 1, "{after_savepoint:?}");

    // RESET ALL in a transaction takes back every shard's SET LOCAL; each is given it again.
    run(
        &c,
        format!("begin; select id from events where id = {}", keys[0]),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    run(&c, "update events set at = now()").await;
    run(&c, "reset all").await;
    run(&c, "update events set day = null").await;
    let after_reset = distinct(&c, "select now() from events").await;
    let written = distinct(&c, "select at from events").await;
    run(&c, "commit").await;
    assert_eq!(after_reset.len(), 1, "{after_reset:?}");
    assert_eq!(after_reset, written, "the time before RESET ALL and after");

    // A session's first call of the clock, in a transaction that reached two shards before
    // it (each began its own part at its own moment), and after a savepoint rolled back to.
    let fresh = tc.client().await;
    run(
        &fresh,
        format!("begin; select id from events where id = {}", keys[0]),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    run(
        &fresh,
        format!("select id from events where id = {}; savepoint s", keys[1]),
    )
    .await;
    let on_second = distinct(
        &fresh,
        &format!("select now() from events where id = {}", keys[1]),
    )
    .await;
    run(&fresh, "rollback to s").await;
    let everywhere = distinct(
        &fresh,
        &format!(
            "select now() from events where id in ({}, {}, {})",
            keys[0], keys[1], keys[2]
        ),
    )
    .await;
    run(&fresh, "commit").await;
    assert_eq!(everywhere.len(), 1, "{everywhere:?}");
    assert_eq!(on_second, everywhere);
    // A fresh session whose first statement reads several shards and calls the clock.
    let first = tc.client().await;
    let times = distinct(&first, "select now() from events").await;
    assert_eq!(times.len(), 1, "{times:?}");

    // Outside a transaction block, a read of several shards still reads one time.
    for sql in [
        "select now() from events",
        "select id, current_time from events order by id",
    ] {
        let times: BTreeSet<_> = answer(&c, sql)
            .await
            .into_iter()
            .map(|r| r.last().cloned())
            .collect();
        assert_eq!(times.len(), 1, "{sql}: {times:?}");
    }
    // Grouped, with the time beside each group.
    let grouped = answer(
        &c,
        "select id % 3 as k, count(*), now() from events group by 1 order by 1",
    )
    .await;
    let times: BTreeSet<_> = grouped.iter().map(|r| r[2].clone()).collect();
    assert_eq!((grouped.len(), times.len()), (3, 1), "{grouped:?}");
    // COPY out of several shards, as one read.
    let copied = c
        .copy_out("copy (select now() from events) to stdout")
        .await
        .unwrap();
    let lines: Vec<bytes::Bytes> = futures_util::TryStreamExt::try_collect(copied)
        .await
        .unwrap();
    let text: String = lines
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    let copied: BTreeSet<&str> = text.lines().collect();
    assert_eq!((text.lines().count(), copied.len()), (12, 1), "{copied:?}");
    let rows = c
        .query("select id, now()::text from events", &[])
        .await
        .unwrap();
    let times: BTreeSet<String> = rows.iter().map(|r| r.get::<_, String>(1)).collect();
    assert_eq!((rows.len(), times.len()), (12, 1), "{times:?}");
    // The reads left no transaction open behind them: a savepoint has none to live in.
    let outside = c.batch_execute("savepoint s").await.unwrap_err();
    assert_eq!(code(&outside), "25P01", "{outside:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_calls_keep_postgres_names_types_and_definitions() {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let c = tc.client().await;
    run(&c, SCHEMA).await;
    let one = tc.one_server("one_clock", &[SCHEMA]).await;
    // What the client is shown of each call: its column's name and type.
    let sql = "select now(), current_timestamp, current_date, current_time, localtime, \
               localtimestamp, transaction_timestamp(), now() - interval '1 day' as yesterday";
    let described = |s: &tokio_postgres::Statement| -> Vec<(String, String)> {
        s.columns()
            .iter()
            .map(|col| (col.name().to_string(), col.type_().name().to_string()))
            .collect()
    };
    let through = c.prepare(sql).await.unwrap();
    let direct = one.prepare(sql).await.unwrap();
    assert_eq!(described(&through), described(&direct));
    let over_rows = "select id, now(), current_date from events";
    assert_eq!(
        described(&c.prepare(over_rows).await.unwrap()),
        described(&one.prepare(over_rows).await.unwrap())
    );
    // Text that only looks like a call reaches the shards as written.
    let quoted = "select 'now()' as a, 'current_date' as b, \"now\" from (select 1 as now) s";
    assert_eq!(answer(&c, quoted).await, answer(&one, quoted).await);

    // A definition keeps the call as the client wrote it.
    run(
        &c,
        "create table stamped (id bigint primary key, at timestamptz default now(), \
         d date default current_date)",
    )
    .await;
    for shard in 0..3 {
        let defaults = answer(
            &tc.direct(shard).await,
            "select string_agg(pg_get_expr(adbin, adrelid), ', ' order by adnum) \
             from pg_attrdef where adrelid = 'stamped'::regclass",
        )
        .await;
        assert_eq!(
            defaults[0][0].as_deref(),
            Some("now(), CURRENT_DATE"),
            "shard {shard}"
        );
    }
    run(&c, "drop table stamped").await;

    // The functions the proxy calls answer as PostgreSQL's own where it gave no time.
    let direct0 = tc.direct(0).await;
    assert_eq!(
        answer(
            &direct0,
            "select shardgate.now() = now(), shardgate.\"current_date\"() = current_date, \
             shardgate.\"localtime\"() = localtime"
        )
        .await[0],
        vec![Some("t".to_string()); 3]
    );
    tc.drop_one_server(one, "one_clock").await;
}
