//! The bank workload: accounts spread over the shards, concurrent clients moving money between
//! them (mostly across shards, some within one, some split over three), every transfer also
//! writing one ledger row per account it touched, keyed by its transfer id. Each client records
//! what it was told about each transfer, and `check` holds the shards to it.

use shardgate::placement::{KeyValue, Placement};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

pub const ACCOUNTS: i64 = 60;
pub const START_BALANCE: i64 = 1000;

pub const TABLES: &str = r#"
[tables.accounts]
shard_key = "id"
key_type = "bigint"
[tables.ledger]
shard_key = "account_id"
key_type = "bigint"
"#;

/// What the client was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Told {
    Committed,
    Failed,
    /// Connection lost, 08007, or a FATAL: either outcome is allowed, but all or nothing.
    Unknown,
}

#[derive(Debug, Clone)]
pub struct Transfer {
    pub id: i64,
    /// (account, amount) legs; amounts sum to zero.
    pub legs: Vec<(i64, i64)>,
    pub told: Told,
}

/// The bank's tables and accounts. `balance` is an int so that `sum(balance)` is a bigint.
const SCHEMA: &str = "create table accounts (id bigint primary key, balance int not null); \
    create table ledger (transfer_id bigint, account_id bigint, amount bigint not null, primary key (transfer_id, account_id))";

/// The tables, and the accounts `keep` selects, through `c`.
async fn create_where(c: &Client, keep: impl Fn(i64) -> bool) {
    c.batch_execute(SCHEMA).await.unwrap();
    let values: Vec<String> = (1..=ACCOUNTS)
        .filter(|&i| keep(i))
        .map(|i| format!("({i}, {START_BALANCE})"))
        .collect();
    c.batch_execute(&format!(
        "insert into accounts (id, balance) values {}",
        values.join(", ")
    ))
    .await
    .unwrap();
}

/// The bank's tables without accounts (a shard that owns no slot yet).
pub async fn create_tables(c: &Client) {
    c.batch_execute(SCHEMA).await.unwrap();
}

/// Creates the bank through the proxy.
pub async fn create(c: &Client) {
    create_where(c, |_| true).await;
}

/// Creates the bank directly on the shards (each account on its owner), needing no proxy.
pub async fn create_direct(shards: &[Client], placement: &Placement) {
    for (s, c) in shards.iter().enumerate() {
        create_where(c, |i| placement.shard_of(&KeyValue::Integer(i)) == s).await;
    }
}

/// A small deterministic generator, so a failing run can be repeated from its seed.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The legs of transfer `n`: mostly two accounts on different shards, one in ten on the same
/// shard, one in five split over three shards.
fn plan(rng: &mut Lcg, placement: &Placement) -> Vec<(i64, i64)> {
    let shard = |id: i64| placement.shard_of(&KeyValue::Integer(id));
    let pick = |rng: &mut Lcg| rng.below(ACCOUNTS as u64) as i64 + 1;
    let amount = rng.below(50) as i64 + 1;
    let from = pick(rng);
    let kind = rng.below(10);
    let want_same = kind == 0;
    let mut to = pick(rng);
    while to == from || (shard(to) == shard(from)) != want_same {
        to = pick(rng);
    }
    if kind >= 8 {
        // A third shard, where the placement has one (a cluster of two has none).
        for _ in 0..1000 {
            let third = pick(rng);
            if shard(third) != shard(from) && shard(third) != shard(to) {
                return vec![(from, -2 * amount), (to, amount), (third, amount)];
            }
        }
    }
    vec![(from, -amount), (to, amount)]
}

fn classify(e: &tokio_postgres::Error) -> Told {
    match e.as_db_error() {
        Some(db) if db.code().code() == "08007" => Told::Unknown,
        Some(db) if db.severity() == "FATAL" || db.severity() == "PANIC" => Told::Unknown,
        Some(_) => Told::Failed,
        None => Told::Unknown,
    }
}

