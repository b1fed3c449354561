//! Protocol hygiene, as a property: random transaction scripts run through the proxy (three
//! unlike shards) and on one PostgreSQL holding the same rows must produce message streams of
//! the same shape, statement by statement: the same command tags, the same SQLSTATEs, the same
//! rows and the same ReadyForQuery states. That rules out two results for one statement and
//! state carried from one transaction into the next. After every script, no shard connection
//! may be left inside a transaction, whether the script ended with COMMIT, ROLLBACK, an error,
//! a refusal or a disconnect.
//!
//! The scripts: BEGIN at some isolation level (or BEGIN then SET TRANSACTION, or none at all),
//! point reads and writes on random keys (so on random shards), reads of every shard,
//! savepoints, errors, SET TRANSACTION after a query, then COMMIT, ROLLBACK or a disconnect;
//! in the simple and in the extended protocol; in shard and in snapshot consistency. Where the
//! proxy refuses a statement that PostgreSQL would run (SERIALIZABLE reaching a second shard,
//! 0A000), the reference runs a failing statement in its place, so both transactions go on
//! failed. `SHARDGATE_HYGIENE_SCRIPTS` sets the number of scripts per combination (default
//! 40) and `SHARDGATE_HYGIENE_SEED` the seed.

mod common;

use common::raw::{data_row, field, message, query, startup_packet, Raw};
use common::TestCluster;

const TABLES: &str =
    "[transactions]\nsnapshot = true\n[tables.t]\nshard_key = \"id\"\nkey_type = \"bigint\"\n";

const KEYS: i64 = 12;

/// A small deterministic generator (xorshift), so a seed names one run exactly.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len() as u64) as usize]
    }
}

/// How a script ends.
#[derive(Debug, Clone, Copy, PartialEq)]
enum End {
    Statement,
    Disconnect,
}

fn script(rng: &mut Rng) -> (Vec<String>, End) {
    let mut steps: Vec<String> = Vec::new();
    match rng.below(7) {
        0 => {} // autocommit statements
        1 => steps.push("begin".into()),
        2 => steps.push("begin isolation level read committed".into()),
        3 => steps.push("begin isolation level repeatable read".into()),
        4 => steps.push("begin isolation level serializable".into()),
        5 => {
            steps.push("begin".into());
            steps.push("set transaction isolation level repeatable read".into());
        }
        _ => {
            steps.push("start transaction".into());
            steps.push("set transaction isolation level serializable".into());
        }
    }
    for _ in 0..1 + rng.below(6) {
        let k = 1 + rng.below(KEYS as u64);
        let step = match rng.below(12) {
            0 | 1 => format!("select id, v from t where id = {k}"),
            2 | 3 => format!("update t set v = v + 1 where id = {k}"),
            4 => "select count(*), sum(v) from t".into(),
            5 => "select id, v from t order by id".into(),
            6 => "savepoint a".into(),
            7 => rng
                .pick(&["rollback to savepoint a", "release savepoint a"])
                .into(),
            8 => rng
                .pick(&["select 1/0", "select * from no_such_table"])
                .into(),
            9 => "show transaction_isolation".into(),
            10 => "set transaction isolation level repeatable read".into(),
            _ => format!(
                "update t set v = v - 1 where id in ({k}, {})",
                1 + (k % KEYS as u64)
            ),
        };
        steps.push(step);
    }
    match rng.below(8) {
        0 => (steps, End::Disconnect),
        1..=3 => {
            steps.push("rollback".into());
            (steps, End::Statement)
        }
        _ => {
            steps.push("commit".into());
            (steps, End::Statement)
        }
    }
}

/// One statement as the client sends it: a Query, or Parse/Bind/Describe/Execute/Sync.
fn request(sql: &str, extended: bool) -> Vec<u8> {
    if !extended {
        return query(sql);
    }
    let mut parse = vec![0u8];
    parse.extend_from_slice(sql.as_bytes());
    parse.extend_from_slice(&[0, 0, 0]);
    let mut out = message(b'P', &parse);
    out.extend(message(b'B', &[0, 0, 0, 0, 0, 0, 0, 0]));
    out.extend(message(b'D', b"P\0"));
    out.extend(message(b'E', &[0, 0, 0, 0, 0]));
    out.extend(message(b'S', &[]));
    out
}

/// The answer's shape: each message reduced to what must match (notices and parameter
/// changes left out: the proxy may word or order them differently).
fn shape(messages: &[(u8, Vec<u8>)]) -> Vec<String> {
    messages
        .iter()
        .filter(|(tag, _)| !matches!(tag, b'N' | b'S' | b'A'))
        .map(|(tag, body)| match tag {
            b'E' => format!("E {}", field(body, b'C').unwrap_or_default()),
            b'C' => format!(
                "C {}",
                String::from_utf8_lossy(body.strip_suffix(b"\0").unwrap_or(body))
            ),
            b'Z' => format!("Z {}", body[0] as char),
            b'T' => format!("T {}", i16::from_be_bytes([body[0], body[1]])),
            b'D' => format!("D {:?}", data_row(body)),
            other => format!("{}", *other as char),
        })
        .collect()
}

