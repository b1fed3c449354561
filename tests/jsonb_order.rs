//! `jsonb` sorted, grouped and made distinct across shards as one PostgreSQL does it: objects
//! above arrays above scalars, sizes before contents, numbers by value (`1.0` = `1`), an empty
//! top-level array below a top-level `null`; in text and binary results, on three unlike shards
//! beside one PostgreSQL holding the same rows. Django's `values("data__k").annotate(...)`
//! groups and orders by such values.

mod common;

use common::beside::Beside;

const TABLES: &str = "[tables.docs]\nshard_key = \"id\"\nkey_type = \"bigint\"\n";

/// Values of every kind, each twice or more so that groups span shards; from id 100 on, numbers
/// written with other scales than below (equal, spelled otherwise).
const SCHEMA: &str = r#"
create table docs (id bigint primary key, data jsonb);
insert into docs select i, (array[
    '[]', 'null', '""', '"a"', '"ab"', '"b"', '"\u00e9"', '"line\nbreak"', '-1.5', '0', '2', '10',
    'false', 'true', '[null]', '[1]', '[true]', '[[]]', '[{}]', '[1, 2]', '{}', '{"a": 1}',
    '{"a": 2}', '{"a": [1]}', '{"aa": 0}', '{"b": 1}', '{"a": 1, "b": 2}', '{"b": 0, "aa": 5}',
    '{"k": "p", "n": {"v": 1}}', '{"k": "q", "n": {"v": null}}', '{"k": "p", "n": [3, "x"]}'
  ]::jsonb[])[1 + i % 31]
  from generate_series(1, 93) i;
insert into docs values (94, null), (95, null);
insert into docs values (100, '1.0'), (101, '2.00'), (102, '{"a": 1.0}'), (103, '[1.00]'),
  (104, '{"k": "p", "n": {"v": 1.000}}'), (105, '-1.50'), (106, '10.0');
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonb_sorts_and_groups_as_postgresql_does() {
    let b = Beside::start("one_jsonb_order", TABLES, SCHEMA).await;
    for sql in [
        "select data, id from docs order by data, id",
        "select id, data from docs order by data desc nulls last, id limit 20",
        "select id from docs order by data nulls first, id desc offset 5 limit 30",
        // Equal values spelled otherwise make one group (their spelling is not shown).
        "select count(*), min(id), max(id) from docs group by data order by min(id)",
        "select count(distinct data), count(data) from docs",
        "select distinct data from docs where id < 100 order by data desc",
        "select data -> 'k' as k, count(*) from docs group by 1 order by 1 nulls first",
        // Which spelling a group shows is PostgreSQL's choice: only one spelling here.
        "select data -> 'n', count(*) from docs where data ? 'k' and id < 100 group by 1 order by 1",
        "select min(id), count(*) from docs group by data order by data desc",
        // A function of a group's value, computed after the merge.
        "select jsonb_typeof(data) as t, min(id) from docs group by data order by data",
    ] {
        b.same(sql).await;
    }
    // Binary results, the sort key not selected: the proxy reads jsonb's binary form.
    let sql = "select id from docs order by data desc, id";
    let ids =
        |rows: Vec<tokio_postgres::Row>| -> Vec<i64> { rows.iter().map(|r| r.get(0)).collect() };
    let want = ids(b.one.query(sql, &[]).await.unwrap());
    assert_eq!(want.len(), 102);
    assert_eq!(ids(b.c.query(sql, &[]).await.unwrap()), want, "{sql}");
    b.stop().await;
}
