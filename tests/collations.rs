//! Text merged from several shards under collations other than the database's: a
//! case-insensitive (nondeterministic) one and a linguistic (ICU) one. The merge compares text
//! by its bytes, so wherever PostgreSQL would compare under such a collation the query must be
//! refused, never answered with 'Red' and 'red' apart or 'Z' before 'a'; what it does answer
//! must be one PostgreSQL's answer, checked against one server holding every row.

mod common;

use common::{answer, code, connect, rows, TestCluster};
use std::time::{Duration, Instant};
use tokio_postgres::Client;

const TABLES: &str = "[tables.notes]\nshard_key = \"id\"\nkey_type = \"bigint\"\n";

const COLLATION: &str =
    "create collation sg_ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)";

const TABLE: &str =
    "(id bigint primary key, tag text collate sg_ci, label text collate \"und-x-icu\", body text)";

/// Tags that differ only in case, labels whose code-point order is not their linguistic one,
/// spread so that every shard holds several spellings.
const ROWS: &str = "select g, (array['Red', 'red', 'RED', 'blue', 'Blue'])[g % 5 + 1], \
     (array['Zebra', 'apple', 'Émile', 'banana'])[g % 4 + 1], 'b' || (g % 3) \
     from generate_series(1, 40) g";

async fn refused(c: &Client, sql: &str) -> tokio_postgres::Error {
    match c.simple_query(sql).await {
        Ok(m) => panic!("{sql}: answered {:?} instead of a refusal", rows(&m)),
        Err(e) => {
            assert_eq!(code(&e), "0A000", "{sql}: {e}");
            e
        }
    }
}

/// One PostgreSQL holding every row: a database of its own on the first shard's server.
async fn oracle(tc: &TestCluster) -> Client {
    let admin = tc.direct(0).await;
    admin
        .batch_execute("create database collation_oracle")
        .await
        .unwrap();
    let url = tc.shards[0].url("collation_oracle");
    let c = connect(&url).await.unwrap();
    c.batch_execute(&format!(
        "{COLLATION}; create table notes {TABLE}; insert into notes {ROWS}"
    ))
    .await
    .unwrap();
    c
}

/// Three unlike shards holding `notes` through the proxy, a client of the proxy, and the
/// one server holding the same rows.
async fn notes_beside_oracle() -> (TestCluster, Client, Client) {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let c = tc.client().await;
    c.batch_execute(&format!(
        "{COLLATION}; create table notes {TABLE}; insert into notes {ROWS}"
    ))
    .await
    .unwrap();
    let one = oracle(&tc).await;
    (tc, c, one)
}

async fn drop_oracle(tc: &TestCluster, one: Client) {
    drop(one);
    tc.direct(0)
        .await
        .batch_execute("drop database collation_oracle with (force)")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_under_other_collations_is_merged_exactly_or_refused() {
    let (tc, c, one) = notes_beside_oracle().await;
    // Every shard holds rows, so a shard-by-shard answer would show.
    let per_shard = tc.count_on_each_shard("select count(*) from notes").await;
    assert!(per_shard.iter().all(|&n| n > 0 && n < 40), "{per_shard:?}");

    for sql in [
        // Equal under sg_ci, apart by their bytes.
        "select distinct tag from notes",
        "select tag, count(*) from notes group by tag",
        "select count(distinct tag) from notes",
        "select count(*) from (select distinct tag from notes) s",
        "select tag from notes union select 'x'",
        "select body from notes union select tag from notes",
        "select distinct body collate sg_ci from notes",
        "select upper(body), count(*) from notes group by 1",
        // Ordered by und-x-icu (or sg_ci), not by code point.
        "select label from notes order by label",
        "select id, tag from notes order by tag, id limit 3",
        "select max(label) from notes",
        "select min(body) from notes",
        "select body || '' as b from notes order by b",
        "select body from notes order by body collate \"und-x-icu\"",
        "select max(body collate \"und-x-icu\") from notes",
        "select distinct on (tag) tag, id from notes order by tag, id",
        // Gathered, then ordered again by one shard under the default collation.
        "select string_agg(body, ',' order by label, id) from notes",
        "select array_agg(distinct tag) from notes",
    ] {
        let e = refused(&c, sql).await;
        assert!(
            common::db_error(&e)
                .hint()
                .unwrap()
                .contains("COLLATE \"C\""),
            "{sql}"
        );
    }
    // What stays answered is one PostgreSQL's answer.
    for sql in [
        "select body, count(*) from notes group by body order by body",
        "select distinct body from notes order by body",
        "select lower(tag) collate \"C\" as t, count(*) from notes group by 1 order by 1",
        "select max(label collate \"C\"), min(tag collate \"C\") from notes",
        "select id, label from notes order by label collate \"C\", id limit 5",
        "select tag, label from notes where id < 6 order by id",
        "select count(*) from notes where tag = 'RED'",
        "select label, count(*) from notes group by label having label = 'Zebra' order by 2",
    ] {
        assert_eq!(answer(&c, sql).await, answer(&one, sql).await, "{sql}");
    }
    // HAVING is evaluated under the column's own collation: 'Émile' and 'Zebra' come after
    // 'b' there, and 'apple' before. Its order is no one's, so the rows are compared as a set.
    let sql = "select label, count(*) from notes group by label having label > 'b'";
    let (mut merged, mut expected) = (answer(&c, sql).await, answer(&one, sql).await);
    merged.sort();
    expected.sort();
    assert_eq!(merged, expected, "{sql}");
    assert_eq!(merged.len(), 3, "{merged:?}");

    // DDL through the proxy is seen by the next statement.
    c.batch_execute("alter table notes alter column body type text collate sg_ci")
        .await
        .unwrap();
    refused(&c, "select distinct body from notes").await;
    c.batch_execute("alter table notes alter column body type text collate \"C\"")
        .await
        .unwrap();
    answer(&c, "select distinct body from notes").await;
    // DDL behind the proxy, on each shard directly, is seen a few seconds later.
    for i in 0..tc.shards.len() {
        tc.direct(i)
            .await
            .batch_execute("alter table notes alter column body type text collate sg_ci")
            .await
            .unwrap();
    }
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        match c.simple_query("select distinct body from notes").await {
            Err(e) => {
                assert_eq!(code(&e), "0A000", "{e}");
                break;
            }
            Ok(_) if Instant::now() < until => tokio::time::sleep(Duration::from_millis(200)).await,
            Ok(m) => panic!("still merged by bytes after a minute: {:?}", rows(&m)),
        }
    }
    drop_oracle(&tc, one).await;
}