/// One transfer in its own transaction; updates in account order, so two transfers never wait
/// for each other in a cycle across shards (PostgreSQL cannot see such a cycle).
async fn transfer(c: &Client, id: i64, legs: &[(i64, i64)]) -> Told {
    let mut ordered = legs.to_vec();
    ordered.sort();
    let mut sql = vec!["begin".to_string()];
    for (acct, amt) in &ordered {
        sql.push(format!(
            "update accounts set balance = balance + {amt} where id = {acct}"
        ));
        sql.push(format!(
            "insert into ledger (transfer_id, account_id, amount) values ({id}, {acct}, {amt})"
        ));
    }
    for s in &sql {
        if let Err(e) = c.batch_execute(s).await {
            let told = classify(&e);
            if told == Told::Failed {
                let _ = c.batch_execute("rollback").await;
            }
            return told;
        }
    }
    match c.batch_execute("commit").await {
        Ok(()) => Told::Committed,
        Err(e) => classify(&e),
    }
}

/// Runs `clients` workers against `url` until `deadline` or until `stop` is set; a worker whose
/// connection breaks reconnects (the proxy may be restarting) until then.
pub async fn run(
    url: &str,
    placement: &Placement,
    clients: usize,
    duration: Duration,
    stop: Arc<AtomicBool>,
    seed: u64,
    run: i64,
) -> Vec<Transfer> {
    let deadline = Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..clients {
        let url = url.to_string();
        let placement = placement.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            let mut rng = Lcg(seed ^ (w as u64 + 1).wrapping_mul(0x9E3779B97F4A7C15));
            let mut done = Vec::new();
            let mut client: Option<Client> = None;
            let mut n = 0i64;
            while Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
                if client.as_ref().is_none_or(|c| c.is_closed()) {
                    match super::connect(&url).await {
                        Ok(c) => {
                            let _ = c.batch_execute("set lock_timeout = '2s'").await;
                            client = Some(c)
                        }
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    }
                }
                n += 1;
                let id = run * 100_000_000 + (w as i64 + 1) * 1_000_000 + n;
                let legs = plan(&mut rng, &placement);
                let told = transfer(client.as_ref().unwrap(), id, &legs).await;
                done.push(Transfer { id, legs, told });
            }
            done
        });
    }
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r.unwrap());
    }
    all
}

/// Sum of balances and the ledger rows per transfer, read from each shard directly.
pub async fn state(shards: &[Client]) -> (i64, HashMap<i64, Vec<(i64, i64)>>) {
    let mut total = 0i64;
    let mut ledger: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
    for d in shards {
        total += d
            .query_one(
                "select coalesce(sum(balance), 0)::bigint from accounts",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        for r in d
            .query("select transfer_id, account_id, amount from ledger", &[])
            .await
            .unwrap()
        {
            ledger
                .entry(r.get(0))
                .or_default()
                .push((r.get(1), r.get(2)));
        }
    }
    (total, ledger)
}

/// Prepared transactions left on the shards (any gid).
pub async fn prepared(shards: &[Client]) -> Vec<String> {
    let mut out = Vec::new();
    for d in shards {
        for r in d
            .query("select gid from pg_prepared_xacts", &[])
            .await
            .unwrap()
        {
            out.push(r.get(0));
        }
    }
    out
}

/// Every guarantee the bank relies on. Returns how many transfers were told committed.
pub async fn check(shards: &[Client], transfers: &[Transfer]) -> usize {
    let left = prepared(shards).await;
    assert!(left.is_empty(), "prepared transactions left: {left:?}");
    let (total, ledger) = state(shards).await;
    assert_eq!(
        total,
        ACCOUNTS * START_BALANCE,
        "money was created or destroyed"
    );
    let mut committed = 0;
    for t in transfers {
        let mut rows = ledger.get(&t.id).cloned().unwrap_or_default();
        rows.sort();
        let mut legs = t.legs.clone();
        legs.sort();
        let present = !rows.is_empty();
        if present {
            assert_eq!(
                rows, legs,
                "transfer {} is whole, once, on every side",
                t.id
            );
        }
        match t.told {
            Told::Committed => {
                committed += 1;
                assert!(present, "transfer {} was acknowledged but is missing", t.id)
            }
            Told::Failed => assert!(!present, "transfer {} failed but is present", t.id),
            Told::Unknown => {}
        }
    }
    // Nothing appeared that no client sent.
    let sent: std::collections::HashSet<i64> = transfers.iter().map(|t| t.id).collect();
    for id in ledger.keys() {
        assert!(sent.contains(id), "ledger holds unknown transfer {id}");
    }
    committed
}
