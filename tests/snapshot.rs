//! Snapshot consistency: multi-shard reads see one consistent cut.
//!
//! The bank with readers runs with a failpoint that delays every COMMIT PREPARED by a few ms (so
//! a distributed commit is visibly half-applied for a moment). Readers in `snapshot` must never
//! see a wrong total; with the gate switched off (test-only failpoint) they must, or the test is
//! blind. Then the same with two proxies sharing a standalone oracle, one of them killed and the
//! oracle restarted mid-run. Isolation cases show read skew prevented in `snapshot` and
//! happening in `shard`, and write skew possible in both.

mod common;

use common::{code, TestCluster};
use tokio_postgres::{Client, SimpleQueryMessage};

fn first_value(msgs: &[SimpleQueryMessage]) -> Option<String> {
    msgs.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => r.get(0).map(String::from),
        _ => None,
    })
}

/// The bank with readers needs the `failpoints` feature (the COMMIT PREPARED delay and the
/// gate-off switch), as the README's test command enables.
#[cfg(feature = "failpoints")]
mod bank_with_readers {
    use super::common::bank;
    use super::common::process::ProxyProcess;
    use super::common::rig::Rig;
    use super::common::{self, code};
    use super::first_value;
    use shardgate::localpg::free_port;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio_postgres::Client;

    const TOTAL: i64 = bank::ACCOUNTS * bank::START_BALANCE;

