//! Array columns sorted, grouped and made distinct across shards as one PostgreSQL does it:
//! element by element, a NULL element above any value, then by size, dimensions and lower
//! bounds; `{1.0}` = `{1.00}`; in text and binary results, on three unlike shards beside one
//! PostgreSQL holding the same rows. Django's `ArrayField` and SQLAlchemy's `ARRAY` order and
//! group by such columns.

mod common;

use common::beside::Beside;

const TABLES: &str = "[tables.tagged]\nshard_key = \"id\"\nkey_type = \"bigint\"\n";

/// Each shape several times, so that groups span shards; from id 100 on, numerics written
/// with other scales than below (equal, spelled otherwise).
const SCHEMA: &str = r#"
create table tagged (id bigint primary key, ints int[], tags text[], amounts numeric[], seen timestamptz[]);
insert into tagged select i,
    (array['{}', '{1}', '{1,2}', '{1,2,3}', '[0:3]={1,2,3,4}', '{1,2,3,4}', '{{1,2},{3,4}}',
           '{1,NULL}', '{2}', '{NULL}', '{NULL,1}', '{-5,7}', null])[1 + i % 13]::int[],
    (array['{}', '{a}', '{a,b}', '{"a b"}', '{"c\"d",e}', '{A}', '{"NULL"}', '{NULL}',
           '{é,z}', '{""}', null])[1 + i % 11]::text[],
    (array['{1.5,2}', '{1.5}', '{-1,NaN}', '{0.001}', '{}', null, '{10,2}'])[1 + i % 7]::numeric[],
    (array['{"2024-01-01 00:00:00+00"}', '{"2024-01-01 01:00:00+02"}', '{"2023-12-31 23:30:00+00",NULL}',
           null])[1 + i % 4]::timestamptz[]
  from generate_series(1, 78) i;
insert into tagged (id, amounts) values (100, '{1.50,2.0}'), (101, '{1.500}'), (102, '{10.00,2}');
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrays_sort_and_group_as_postgresql_does() {
    let b = Beside::start("one_array_order", TABLES, SCHEMA).await;
    for sql in [
        "select ints, id from tagged order by ints, id",
        "select id, tags from tagged order by tags desc nulls last, id limit 25",
        "select id from tagged order by amounts nulls first, seen desc, id",
        "select seen, count(*) from tagged group by seen order by seen",
        "select ints, count(*) from tagged group by ints order by ints desc",
        "select distinct tags from tagged order by tags",
        // Equal values spelled otherwise make one group (their spelling is not shown).
        "select count(*), min(id) from tagged group by amounts order by min(id)",
        "select count(distinct amounts), count(distinct ints), count(distinct tags) from tagged",
        "select min(ints), max(tags), max(seen) from tagged",
        // Functions of a group's array, computed after the merge.
        "select cardinality(ints) as c, array_length(ints, 1) as l, array_to_string(ints, '/') as s, \
         count(*) from tagged group by ints order by ints",
        // Sorted by the group column not selected (an output named `tags` would be sorted by).
        "select tags[1] as first, count(*) from tagged group by tags order by tags",
    ] {
        b.same(sql).await;
    }
    // Binary results, the sort key not selected: the proxy reads the arrays' binary form.
    let sql = "select id from tagged order by ints desc, tags, id";
    let ids =
        |rows: Vec<tokio_postgres::Row>| -> Vec<i64> { rows.iter().map(|r| r.get(0)).collect() };
    let want = ids(b.one.query(sql, &[]).await.unwrap());
    assert_eq!(want.len(), 81);
    assert_eq!(ids(b.c.query(sql, &[]).await.unwrap()), want, "{sql}");
    b.stop().await;
}
