//! The bank test without crashes: concurrent clients move money between accounts on three
//! shards (mostly across shards) for a bounded time; afterwards the total is unchanged, every
//! transfer is on every side or none, and no prepared transaction is left.

mod common;

use common::{bank, TestCluster};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_keep_the_books_balanced() {
    let tc = TestCluster::start_configured(3, "", bank::TABLES).await;
    bank::create(&tc.client().await).await;
    let seed = std::env::var("SHARDGATE_BANK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let transfers = bank::run(
        &tc.url("app", "secret"),
        &tc.config.placement().unwrap(),
        6,
        Duration::from_secs(4),
        Arc::new(AtomicBool::new(false)),
        seed,
        1,
    )
    .await;
    let mut shards = Vec::new();
    for s in 0..3 {
        shards.push(tc.direct(s).await);
    }
    let committed = bank::check(&shards, &transfers).await;
    eprintln!("{} transfers, {committed} committed", transfers.len());
    assert!(
        committed * 2 > transfers.len(),
        "most transfers commit when nothing crashes: {committed} of {}",
        transfers.len()
    );
    let unknown = transfers
        .iter()
        .filter(|t| t.told == bank::Told::Unknown)
        .count();
    assert_eq!(unknown, 0, "without crashes every outcome is known");
}
