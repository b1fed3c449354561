//! Parameters a driver binds in binary after asking the server their types (tokio-postgres,
//! asyncpg): their bytes are of the type the server inferred, which is not always the shard
//! key's or an integer's.
//!
//! A shard key compared through a cast: `id::text = $1` compares the key's text, so the value
//! is text, in binary form its characters; a text no key is written as matches no row rather
//! than failing. Read as an integer, `'1234'` would be an int4 of another value, and the
//! statement would run on a shard that does not hold the row: a read that misses it, a write
//! that changes nothing. A HAVING constant bound so is compared in its own type or refused.

mod common;

use common::TestCluster;
use tokio_postgres::types::Type;

const TABLES: &str = "[tables.items]\nshard_key = \"id\"\nkey_type = \"bigint\"\n\
                      [tables.tokens]\nshard_key = \"id\"\nkey_type = \"uuid\"\n";

async fn ids(c: &tokio_postgres::Client, sql: &str, value: &str) -> Vec<i64> {
    c.query(sql, &[&value])
        .await
        .unwrap_or_else(|e| panic!("{sql} with {value:?}: {e:?}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_compared_as_text_finds_its_row_on_its_shard() {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let c = tc.client().await;
    c.batch_execute(
        "create table items (id bigint primary key, qty int);
         insert into items select g, 0 from generate_series(1, 30) g;
         insert into items values (1234, 0), (12345678, 0);
         create table tokens (id uuid primary key, n int);
         insert into tokens values ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 1),
                                   ('b1ffcd00-0d1c-4ef8-bb6d-6bb9bd380a22', 2)",
    )
    .await
    .unwrap();
    let per_shard = tc.count_on_each_shard("select count(*) from items").await;
    assert!(per_shard.iter().all(|&n| n > 0), "{per_shard:?}");

    // Four and eight characters: as bytes, an int4 and an int8 of other values.
    for (sql, value, want) in [
        (
            "select id from items where id::text = $1",
            "1234",
            vec![1234],
        ),
        (
            "select id from items where id::text = $1",
            "12345678",
            vec![12345678],
        ),
        ("select id from items where $1 = id::varchar", "7", vec![7]),
        (
            "select id from items where id::text in ($1, '9') order by id",
            "12",
            vec![9, 12],
        ),
        // No key is written so: no row, as one PostgreSQL answers.
        ("select id from items where id::text = $1", "abc", vec![]),
        ("select id from items where id::text = $1", "07", vec![]),
        ("select id from items where id::text = $1", "", vec![]),
    ] {
        assert_eq!(ids(&c, sql, value).await, want, "{sql} with {value:?}");
    }
    assert!(c
        .simple_query("select id from items where id::text = 'abc'")
        .await
        .is_ok_and(|m| common::rows(&m).is_empty()));

    // Writes reach the row's shard.
    let updated = ids(
        &c,
        "update items set qty = 7 where id::text = $1 returning id",
        "12345678",
    )
    .await;
    assert_eq!(updated, vec![12345678]);
    let deleted = ids(
        &c,
        "delete from items where id::text = $1 returning id",
        "1234",
    )
    .await;
    assert_eq!(deleted, vec![1234]);
    let left = c
        .query_one(
            "select count(*) filter (where id = 1234), sum(qty) from items",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(left.get::<_, i64>(0), 0);
    assert_eq!(
        tc.count_on_each_shard("select count(*) from items where id = 1234")
            .await
            .iter()
            .sum::<i64>(),
        0,
        "the row deleted through the proxy is left on a shard"
    );
    assert_eq!(left.get::<_, i64>(1), 7);

    // A parameter the statement casts from text: left to the server, it is text.
    let inserted = ids(
        &c,
        "insert into items (id, qty) values ($1::text::bigint, 0) returning id",
        "1234",
    )
    .await;
    assert_eq!(inserted, vec![1234]);
    let found = c
        .simple_query("select id from items where id = 1234")
        .await
        .unwrap();
    assert_eq!(common::rows(&found).len(), 1, "not on the shard of 1234");

    // A parameter the statement declares text and casts to the key's type.
    let st = c
        .prepare_typed("select id from items where id = $1::bigint", &[Type::TEXT])
        .await
        .unwrap();
    let got: Vec<i64> = c
        .query(&st, &[&"12345678"])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(got, vec![12345678]);

    // A uuid key's text, in upper case no uuid is written in.
    for (value, want) in [
        ("b1ffcd00-0d1c-4ef8-bb6d-6bb9bd380a22", vec![2]),
        ("B1FFCD00-0D1C-4EF8-BB6D-6BB9BD380A22", vec![]),
        ("not a uuid", vec![]),
    ] {
        let got: Vec<i32> = c
            .query("select n from tokens where id::text = $1", &[&value])
            .await
            .unwrap_or_else(|e| panic!("{value}: {e:?}"))
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(got, want, "{value}");
    }
    c.batch_execute("drop table items; drop table tokens")
        .await
        .unwrap();
}

/// A HAVING condition over several shards compares a bound value as the server typed it: a
/// float's or a string's binary form read as an integer's would keep or drop the wrong
/// groups. What the merge cannot read (a numeric's or a date's binary form) is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn having_compares_binary_values_in_their_own_type_or_refuses() {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let c = tc.client().await;
    c.batch_execute(
        "create table items (id bigint primary key, cat text, f float8, name text);
         insert into items select g, 'c' || (g % 3), g / 4.0, 'n' || lpad(g::text, 2, '0')
           from generate_series(1, 30) g",
    )
    .await
    .unwrap();
    let cats =
        |rows: Vec<tokio_postgres::Row>| -> Vec<String> { rows.iter().map(|r| r.get(0)).collect() };
    let by = "select cat from items group by cat having";
    // Either the answer one PostgreSQL gives or a refusal, never another answer.
    let cases: Vec<(
        String,
        Box<dyn tokio_postgres::types::ToSql + Sync>,
        Vec<&str>,
    )> = vec![
        (
            format!("{by} max(f) > $1 order by cat"),
            Box::new(7.3f64),
            vec!["c0"],
        ),
        (
            format!("{by} max(f) < $1 order by cat"),
            Box::new(7.3f64),
            vec!["c1", "c2"],
        ),
        (
            format!("{by} max(name) = $1 order by cat"),
            Box::new("n30"),
            vec!["c0"],
        ),
        (
            format!("{by} min(name) = $1 order by cat"),
            Box::new(" n01"),
            vec![],
        ),
        (
            format!("{by} count(*) >= $1 order by cat"),
            Box::new(10i64),
            vec!["c0", "c1", "c2"],
        ),
    ];
    for (sql, value, want) in cases {
        match c.query(&sql, &[value.as_ref()]).await {
            Ok(rows) => assert_eq!(cats(rows), want, "{sql}"),
            Err(e) => assert_eq!(common::code(&e), "0A000", "{sql}: {e}"),
        }
    }
    // Strings, floats and booleans are compared, not refused.
    let rows = c
        .query(&format!("{by} max(name) = $1 order by cat"), &[&"n30"])
        .await
        .unwrap();
    assert_eq!(cats(rows), vec!["c0"]);
    let rows = c
        .query(&format!("{by} max(f) >= $1 order by cat"), &[&7.25f64])
        .await
        .unwrap();
    assert_eq!(cats(rows), vec!["c0", "c2"]);
    let rows = c
        .query(
            &format!("{by} bool_or(f > 7.4) = $1 order by cat"),
            &[&true],
        )
        .await
        .unwrap();
    assert_eq!(cats(rows), vec!["c0"]);
    c.batch_execute("drop table items").await.unwrap();
}
