//! Moving slots while clients work: `shardgate move-slots` copies the moving slots' rows to
//! their new shard, catches up with the writes made meanwhile and switches the cluster's
//! placement in one cut-over, through which both proxies hold new transactions. Writers lose
//! nothing, snapshot readers never see a wrong total, and afterwards every row is where the
//! new placement says. With the mover killed at each step of the cut-over, the cluster is left
//! on the old placement or the new one, and `--resume` or `--abort` finishes cleanly.

mod common;

use common::bank;
use common::process::ProxyProcess;
use shardgate::config::Config;
use shardgate::localpg::{free_port, LocalCluster};
use shardgate::placement::{KeyValue, Placement, SlotTable};
use shardgate::server::Proxy;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::Client;

const TOTAL: i64 = bank::ACCOUNTS * bank::START_BALANCE;

/// Config text for a proxy on `port` in front of `shards`, with the bank's tables.
fn config_text(port: u16, shards: &[LocalCluster], tail: &str) -> String {
    format!(
        "{}\n{}\n[tables.countries]\nreference = true\n{tail}",
        common::config_for(port, shards, ""),
        bank::TABLES
    )
}

/// `n` unlike shards with the bank's tables; the last owns nothing: the first `n - 1` recorded
/// the cluster's placement (version 1) before it was added. Returns the placement of the
/// first `n - 1` and the shards' direct connections.
async fn bank_with_an_empty_shard(n: usize) -> (common::ShardsGuard, Placement, Vec<Client>) {
    let (shards, dir) = tokio::task::spawn_blocking(move || common::start_unlike_shards(n))
        .await
        .unwrap();
    let guard = common::ShardsGuard { shards, dir };
    let before = &guard.shards[..n - 1];
    let config = Config::from_toml(&config_text(free_port().unwrap(), before, "")).unwrap();
    let placement = config.placement().unwrap();
    let mut direct = Vec::new();
    for s in &guard.shards {
        direct.push(common::connect(&s.url("postgres")).await.unwrap());
    }
    bank::create_direct(&direct[..n - 1], &placement).await;
    bank::create_tables(&direct[n - 1]).await;
    for (i, c) in direct.iter().enumerate() {
        c.batch_execute("create table countries (code text primary key)")
            .await
            .unwrap();
        // The new shard's copy of the reference table is empty: the move copies it.
        if i < n - 1 {
            c.batch_execute("insert into countries values ('fr'), ('nz'), ('pe')")
                .await
                .unwrap();
        }
    }
    // The first start records the placement of the shards of that time.
    Proxy::start(&config).await.unwrap().shutdown().await;
    (guard, placement, direct)
}

/// The slots the plan for an added last shard gives it: a quarter of them with four shards.
fn planned(table: &SlotTable, shards: usize) -> Vec<(u32, u32)> {
    shardgate::placement::plan::balance_onto(table, shards, shards - 1)
        .into_iter()
        .flat_map(|m| m.ranges)
        .collect()
}

/// Every row of `table` (keyed by `key`) is on the shard `placement` gives its key, and on no
/// other; returns how many rows each shard holds.
async fn rows_where_placed(
    direct: &[Client],
    placement: &Placement,
    table: &str,
    key: &str,
) -> Vec<usize> {
    let mut counts = Vec::new();
    for (s, c) in direct.iter().enumerate() {
        let rows = c
            .query(&format!("select {key}::bigint from {table}"), &[])
            .await
            .unwrap();
        for r in &rows {
            let k: i64 = r.get(0);
            assert_eq!(
                placement.shard_of(&KeyValue::Integer(k)),
                s,
                "{table} row with {key} = {k} is on shard {s}, where the placement does not put it"
            );
        }
        counts.push(rows.len());
    }
    counts
}

/// What the snapshot readers saw.
#[derive(Default, Debug)]
struct Seen {
    reads: u64,
    wrong: u64,
    failed: u64,
}

