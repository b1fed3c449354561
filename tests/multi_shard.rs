//! A cluster of several shards with no tables declared: statements that are the same on every
//! shard run, DDL is broadcast, and anything that would need routing an undeclared table is
//! refused with 0A000 and a hint; the refusal fails the transaction as a PostgreSQL error would.

mod common;

use common::{code, db_error, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_independent_statements_run() {
    let tc = TestCluster::start(2).await;
    let c = tc.client().await;
    assert_eq!(
        c.query_one("select 1 + $1::int4", &[&1i32])
            .await
            .unwrap()
            .get::<_, i32>(0),
        2
    );
    let n: i64 = c
        .query_one("select count(*) from pg_catalog.pg_class", &[])
        .await
        .unwrap()
        .get(0);
    assert!(n > 0);
    c.batch_execute("set application_name = 'x'; begin; select 1; commit")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_needing_routing_are_refused_with_no_side_effect() {
    let tc = TestCluster::start(2).await;
    let c = tc.client().await;
    for sql in [
        "select * from accounts",
        "insert into t values (1)",
        "select 1; delete from t",
        "update t set x = 1",
    ] {
        let e = c.simple_query(sql).await.map(|_| ()).expect_err(sql);
        assert_eq!(code(&e), "0A000", "{sql}");
        assert!(
            db_error(&e).hint().is_some(),
            "{sql}: a hint says what to do"
        );
    }
    // Extended protocol: refused at Parse, session still usable.
    let e = c
        .prepare("select * from accounts where id = $1")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000");
    assert!(db_error(&e).message().contains("accounts"));
    assert_eq!(
        c.query_one("select 5", &[]).await.unwrap().get::<_, i32>(0),
        5
    );
    // Nothing reached either shard.
    for i in 0..2 {
        let d = tc.direct(i).await;
        let n: i64 = d
            .query_one("select count(*) from pg_tables where tablename = 't'", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "shard {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_inside_a_transaction_fails_it_like_postgres() {
    let tc = TestCluster::start(2).await;
    let c = tc.client().await;
    c.batch_execute("begin").await.unwrap();
    let e = c.simple_query("select * from accounts").await.unwrap_err();
    assert_eq!(code(&e), "0A000");
    let e = c.simple_query("select 1").await.unwrap_err();
    assert_eq!(
        code(&e),
        "25P02",
        "transaction is aborted after the refusal"
    );
    c.batch_execute("rollback").await.unwrap();
    assert_eq!(
        c.query_one("select 1", &[]).await.unwrap().get::<_, i32>(0),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_is_broadcast_to_every_shard() {
    let tc = TestCluster::start(2).await;
    let c = tc.client().await;
    c.batch_execute("create table t (id int primary key); create index t_idx on t (id)")
        .await
        .unwrap();
    for i in 0..2 {
        let d = tc.direct(i).await;
        let n: i64 = d
            .query_one("select count(*) from pg_indexes where tablename = 't'", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 2, "shard {i} has the table and both indexes");
    }
    // A DDL failing on one shard is rolled back on all of them.
    tc.direct(1)
        .await
        .batch_execute("create table only_on_1 (x int)")
        .await
        .unwrap();
    let e = c
        .batch_execute("create table only_on_1 (x int)")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42P07");
    let n: i64 = tc
        .direct(0)
        .await
        .query_one(
            "select count(*) from pg_tables where tablename = 'only_on_1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "not left behind on shard 0");
}