/// The session's search_path may find a table of the declared name in another schema than the
/// proxy's catalog lookups would; the lookup counts every table of that name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_computed_from_a_table_found_through_the_search_path_is_judged_by_it() {
    let tables = "[tables.plain]\nshard_key = \"id\"\nkey_type = \"bigint\"\n";
    let tc = TestCluster::start_unlike(3, "", tables).await;
    let c = tc.client().await;
    c.batch_execute(&format!(
        "{COLLATION};
         create table plain (id bigint primary key, body text);
         create schema other;
         create table other.plain (id bigint primary key, body text collate sg_ci);
         insert into other.plain select g, (array['Red', 'red', 'blue'])[g % 3 + 1] \
             from generate_series(1, 30) g"
    ))
    .await
    .unwrap();
    let url = format!(
        "{}?options=-c%20search_path%3Dother%2Cpublic",
        tc.url("app", "secret")
    );
    let other = connect(&url).await.unwrap();
    refused(
        &other,
        "select body || '' as b, count(*) from plain group by 1",
    )
    .await;
    refused(&other, "select body, count(*) from plain group by body").await;
    // Named with its schema, the table without such a column merges.
    answer(
        &c,
        "select lower(body) as b, count(*) from public.plain group by 1",
    )
    .await;
}

/// A subquery or derived table answered first (read through the merge, then written back into
/// the statement as literals) keeps each column's collation: the statement then sorts, groups
/// and compares those values as one PostgreSQL compares the column's. Text computed from
/// columns, whose collation the description does not tell, is refused where the table holds
/// other collations than the default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_written_back_keep_their_columns_collations() {
    let (tc, c, one) = notes_beside_oracle().await;
    for sql in [
        // Linguistic order: 'Zebra' last, not first.
        "select label, id from (select label, id from notes order by id limit 10) s order by label, id",
        "select l from (select label l, count(*) from notes group by label) s order by l",
        "select min(l), max(l) from (select label l from notes order by id desc limit 9) s",
        // Case-insensitive equality: 'Red', 'red' and 'RED' one group.
        "select t, count(*) from (select tag t from notes order by id limit 12) s group by t order by 2",
        "select count(*) from (select tag from notes order by id limit 12) s where tag = 'rEd'",
        // Under the default collation, as before.
        "select b, count(*) from (select body b from notes order by id limit 11) s group by b order by b",
        // A subquery's value compared with a constant, under the column's collation.
        "select count(*) from notes where 'Zebra' < (select label from notes order by id limit 1)",
        "select id, (select label from notes order by id desc limit 1) < 'b' as x from notes where id < 3 order by id",
        "select id from notes where 'Red' in (select tag from notes order by id limit 3) and id < 4 order by id",
        "select count(*) from notes where 'apple' > any (select label from notes order by id desc limit 2)",
    ] {
        assert_eq!(answer(&c, sql).await, answer(&one, sql).await, "{sql}");
    }
    for sql in [
        "select u from (select upper(label) u from notes order by id limit 5) s order by u",
        "select b from (select body || '' b from notes order by id limit 5) s order by b",
    ] {
        refused(&c, sql).await;
    }
    drop_oracle(&tc, one).await;
}
