//! The slot table is cluster state: a shard added to the config owns nothing until slots move
//! to it, so rows stay where they are found; a config that disagrees with the recorded table is
//! refused; the CLI plans the moves that balance onto the added shard.

mod common;

use shardgate::config::Config;
use shardgate::placement::{KeyType, KeyValue, Placement, SlotTable, SLOT_COUNT};
use shardgate::server::Proxy;

const ACCOUNTS: &str = "\n[tables.accounts]\nshard_key = \"id\"\nkey_type = \"bigint\"\n\
                        [tables.countries]\nreference = true\n";

fn config(port: u16, shards: &[shardgate::localpg::LocalCluster], tail: &str) -> Config {
    Config::from_toml(&format!(
        "{}{ACCOUNTS}{tail}",
        common::config_for(port, shards, "")
    ))
    .unwrap()
}

async fn rows_on(shard: &shardgate::localpg::LocalCluster) -> i64 {
    let c = common::connect(&shard.url("postgres")).await.unwrap();
    c.query_one("select count(*) from accounts", &[])
        .await
        .unwrap()
        .get(0)
}

/// `n` unlike shards, each with the tables the configs declare (empty).
async fn shards_with_tables(n: usize) -> common::ShardsGuard {
    let (shards, dir) = tokio::task::spawn_blocking(move || common::start_unlike_shards(n))
        .await
        .unwrap();
    let guard = common::ShardsGuard { shards, dir };
    for s in &guard.shards {
        let c = common::connect(&s.url("postgres")).await.unwrap();
        c.batch_execute(
            "create table accounts (id bigint primary key, balance int); \
             create table countries (code text primary key)",
        )
        .await
        .unwrap();
    }
    guard
}

