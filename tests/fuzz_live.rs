//! Live fuzzing: random and mutated protocol messages, after a valid login, against a proxy in
//! front of three unlike shards, from several clients at once. Throughout, a separate client must
//! keep being served; at the end no panic was logged, every fuzzing session has closed its shard
//! connections, and no shard holds a prepared transaction.
//!
//! `cargo test` sends a few thousand messages; `SHARDGATE_FUZZ_MESSAGES=100000 cargo test --release
//! --test fuzz_live -- --nocapture` is the long run whose figures docs/security.md reports.

mod common;

use common::raw::{startup_packet, Raw};
use common::TestCluster;
use shardgate::fuzz::{message, mutate, Rng};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

static PANICS: AtomicUsize = AtomicUsize::new(0);

const TABLES: &str = r#"
[tables.accounts]
shard_key = "id"
key_type = "bigint"
"#;

/// One fuzzing connection: logs in, sends `count` messages (mostly generated, some mutated, some
/// raw garbage, written in random pieces), then reads whatever comes for a moment and leaves.
async fn one_connection(port: u16, rng: &mut Rng, count: usize) {
    let mut raw = Raw::connect(port).await;
    raw.send(&startup_packet(
        196608,
        &[("user", "trustuser"), ("database", "postgres")],
    ))
    .await;
    raw.until_ready().await;
    let mut out = Vec::new();
    for _ in 0..count {
        let frame = message(rng);
        match rng.below(10) {
            0..=5 => out.extend_from_slice(&frame.bytes),
            6..=8 => {
                let mut body = frame.bytes[5..].to_vec();
                mutate(rng, &mut body);
                out.push(frame.tag);
                out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
                out.extend_from_slice(&body);
            }
            _ => {
                // Raw bytes: a bad header, a lying length, or noise.
                let mut junk = frame.bytes.to_vec();
                mutate(rng, &mut junk);
                out.extend_from_slice(&junk);
            }
        }
    }
    out.extend_from_slice(b"S\0\0\0\x04");
    let mut at = 0;
    while at < out.len() {
        let n = (1 + rng.below(512)).min(out.len() - at);
        if raw.stream.write_all(&out[at..at + n]).await.is_err() {
            return; // The proxy ended the session: a malformed message.
        }
        at += n;
    }
    let mut buf = [0u8; 8192];
    let until = Instant::now() + Duration::from_millis(300);
    while let Ok(Ok(n)) = tokio::time::timeout_at(until.into(), raw.stream.read(&mut buf)).await {
        if n == 0 {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_mutated_messages_never_take_the_proxy_down() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));
    let total: usize = std::env::var("SHARDGATE_FUZZ_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000);
    let seed = std::env::var("SHARDGATE_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("live fuzz: {total} messages, seed {seed} (replay with SHARDGATE_FUZZ_SEED={seed})");
    let tc = TestCluster::start_unlike(3, "startup_timeout_secs = 5", TABLES).await;
    let c = tc.client().await;
    c.batch_execute("create table accounts (id bigint primary key, owner text)")
        .await
        .unwrap();
    for id in 1..=30i64 {
        c.execute("insert into accounts (id, owner) values ($1, 'o')", &[&id])
            .await
            .unwrap();
    }
    drop(c);
    let baseline = tc.session_backends().await;

    let sent = Arc::new(AtomicUsize::new(0));
    let workers = 4;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (port, sent) = (tc.port, sent.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(seed.wrapping_add(w as u64 * 0x9e37_79b9));
            while sent.load(Ordering::Relaxed) < total {
                let count = 1 + rng.below(40);
                one_connection(port, &mut rng, count).await;
                sent.fetch_add(count, Ordering::Relaxed);
            }
        }));
    }
    // A client nobody fuzzes is served all along.
    let mut canary_queries = 0;
    while tasks.iter().any(|t| !t.is_finished()) {
        let canary = tokio::time::timeout(Duration::from_secs(15), async {
            let c = tc.client().await;
            c.query_one("select count(*) from accounts", &[])
                .await
                .map(|r| r.get::<_, i64>(0))
        })
        .await
        .expect("the canary client is answered while the fuzzing runs");
        assert_eq!(canary.expect("the canary's query succeeds"), 30);
        canary_queries += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for t in tasks {
        t.await.expect("a fuzzing worker panicked");
    }
    eprintln!(
        "live fuzz: {} messages sent, {canary_queries} canary queries answered",
        sent.load(Ordering::Relaxed)
    );

    // Every fuzzing session ends and lets go of its shard connections: none is checked out of
    // the pools, and the shards serve no more connections than the pools hold idle.
    let out = tc.checked_out_settled(Duration::from_secs(30)).await;
    let now = tc.session_backends().await;
    let pooled: i64 = 3 * 20;
    if out != 0 || now > baseline.max(pooled) {
        let mut stuck = Vec::new();
        for i in 0..tc.shards.len() {
            for r in tc
                .direct(i)
                .await
                .query(
                    "select state, coalesce(wait_event, ''), query from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid() and application_name <> 'shardgate-control'",
                    &[],
                )
                .await
                .unwrap()
            {
                let (state, wait, query): (String, String, String) = (r.get(0), r.get(1), r.get(2));
                stuck.push(format!("shard {i}: {state} / {wait}: {query:?}"));
            }
        }
        panic!(
            "a fuzzing session is stuck holding shard connections ({now} vs {baseline}):\n{}",
            stuck.join("\n")
        );
    }
    assert_eq!(
        tc.count_on_each_shard("select count(*) from pg_prepared_xacts")
            .await,
        [0, 0, 0],
        "a shard holds a prepared transaction"
    );
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "the proxy panicked");
}
