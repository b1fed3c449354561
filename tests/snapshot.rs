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
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio_postgres::Client;

    const TOTAL: i64 = bank::ACCOUNTS * bank::START_BALANCE;

    /// What the readers saw.
    #[derive(Default, Debug)]
    struct Seen {
        /// Totals read.
        reads: u64,
        /// Totals other than the bank's.
        wrong: u64,
        /// Of those, read by a statement in a READ COMMITTED transaction.
        wrong_read_committed: u64,
        /// Point-read transactions started, and those that failed with an error.
        point_attempts: u64,
        point_failed: u64,
    }

    /// Sums every balance, in a REPEATABLE READ transaction, one account at a time: the
    /// transaction reaches the shards in turn.
    async fn point_reads(client: &Client) -> Result<i64, tokio_postgres::Error> {
        client
            .batch_execute("begin isolation level repeatable read")
            .await?;
        let read = async {
            let one = client
                .prepare("select balance::bigint from accounts where id = $1")
                .await?;
            let mut sum = 0i64;
            for id in 1..=bank::ACCOUNTS {
                sum += client.query_one(&one, &[&id]).await?.get::<_, i64>(0);
            }
            Ok(sum)
        }
        .await;
        let end = if read.is_ok() { "commit" } else { "rollback" };
        client.batch_execute(end).await?;
        read
    }

    /// Readers summing every balance five ways until `stop`: one simple-protocol statement,
    /// one extended-protocol statement, a REPEATABLE READ transaction of two statements, one
    /// statement in a READ COMMITTED transaction, and a REPEATABLE READ transaction of one
    /// point read per account.
    async fn readers(url: String, n: usize, stop: Arc<AtomicBool>) -> Seen {
        let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
        let mut tasks = tokio::task::JoinSet::new();
        for r in 0..n {
            let (url, stop, seen) = (url.clone(), stop.clone(), seen.clone());
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
                    let mode = (i + r as u64) % 5;
                    let total: Option<i64> = match mode {
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
                        2 => {
                            async {
                                client
                                    .batch_execute("begin isolation level repeatable read")
                                    .await
                                    .ok()?;
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
                        3 => {
                            // READ COMMITTED: the one statement gets its own gated cut.
                            async {
                                client.batch_execute("begin").await.ok()?;
                                let sum = client
                                    .query_one("select sum(balance) from accounts", &[])
                                    .await
                                    .ok()
                                    .map(|row| row.get::<_, i64>(0));
                                let end = if sum.is_some() { "commit" } else { "rollback" };
                                client.batch_execute(end).await.ok()?;
                                sum
                            }
                            .await
                        }
                        _ => {
                            let result = point_reads(client).await;
                            let mut s = seen.lock().unwrap();
                            s.point_attempts += 1;
                            match result {
                                Ok(sum) => Some(sum),
                                Err(e) => {
                                    // A lost connection is the proxy being killed, not a
                                    // failed read.
                                    if !client.is_closed() {
                                        eprintln!("point reads failed: {e:?}");
                                        s.point_failed += 1;
                                    }
                                    None
                                }
                            }
                        }
                    };
                    if let Some(t) = total {
                        let mut s = seen.lock().unwrap();
                        s.reads += 1;
                        if t != TOTAL {
                            s.wrong += 1;
                            s.wrong_read_committed += u64::from(mode == 3);
                        }
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        let seen = std::mem::take(&mut *seen.lock().unwrap());
        seen
    }

    const SNAPSHOT_ON: &str = "snapshot = true\n";
    const DELAY: &str = "commit.before_commit_prepared=sleep(3)";

    /// Writers and readers through one proxy (embedded oracle) for `secs`.
    async fn bank_with_readers(gate_off: bool, secs: u64) -> Seen {
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
        let reads = tokio::spawn(readers(rig.url(port), 4, stop.clone()));
        let transfers = writers.await.unwrap();
        stop.store(true, Ordering::SeqCst);
        let seen = reads.await.unwrap();
        let committed = rig.settle_and_check(&transfers).await;
        eprintln!("gate off: {gate_off}: {committed} transfers committed, {seen:?}");
        assert!(committed > 20, "the writers made progress");
        assert!(seen.reads > 20, "the readers made progress");
        assert!(seen.point_attempts > 5, "the point readers made progress");
        seen
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn snapshot_readers_never_see_a_wrong_total() {
        let seen = bank_with_readers(false, 5).await;
        assert_eq!(seen.wrong, 0, "a snapshot read saw a half-applied transfer");
        // Reaching shards one by one never fails because of the snapshot (under 1% allowed
        // for anything else a busy machine may cause).
        assert!(
            seen.point_failed * 100 < seen.point_attempts,
            "{} of {} point-read transactions failed",
            seen.point_failed,
            seen.point_attempts
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_the_gate_readers_do_see_wrong_totals() {
        let seen = bank_with_readers(true, 5).await;
        assert!(
            seen.wrong > 0,
            "with the gate off the test must observe the anomaly, or it is blind"
        );
        assert!(
            seen.wrong_read_committed > 0,
            "a READ COMMITTED statement ungated must be seen to read a half-applied transfer"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_proxies_share_a_standalone_oracle_through_a_crash_and_an_oracle_restart() {
        // The oracle's and the second proxy's ports stay bound until their processes start:
        // a port only picked could be given to a shard the rig starts (every read then met
        // a PostgreSQL server where the oracle should be, 'the oracle closed the connection').
        let hold = || std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (oracle_hold, b_hold) = (hold(), hold());
        let port = |l: &std::net::TcpListener| l.local_addr().unwrap().port();
        let (oracle_port, p2) = (port(&oracle_hold), port(&b_hold));
        let rig = Rig::new(&format!(
            "snapshot = true\noracle = \"127.0.0.1:{oracle_port}\"\n[oracle]\nlisten = \"127.0.0.1:{oracle_port}\"\n"
        ))
        .await;
        let config = rig.dir.join("proxy.toml");
        let oracle_log = rig.dir.join("oracle.log");
        drop(oracle_hold);
        let mut oracle = ProxyProcess::oracle(&config, oracle_port, &oracle_log);
        let p1 = rig.port();
        let _a = rig.proxy(p1, DELAY);
        drop(b_hold);
        let mut b = rig.proxy(p2, DELAY);
        let stop = Arc::new(AtomicBool::new(false));
        let w1 = rig.workload(p1, 60, stop.clone(), 1);
        let w2 = rig.workload(p2, 60, stop.clone(), 2);
        let reads = tokio::spawn(readers(rig.url(p1), 4, stop.clone()));
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
        let seen = reads.await.unwrap();
        let committed = rig.settle_and_check(&transfers).await;
        eprintln!("standalone: {committed} committed, {seen:?}");
        assert!(seen.reads > 20, "the readers made progress");
        assert_eq!(seen.wrong, 0, "a snapshot read saw a half-applied transfer");
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

/// T1 (at `level`) reads x; T2 moves 10 from x to y and commits; T1 reads y. Returns T1's
/// x + y.
async fn read_skew(
    tc: &TestCluster,
    x: i64,
    y: i64,
    setup: &str,
    level: &str,
) -> Result<i64, tokio_postgres::Error> {
    let t1 = tc.client().await;
    let t2 = tc.client().await;
    t1.batch_execute(setup).await.unwrap();
    t1.batch_execute(&format!("begin isolation level {level}"))
        .await?;
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
    let rr = "repeatable read";
    // shard: the second shard joins after T2 committed and sees its write.
    let seen = read_skew(&tc, x, y, "set shardgate.consistency = 'shard'", rr)
        .await
        .unwrap();
    assert_eq!(seen, 110, "read skew (G-single) in shard consistency");
    // snapshot: one cut of every shard at the first statement, so reaching the second shard
    // later neither fails nor sees T2.
    let snapshot = "set shardgate.consistency = 'snapshot'";
    let seen = read_skew(&tc, x, y, snapshot, rr).await.unwrap();
    assert_eq!(seen, 100, "no read skew in snapshot consistency");
    // READ COMMITTED sees each statement's moment, as PostgreSQL's does.
    let seen = read_skew(&tc, x, y, snapshot, "read committed")
        .await
        .unwrap();
    assert_eq!(seen, 110, "read committed allows read skew");
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
            t.batch_execute(&format!("set shardgate.consistency = '{mode}'"))
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

const ITEMS: &str =
    "[transactions]\nsnapshot = true\n[tables.items]\nshard_key = \"id\"\nkey_type = \"bigint\"\n";

/// Runs `sql` through the simple protocol, or (one statement at a time) the extended one.
async fn run(c: &Client, extended: bool, sql: &str) -> Result<u64, tokio_postgres::Error> {
    if extended {
        c.execute(sql, &[]).await
    } else {
        c.simple_query(sql).await.map(|m| m.len() as u64)
    }
}

/// Every kind of statement works in snapshot consistency, autocommit and in transactions at
/// each level, in both protocols: DDL (as an ORM's schema tools run it: a catalog read, then
/// CREATE TABLE, in one transaction), catalog reads, SET/SHOW and utility statements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_statement_works_in_snapshot_consistency() {
    let config = format!("{ITEMS}{}", common::SNAPSHOT_READER);
    let tc = TestCluster::start_unlike(3, "", &config).await;
    let c = common::connect(&tc.url("reader", "none")).await.unwrap();
    let mode = first_value(&c.simple_query("show shardgate.consistency").await.unwrap());
    assert_eq!(mode.as_deref(), Some("snapshot"), "the user's default");
    let exists = "select count(*) from pg_catalog.pg_class c join pg_catalog.pg_namespace n \
                  on n.oid = c.relnamespace where c.relname = 'items' and n.nspname = 'public'";
    for extended in [false, true] {
        // Autocommit.
        for sql in [
            "drop table if exists items",
            "create table items (id bigint primary key, note text)",
            "create index items_note on items (note)",
            "comment on table items is 'things'",
            "insert into items values (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd'), (5, 'e')",
            "select count(*) from items",
            "select * from information_schema.tables where table_name = 'items'",
            exists,
            "show transaction_isolation",
            "set work_mem = '8MB'",
            "show work_mem",
            "analyze items",
            "vacuum items",
            "update items set note = note || '!'",
            "truncate items",
            "drop index items_note",
        ] {
            run(&c, extended, sql)
                .await
                .unwrap_or_else(|e| panic!("extended {extended}: {sql}: {e:?}"));
        }
        // In transactions, as schema tools and ORMs run them.
        for begin in [
            "begin",
            "begin isolation level read committed",
            "begin isolation level repeatable read",
        ] {
            for sql in [
                begin,
                exists,
                "drop table if exists items",
                "create table items (id bigint primary key, note text)",
                "set local work_mem = '16MB'",
                "show work_mem",
                "savepoint s1",
                "insert into items values (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd')",
                "select count(*) from items",
                "release savepoint s1",
                "update items set note = 'z' where id = 3",
                "select * from items order by id",
                exists,
                "commit",
            ] {
                run(&c, extended, sql)
                    .await
                    .unwrap_or_else(|e| panic!("extended {extended}: {begin}: {sql}: {e:?}"));
            }
            let n: i64 = c
                .query_one("select count(*) from items", &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(n, 4, "{begin}: committed on every shard");
        }
    }
    // Nothing is left open on any shard.
    drop(c);
    let open = "select count(*) from pg_stat_activity where state like 'idle in transaction%'";
    for _ in 0..100 {
        if tc.count_on_each_shard(open).await.iter().all(|&n| n == 0) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("a shard connection was left in a transaction");
}

/// Items computed after merging several shards' aggregates (`count(*)::int`, `round(avg(x),
/// 2)`) and float sums work in snapshot consistency's autocommit reads, in both protocols: what
/// the merge asks a shard of the read is answered before its COMMIT, and every connection is in
/// step for the next statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_computed_after_the_merge_work_in_snapshot_consistency() {
    let config = format!("{ITEMS}{}", common::SNAPSHOT_READER);
    let tc = TestCluster::start_unlike(3, "", &config).await;
    let c = common::connect(&tc.url("reader", "none")).await.unwrap();
    c.batch_execute(
        "create table items (id bigint primary key, note text);
         insert into items select i, 'n' || i from generate_series(1, 30) i",
    )
    .await
    .unwrap();
    let some = |s: &str| Some(s.to_string());
    for _ in 0..2 {
        let simple = c
            .simple_query(
                "select count(*)::int, round(avg(id), 2), max(id) - min(id) as spread from items",
            )
            .await
            .unwrap();
        assert_eq!(
            common::rows(&simple),
            vec![vec![some("30"), some("15.50"), some("29")]]
        );
        let row = c
            .query_one(
                "select count(*)::int, round(avg(id), 2)::text, max(id) - min(id) from items \
                 where id > $1",
                &[&0i64],
            )
            .await
            .unwrap();
        assert_eq!(
            (
                row.get::<_, i32>(0),
                row.get::<_, String>(1),
                row.get::<_, i64>(2)
            ),
            (30, "15.50".to_string(), 29)
        );
        // A float sum asks a shard for the session's extra_float_digits after the merge.
        let sum = c
            .simple_query("select sum(id::float8) from items")
            .await
            .unwrap();
        assert_eq!(first_value(&sum).as_deref(), Some("465"));
        // The next read finds every connection in step.
        let n = c.simple_query("select count(*) from items").await.unwrap();
        assert_eq!(first_value(&n).as_deref(), Some("30"));
    }
}

/// libpq's one-shot query of `sql` with `params`; the answer's messages.
async fn one_shot(raw: &mut common::raw::Raw, sql: &str, params: &[String]) -> Vec<(u8, Vec<u8>)> {
    raw.send(&common::raw::one_shot(sql, &[], params)).await;
    raw.until_ready().await
}

/// The SQLSTATE and message of the error among `answer`'s messages, if any.
fn error_of(answer: &[(u8, Vec<u8>)]) -> Option<(Option<String>, Option<String>)> {
    use common::raw::field;
    answer
        .iter()
        .find(|m| m.0 == b'E')
        .map(|(_, b)| (field(b, b'C'), field(b, b'M')))
}

/// A cluster whose sessions all start in snapshot consistency, raw logins included.
async fn all_in_snapshot() -> TestCluster {
    let config = ITEMS.replace(
        "snapshot = true\n",
        "snapshot = true\nconsistency = \"snapshot\"\n",
    );
    let tc = TestCluster::start_unlike(3, "", &config).await;
    tc.client()
        .await
        .batch_execute(
            "create table items (id bigint primary key, note text);
             insert into items select i, 'n' || i from generate_series(1, 60) i",
        )
        .await
        .unwrap();
    tc
}

/// libpq's one-shot queries reading shards other than the first, autocommit, in snapshot
/// consistency: the Describe runs in the shard's implicit transaction, which ends before the
/// read's cut begins there (it failed with 25001 'SET TRANSACTION ISOLATION LEVEL must be
/// called before any query').
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_query_of_shards_other_than_the_first_reads_in_snapshot_consistency() {
    let tc = all_in_snapshot().await;
    let on = |s: usize| tc.keys_on(s, 1..61, 2);
    let ids: Vec<String> = [on(1), on(2)].concat().iter().map(i64::to_string).collect();
    let (mut raw, _) = common::raw::Raw::login(tc.port).await;
    for sql in [
        "select count(note) from items where id in ($1, $2, $3, $4)",
        "select id, note from items where id in ($1, $2, $3, $4) order by id",
    ] {
        for _ in 0..2 {
            let answer = one_shot(&mut raw, sql, &ids).await;
            assert_eq!(error_of(&answer), None, "{sql}");
            let rows = answer.iter().filter(|m| m.0 == b'D').count();
            assert_eq!(rows, if sql.contains("count") { 1 } else { 4 }, "{sql}");
        }
    }
}

/// A write on the first shard sent as libpq's one-shot query inside a transaction belongs to
/// the transaction in snapshot consistency: its Parse reached the shard outside the
/// transaction (a Parse reads no rows), and the Bind joins the shard to it before running
/// there. It ran in the Parse's implicit transaction and was committed by the batch's Sync,
/// whatever the transaction then did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_write_on_the_first_shard_is_rolled_back_with_its_transaction() {
    let tc = all_in_snapshot().await;
    let home = (100..200).find(|&i| tc.owner(i) == 0).unwrap();
    let away = (100..200).find(|&i| tc.owner(i) == 1).unwrap();
    let (mut raw, _) = common::raw::Raw::login(tc.port).await;
    let insert = "insert into items (id, note) values ($1, 'w')";
    for end in ["rollback", "commit"] {
        for step in [
            ("begin", vec![]),
            (insert, vec![home.to_string()]),
            (insert, vec![away.to_string()]),
            (end, vec![]),
        ] {
            let answer = one_shot(&mut raw, step.0, &step.1).await;
            assert_eq!(error_of(&answer), None, "{end}: {}", step.0);
        }
        let written = format!("select count(*) from items where id in ({home}, {away})");
        let per_shard = tc.count_on_each_shard(&written).await;
        let want = if end == "commit" {
            vec![1, 1, 0]
        } else {
            vec![0, 0, 0]
        };
        assert_eq!(per_shard, want, "after {end}");
    }
}