async fn login(port: u16, user: &str, database: &str) -> Raw {
    let mut raw = Raw::connect(port).await;
    raw.send(&startup_packet(
        196608,
        &[("user", user), ("database", database)],
    ))
    .await;
    let greeting = raw.until_ready().await;
    assert_eq!(greeting.last().map(|m| m.0), Some(b'Z'), "{user} logs in");
    raw
}

async fn step(raw: &mut Raw, sql: &str, extended: bool) -> Vec<(u8, Vec<u8>)> {
    raw.send(&request(sql, extended)).await;
    let answer = raw.until_ready().await;
    assert_eq!(
        answer.last().map(|m| m.0),
        Some(b'Z'),
        "{sql}: no ReadyForQuery"
    );
    answer
}

/// Waits until no connection on any shard is inside a transaction.
async fn nothing_left_open(tc: &TestCluster, context: &str) {
    let open = "select count(*) from pg_stat_activity \
                where state like 'idle in transaction%' and datname = 'postgres'";
    for _ in 0..200 {
        if tc.count_on_each_shard(open).await.iter().all(|&n| n == 0) {
            let prepared: i64 = tc
                .count_on_each_shard("select count(*) from pg_prepared_xacts")
                .await
                .iter()
                .sum();
            assert_eq!(prepared, 0, "{context}: a prepared transaction was left");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for i in 0..tc.shards.len() {
        let rows = tc
            .direct(i)
            .await
            .query(
                "select state, query from pg_stat_activity where state like 'idle in transaction%'",
                &[],
            )
            .await
            .unwrap();
        for r in rows {
            eprintln!(
                "shard {i}: {}: {}",
                r.get::<_, String>(0),
                r.get::<_, String>(1)
            );
        }
    }
    panic!("{context}: a shard connection was left inside a transaction");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_transaction_scripts_match_one_postgres() {
    let config = format!("{TABLES}{}", common::SNAPSHOT_READER);
    let tc = TestCluster::start_unlike(3, "", &config).await;
    let c = tc.client().await;
    c.batch_execute("create table t (id bigint primary key, v int)")
        .await
        .unwrap();
    let rows: Vec<String> = (1..=KEYS).map(|k| format!("({k}, {})", k * 10)).collect();
    let fill = format!("insert into t values {}", rows.join(", "));
    c.batch_execute(&fill).await.unwrap();
    // The reference: one PostgreSQL database with the same rows (inside the first shard's
    // throwaway cluster, so it goes with it).
    let admin = tc.direct(0).await;
    admin
        .batch_execute("create database reference")
        .await
        .unwrap();
    let r = common::connect(&tc.shards[0].url("reference"))
        .await
        .unwrap();
    r.batch_execute(&format!(
        "create table t (id bigint primary key, v int); {fill}"
    ))
    .await
    .unwrap();
    drop(r);

    let per = std::env::var("SHARDGATE_HYGIENE_SCRIPTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40u32);
    let seed = std::env::var("SHARDGATE_HYGIENE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20261130u64);
    let mut rng = Rng(seed | 1);
    let mut steps_compared = 0;
    for user in ["trustuser", "reader"] {
        for extended in [false, true] {
            let mut proxy = login(tc.port, user, "postgres").await;
            let mut reference = login(tc.shards[0].port, "postgres", "reference").await;
            for n in 0..per {
                let (steps, end) = script(&mut rng);
                let context = format!("{user} extended={extended} script {n}: {steps:?}");
                for sql in &steps {
                    let answer = step(&mut proxy, sql, extended).await;
                    let errors: Vec<String> = answer
                        .iter()
                        .filter(|m| m.0 == b'E')
                        .filter_map(|m| field(&m.1, b'M'))
                        .collect();
                    let got = shape(&answer);
                    let refused = got.iter().any(|m| m == "E 0A000");
                    let stand_in = if refused { "select 1/0" } else { sql.as_str() };
                    let mut want = shape(&step(&mut reference, stand_in, extended).await);
                    let mut got = got;
                    if refused {
                        for m in want.iter_mut().filter(|m| *m == "E 22012") {
                            *m = "E 0A000".into();
                        }
                        // A refusal may come at Parse, Bind or Execute: what went before the
                        // error is not compared.
                        let settled = |m: &String| m.starts_with('E') || m.starts_with('Z');
                        got.retain(settled);
                        want.retain(settled);
                    }
                    assert_eq!(got, want, "{context}: at {sql} (proxy said {errors:?})");
                    steps_compared += 1;
                }
                if end == End::Disconnect {
                    proxy.send(&message(b'X', &[])).await;
                    reference.send(&message(b'X', &[])).await;
                    proxy = login(tc.port, user, "postgres").await;
                    reference = login(tc.shards[0].port, "postgres", "reference").await;
                }
                nothing_left_open(&tc, &context).await;
            }
        }
    }
    eprintln!("{steps_compared} statements compared");
}
