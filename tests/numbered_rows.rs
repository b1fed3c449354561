//! row_number(), rank() and dense_rank() over the whole ordered result of several shards: the
//! merge numbers the rows as they pass in the window's order, before OFFSET and LIMIT, as one
//! PostgreSQL numbers them; and counts and sums over the whole result beside them.

mod common;

use common::{answer, rows, TestCluster};

const TABLES: &str = "[tables.accounts]\nshard_key = \"id\"\nkey_type = \"bigint\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_are_numbered_across_shards_as_one_postgresql_numbers_them() {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let c = tc.client().await;
    // Balances repeat, so ranks have peers that span shards.
    let schema = "create table accounts (id bigint primary key, balance int);
         insert into accounts select i, (i * 37) % 11 * 10 from generate_series(1, 80) i;
         insert into accounts values (81, null), (82, null)";
    let one = tc
        .spread_beside_one(&c, schema, "accounts", "one_numbered")
        .await;
    for sql in [
        // A total order: every number is determined.
        "select id, balance, row_number() over (order by balance desc, id) from accounts order by balance desc, id",
        "select id, row_number() over (order by id) as n from accounts limit 5 offset 7",
        // Peers share a rank; the query orders ties further.
        "select id, rank() over (order by balance nulls first) r, dense_rank() over (order by balance nulls first) \
         from accounts order by balance nulls first, id",
        "select id, rank() over (order by balance desc) from accounts where id > 10 order by balance desc, id limit 20 offset 15",
        // Totals over the whole result beside the numbers: counts, and sums of integers and
        // numerics (NULL where no row has a value).
        "select id, row_number() over (order by id), count(*) over () as n, sum(balance) over () as s, \
         sum(balance::numeric / 4) over () as q, sum(balance) filter (where id < 0) over () as none \
         from accounts order by id limit 4 offset 2",
        // Numbered in a derived table or a subquery, answered first.
        "select * from (select id, row_number() over (order by balance desc, id) rn from accounts) s where rn <= 4 order by rn",
        "select id from accounts where id in (select id from (select id, rank() over (order by balance) r from accounts) s where r = 1) order by id",
    ] {
        let want = rows(&one.simple_query(sql).await.unwrap());
        let got = rows(&c.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}")));
        assert_eq!(got, want, "{sql}");
    }
    // Without an ORDER BY the rows come in the window's order; one server's may differ.
    let sql = "select id, row_number() over (order by id) from accounts";
    let mut want = rows(&one.simple_query(sql).await.unwrap());
    want.sort_by_key(|r| r[0].as_ref().map(|v| v.parse::<i64>().unwrap()));
    assert_eq!(rows(&c.simple_query(sql).await.unwrap()), want);
    // Bound values, binary results.
    let sql = "select id, dense_rank() over (order by balance) from accounts where balance > $1 \
               order by balance, id limit $2";
    let typed = |rows: Vec<tokio_postgres::Row>| -> Vec<(i64, i64)> {
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    };
    let want = typed(one.query(sql, &[&20i32, &30i64]).await.unwrap());
    assert_eq!(want.len(), 30);
    assert_eq!(typed(c.query(sql, &[&20i32, &30i64]).await.unwrap()), want);
    // Numberings the merge cannot make are made by one server over the table's rows, read
    // first.
    for sql in [
        "select id, row_number() over (partition by balance order by id) from accounts order by id",
        "select id, row_number() over (order by id) rn from accounts order by rn desc",
        // Numbered before DISTINCT keeps them.
        "select distinct balance, row_number() over (order by balance, id) from accounts order by 2",
        // Sorted by the total every row shares: the other keys order the rows.
        "select id, sum(balance) over () from accounts order by 2, id",
    ] {
        assert_eq!(answer(&c, sql).await, answer(&one, sql).await, "{sql}");
    }
    for sql in ["select id, sum(balance::float8) over () from accounts"] {
        let e = c.simple_query(sql).await.expect_err(sql);
        assert_eq!(common::code(&e), "0A000", "{sql}: {e}");
    }
    tc.drop_one_server(one, "one_numbered").await;
}