    /// Readers summing every balance three ways until `stop`: one simple-protocol statement, one
    /// extended-protocol statement, and a transaction of two statements. Returns (reads, wrong).
    async fn readers(url: String, n: usize, stop: Arc<AtomicBool>) -> (u64, u64) {
        let reads = Arc::new(AtomicU64::new(0));
        let wrong = Arc::new(AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for r in 0..n {
            let (url, stop, reads, wrong) =
                (url.clone(), stop.clone(), reads.clone(), wrong.clone());
            tasks.spawn(async move {
                let mut c: Option<Client> = None;
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    if c.as_ref().is_none_or(|c| c.is_closed()) {
                        match common::connect(&url).await {
                            Ok(new) => {
                                if new
                                    .batch_execute("set shardgate.consistency = 'snapshot'")
                                    .await
                                    .is_err()
                                {
                                    continue;
                                }
                                c = Some(new)
                            }
                            Err(_) => {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        }
                    }
                    let client = c.as_ref().unwrap();
                    i += 1;
                    let total: Option<i64> = match (i + r as u64) % 3 {
                        0 => client
                            .simple_query("select sum(balance) from accounts")
                            .await
                            .ok()
                            .and_then(|m| first_value(&m))
                            .and_then(|v| v.parse().ok()),
                        1 => client
                            .query_one("select sum(balance) from accounts", &[])
                            .await
                            .ok()
                            .map(|row| row.get(0)),
                        _ => {
                            async {
                                client.batch_execute("begin").await.ok()?;
                                let mut sum = 0i64;
                                for q in [
                                    "select sum(balance) from accounts where id <= 30",
                                    "select sum(balance) from accounts where id > 30",
                                ] {
                                    match client.simple_query(q).await {
                                        Ok(m) => sum += first_value(&m)?.parse::<i64>().ok()?,
                                        Err(_) => {
                                            let _ = client.batch_execute("rollback").await;
                                            return None;
                                        }
                                    }
                                }
                                client.batch_execute("commit").await.ok()?;
                                Some(sum)
                            }
                            .await
                        }
                    };
                    if let Some(t) = total {
                        reads.fetch_add(1, Ordering::SeqCst);
                        if t != TOTAL {
                            wrong.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        (reads.load(Ordering::SeqCst), wrong.load(Ordering::SeqCst))
    }

    const SNAPSHOT_ON: &str = "snapshot = true\n";
    const DELAY: &str = "commit.before_commit_prepared=sleep(3)";

    /// Writers and readers through one proxy (embedded oracle) for `secs`.
    async fn bank_with_readers(gate_off: bool, secs: u64) -> (u64, u64) {
        let rig = Rig::new(SNAPSHOT_ON).await;
        let port = rig.port();
        let fps = if gate_off {
            format!("{DELAY};snapshot.gate_off=error")
        } else {
            DELAY.to_string()
        };
        let _p = rig.proxy(port, &fps);
        let stop = Arc::new(AtomicBool::new(false));
        let writers = rig.workload(port, secs, Arc::new(AtomicBool::new(false)), 1);
        let reads = tokio::spawn(readers(rig.url(port), 3, stop.clone()));
        let transfers = writers.await.unwrap();
        stop.store(true, Ordering::SeqCst);
        let (n, wrong) = reads.await.unwrap();
        let committed = rig.settle_and_check(&transfers).await;
        eprintln!(
            "gate off: {gate_off}: {committed} transfers committed, {n} reads, {wrong} wrong"
        );
        assert!(committed > 20, "the writers made progress");
        assert!(n > 20, "the readers made progress");
        (n, wrong)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn snapshot_readers_never_see_a_wrong_total() {
        let (_, wrong) = bank_with_readers(false, 5).await;
        assert_eq!(wrong, 0, "a snapshot read saw a half-applied transfer");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_the_gate_readers_do_see_wrong_totals() {
        let (_, wrong) = bank_with_readers(true, 5).await;
        assert!(
            wrong > 0,
            "with the gate off the test must observe the anomaly, or it is blind"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_proxies_share_a_standalone_oracle_through_a_crash_and_an_oracle_restart() {
        let oracle_port = free_port().unwrap();
        let rig = Rig::new(&format!(
            "snapshot = true\noracle = \"127.0.0.1:{oracle_port}\"\n[oracle]\nlisten = \"127.0.0.1:{oracle_port}\"\n"
        ))
        .await;
        let config = rig.dir.join("proxy.toml");
        let oracle_log = rig.dir.join("oracle.log");
        let mut oracle = ProxyProcess::oracle(&config, oracle_port, &oracle_log);
        let (p1, p2) = (rig.port(), free_port().unwrap());
        let _a = rig.proxy(p1, DELAY);
        let mut b = rig.proxy(p2, DELAY);
        let stop = Arc::new(AtomicBool::new(false));
        let w1 = rig.workload(p1, 60, stop.clone(), 1);
        let w2 = rig.workload(p2, 60, stop.clone(), 2);
        let reads = tokio::spawn(readers(rig.url(p1), 3, stop.clone()));
        tokio::time::sleep(Duration::from_secs(2)).await;
        b.kill();
        tokio::time::sleep(Duration::from_secs(1)).await;
        oracle.kill();
        tokio::time::sleep(Duration::from_millis(500)).await;
        oracle = ProxyProcess::oracle(&config, oracle_port, &oracle_log);
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, Ordering::SeqCst);
        let mut transfers = w1.await.unwrap();
        transfers.extend(w2.await.unwrap());
        let (n, wrong) = reads.await.unwrap();
        let committed = rig.settle_and_check(&transfers).await;
        eprintln!("standalone: {committed} committed, {n} reads, {wrong} wrong");
        assert!(n > 20, "the readers made progress");
        assert_eq!(wrong, 0, "a snapshot read saw a half-applied transfer");
        drop(oracle);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreachable_oracle_fails_gated_work_cleanly_and_lets_single_shard_work_go_on() {
        let oracle_port = free_port().unwrap();
        let rig = Rig::new(&format!(
            "snapshot = true\noracle = \"127.0.0.1:{oracle_port}\"\n"
        ))
        .await;
        let port = rig.port();
        let _p = rig.proxy(port, "");
        let c = common::connect(&rig.url(port)).await.unwrap();
        let (a, b) = (rig.account_on(0), rig.account_on(1));
        c.batch_execute("begin").await.unwrap();
        c.batch_execute(&format!(
            "update accounts set balance = balance - 1 where id = {a}"
        ))
        .await
        .unwrap();
        c.batch_execute(&format!(
            "update accounts set balance = balance + 1 where id = {b}"
        ))
        .await
        .unwrap();
        let e = c.batch_execute("commit").await.unwrap_err();
        assert_eq!(code(&e), "58000", "{e:?}");
        assert!(
            bank::prepared(&rig.direct().await).await.is_empty(),
            "rolled back before the decision"
        );
        c.batch_execute("set shardgate.consistency = 'snapshot'")
            .await
            .unwrap();
        let e = c
            .simple_query("select sum(balance) from accounts")
            .await
            .unwrap_err();
        assert_eq!(code(&e), "58000");
        // One shard needs no oracle.
        c.batch_execute(&format!(
            "update accounts set balance = balance + 0 where id = {a}"
        ))
        .await
        .unwrap();
        let n: i64 = c
            .query_one("select balance::bigint from accounts where id = $1", &[&a])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, bank::START_BALANCE);
    }
}

const TWO: &str = r#"
[transactions]
snapshot = true
[tables.accounts]
shard_key = "id"
key_type = "bigint"
"#;

/// x on shard 0 and y on shard 1, 50 each.
async fn two_accounts(tc: &TestCluster) -> (i64, i64) {
    let c = tc.client().await;
    c.batch_execute("create table accounts (id bigint primary key, balance bigint not null)")
        .await
        .unwrap();
    let p = tc.config.placement().unwrap();
    let on = |s: usize| {
        (1..100)
            .find(|&i| p.shard_of(&shardgate::placement::KeyValue::Integer(i)) == s)
            .unwrap()
    };
    let (x, y) = (on(0), on(1));
    c.batch_execute(&format!(
        "insert into accounts (id, balance) values ({x}, 50), ({y}, 50)"
    ))
    .await
    .unwrap();
    (x, y)
}

async fn balance(c: &Client, id: i64) -> Result<i64, tokio_postgres::Error> {
    Ok(
        c.query_one("select balance from accounts where id = $1", &[&id])
            .await?
            .get(0),
    )
}

/// T1 reads x; T2 moves 10 from x to y and commits; T1 reads y. Returns T1's x + y.
async fn read_skew(
    tc: &TestCluster,
    x: i64,
    y: i64,
    setup: &str,
) -> Result<i64, tokio_postgres::Error> {
    let t1 = tc.client().await;
    let t2 = tc.client().await;
    t1.batch_execute(setup).await.unwrap();
    t1.batch_execute("begin").await?;
    let bx = balance(&t1, x).await?;
    t2.batch_execute(&format!(
        "begin; update accounts set balance = balance - 10 where id = {x}; \
         update accounts set balance = balance + 10 where id = {y}; commit"
    ))
    .await
    .unwrap();
    let by = balance(&t1, y).await;
    let _ = t1.batch_execute("rollback").await;
    Ok(bx + by?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_skew_happens_in_shard_and_not_in_snapshot() {
    let tc = TestCluster::start_configured(2, "", TWO).await;
    let (x, y) = two_accounts(&tc).await;
    // shard: the second shard joins after T2 committed and sees its write.
    let seen = read_skew(&tc, x, y, "set shardgate.consistency = 'shard'")
        .await
        .unwrap();
    assert_eq!(seen, 110, "read skew (G-single) in shard consistency");
    // snapshot, cut on every shard at the first statement: one consistent cut.
    let seen = read_skew(
        &tc,
        x,
        y,
        "set shardgate.consistency = 'snapshot'; set shardgate.snapshot_scope = 'all'",
    )
    .await
    .unwrap();
    assert_eq!(seen, 100, "no read skew in snapshot consistency");
    // snapshot with the cut on the first statement's shard only: reaching further is refused.
    let e = read_skew(&tc, x, y, "set shardgate.consistency = 'snapshot'")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "40001");
    assert!(common::db_error(&e)
        .hint()
        .unwrap()
        .contains("snapshot_scope"));
    // The proxy reports the cut's timestamp, and it grows.
    let c = tc.client().await;
    c.batch_execute("set shardgate.consistency = 'snapshot'")
        .await
        .unwrap();
    let mut last = 0u64;
    for _ in 0..3 {
        c.simple_query("select sum(balance) from accounts")
            .await
            .unwrap();
        let ts: u64 = first_value(&c.simple_query("show shardgate.snapshot_ts").await.unwrap())
            .unwrap()
            .parse()
            .unwrap();
        assert!(ts > last);
        last = ts;
    }
    // SERIALIZABLE, by BEGIN or by the session default, is refused rather than downgraded.
    for setup in [
        &["begin isolation level serializable"][..],
        &["set default_transaction_isolation = serializable", "begin"][..],
    ] {
        for sql in setup {
            c.batch_execute(sql).await.unwrap();
        }
        let e = c
            .simple_query("select sum(balance) from accounts")
            .await
            .unwrap_err();
        assert_eq!(code(&e), "0A000", "{setup:?}");
        c.batch_execute("rollback; reset default_transaction_isolation")
            .await
            .unwrap();
    }
    c.batch_execute("set default_transaction_isolation = serializable")
        .await
        .unwrap();
    let e = c
        .simple_query("select sum(balance) from accounts")
        .await
        .unwrap_err();
    assert_eq!(
        code(&e),
        "0A000",
        "an autocommit read under a SERIALIZABLE default"
    );
    c.batch_execute("reset default_transaction_isolation")
        .await
        .unwrap();
    let mode = first_value(&c.simple_query("show shardgate.consistency").await.unwrap());
    assert_eq!(mode.as_deref(), Some("snapshot"));
    let e = c
        .batch_execute("set shardgate.consistency = 'strict'")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "22023");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_skew_stays_possible_in_both_modes() {
    let tc = TestCluster::start_configured(2, "", TWO).await;
    let (x, y) = two_accounts(&tc).await;
    for mode in ["shard", "snapshot"] {
        let (t1, t2) = (tc.client().await, tc.client().await);
        for t in [&t1, &t2] {
            t.batch_execute(&format!(
                "set shardgate.consistency = '{mode}'; set shardgate.snapshot_scope = 'all'"
            ))
            .await
            .unwrap();
            t.batch_execute("begin").await.unwrap();
        }
        // Each checks x + y >= 60 (it is 100) and withdraws 60 from a different account.
        for t in [&t1, &t2] {
            let sum = balance(t, x).await.unwrap() + balance(t, y).await.unwrap();
            assert!(sum >= 60);
        }
        t1.batch_execute(&format!(
            "update accounts set balance = balance - 60 where id = {x}"
        ))
        .await
        .unwrap();
        t2.batch_execute(&format!(
            "update accounts set balance = balance - 60 where id = {y}"
        ))
        .await
        .unwrap();
        t1.batch_execute("commit").await.unwrap();
        t2.batch_execute("commit").await.unwrap();
        let c = tc.client().await;
        let sum = balance(&c, x).await.unwrap() + balance(&c, y).await.unwrap();
        assert!(sum < 0, "{mode}: write skew let both withdraw ({sum})");
        c.batch_execute(&format!(
            "update accounts set balance = 50 where id in ({x}, {y})"
        ))
        .await
        .unwrap();
    }
}
