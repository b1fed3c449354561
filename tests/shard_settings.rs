//! Shards whose servers write values otherwise: another time zone, DateStyle, bytea_output and
//! extra_float_digits, as `initdb` on another host or a database's own settings give. A
//! several-shard session must see every shard compute and write values as the first one does
//! (the one whose settings the client was shown), or the merge keeps one instant, one day or
//! one value apart as several; each answer is compared with one PostgreSQL's.

mod common;

use common::{answer, connect, TestCluster};
use tokio_postgres::Client;

const TABLES: &str = "[tables.events]\nshard_key = \"id\"\nkey_type = \"bigint\"\n";

/// Instants on both sides of midnight in UTC and in Paris, bytes, and a third.
const ROWS: &str = "select g, timestamptz '2024-01-01 22:30:00+00' + g * interval '7 minutes', \
     date '2024-03-04', '\\x00ff'::bytea, 1 / 3::float8 from generate_series(1, 30) g";

const QUERIES: [&str; 7] = [
    "select count(*) from events",
    "select at, count(*) from events group by at order by at",
    "select date(at), count(*) from events group by 1 order by 1",
    "select d, count(*) from events group by d",
    "select b, count(*) from events group by b",
    "select f, count(*) from events group by f",
    "select min(at), max(d) from events",
];

/// Three unlike shards, the second and third set to write values otherwise, behind a proxy in
/// pool `mode`.
async fn cluster(mode: &str) -> TestCluster {
    let (shards, dir) = tokio::task::spawn_blocking(|| common::start_unlike_shards(3))
        .await
        .unwrap();
    for (i, set) in [
        (1, "timezone = 'Europe/Paris'"),
        (1, "bytea_output = 'escape'"),
        (2, "datestyle = 'SQL, DMY'"),
        (2, "extra_float_digits = 0"),
        (2, "timezone = 'America/New_York'"),
        (2, "search_path = 'elsewhere, public'"),
    ] {
        connect(&shards[i].url("postgres"))
            .await
            .unwrap()
            .batch_execute(&format!("alter database postgres set {set}"))
            .await
            .unwrap();
    }
    // A table of the same name that shard 2's own search_path would find first.
    connect(&shards[2].url("postgres"))
        .await
        .unwrap()
        .batch_execute("create schema elsewhere; create table elsewhere.events (id bigint)")
        .await
        .unwrap();
    let tail = format!("{TABLES}\n[pool]\nmode = \"{mode}\"\n");
    TestCluster::start_on(shards, dir, "", &tail).await
}

/// Every query answers through the proxy as `one` answers it.
async fn answers_as_one(c: &Client, one: &Client, queries: &[&str], mode: &str) {
    for sql in queries {
        assert_eq!(
            answer(c, sql).await,
            answer(one, sql).await,
            "{mode}: {sql}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_with_other_settings_compute_and_write_as_the_first() {
    for mode in ["transaction", "session"] {
        let tc = cluster(mode).await;
        let c = tc.client().await;
        c.batch_execute(&format!(
            "create table events (id bigint primary key, at timestamptz, d date, b bytea, f float8);
             insert into events {ROWS}"
        ))
        .await
        .unwrap();
        // One PostgreSQL with every row, under the first shard's settings.
        let admin = tc.direct(0).await;
        admin.batch_execute("create database one").await.unwrap();
        let one = connect(&tc.shards[0].url("one")).await.unwrap();
        one.batch_execute(&format!(
            "create table events (id bigint primary key, at timestamptz, d date, b bytea, f float8);
             insert into events {ROWS}"
        ))
        .await
        .unwrap();
        answers_as_one(&c, &one, &QUERIES, mode).await;
        // RESET goes back to the pinned values, not to each shard's own.
        c.batch_execute("set timezone = 'Asia/Tokyo'; reset all")
            .await
            .unwrap();
        answers_as_one(&c, &one, &QUERIES, mode).await;
        // The client's own setting, given at startup, holds on every shard.
        let url = format!(
            "{}?options=-c%20TimeZone%3DAsia%2FTokyo",
            tc.url("app", "secret")
        );
        let tokyo = connect(&url).await.unwrap();
        one.batch_execute("set timezone = 'Asia/Tokyo'")
            .await
            .unwrap();
        answers_as_one(&tokyo, &one, &QUERIES[..3], mode).await;
        drop((one, tokyo));
        admin
            .batch_execute("drop database one with (force)")
            .await
            .unwrap();
    }
}

/// A pinned value a shard does not take would fail every session there: the start fails
/// instead, naming the shard and the setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_that_refuses_the_first_shards_setting_stops_the_start() {
    let (shards, dir) = tokio::task::spawn_blocking(|| common::start_unlike_shards(2))
        .await
        .unwrap();
    connect(&shards[0].url("postgres"))
        .await
        .unwrap()
        .batch_execute(
            "create text search configuration public.sg_only_here (copy = english);
             alter database postgres set default_text_search_config = 'public.sg_only_here'",
        )
        .await
        .unwrap();
    let text = format!("{}\n{TABLES}", common::config_for(0, &shards, ""));
    let config = shardgate::config::Config::from_toml(&text).unwrap();
    let _cluster = TestCluster {
        port: 0,
        shards,
        dir,
        proxy: None,
        config: config.clone(),
    };
    let e = shardgate::server::Proxy::start(&config)
        .await
        .err()
        .expect("the start fails");
    let message = e.to_string();
    assert!(
        message.contains("s1") && message.contains("default_text_search_config"),
        "{message}"
    );
}
