//! Two transactions that wait for each other's row locks on different shards: no shard sees
//! the cycle, and without the proxy both would wait for ever. The proxy cancels one, whose
//! client gets PostgreSQL's deadlock error (40P01), and the other goes on and commits; also
//! when the two are sessions of two proxies, or the cycle passes through a transaction of
//! one shard that no proxy runs.

mod common;

use common::{code, connect, db_error, TestCluster};
use shardgate::placement::KeyValue;
use std::time::Duration;
use tokio_postgres::Client;

/// Guards the suite against a hang only: the proxies look once a second.
const GUARD: Duration = Duration::from_secs(60);

const TABLES: &str = "[tables.accounts]\nshard_key = \"id\"\nkey_type = \"bigint\"\n";

/// Keys of `accounts` on shards 0 and 1.
fn keys_on_two_shards(tc: &TestCluster) -> (i64, i64) {
    let placement = tc.config.placement().unwrap();
    let on = |shard: usize| {
        (1..1000i64)
            .find(|&k| placement.shard_of(&KeyValue::Integer(k)) == shard)
            .unwrap()
    };
    (on(0), on(1))
}

/// `first` updates row `a` and `second` row `b`, then each the other's: one of them must be
/// cancelled with 40P01, and the other goes on once that one rolls back. The value that won.
async fn deadlock(first: Client, second: Client, a: i64, b: i64) -> i32 {
    begin_with(&first, 1, a).await;
    begin_with(&second, 2, b).await;
    // Each now waits for the row the other holds, on the other shard.
    let one = update_behind(first, 1, b);
    let two = update_behind(second, 2, a);
    // The cancelled one answers first; its client rolls back, as clients do after an error,
    // which lets the other go on (each shard held its own part of the cancelled transaction's
    // locks until then).
    let (mut one, mut two) = (one, two);
    let first_done = tokio::time::timeout(GUARD, async {
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
    let (winner, r) = tokio::time::timeout(GUARD, still)
        .await
        .expect("the other transaction went on")
        .unwrap();
    r.expect("the other transaction's update ran");
    winner.batch_execute("commit").await.unwrap();
    let won = winner
        .query_one("select v from accounts where id = $1", &[&a])
        .await
        .unwrap()
        .get::<_, i32>(0);
    assert!(won == 1 || won == 2);
    won
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_across_shards_ends_with_40p01_for_one_transaction() {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let (a, b) = keys_on_two_shards(&tc);
    let setup = tc.client().await;
    create_accounts(&setup, &[a, b]).await;

    let won = deadlock(tc.client().await, tc.client().await, a, b).await;
    let rows = setup
        .query("select v from accounts order by id", &[])
        .await
        .unwrap();
    let values: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(values, vec![won; 2]);

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
    tokio::time::timeout(GUARD, waiting)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_between_sessions_of_two_proxies_is_ended() {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    // A second proxy in front of the same shards, as deployments run several.
    let other = shardgate::server::Proxy::start(&tc.config)
        .await
        .expect("a second proxy starts");
    let other_url = format!(
        "postgres://app:secret@127.0.0.1:{}/postgres",
        other.local_addr.port()
    );
    let (a, b) = keys_on_two_shards(&tc);
    let setup = tc.client().await;
    create_accounts(&setup, &[a, b]).await;
    let there = connect(&other_url).await.unwrap();
    // Each proxy sees only its own session's part of the cycle.
    let won = deadlock(tc.client().await, there, a, b).await;
    let values: Vec<i32> = setup
        .query("select v from accounts order by id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(values, vec![won; 2]);
    setup.batch_execute("drop table accounts").await.unwrap();
    other.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_through_a_transaction_of_one_shard_outside_the_proxy_is_ended() {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let placement = tc.config.placement().unwrap();
    let on = |shard: usize, skip: usize| {
        (1..1000i64)
            .filter(|&k| placement.shard_of(&KeyValue::Integer(k)) == shard)
            .nth(skip)
            .unwrap()
    };
    // Rows r and q on shard 0, row p on shard 1.
    let (r, q, p) = (on(0, 0), on(0, 1), on(1, 0));
    let setup = tc.client().await;
    create_accounts(&setup, &[r, q, p]).await;
    let x = tc.client().await;
    let y = tc.client().await;
    // A client of shard 0 itself, as a job or an operator's psql would be.
    let direct = tc.direct(0).await;
    begin_with(&x, 1, p).await;
    begin_with(&y, 2, q).await;
    begin_with(&direct, 3, r).await;
    // x waits for the direct client on shard 0, which waits there for y, which waits for x
    // on shard 1.
    let xs = update_behind(x, 1, r);
    let ds = update_behind(direct, 3, q);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ys = update_behind(y, 2, p);
    // The proxy cancels one of its own sessions, never the client it does not run. Whichever
    // of x and y it cancelled answers first; once it rolls back, the others go on.
    let (mut xs, mut ys) = (xs, ys);
    let first_done = tokio::time::timeout(GUARD, async {
        tokio::select! {
            r = &mut xs => (r.unwrap(), 'x'),
            r = &mut ys => (r.unwrap(), 'y'),
        }
    })
    .await
    .expect("the deadlock was ended");
    let (who, (loser, err)) = match first_done {
        ((c, Err(e)), who) => (who, (c, e)),
        ((_, Ok(())), who) => panic!("{who} went on while the cycle held"),
    };
    assert_eq!(code(&err), "40P01", "{err:?}");
    loser.batch_execute("rollback").await.unwrap();
    // What each row holds once the survivors committed, in the order they went on.
    let expected = if who == 'x' {
        // x's row on shard 1 is free: y goes on, and once it ends the direct client does.
        let (y, res) = wait(ys).await;
        res.expect("y's update ran");
        y.batch_execute("commit").await.unwrap();
        let (direct, res) = wait(ds).await;
        res.expect("the direct client's update ran");
        direct.batch_execute("commit").await.unwrap();
        vec![(r, 3), (q, 3), (p, 2)]
    } else {
        // y's row on shard 0 is free: the direct client goes on, and once it ends x does.
        let (direct, res) = wait(ds).await;
        res.expect("the direct client's update ran");
        direct.batch_execute("commit").await.unwrap();
        let (x, res) = wait(xs).await;
        res.expect("x's update ran");
        x.batch_execute("commit").await.unwrap();
        vec![(r, 1), (q, 3), (p, 1)]
    };
    let values: Vec<(i64, i32)> = setup
        .query("select id, v from accounts order by id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let mut expected = expected;
    expected.sort_unstable();
    assert_eq!(values, expected);
    setup.batch_execute("drop table accounts").await.unwrap();
}

type Running = tokio::task::JoinHandle<(Client, Result<(), tokio_postgres::Error>)>;

/// `accounts` with a row of value 0 for each of `ids`.
async fn create_accounts(c: &Client, ids: &[i64]) {
    let rows: Vec<String> = ids.iter().map(|id| format!("({id}, 0)")).collect();
    c.batch_execute(&format!(
        "create table accounts (id bigint primary key, v int);
         insert into accounts values {}",
        rows.join(", ")
    ))
    .await
    .unwrap();
}

/// `c` opens a transaction and sets row `id` to `v`.
async fn begin_with(c: &Client, v: i32, id: i64) {
    c.batch_execute(&format!(
        "begin; update accounts set v = {v} where id = {id}"
    ))
    .await
    .unwrap();
}

/// `c` sets row `id` to `v` in its open transaction, in the background (it may wait).
fn update_behind(c: Client, v: i32, id: i64) -> Running {
    tokio::spawn(async move {
        let r = c
            .batch_execute(&format!("update accounts set v = {v} where id = {id}"))
            .await;
        (c, r)
    })
}

async fn wait(t: Running) -> (Client, Result<(), tokio_postgres::Error>) {
    tokio::time::timeout(GUARD, t)
        .await
        .expect("the wait ended")
        .unwrap()
}