/// The rows of `accounts` in `slots`, copied from one shard to another and deleted from the
/// first, with the slot expression of docs/routing.md (the offline procedure's step).
async fn move_rows_by_hand(
    from: &shardgate::localpg::LocalCluster,
    to: &shardgate::localpg::LocalCluster,
    slots: &[u32],
) {
    let list: Vec<String> = slots.iter().map(u32::to_string).collect();
    let filter = format!(
        "{} = any('{{{}}}'::int[])",
        KeyType::Integer.slot_sql("id", SLOT_COUNT),
        list.join(",")
    );
    let from = common::connect(&from.url("postgres")).await.unwrap();
    let to = common::connect(&to.url("postgres")).await.unwrap();
    let select = format!("select id, balance from accounts where {filter}");
    for r in from.query(&select, &[]).await.unwrap() {
        let (id, balance): (i64, i32) = (r.get(0), r.get(1));
        to.execute("insert into accounts values ($1, $2)", &[&id, &balance])
            .await
            .unwrap();
    }
    from.execute(&format!("delete from accounts where {filter}"), &[])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_added_to_the_config_owns_nothing_until_slots_move() {
    let guard = shards_with_tables(4).await;
    let shards = &guard.shards;

    // Three shards: the first start records their derived table.
    let three = config(shardgate::localpg::free_port().unwrap(), &shards[..3], "");
    let proxy = Proxy::start(&three).await.expect("proxy on three shards");
    let url = format!(
        "postgres://app:secret@127.0.0.1:{}/postgres",
        proxy.local_addr.port()
    );
    let c = common::connect(&url).await.unwrap();
    c.batch_execute(
        "insert into accounts select g, 100 from generate_series(1, 400) g; \
         insert into countries values ('fr'), ('de'), ('jp')",
    )
    .await
    .unwrap();
    drop(c);
    proxy.shutdown().await;

    // A fourth shard in the file: the derived table would move about a quarter of the slots to
    // it, where no row is. The recorded one keeps every key where its row is.
    let names4: Vec<String> = (0..4).map(|i| format!("s{i}")).collect();
    let derived4 = SlotTable::derive(&names4);
    let moved_by_derivation = (1..=400i64)
        .filter(|k| {
            derived4.shard_of_slot(Placement::slot_of(
                &KeyValue::from_text(KeyType::Integer, &k.to_string()).unwrap(),
            )) == 3
        })
        .count();
    assert!(
        moved_by_derivation > 50,
        "the test needs keys the derivation would send to the new shard"
    );
    let four = config(shardgate::localpg::free_port().unwrap(), shards, "");
    let proxy = Proxy::start(&four).await.expect("proxy on four shards");
    let url = format!(
        "postgres://app:secret@127.0.0.1:{}/postgres",
        proxy.local_addr.port()
    );
    let c = common::connect(&url).await.unwrap();
    let found: i64 = c
        .query_one("select count(*) from accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(found, 400);
    for k in 1..=400i64 {
        let row = c
            .query_opt("select balance from accounts where id = $1", &[&k])
            .await
            .unwrap();
        assert!(row.is_some(), "key {k} not found after adding a shard");
    }
    c.batch_execute("insert into accounts select g, 1 from generate_series(401, 600) g")
        .await
        .unwrap();
    assert_eq!(rows_on(&shards[3]).await, 0, "the added shard owns no slot");
    drop(c);
    proxy.shutdown().await;

    // The plan gives the new shard a quarter, from the three that own slots.
    let plan =
        shardgate::slot_commands::plan_text(&four, shardgate::slot_commands::Goal::Add("s3"))
            .await
            .unwrap();
    assert!(plan.contains("placement, version 1"), "{plan}");
    let moved: u32 = plan
        .lines()
        .filter_map(|l| l.strip_prefix("move "))
        .map(|l| l.split(' ').next().unwrap().parse::<u32>().unwrap())
        .sum();
    assert_eq!(moved, SLOT_COUNT / 4, "{plan}");
    assert_eq!(plan.lines().filter(|l| l.starts_with("move ")).count(), 3);

    // A pinned table that is not the recorded one is refused, as is leaving out a shard that
    // owns slots.
    let pinned = derived4.to_config(&names4);
    let refused = Proxy::start(&config(
        shardgate::localpg::free_port().unwrap(),
        shards,
        &pinned,
    ))
    .await
    .err()
    .expect("a pinned table the cluster does not record is refused")
    .to_string();
    assert!(refused.contains("pins [placement.slots]"), "{refused}");
    let refused = Proxy::start(&config(
        shardgate::localpg::free_port().unwrap(),
        &shards[..2],
        "",
    ))
    .await
    .err()
    .expect("a shard that owns slots cannot be left out")
    .to_string();
    assert!(refused.contains("\"s2\""), "{refused}");

    // The offline procedure of docs/resharding.md: with no proxy running, move each planned
    // range's rows from its source to s3 with the slot expression, pin the planned table and
    // record it.
    for line in plan.lines().filter(|l| l.starts_with("move ")) {
        // move N slots from sX to s3: a-b,c
        let words: Vec<&str> = line.split_whitespace().collect();
        let source: usize = words[4].trim_start_matches('s').parse().unwrap();
        let slots: Vec<u32> = words[7]
            .split(',')
            .flat_map(|r| {
                let (a, b) = r.split_once('-').unwrap_or((r, r));
                a.parse::<u32>().unwrap()..=b.parse::<u32>().unwrap()
            })
            .collect();
        move_rows_by_hand(&shards[source], &shards[3], &slots).await;
    }
    let planned = &plan[plan.find("[placement.slots]").unwrap()..];
    let moved_by_hand = config(shardgate::localpg::free_port().unwrap(), shards, planned);
    // s3 gains slots: it must hold the reference table's rows first.
    let refused = shardgate::slot_commands::record(&moved_by_hand)
        .await
        .expect_err("s3 lacks the reference rows");
    assert!(
        refused.contains("reference table countries has 0 rows on s3 and 3 on s0"),
        "{refused}"
    );
    let s3 = common::connect(&shards[3].url("postgres")).await.unwrap();
    s3.batch_execute("insert into countries values ('fr'), ('de'), ('jp')")
        .await
        .unwrap();
    assert_eq!(
        shardgate::slot_commands::record(&moved_by_hand)
            .await
            .unwrap(),
        2
    );
    // A proxy without a pin follows the recorded version: every key is found, and the keys of
    // the moved slots on s3.
    let proxy = Proxy::start(&four).await.expect("proxy after the move");
    let url = format!(
        "postgres://app:secret@127.0.0.1:{}/postgres",
        proxy.local_addr.port()
    );
    let c = common::connect(&url).await.unwrap();
    for k in 1..=600i64 {
        let row = c
            .query_opt("select balance from accounts where id = $1", &[&k])
            .await
            .unwrap();
        assert!(row.is_some(), "key {k} not found after the move");
    }
    let total: i64 = c
        .query_one("select count(*) from accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 600, "no row lost or counted twice");
    let on_new = rows_on(&shards[3]).await;
    assert!(
        (100..=200).contains(&on_new),
        "about a quarter of 600 rows on s3, found {on_new}"
    );
    let shown = c
        .simple_query("show shardgate.route accounts 7")
        .await
        .unwrap();
    let placement = common::rows(&c.simple_query("show shardgate.placement").await.unwrap());
    assert_eq!(placement.len(), 4, "{placement:?}");
    assert!(
        placement.iter().all(|r| r[0].as_deref() == Some("2")),
        "{placement:?}"
    );
    assert_eq!(placement[3][1].as_deref(), Some("s3"));
    assert_eq!(placement[3][2].as_deref(), Some("256"), "{placement:?}");
    drop(c);
    proxy.shutdown().await;
    // What the proxy routes by is the plan's table.
    let table = shardgate::slot_commands::cluster_placement(&four)
        .await
        .unwrap()
        .0
        .slots;
    let expected = table.shard_of_slot(Placement::slot_of(
        &KeyValue::from_text(KeyType::Integer, "7").unwrap(),
    ));
    assert_eq!(
        common::rows(&shown)[0][3].as_deref(),
        Some(format!("s{expected}").as_str())
    );
    // Draining s3 again would give its 256 slots back out among the three.
    let drain =
        shardgate::slot_commands::plan_text(&four, shardgate::slot_commands::Goal::Drain("s3"))
            .await
            .unwrap();
    let back: u32 = drain
        .lines()
        .filter_map(|l| l.strip_prefix("move "))
        .map(|l| l.split(' ').next().unwrap().parse::<u32>().unwrap())
        .sum();
    assert_eq!(back, SLOT_COUNT / 4, "{drain}");
    assert!(drain
        .lines()
        .filter(|l| l.starts_with("move "))
        .all(|l| l.contains("from s3 to")));
    // Every row sits on the shard that owns its slot now.
    for (i, shard) in shards.iter().enumerate() {
        let c = common::connect(&shard.url("postgres")).await.unwrap();
        for r in c.query("select id from accounts", &[]).await.unwrap() {
            let id: i64 = r.get(0);
            let owner = table.shard_of_slot(Placement::slot_of(
                &KeyValue::from_text(KeyType::Integer, &id.to_string()).unwrap(),
            ));
            assert_eq!(owner, i, "key {id} on s{i}, owned by s{owner}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_has_not_seen_a_new_placement_cannot_write_by_the_old_one() {
    let guard = shards_with_tables(2).await;
    let shards = &guard.shards;
    let start = |tail: &'static str| {
        let config = config(shardgate::localpg::free_port().unwrap(), shards, tail);
        async move {
            let proxy = Proxy::start(&config).await.expect("proxy starts");
            let url = format!(
                "postgres://app:secret@127.0.0.1:{}/postgres",
                proxy.local_addr.port()
            );
            (proxy, common::connect(&url).await.unwrap(), config)
        }
    };
    // A never looks again within the test; B looks five times a second.
    let (proxy_a, a, stale_config) = start("\n[placement]\nrefresh_interval_secs = 3600\n").await;
    let (proxy_b, b, _) = start("\n[placement]\nrefresh_interval_secs = 0.2\n").await;
    a.batch_execute("insert into accounts select g, 100 from generate_series(1, 200) g")
        .await
        .unwrap();

    // Rows moved by hand while both proxies run: fifty of s0's slots go to s1.
    let old = shardgate::slot_commands::cluster_placement(&stale_config)
        .await
        .unwrap()
        .0
        .slots;
    let moving: Vec<u32> = (0..SLOT_COUNT)
        .filter(|&s| old.shard_of_slot(s) == 0)
        .take(50)
        .collect();
    let slot_of = |k: i64| {
        Placement::slot_of(&KeyValue::from_text(KeyType::Integer, &k.to_string()).unwrap())
    };
    let moved_key = (1..=200i64)
        .find(|&k| moving.contains(&slot_of(k)))
        .expect("a key in the moving slots");
    let kept_key = (1..=200i64)
        .find(|&k| old.shard_of_slot(slot_of(k)) == 0 && !moving.contains(&slot_of(k)))
        .expect("a key that stays on s0");
    move_rows_by_hand(&shards[0], &shards[1], &moving).await;
    let s1 = common::connect(&shards[1].url("postgres")).await.unwrap();
    let s0 = common::connect(&shards[0].url("postgres")).await.unwrap();
    let ranges: Vec<(u32, u32)> = moving.iter().map(|&s| (s, s)).collect();
    let new = old.moved(&ranges, 1);
    let names: Vec<String> = vec!["s0".into(), "s1".into()];
    let pinned = config(
        shardgate::localpg::free_port().unwrap(),
        shards,
        &new.to_config(&names),
    );
    assert_eq!(shardgate::slot_commands::record(&pinned).await.unwrap(), 2);

    // A still routes by version 1: each of its writes is refused, whether the key moved or
    // not, and even where no row matches; nothing is written.
    for sql in [
        format!("update accounts set balance = balance + 1 where id = {moved_key}"),
        format!("update accounts set balance = balance + 1 where id = {kept_key}"),
        format!("insert into accounts values ({}, 1)", 100_000 + moved_key),
        // The tag is the connection's startup value: a client's RESET ALL (DISCARD ALL resets
        // the same way), in the same transaction as the write, does not remove it.
        format!("begin; reset all; update accounts set balance = 0 where id = {kept_key}; commit"),
    ] {
        let e = a.batch_execute(&sql).await.expect_err(&sql);
        a.batch_execute("rollback").await.ok();
        assert_eq!(common::code(&e), "40001", "{sql}: {e}");
        assert!(
            common::db_error(&e)
                .message()
                .starts_with("placement changed"),
            "{sql}: {e}"
        );
    }
    // Nor can a client set it: shardgate.* settings are the proxy's own.
    let e = a
        .batch_execute("set shardgate.placement_version = 2")
        .await
        .expect_err("a client cannot claim a newer placement");
    assert_ne!(common::code(&e), "40001", "{e}");
    a.batch_execute("rollback").await.ok();
    let e = a
        .batch_execute(&format!(
            "update accounts set balance = 0 where id = {kept_key}"
        ))
        .await
        .expect_err("still fenced");
    assert_eq!(common::code(&e), "40001", "{e}");
    let on_s1: i32 = s1
        .query_one("select balance from accounts where id = $1", &[&moved_key])
        .await
        .unwrap()
        .get(0);
    assert_eq!(on_s1, 100, "the refused write changed nothing");
    // Sessions without the proxy's tag are not fenced.
    s0.execute(
        "update accounts set balance = balance where id = $1",
        &[&kept_key],
    )
    .await
    .unwrap();

    // B takes up version 2 by itself and writes where the rows are now; the registry shows
    // which running proxy routes by which version.
    let version_of = |proxies: &[shardgate::backend::proxy_registry::Registered],
                      addr: std::net::SocketAddr| {
        proxies
            .iter()
            .find(|p| p.listen == addr.to_string())
            .map(|p| p.version)
    };
    let mut proxies = Vec::new();
    for attempt in 0.. {
        assert!(
            attempt < 300,
            "proxy B never took up version 2: {proxies:?}"
        );
        // A never takes it up, so no wait: look until B has.
        proxies =
            shardgate::slot_commands::wait_for_proxies(&stale_config, 2, std::time::Duration::ZERO)
                .await
                .unwrap();
        if version_of(&proxies, proxy_b.local_addr) == Some(2) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(proxies.len(), 2, "{proxies:?}");
    assert_eq!(
        version_of(&proxies, proxy_a.local_addr),
        Some(1),
        "{proxies:?}"
    );
    let text = shardgate::slot_commands::proxies_text(&proxies, 2);
    assert!(text.contains("still on version 1"), "{text}");
    let shown = b
        .simple_query(&format!("show shardgate.route accounts {moved_key}"))
        .await
        .unwrap();
    assert_eq!(common::rows(&shown)[0][3].as_deref(), Some("s1"));
    let updated = b
        .execute(
            "update accounts set balance = balance + 1 where id = $1",
            &[&moved_key],
        )
        .await
        .unwrap();
    assert_eq!(updated, 1);
    let on_s1: i32 = s1
        .query_one("select balance from accounts where id = $1", &[&moved_key])
        .await
        .unwrap()
        .get(0);
    assert_eq!(on_s1, 101);
    assert_eq!(
        b.execute(
            "update accounts set balance = balance + 1 where id = $1",
            &[&kept_key]
        )
        .await
        .unwrap(),
        1
    );
    drop((a, b));
    proxy_a.shutdown().await;
    proxy_b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_starting_together_record_one_placement() {
    let (shards, dir) = tokio::task::spawn_blocking(|| common::start_unlike_shards(2))
        .await
        .unwrap();
    let guard = common::ShardsGuard { shards, dir };
    let shards = &guard.shards;
    // Two configs that pin different tables, started at once on a cluster with no record yet:
    // one records its table, and the other, seeing that record, is refused.
    let first = config(
        shardgate::localpg::free_port().unwrap(),
        shards,
        "\n[placement.slots]\ns0 = \"0-511\"\ns1 = \"512-1023\"\n",
    );
    let second = config(
        shardgate::localpg::free_port().unwrap(),
        shards,
        "\n[placement.slots]\ns0 = \"0-99\"\ns1 = \"100-1023\"\n",
    );
    let (a, b) = tokio::join!(Proxy::start(&first), Proxy::start(&second));
    let (started, refused) = match (a, b) {
        (Ok(p), Err(e)) | (Err(e), Ok(p)) => (p, e.to_string()),
        (Ok(_), Ok(_)) => panic!("both pinned tables were accepted"),
        (Err(a), Err(b)) => panic!("neither started: {a}; {b}"),
    };
    assert!(refused.contains("pins [placement.slots]"), "{refused}");
    for s in shards {
        let c = common::connect(&s.url("postgres")).await.unwrap();
        let versions: i64 = c
            .query_one("select count(*) from shardgate.placement", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(versions, 1, "one version 1 on every shard");
    }

    started.shutdown().await;

    // A version that gives slots to a shard the config lacks is refused at start.
    for s in shards {
        let c = common::connect(&s.url("postgres")).await.unwrap();
        c.execute(
            "insert into shardgate.placement (version, slots) values (2, 's0=0-511;s9=512-1023')",
            &[],
        )
        .await
        .unwrap();
    }
    let refused = Proxy::start(&config(
        shardgate::localpg::free_port().unwrap(),
        shards,
        "",
    ))
    .await
    .err()
    .expect("a proxy cannot start by a version naming a shard it lacks")
    .to_string();
    assert!(refused.contains("\"s9\""), "{refused}");
}
