//! A cluster of several shards before sharded tables exist: statements that are the same on
//! every shard run; anything that would need routing is refused with 0A000 and a hint, and the
//! refusal leaves the transaction exactly as a PostgreSQL error would.

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
        "create table t(id int)",
        "select * from accounts",
        "insert into t values (1)",
        "select 1; drop table x",
    ] {
        let e = c.simple_query(sql).await.unwrap_err();
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