/// Readers in `snapshot` consistency summing every balance until `stop`: one statement (simple
/// and extended protocol), and two statements in a REPEATABLE READ transaction.
async fn snapshot_readers(url: String, n: usize, stop: Arc<AtomicBool>) -> Seen {
    let mut tasks = tokio::task::JoinSet::new();
    for r in 0..n {
        let (url, stop) = (url.clone(), stop.clone());
        tasks.spawn(async move {
            let mut seen = Seen::default();
            let c = common::connect(&url).await.unwrap();
            c.batch_execute("set shardgate.consistency = 'snapshot'")
                .await
                .unwrap();
            let mut i = r as u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let total: Result<i64, tokio_postgres::Error> = match i % 3 {
                    0 => c
                        .query_one("select sum(balance) from accounts", &[])
                        .await
                        .map(|row| row.get(0)),
                    1 => c
                        .simple_query("select sum(balance) from accounts")
                        .await
                        .map(|m| common::rows(&m)[0][0].as_ref().unwrap().parse().unwrap()),
                    _ => {
                        async {
                            c.batch_execute("begin isolation level repeatable read")
                                .await?;
                            let mut sum = 0i64;
                            for q in [
                                "select sum(balance) from accounts where id <= 30",
                                "select sum(balance) from accounts where id > 30",
                            ] {
                                match c.query_one(q, &[]).await {
                                    Ok(row) => sum += row.get::<_, i64>(0),
                                    Err(e) => {
                                        c.batch_execute("rollback").await.ok();
                                        return Err(e);
                                    }
                                }
                            }
                            c.batch_execute("commit").await?;
                            Ok(sum)
                        }
                        .await
                    }
                };
                match total {
                    Ok(t) => {
                        seen.reads += 1;
                        if t != TOTAL {
                            eprintln!("wrong total {t}");
                            seen.wrong += 1;
                        }
                    }
                    Err(e) => {
                        assert!(!c.is_closed(), "proxy B closed a reader's connection: {e}");
                        if seen.failed < 5 {
                            eprintln!("read failed: {e:?}");
                        }
                        seen.failed += 1;
                    }
                }
            }
            seen
        });
    }
    let mut all = Seen::default();
    while let Some(s) = tasks.join_next().await {
        let s = s.unwrap();
        all.reads += s.reads;
        all.wrong += s.wrong;
        all.failed += s.failed;
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_move_to_an_added_shard_under_the_bank_workload_and_snapshot_readers() {
    let (guard, placement3, direct) = bank_with_an_empty_shard(4).await;
    let shards = &guard.shards;
    let oracle_port = free_port().unwrap();
    let tail = format!(
        "[transactions]\nsnapshot = true\noracle = \"127.0.0.1:{oracle_port}\"\n\
         recovery_min_age_secs = 2\n[oracle]\nlisten = \"127.0.0.1:{oracle_port}\"\n\
         [placement]\nrefresh_interval_secs = 0.5\n"
    );
    let oracle_config = guard.dir.join("oracle.toml");
    std::fs::write(
        &oracle_config,
        config_text(free_port().unwrap(), shards, &tail),
    )
    .unwrap();
    let _oracle = ProxyProcess::oracle(&oracle_config, oracle_port, &guard.dir.join("oracle.log"));
    let start = |tail: String| async move {
        let config = Config::from_toml(&config_text(free_port().unwrap(), shards, &tail)).unwrap();
        let proxy = Proxy::start(&config).await.expect("proxy starts");
        let url = format!(
            "postgres://app:secret@127.0.0.1:{}/postgres",
            proxy.local_addr.port()
        );
        (proxy, url, config)
    };
    let (proxy_a, url_a, config) = start(tail.clone()).await;
    let (proxy_b, url_b, _) = start(tail.clone()).await;

    // Writers through A, snapshot readers through B, the move in the middle.
    let stop = Arc::new(AtomicBool::new(false));
    let writers = tokio::spawn({
        let (url, placement, stop) = (url_a.clone(), placement3.clone(), stop.clone());
        async move {
            bank::run(
                &url,
                &placement,
                4,
                Duration::from_secs(120),
                stop,
                common::rig::seed(),
                1,
            )
            .await
        }
    });
    let readers = tokio::spawn(snapshot_readers(url_b.clone(), 3, stop.clone()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ranges = planned(&placement3.slots, 4);
    let mut lines = Vec::new();
    let outcome = shardgate::moves::run(
        &config,
        shardgate::moves::Action::Start {
            ranges: ranges.clone(),
            target: "s3".into(),
        },
        &shardgate::moves::Options::default(),
        &mut |p| lines.push(p.line()),
    )
    .await
    .expect("the move succeeds");
    eprintln!("{}", shardgate::moves::describe(&outcome));
    let shardgate::moves::Outcome::Moved { version, slots, .. } = outcome else {
        panic!("moved nothing: {outcome:?}");
    };
    assert_eq!(version, 2);
    assert_eq!(slots, 256, "a quarter of the slots");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("copy  [####################] 100%")),
        "the progress reached the end of the copy: {lines:?}"
    );
    // The workload goes on by the new placement for a while.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    let transfers = writers.await.unwrap();
    let seen = readers.await.unwrap();
    eprintln!("readers: {seen:?}");

    let committed = bank::check(&direct, &transfers).await;
    assert!(committed > 20, "the writers made progress: {committed}");
    assert!(seen.reads > 20, "the readers made progress: {seen:?}");
    assert_eq!(seen.wrong, 0, "a snapshot reader saw a wrong total");

    // Every row is where the new placement puts it, and the added shard has its share.
    let after = shardgate::slot_commands::cluster_placement(&config)
        .await
        .unwrap()
        .0;
    assert_eq!(after.version, 2);
    assert_eq!(after.slots, placement3.slots.moved(&ranges, 3));
    let accounts = rows_where_placed(&direct, &after, "accounts", "id").await;
    rows_where_placed(&direct, &after, "ledger", "account_id").await;
    assert!(
        accounts[3] > 0,
        "the added shard holds accounts: {accounts:?}"
    );
    assert_eq!(accounts.iter().sum::<usize>(), bank::ACCOUNTS as usize);
    // The reference table reached it before it owned a slot.
    let countries: i64 = direct[3]
        .query_one("select count(*) from countries", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(countries, 3);

    // Both proxies route there.
    let moved = (1..=bank::ACCOUNTS)
        .find(|&k| after.shard_of(&KeyValue::Integer(k)) == 3)
        .unwrap();
    for url in [&url_a, &url_b] {
        let c = common::connect(url).await.unwrap();
        let shown = c
            .simple_query(&format!("show shardgate.route accounts {moved}"))
            .await
            .unwrap();
        assert_eq!(common::rows(&shown)[0][3].as_deref(), Some("s3"), "{url}");
        let n = c
            .execute(
                "update accounts set balance = balance where id = $1",
                &[&moved],
            )
            .await
            .unwrap();
        assert_eq!(n, 1, "{url} writes the moved account where it is now");
    }
    // Nothing of the move is left behind.
    for (s, c) in direct.iter().enumerate() {
        let left: i64 = c
            .query_one(
                "select (select count(*) from pg_trigger where tgname like 'shardgate_move%') \
                      + (select count(*) from pg_class where relname ~ '^move_[0-9]') \
                      + (select count(*) from pg_prepared_xacts)",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 0, "shard s{s} keeps objects of the move");
    }
    proxy_a.shutdown().await;
    proxy_b.shutdown().await;
}

/// The mover killed at each step, then finished (`--resume`) or undone (`--abort`): the
/// cluster is always on one placement with every row where it says, the proxy goes on by
/// itself once its hold runs out, and nothing of the move is left. Needs the failpoints.
#[cfg(feature = "failpoints")]
mod mover_crashes {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    /// Runs `shardgate move-slots` with `args` and failpoints (killed after two minutes);
    /// returns its exit status and output.
    async fn mover(
        config: &std::path::Path,
        args: &[&str],
        failpoints: &str,
    ) -> (std::process::ExitStatus, String) {
        let log = config.with_extension(format!("{}.log", rand_suffix()));
        let out = std::fs::File::create(&log).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_shardgate"))
            .arg("move-slots")
            .arg("--config")
            .arg(config)
            .args(args)
            .env("SHARDGATE_FAILPOINTS", failpoints)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("the shardgate binary runs");
        let until = std::time::Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > until {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the mover did not finish:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        (status, text)
    }

    fn rand_suffix() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    }

    /// The cluster's placement as the shards record it.
    async fn recorded(config: &Config) -> Placement {
        shardgate::slot_commands::cluster_placement(config)
            .await
            .unwrap()
            .0
    }

    /// A proxy in front of every shard with `tail`, its client URL, and its config, also
    /// written where the mover reads it.
    async fn proxy_and_config(
        guard: &common::ShardsGuard,
        tail: &str,
    ) -> (Proxy, String, Config, std::path::PathBuf) {
        let text = config_text(free_port().unwrap(), &guard.shards, tail);
        let config = Config::from_toml(&text).unwrap();
        let path = guard.dir.join("mover.toml");
        std::fs::write(&path, &text).unwrap();
        let proxy = Proxy::start(&config).await.unwrap();
        let url = format!(
            "postgres://app:secret@127.0.0.1:{}/postgres",
            proxy.local_addr.port()
        );
        (proxy, url, config, path)
    }

    /// Objects a move leaves on a shard, and prepared transactions.
    async fn leftovers(direct: &[Client]) -> i64 {
        let mut n = 0;
        for c in direct {
            n += c
                .query_one(
                    "select (select count(*) from pg_trigger where tgname like 'shardgate_move%') \
                          + (select count(*) from pg_class where relname ~ '^move_[0-9]') \
                          + (select count(*) from pg_prepared_xacts)",
                    &[],
                )
                .await
                .unwrap()
                .get::<_, i64>(0);
        }
        n
    }

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Then {
        Resume,
        Abort,
    }

    async fn killed_at(failpoint: &str, moved_when_killed: bool, then: Then) {
        let (guard, placement2, direct) = bank_with_an_empty_shard(3).await;
        let tail = "[transactions]\nsnapshot = true\nrecovery_min_age_secs = 1\nrecovery_interval_secs = 1\n\
                    [placement]\nrefresh_interval_secs = 0.2\n";
        let (proxy, url, config, path) = proxy_and_config(&guard, tail).await;
        let stop = Arc::new(AtomicBool::new(false));
        let writers = tokio::spawn({
            let (url, placement, stop) = (url.clone(), placement2.clone(), stop.clone());
            async move {
                bank::run(
                    &url,
                    &placement,
                    3,
                    Duration::from_secs(120),
                    stop,
                    common::rig::seed(),
                    1,
                )
                .await
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        let ranges = shardgate::placement::slots::runs_text(&planned(&placement2.slots, 3));
        let (status, out) = mover(
            &path,
            &["--slots", &ranges, "--to", "s2", "--hold", "2"],
            &format!("{failpoint}=crash"),
        )
        .await;
        assert_eq!(
            status.signal(),
            Some(9),
            "the mover dies at {failpoint}:\n{out}"
        );

        // The proxy's hold (if the cut-over had begun) runs out and it settles the cut-over:
        // the cluster is on one placement, and reads go on.
        let reader = common::connect(&url).await.unwrap();
        reader
            .batch_execute("set shardgate.consistency = 'snapshot'")
            .await
            .unwrap();
        let total: i64 = tokio::time::timeout(
            Duration::from_secs(20),
            reader.query_one("select sum(balance) from accounts", &[]),
        )
        .await
        .expect("the proxy serves again once its hold runs out")
        .unwrap()
        .get(0);
        assert_eq!(total, TOTAL);
        let after_kill = recorded(&config).await;
        assert_eq!(
            after_kill.version,
            if moved_when_killed { 2 } else { 1 },
            "killed at {failpoint}"
        );
        let settled = async {
            while !bank::prepared(&direct).await.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), settled)
            .await
            .expect("no prepared transaction stays");
        rows_where_placed(&direct, &after_kill, "accounts", "id").await;
        rows_where_placed(&direct, &after_kill, "ledger", "account_id").await;

        // Finished or undone: a clean end either way.
        let flag = match then {
            Then::Resume => "--resume",
            Then::Abort => "--abort",
        };
        let (status, out) = mover(&path, &[flag, "--hold", "2"], "").await;
        assert!(status.success(), "{flag} after {failpoint}:\n{out}");
        let end = recorded(&config).await;
        // A committed cut-over cannot be undone: --abort finishes it and says so.
        let expected = if moved_when_killed || then == Then::Resume {
            2
        } else {
            1
        };
        assert_eq!(end.version, expected, "{flag} after {failpoint}:\n{out}");
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.store(true, Ordering::SeqCst);
        let transfers = writers.await.unwrap();
        let settled = async {
            while !bank::prepared(&direct).await.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), settled)
            .await
            .expect("no prepared transaction stays");
        let committed = bank::check(&direct, &transfers).await;
        assert!(committed > 5, "the writers made progress: {committed}");
        let accounts = rows_where_placed(&direct, &end, "accounts", "id").await;
        assert_eq!(accounts.iter().sum::<usize>(), bank::ACCOUNTS as usize);
        if then == Then::Resume {
            assert!(
                accounts[2] > 0,
                "the target holds its accounts: {accounts:?}"
            );
        }
        assert_eq!(
            leftovers(&direct).await,
            0,
            "{flag} after {failpoint} left objects"
        );
        let unfinished: i64 = direct[0]
            .query_one(
                "select count(*) from shardgate.moves where state in ('copying', 'cutover')",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(unfinished, 0);
        proxy.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killed_after_the_copy_and_undone() {
        killed_at("move.after_copy", false, Then::Abort).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killed_after_the_copy_and_resumed() {
        killed_at("move.after_copy", false, Then::Resume).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killed_with_the_cutover_prepared_and_resumed() {
        killed_at("move.after_prepare", false, Then::Resume).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killed_with_the_cutover_prepared_and_undone() {
        killed_at("move.after_prepare", false, Then::Abort).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killed_after_the_cutover_decision_and_resumed() {
        killed_at("move.after_decision", true, Then::Resume).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killed_after_the_decision_cannot_be_undone() {
        killed_at("move.before_done", true, Then::Abort).await;
    }

    /// The target shard stops while the move catches up: the move fails with the shard named,
    /// nothing changes owner, and once the shard is back `--resume` moves the slots.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_target_shard_stopping_mid_move_leaves_the_old_placement() {
        let (guard, placement2, direct) = bank_with_an_empty_shard(3).await;
        let shards = &guard.shards;
        let tail = "[transactions]\nsnapshot = true\n[placement]\nrefresh_interval_secs = 0.2\n";
        let (proxy, url, config, path) = proxy_and_config(&guard, tail).await;
        let ranges = shardgate::placement::slots::runs_text(&planned(&placement2.slots, 3));
        let args = ["--slots", &ranges, "--to", "s2", "--hold", "2"];
        let moving = mover(&path, &args, "move.after_copy=sleep(3000)");
        let stopping = async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            shards[2].stop(true).unwrap();
        };
        let ((status, out), ()) = tokio::join!(moving, stopping);
        assert!(
            !status.success(),
            "the move cannot succeed without its target:\n{out}"
        );
        assert!(out.contains("s2"), "the error names the target:\n{out}");
        // Every account is still read where it was (a scattered read would need the stopped
        // shard too).
        let c = common::connect(&url).await.unwrap();
        let mut total = 0i64;
        for id in 1..=bank::ACCOUNTS {
            let balance: i32 = c
                .query_one("select balance from accounts where id = $1", &[&id])
                .await
                .map(|r| r.get(0))
                .unwrap_or_else(|e| panic!("account {id} is read by the old placement: {e}"));
            total += i64::from(balance);
        }
        assert_eq!(total, TOTAL);
        let version: i64 = direct[0]
            .query_one("select max(version) from shardgate.placement", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(version, 1, "the placement did not change");

        tokio::task::spawn_blocking({
            let dir = shards[2].clone();
            move || dir.start()
        })
        .await
        .unwrap()
        .unwrap();
        let (status, out) = mover(&path, &["--resume", "--hold", "2"], "").await;
        assert!(status.success(), "--resume once the target is back:\n{out}");
        let end = recorded(&config).await;
        assert_eq!(end.version, 2);
        let direct = {
            let mut d = direct;
            d[2] = common::connect(&shards[2].url("postgres")).await.unwrap();
            d
        };
        let accounts = rows_where_placed(&direct, &end, "accounts", "id").await;
        assert!(accounts[2] > 0, "{accounts:?}");
        assert_eq!(leftovers(&direct).await, 0);
        proxy.shutdown().await;
    }

    /// A proxy killed just before the cut-over cannot acknowledge it: the cut-over waits for
    /// it only until its registration ages out (three refresh intervals and two seconds),
    /// then goes ahead.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_proxy_that_died_holds_a_move_back_only_until_it_counts_as_gone() {
        let (guard, placement2, direct) = bank_with_an_empty_shard(3).await;
        let shards = &guard.shards;
        let tail = "[placement]\nrefresh_interval_secs = 0.2\n";
        let port_b = free_port().unwrap();
        let path_b = guard.dir.join("b.toml");
        // B counts as running for five seconds after its last look.
        std::fs::write(
            &path_b,
            config_text(port_b, shards, "[placement]\nrefresh_interval_secs = 1\n"),
        )
        .unwrap();
        let mut b = ProxyProcess::start(&path_b, port_b, "", &guard.dir.join("b.log"));
        let (proxy, url, config, path) = proxy_and_config(&guard, tail).await;
        let live = shardgate::slot_commands::wait_for_proxies(&config, 1, Duration::ZERO)
            .await
            .unwrap();
        assert!(
            live.iter()
                .any(|p| p.listen == format!("127.0.0.1:{port_b}")),
            "proxy B registered: {live:?}"
        );
        b.kill();
        let ranges = shardgate::placement::slots::runs_text(&planned(&placement2.slots, 3));
        let (status, out) = mover(
            &path,
            &[
                "--slots",
                &ranges,
                "--to",
                "s2",
                "--hold",
                "2",
                "--attempts",
                "8",
            ],
            "",
        )
        .await;
        assert!(status.success(), "{out}");
        assert!(
            out.contains(&format!("127.0.0.1:{port_b}")),
            "the first attempt names the proxy that did not hold:\n{out}"
        );
        let end = recorded(&config).await;
        assert_eq!(end.version, 2);
        rows_where_placed(&direct, &end, "accounts", "id").await;
        let c = common::connect(&url).await.unwrap();
        let n: i64 = c
            .query_one("select count(*) from accounts", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, bank::ACCOUNTS);
        proxy.shutdown().await;
    }
}
