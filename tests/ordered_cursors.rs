//! Cursors over several shards under ORDER BY, as psycopg's named cursors and Django's
//! `iterator()` declare them: each FETCH merges the shards' cursors in the statement's order,
//! on three unlike shards beside one PostgreSQL holding the same rows. Batches of every size,
//! MOVE, FETCH ALL, sort columns not selected, LIMIT and OFFSET, text and binary rows, WITH
//! HOLD outside a transaction; what cannot be merged so is refused.

mod common;

use common::beside::Beside;
use common::{code, rows};
use tokio_postgres::Client;

const TABLES: &str = "[tables.items]\nshard_key = \"id\"\nkey_type = \"bigint\"\n";

const SCHEMA: &str = "
create table items (id bigint primary key, name text, qty int, price numeric);
insert into items select i, 'n' || (i * 7 % 23), i % 5, (i * 13 % 40)::numeric / 4
  from generate_series(1, 150) i;
update items set name = null where id % 17 = 0;
";

/// Each step's rows and command tag.
type Answers = Vec<(Vec<Vec<Option<String>>>, Option<u64>)>;

/// Runs `steps` (DECLARE, FETCH, MOVE, CLOSE ...) in the simple protocol on `c`.
async fn script(c: &Client, steps: &[String]) -> Answers {
    let mut out = Vec::new();
    for step in steps {
        let m = c
            .simple_query(step)
            .await
            .unwrap_or_else(|e| panic!("{step}: {e}: {:?}", e.as_db_error()));
        let tag = m.iter().find_map(|x| match x {
            tokio_postgres::SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        });
        out.push((rows(&m), tag));
    }
    out
}

/// Cursor `c` declared for `query` in a transaction, read by `fetches` and closed, answers
/// through the proxy as on the one server.
async fn same_answers(b: &Beside, query: &str, fetches: &[&str]) {
    let mut steps = vec!["begin".to_string(), format!("declare c cursor for {query}")];
    steps.extend(fetches.iter().map(|f| f.to_string()));
    steps.extend(["close c".to_string(), "commit".to_string()]);
    let want = script(&b.one, &steps).await;
    assert_eq!(script(&b.c, &steps).await, want, "{query}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_cursors_hand_out_the_rows_one_postgresql_would() {
    let b = Beside::start("one_ordered_cursors", TABLES, SCHEMA).await;
    for query in [
        "select id, name from items order by name nulls first, id",
        // Sorted by columns it does not select.
        "select id from items where qty <> 2 order by price desc, id",
        "select name, qty from items order by qty, name desc nulls last, id",
    ] {
        let fetches = [
            "fetch next from c",
            "fetch 7 from c",
            "move 3 in c",
            "fetch forward 40 from c",
            "fetch 1 c",
            "move forward 2 from c",
            "fetch all from c",
            "fetch 5 from c",
        ];
        same_answers(&b, query, &fetches).await;
    }

    // LIMIT and OFFSET (Django's iterator() over a slice): the merge skips and stops. Without
    // ORDER BY the rows come in no defined order, so only their count and values are compared.
    for query in [
        "select id, name from items order by name nulls first, id limit 23 offset 9",
        "select id from items where qty <> 2 order by price desc, id offset 70",
        "select id from items order by id limit 0",
        "select id, qty from items order by qty, id limit 150 offset 149",
    ] {
        let fetches = [
            "fetch 4 from c",
            "move 2 in c",
            "fetch forward 10 from c",
            "fetch all from c",
            "fetch 5 from c",
        ];
        same_answers(&b, query, &fetches).await;
    }
    let steps: Vec<String> = [
        "begin",
        "declare u cursor for select id from items where qty > 0 limit 17",
        "fetch 5 from u",
        "fetch all from u",
        "commit",
    ]
    .map(String::from)
    .to_vec();
    let sorted_ids = |mut answers: Answers| {
        let tags: Vec<Option<u64>> = answers.iter().map(|a| a.1).collect();
        let mut ids: Vec<i64> = answers
            .drain(..)
            .flat_map(|a| a.0)
            .map(|r| r[0].as_deref().unwrap().parse().unwrap())
            .collect();
        ids.sort();
        ids.dedup();
        (tags, ids.len(), ids.iter().all(|i| i % 5 != 0))
    };
    let want = sorted_ids(script(&b.one, &steps).await);
    assert_eq!(want.1, 17);
    assert_eq!(sorted_ids(script(&b.c, &steps).await), want);

    // Django's iterator(): WITH HOLD outside a transaction, fetched in chunks until empty.
    let mut steps = vec![
        "declare \"_django_curs_1\" no scroll cursor with hold for select id, name, price from items where qty > 0 order by price, id".to_string(),
    ];
    for _ in 0..14 {
        steps.push("fetch forward 10 from \"_django_curs_1\"".to_string());
    }
    steps.push("close \"_django_curs_1\"".to_string());
    let want = script(&b.one, &steps).await;
    assert!(want[13].0.is_empty() && !want[12].0.is_empty());
    assert_eq!(script(&b.c, &steps).await, want);

    // Binary rows, as tokio-postgres asks for them.
    for c in [&b.c, &b.one] {
        c.batch_execute(
            "begin; declare bin cursor for select id, price from items order by price desc, id",
        )
        .await
        .unwrap();
    }
    for fetch in [
        "fetch 9 from bin",
        "fetch forward 60 from bin",
        "fetch all from bin",
    ] {
        let pairs = |rows: Vec<tokio_postgres::Row>| -> Vec<i64> {
            rows.iter().map(|r| r.get::<_, i64>(0)).collect()
        };
        let want = pairs(b.one.query(fetch, &[]).await.unwrap());
        assert_eq!(pairs(b.c.query(fetch, &[]).await.unwrap()), want, "{fetch}");
    }
    // Rows waiting in text cannot be handed out in binary.
    b.c.batch_execute("declare mixed cursor for select id from items order by id")
        .await
        .unwrap();
    b.c.batch_execute("fetch 2 from mixed").await.unwrap();
    let err = b.c.query("fetch 2 from mixed", &[]).await.unwrap_err();
    assert_eq!(code(&err), "0A000", "{err}");
    for c in [&b.c, &b.one] {
        c.batch_execute("rollback").await.unwrap();
    }

    // A cursor the transaction closed is gone, with rows of it still waiting in the proxy.
    b.c.batch_execute("begin; declare gone cursor for select id from items order by id; fetch 3 from gone; commit")
        .await
        .unwrap();
    let err = b.c.batch_execute("fetch 3 from gone").await.unwrap_err();
    assert_eq!(code(&err), "34000", "{err}");

    // What each FETCH cannot merge from the shards' cursors is refused.
    b.c.batch_execute("begin").await.unwrap();
    for sql in [
        "declare d cursor for select distinct name from items order by name",
        "declare a cursor for select qty, count(*) from items group by qty order by qty",
        "declare s scroll cursor for select id from items order by id",
    ] {
        let err = b.c.batch_execute(sql).await.unwrap_err();
        assert_eq!(code(&err), "0A000", "{sql}: {err}");
        b.c.batch_execute("rollback; begin").await.unwrap();
    }
    // A bound LIMIT is the merge's alone: the shards' text has none.
    let err =
        b.c.execute(
            "declare l cursor for select id from items order by id limit $1",
            &[&5i64],
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), "0A000", "{err}");
    b.c.batch_execute("rollback").await.unwrap();
    b.stop().await;
}
