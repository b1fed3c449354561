//! Two transactions that wait for each other's row locks on different shards: no shard sees
//! the cycle, and without the proxy both would wait for ever. The proxy cancels one, whose
//! client gets PostgreSQL's deadlock error (40P01), and the other goes on and commits.

mod common;

use common::{code, db_error, TestCluster};
use shardgate::placement::KeyValue;
use std::time::Duration;

const TABLES: &str = "[tables.accounts]\nshard_key = \"id\"\nkey_type = \"bigint\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_across_shards_ends_with_40p01_for_one_transaction() {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let placement = tc.config.placement().unwrap();
    let on = |shard: usize| {
        (1..1000i64)
            .find(|&k| placement.shard_of(&KeyValue::Integer(k)) == shard)
            .unwrap()
    };
    let (a, b) = (on(0), on(1));
    let setup = tc.client().await;
    setup
        .batch_execute(&format!(
            "create table accounts (id bigint primary key, v int);
             insert into accounts values ({a}, 0), ({b}, 0)"
        ))
        .await
        .unwrap();

    let first = tc.client().await;
    let second = tc.client().await;
    first
        .batch_execute(&format!("begin; update accounts set v = 1 where id = {a}"))
        .await
        .unwrap();
    second
        .batch_execute(&format!("begin; update accounts set v = 2 where id = {b}"))
        .await
        .unwrap();
    // Each now waits for the row the other holds, on the other shard.
    let one = tokio::spawn(async move {
        let r = first
            .batch_execute(&format!("update accounts set v = 1 where id = {b}"))
            .await;
        (first, r)
    });
    let two = tokio::spawn(async move {
        let r = second
            .batch_execute(&format!("update accounts set v = 2 where id = {a}"))
            .await;
        (second, r)
    });
    // The cancelled one answers first; its client rolls back, as clients do after an error,
    // which lets the other go on (each shard held its own part of the cancelled transaction's
    // locks until then). The timeout only guards the suite against a hang: the proxy looks
    // once a second.
    let guard = Duration::from_secs(60);
    let (mut one, mut two) = (one, two);
    let first_done = tokio::time::timeout(guard, async {
        tokio::select! {
            r = &mut one => (r.unwrap(), 1),
            r = &mut two => (r.unwrap(), 2),
        }
    })
    .await
    .expect("the deadlock was ended");
    let ((loser, err), still) = match first_done {
        ((c, Err(e)), 1) => ((c, e), two),
        ((c, Err(e)), _) => ((c, e), one),
        ((_, Ok(())), n) => panic!("transaction {n} went on while the other still held its row"),
    };
    assert_eq!(code(&err), "40P01", "{err:?}");
    assert_eq!(db_error(&err).message(), "deadlock detected");
    assert!(db_error(&err).hint().is_some_and(|h| h.contains("Retry")));
    // The cancelled transaction is aborted as after any error.
    assert_eq!(
        code(&loser.batch_execute("select 1").await.unwrap_err()),
        "25P02"
    );
    loser.batch_execute("rollback").await.unwrap();
    let (winner, r) = tokio::time::timeout(guard, still)
        .await
        .expect("the other transaction went on")
        .unwrap();
    r.expect("the other transaction's update ran");
    winner.batch_execute("commit").await.unwrap();
    let won_value = winner
        .query_one("select v from accounts where id = $1", &[&a])
        .await
        .unwrap()
        .get::<_, i32>(0);
    assert!(won_value == 1 || won_value == 2);
    let rows = setup
        .query("select v from accounts order by id", &[])
        .await
        .unwrap();
    let values: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(values, vec![won_value; 2]);

    // Locks taken in one order wait their turn and are not cancelled.
    let left = tc.client().await;
    let right = tc.client().await;
    left.batch_execute(&format!("begin; update accounts set v = 5 where id = {a}"))
        .await
        .unwrap();
    let waiting = tokio::spawn(async move {
        right
            .batch_execute(&format!(
                "begin; update accounts set v = 6 where id = {a}; update accounts set v = 6 where id = {b}; commit"
            ))
            .await
    });
    // Long enough for several of the proxy's looks while one waits for the other.
    tokio::time::sleep(Duration::from_secs(3)).await;
    left.batch_execute(&format!("update accounts set v = 5 where id = {b}; commit"))
        .await
        .unwrap();
    tokio::time::timeout(guard, waiting)
        .await
        .expect("the waiter went on")
        .unwrap()
        .expect("a plain wait is not taken for a deadlock");
    let rows = setup
        .query("select v from accounts order by id", &[])
        .await
        .unwrap();
    let values: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(values, vec![6, 6]);
    setup.batch_execute("drop table accounts").await.unwrap();
}
