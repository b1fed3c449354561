//! Cross-shard transfer throughput. N shards (two by default), 8 clients, each transaction
//! moves 1 from an account on the first shard to one on the second:
//!
//! - `sg cross`: through shardgate, the two accounts on different shards (two-phase commit),
//!   the client sending BEGIN, UPDATE, UPDATE, COMMIT as four statements;
//! - `sg cross 1msg`: the same transaction sent as one simple-protocol Query;
//! - `sg same`: through shardgate, both accounts on one shard (plain commit);
//! - `hand 2PC`: directly against the shards, the same two-shard commit run by hand with the
//!   fewest round trips the protocol allows (update, update, marker + PREPARE, decision INSERT +
//!   COMMIT on the decider, COMMIT PREPARED): the floor for `sg cross`.
//!
//! Snapshot consistency against shard consistency, each through its own proxy on the same
//! shards (the shard-consistency proxy has no gate; the snapshot one gates every distributed
//! commit, with the embedded oracle or a standalone one):
//!
//! - transfers as one Query, at READ COMMITTED (no cut; each point write is one shard) and at
//!   REPEATABLE READ (a cut of every shard at the first statement);
//! - `SELECT sum(balance)`, autocommit (a cut of the shards it reads);
//! - a REPEATABLE READ transaction of two point reads on two shards, four client round trips
//!   (the cut of every shard against enlisting two shards lazily): the all-shard cut's cost,
//!   which grows with the number of shards.
//!
//! Variants are interleaved in rounds and reported as mean TPS and ratios measured in this run.
//!   cargo bench --bench transfer -- [SECONDS=10] [ROUNDS=2] [SHARDS=2]

use shardgate::localpg::{free_port, ClusterOptions, LocalCluster, PgInstall};
use shardgate::placement::KeyValue;
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};

const ACCOUNTS: i64 = 10_000;
const CLIENTS: usize = 8;

async fn connect(url: &str) -> Client {
    let (c, conn) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    c
}

struct Lcg(u64);
impl Lcg {
    fn pick(&mut self, from: &[i64]) -> i64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        from[(self.0 >> 33) as usize % from.len()]
    }
}

/// The proxies every variant can use (index into the proxy URLs).
const PLAIN: usize = 0;
const EMBEDDED: usize = 1;
const STANDALONE: usize = 2;

