//! `time`, `timetz` and `interval` columns sorted, grouped and combined across shards as one
//! PostgreSQL does: times by the clock (with a zone, by the UTC time, then the zone),
//! intervals by their span ('1 day' sorts and groups with '24:00:00', '1 mon' with '30 days')
//! and summed and averaged as PostgreSQL adds and divides them; in text and in binary, on
//! three unlike shards, every answer compared with one PostgreSQL holding all the rows. Text
//! written in another IntervalStyle is refused.

mod common;

use common::{answer, code, RawValue, TestCluster};

const TABLES: &str = "[tables.shifts]\nshard_key = \"id\"\nkey_type = \"bigint\"\n";

const SCHEMA: &str = "create table shifts (id bigint primary key, starts time, length interval,
        zoned timetz);
    insert into shifts values
        (1, '09:00', '1 day', '09:00+00'), (2, '08:30:00.5', '24:00:00', '10:00+01'),
        (3, '23:59:59.999999', '1 mon', '08:00-02'), (4, '00:00', '30 days', '12:30+05:30'),
        (5, '12:00', '-1 days +02:00:00', null), (6, null, '100:00:00', '23:59:59.5-12'),
        (7, '24:00', '1 year 2 mons -3 days +04:05:06.5', '00:00+14'), (8, '06:15', null, '09:00+00'),
        (9, '17:45', '00:00:00', '09:00:00.25+00'), (10, '09:00', '-00:00:01', '18:00+09'),
        (11, '13:00', '2 days 01:00:00', '07:00-02'), (12, '13:00:01', '49:00:00', '11:00+02')";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_and_intervals_sort_across_shards_as_on_one_server() {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let c = tc.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    let one = tc.one_server("one_time", &[SCHEMA]).await;
    // The rows really are spread.
    let spread = tc.count_on_each_shard("select count(*) from shifts").await;
    assert!(spread.iter().all(|n| *n > 0), "{spread:?}");

    for sql in [
        "select id, starts from shifts order by starts, id",
        "select id, starts from shifts order by starts desc nulls last, id limit 5",
        "select id, length from shifts order by length, id",
        "select id, length from shifts order by length desc nulls first, id limit 6 offset 1",
        "select min(starts), max(starts), min(length), max(length) from shifts",
        "select id, zoned from shifts order by zoned, id",
        "select id, zoned from shifts order by zoned desc nulls last, id limit 7",
        "select min(zoned), max(zoned), count(distinct zoned) from shifts",
        "select zoned, count(*) from shifts group by zoned order by zoned",
        // Sums and averages of intervals, as PostgreSQL's + and avg compute them.
        "select sum(length), avg(length), count(length) from shifts",
        "select id % 3 as k, sum(length), avg(length) from shifts group by 1 order by 1",
        "select id % 2 as k, avg(length) from shifts group by 1 having sum(length) > '3 mons' order by 1",
        "select sum(length), avg(length) from shifts where id > 100",
        "select count(distinct length), count(distinct starts) from shifts",
        "select starts, count(*) from shifts group by starts order by starts",
        "select id % 2 as odd, max(length) from shifts group by 1 order by 2, 1",
        "select id % 3 as k, min(starts) from shifts group by 1 having min(starts) > '01:00' order by 1",
    ] {
        assert_eq!(answer(&c, sql).await, answer(&one, sql).await, "{sql}");
    }
    // Grouped by an interval: equal spans written differently make one group, as on one
    // server; which spelling stands for the group is the server's choice (PostgreSQL's own
    // depends on the order it met the rows in), so the groups' sizes and spans are compared.
    for sql in [
        "select count(*) from shifts group by length",
        "select extract(epoch from length) as secs, count(*) from shifts group by length",
        "select count(*) from (select distinct length from shifts) s",
        "select count(*) as n from shifts group by length having count(*) > 1",
    ] {
        let (mut got, mut want) = (answer(&c, sql).await, answer(&one, sql).await);
        got.sort();
        want.sort();
        assert_eq!(got, want, "{sql}");
    }
    // '1 day' with '24:00:00', '1 mon' with '30 days', '2 days 01:00:00' with '49:00:00'.
    let pairs = answer(
        &c,
        "select count(*) from shifts group by length having count(*) > 1",
    )
    .await;
    assert_eq!(pairs, vec![vec![Some("2".to_string())]; 3]);
    // In binary, as drivers read them: the same bytes as one server's.
    let binary = |rows: Vec<tokio_postgres::Row>| -> Vec<Vec<Option<Vec<u8>>>> {
        rows.iter()
            .map(|r| (0..r.len()).map(|i| r.get::<_, RawValue>(i).0).collect())
            .collect()
    };
    let sql = "select id % 3 as k, sum(length), avg(length) from shifts where id <> $1 group by 1 order by 1";
    assert_eq!(
        binary(c.query(sql, &[&5i64]).await.unwrap()),
        binary(one.query(sql, &[&5i64]).await.unwrap())
    );
    // Bound and in binary, as drivers ask for them: the ids in the columns' order.
    let ids = |rows: Vec<tokio_postgres::Row>| {
        rows.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>()
    };
    for sql in [
        "select id, length from shifts where id <> $1 order by length desc, id",
        "select id, starts from shifts where id <> $1 order by starts, id",
        "select id, zoned from shifts where id <> $1 order by zoned desc, id",
    ] {
        assert_eq!(
            ids(c.query(sql, &[&5i64]).await.unwrap()),
            ids(one.query(sql, &[&5i64]).await.unwrap()),
            "{sql}"
        );
    }

    // An IntervalStyle whose text the merge does not read: refused, never guessed.
    c.batch_execute("set intervalstyle = sql_standard")
        .await
        .unwrap();
    let e = c
        .simple_query("select id, length from shifts order by length, id")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000", "{e:?}");
    c.batch_execute("reset intervalstyle; drop table shifts")
        .await
        .unwrap();
    tc.drop_one_server(one, "one_time").await;
}
