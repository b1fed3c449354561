//! Cross-shard transfer throughput (issue 4's benchmark). Two shards, 8 clients, each
//! transaction moves 1 from one account to another:
//!
//! - `sg cross`: through shardgate, the two accounts on different shards (two-phase commit),
//!   the client sending BEGIN, UPDATE, UPDATE, COMMIT as four statements;
//! - `sg cross 1msg`: the same transaction sent as one simple-protocol Query;
//! - `sg same`: through shardgate, both accounts on one shard (plain commit);
//! - `hand 2PC`: directly against the shards, the same two-shard commit run by hand with the
//!   fewest round trips the protocol allows (update, update, marker + PREPARE, decision INSERT +
//!   COMMIT on the decider, COMMIT PREPARED): the floor for `sg cross`.
//!
//! Variants are interleaved in rounds and reported as mean TPS and ratios measured in this run.
//!   cargo bench --bench transfer -- [SECONDS=10] [ROUNDS=2]

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

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Cross,
    CrossOneMessage,
    Same,
    Hand,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Cross => "sg cross",
            Variant::CrossOneMessage => "sg cross 1msg",
            Variant::Same => "sg same",
            Variant::Hand => "hand 2PC",
        }
    }
}

async fn one_client(
    v: Variant,
    proxy: String,
    shards: [String; 2],
    ids: [Vec<i64>; 2],
    client: usize,
    deadline: Instant,
) -> u64 {
    let mut rng = Lcg(client as u64 * 7919 + 1);
    let mut done = 0u64;
    match v {
        Variant::CrossOneMessage => {
            let c = connect(&proxy).await;
            while Instant::now() < deadline {
                let (a, b) = (rng.pick(&ids[0]), rng.pick(&ids[1]));
                c.batch_execute(&format!(
                    "begin; update accounts set balance = balance - 1 where id = {a}; \
                     update accounts set balance = balance + 1 where id = {b}; commit"
                ))
                .await
                .unwrap();
                done += 1;
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
                c.batch_execute("commit").await.unwrap();
                done += 1;
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let secs: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(10);
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2);
    let install = PgInstall::find().expect("PostgreSQL server binaries");
    let dir = std::env::temp_dir().join(format!("shardgate-transfer-{}", std::process::id()));
    install.make_owned_dir(&dir).unwrap();
    let mut shards = Vec::new();
    for i in 0..2 {
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
    let port = free_port().unwrap();
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[metrics]\nlisten = \"\"\n\
         [[users]]\nname = \"bench\"\nauth = \"trust\"\n\
         [tables.accounts]\nshard_key = \"id\"\nkey_type = \"bigint\"\n"
    );
    for (i, s) in shards.iter().enumerate() {
        text.push_str(&format!(
            "[[shards]]\nname = \"s{i}\"\nurl = \"{}\"\n",
            s.url("postgres")
        ));
    }
    let config = shardgate::config::Config::from_toml(&text).unwrap();
    let path = dir.join("bench.toml");
    std::fs::write(&path, &text).unwrap();
    let mut proxy = std::process::Command::new(env!("CARGO_BIN_EXE_shardgate"))
        .args(["--log-level", "warn", "--config"])
        .arg(&path)
        .spawn()
        .unwrap();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let proxy_url = format!("postgres://bench@127.0.0.1:{port}/postgres");
    let shard_urls = [shards[0].url("postgres"), shards[1].url("postgres")];
    let c = connect(&proxy_url).await;
    c.batch_execute("create table accounts (id bigint primary key, balance bigint not null)")
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
        Variant::CrossOneMessage,
        Variant::Same,
        Variant::Hand,
    ];
    let mut tps = vec![Vec::new(); variants.len()];
    for round in 0..rounds {
        for (vi, &v) in variants.iter().enumerate() {
            let deadline = Instant::now() + Duration::from_secs(secs);
            let mut tasks = tokio::task::JoinSet::new();
            for client in 0..CLIENTS {
                tasks.spawn(one_client(
                    v,
                    proxy_url.clone(),
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
            eprintln!("round {round} {:>9}: {t:.0} TPS", v.name());
            tps[vi].push(t);
        }
    }
    let mean = |v: &Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
    let (cross, one, same, hand) = (mean(&tps[0]), mean(&tps[1]), mean(&tps[2]), mean(&tps[3]));
    println!("| variant | TPS (mean of {rounds} × {secs} s, {CLIENTS} clients) |");
    println!("| --- | ---: |");
    println!("| sg cross (2PC), 4 statements | {cross:.0} |");
    println!("| sg cross (2PC), one Query | {one:.0} |");
    println!("| sg same (1PC) | {same:.0} |");
    println!("| hand 2PC, direct | {hand:.0} |");
    println!("sg cross / hand 2PC = {:.2}", cross / hand);
    println!("sg cross 1msg / hand 2PC = {:.2}", one / hand);
    println!("sg cross / sg same  = {:.2}", cross / same);
    let _ = proxy.kill();
    let _ = proxy.wait();
    for s in &shards {
        let _ = s.stop(true);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