const RC: &str = "begin";
const RR: &str = "begin isolation level repeatable read";

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Cross,
    Same,
    Hand,
    /// Transfers sent as one Query through a proxy, in a consistency, opened by a BEGIN.
    OneQuery(usize, &'static str, &'static str),
    /// `SELECT sum(balance)` through a proxy in a consistency.
    Read(usize, &'static str),
    /// A REPEATABLE READ transaction of two point reads through a proxy in a consistency.
    PointTxn(usize, &'static str),
}

impl Variant {
    fn name(self) -> String {
        let proxy = |p: usize| ["plain", "embedded", "standalone"][p];
        let level = |b: &str| if b == RR { "RR" } else { "RC" };
        match self {
            Variant::Cross => "sg cross".into(),
            Variant::Same => "sg same".into(),
            Variant::Hand => "hand 2PC".into(),
            Variant::OneQuery(p, mode, b) => {
                format!("transfer {mode} {} {}", level(b), proxy(p))
            }
            Variant::Read(p, mode) => format!("sum {mode} {}", proxy(p)),
            Variant::PointTxn(p, mode) => format!("RR 2 reads {mode} {}", proxy(p)),
        }
    }
}

async fn one_client(
    v: Variant,
    proxies: Vec<String>,
    shards: [String; 2],
    ids: [Vec<i64>; 2],
    client: usize,
    deadline: Instant,
) -> u64 {
    let mut rng = Lcg(client as u64 * 7919 + 1);
    let mut done = 0u64;
    let proxy = proxies[0].clone();
    match v {
        Variant::Read(p, mode) => {
            let c = connect(&proxies[p]).await;
            c.batch_execute(&format!("set shardgate.consistency = '{mode}'"))
                .await
                .unwrap();
            while Instant::now() < deadline {
                c.simple_query("select sum(balance) from accounts")
                    .await
                    .unwrap();
                done += 1;
            }
        }
        Variant::PointTxn(p, mode) => {
            let c = connect(&proxies[p]).await;
            c.batch_execute(&format!("set shardgate.consistency = '{mode}'"))
                .await
                .unwrap();
            let one = c
                .prepare("select balance from accounts where id = $1")
                .await
                .unwrap();
            while Instant::now() < deadline {
                let (a, b) = (rng.pick(&ids[0]), rng.pick(&ids[1]));
                c.batch_execute(RR).await.unwrap();
                c.query_one(&one, &[&a]).await.unwrap();
                c.query_one(&one, &[&b]).await.unwrap();
                c.batch_execute("commit").await.unwrap();
                done += 1;
            }
        }
        Variant::OneQuery(p, mode, begin) => {
            let c = connect(&proxies[p]).await;
            c.batch_execute(&format!("set shardgate.consistency = '{mode}'"))
                .await
                .unwrap();
            while Instant::now() < deadline {
                let (a, b) = (rng.pick(&ids[0]), rng.pick(&ids[1]));
                let result = c
                    .batch_execute(&format!(
                        "{begin}; update accounts set balance = balance - 1 where id = {a}; \
                         update accounts set balance = balance + 1 where id = {b}; commit"
                    ))
                    .await;
                match result {
                    Ok(()) => done += 1,
                    // Two REPEATABLE READ transfers on one account: PostgreSQL's own 40001,
                    // which leaves the transaction block failed, as one server does.
                    Err(e) if e.code().map(|c| c.code()) == Some("40001") => {
                        c.batch_execute("rollback").await.unwrap();
                    }
                    Err(e) => panic!("{e:?}"),
                }
            }
        }
        Variant::Cross | Variant::Same => {
            let c = connect(&proxy).await;
            while Instant::now() < deadline {
                let a = rng.pick(&ids[0]);
                let b = if v == Variant::Cross {
                    rng.pick(&ids[1])
                } else {
                    rng.pick(&ids[0])
                };
                if a == b {
                    continue;
                }
                let transfer = async {
                    c.batch_execute("begin").await?;
                    c.batch_execute(&format!(
                        "update accounts set balance = balance - 1 where id = {a}"
                    ))
                    .await?;
                    c.batch_execute(&format!(
                        "update accounts set balance = balance + 1 where id = {b}"
                    ))
                    .await?;
                    c.batch_execute("commit").await
                };
                match transfer.await {
                    Ok(()) => done += 1,
                    // Two transfers between the same two accounts of one shard, in opposite
                    // directions: PostgreSQL's deadlock detector ends one.
                    Err(e) if e.code().map(|c| c.code()) == Some("40P01") => {
                        c.batch_execute("rollback").await.unwrap();
                    }
                    Err(e) => panic!("{e:?}"),
                }
            }
        }
        Variant::Hand => {
            let (d, p) = (connect(&shards[0]).await, connect(&shards[1]).await);
            let mut n = 0;
            while Instant::now() < deadline {
                let (a, b) = (rng.pick(&ids[0]), rng.pick(&ids[1]));
                n += 1;
                let gid = format!("bench_{client}_{n}");
                d.batch_execute(&format!(
                    "begin; update accounts set balance = balance - 1 where id = {a}"
                ))
                .await
                .unwrap();
                p.batch_execute(&format!(
                    "begin; update accounts set balance = balance + 1 where id = {b}"
                ))
                .await
                .unwrap();
                p.batch_execute(&format!(
                    "insert into shardgate.txn_marker (gid) values ('{gid}'); prepare transaction '{gid}'"
                ))
                .await
                .unwrap();
                d.batch_execute(&format!(
                    "insert into shardgate.commit_record (gid, outcome) values ('{gid}', 'c'); commit"
                ))
                .await
                .unwrap();
                p.batch_execute(&format!("commit prepared '{gid}'"))
                    .await
                    .unwrap();
                done += 1;
            }
        }
    }
    done
}

/// Starts `shardgate <args> <config>` and waits until it listens on `port`.
fn spawn(args: &[&str], config: &std::path::Path, port: u16) -> std::process::Child {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_shardgate"))
        .args(["--log-level", "warn"])
        .args(args)
        .arg(config)
        .spawn()
        .unwrap();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let secs: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(10);
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2);
    let n_shards: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(2).max(2);
    let install = PgInstall::find().expect("PostgreSQL server binaries");
    let dir = std::env::temp_dir().join(format!("shardgate-transfer-{}", std::process::id()));
    install.make_owned_dir(&dir).unwrap();
    let mut shards = Vec::new();
    for i in 0..n_shards {
        let c = LocalCluster::create_or_reuse(
            &install,
            &dir.join(format!("s{i}")),
            free_port().unwrap(),
            ClusterOptions::for_tests(),
        )
        .unwrap();
        c.start().unwrap();
        shards.push(c);
    }
    // Three proxies on the same shards: plain, gated with the embedded oracle, gated with a
    // standalone oracle.
    let oracle_port = free_port().unwrap();
    let mut children = Vec::new();
    let mut proxy_urls = Vec::new();
    let mut config = None;
    let remote = format!(
        "[transactions]\nsnapshot = true\noracle = \"127.0.0.1:{oracle_port}\"\n\
         [oracle]\nlisten = \"127.0.0.1:{oracle_port}\"\n"
    );
    for (k, txn) in ["", "[transactions]\nsnapshot = true\n", remote.as_str()]
        .into_iter()
        .enumerate()
    {
        let port = free_port().unwrap();
        let mut text = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[metrics]\nlisten = \"\"\n\
             [[users]]\nname = \"bench\"\nauth = \"trust\"\n{txn}\
             [tables.accounts]\nshard_key = \"id\"\nkey_type = \"bigint\"\n"
        );
        for (i, s) in shards.iter().enumerate() {
            text.push_str(&format!(
                "[[shards]]\nname = \"s{i}\"\nurl = \"{}\"\n",
                s.url("postgres")
            ));
        }
        let path = dir.join(format!("bench{k}.toml"));
        std::fs::write(&path, &text).unwrap();
        if k == 2 {
            children.push(spawn(&["oracle", "--config"], &path, oracle_port));
        }
        children.push(spawn(&["--config"], &path, port));
        config.get_or_insert(shardgate::config::Config::from_toml(&text).unwrap());
        proxy_urls.push(format!("postgres://bench@127.0.0.1:{port}/postgres"));
    }
    let config = config.unwrap();
    let proxy_url = proxy_urls[0].clone();
    let shard_urls = [shards[0].url("postgres"), shards[1].url("postgres")];
    let c = connect(&proxy_url).await;
    c.batch_execute("create table accounts (id bigint primary key, balance int not null)")
        .await
        .unwrap();
    for chunk in (1..=ACCOUNTS).collect::<Vec<_>>().chunks(1000) {
        let rows: Vec<String> = chunk.iter().map(|i| format!("({i}, 1000)")).collect();
        c.batch_execute(&format!(
            "insert into accounts (id, balance) values {}",
            rows.join(", ")
        ))
        .await
        .unwrap();
    }
    let placement = config.placement().unwrap();
    let on = |s: usize| -> Vec<i64> {
        (1..=ACCOUNTS)
            .filter(|&i| placement.shard_of(&KeyValue::Integer(i)) == s)
            .collect()
    };
    let ids = [on(0), on(1)];
    let variants = [
        Variant::Cross,
        Variant::OneQuery(PLAIN, "shard", RC),
        Variant::Same,
        Variant::Hand,
        Variant::OneQuery(EMBEDDED, "snapshot", RC),
        Variant::OneQuery(STANDALONE, "snapshot", RC),
        Variant::OneQuery(PLAIN, "shard", RR),
        Variant::OneQuery(EMBEDDED, "snapshot", RR),
        Variant::Read(PLAIN, "shard"),
        Variant::Read(EMBEDDED, "snapshot"),
        Variant::Read(STANDALONE, "snapshot"),
        Variant::PointTxn(PLAIN, "shard"),
        Variant::PointTxn(EMBEDDED, "snapshot"),
        Variant::PointTxn(STANDALONE, "snapshot"),
    ];
    let mut tps = vec![Vec::new(); variants.len()];
    for round in 0..rounds {
        for (vi, &v) in variants.iter().enumerate() {
            let deadline = Instant::now() + Duration::from_secs(secs);
            let mut tasks = tokio::task::JoinSet::new();
            for client in 0..CLIENTS {
                tasks.spawn(one_client(
                    v,
                    proxy_urls.clone(),
                    shard_urls.clone(),
                    ids.clone(),
                    client + round * CLIENTS,
                    deadline,
                ));
            }
            let mut n = 0;
            while let Some(r) = tasks.join_next().await {
                n += r.unwrap();
            }
            let t = n as f64 / secs as f64;
            eprintln!("round {round} {:>32}: {t:.0} TPS", v.name());
            tps[vi].push(t);
        }
    }
    let mean = |v: &Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
    let m: Vec<f64> = tps.iter().map(mean).collect();
    let (cross, one, same, hand) = (m[0], m[1], m[2], m[3]);
    println!("| variant | TPS (mean of {rounds} × {secs} s, {CLIENTS} clients) |");
    println!("| --- | ---: |");
    println!("| sg cross (2PC), 4 statements | {cross:.0} |");
    println!("| sg cross (2PC), one Query | {one:.0} |");
    println!("| sg same (1PC) | {same:.0} |");
    println!("| hand 2PC, direct | {hand:.0} |");
    println!("sg cross / hand 2PC = {:.2}", cross / hand);
    println!("sg cross 1msg / hand 2PC = {:.2}", one / hand);
    println!("sg cross / sg same  = {:.2}", cross / same);
    println!();
    println!("{n_shards} shards, snapshot consistency (gated proxy) against shard consistency (plain proxy):");
    println!();
    println!(
        "| workload | shard TPS | snapshot, embedded | ratio | snapshot, standalone | ratio |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    let row = |what: &str, base: f64, emb: f64, remote: Option<f64>| {
        let remote = remote.map_or("| - | -".to_string(), |r| {
            format!("| {r:.0} | {:.2}", r / base)
        });
        println!(
            "| {what} | {base:.0} | {emb:.0} | {:.2} {remote} |",
            emb / base
        );
    };
    row(
        "transfers, READ COMMITTED, one Query",
        m[1],
        m[4],
        Some(m[5]),
    );
    row("transfers, REPEATABLE READ, one Query", m[6], m[7], None);
    row("sum over every shard, autocommit", m[8], m[9], Some(m[10]));
    row(
        "REPEATABLE READ, two point reads",
        m[11],
        m[12],
        Some(m[13]),
    );
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    for s in &shards {
        let _ = s.stop(true);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
