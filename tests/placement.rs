//! Placement is PostgreSQL's own hash partitioning: for 1000+ keys of each key type, our slot
//! equals the slot PostgreSQL computes (`KeyType::slot_sql`, the documented SQL formula) and
//! `satisfies_hash_partition` agrees, on a live server.

mod common;

use shardgate::placement::{KeyType, KeyValue, Placement, SLOT_COUNT};

async fn check(client: &tokio_postgres::Client, ty: KeyType, sql_type: &str, keys: &[String]) {
    client
        .batch_execute(&format!(
            "drop table if exists hp_{sql_type}; create table hp_{sql_type}(k {sql_type}) partition by hash (k)"
        ))
        .await
        .unwrap();
    let sql = format!(
        "select k::text, {}, satisfies_hash_partition('hp_{sql_type}'::regclass, {SLOT_COUNT}, {}, k) \
         from unnest($1::text[]) as u(t), lateral (select t::{sql_type} as k) c",
        ty.slot_sql("k", SLOT_COUNT),
        ty.slot_sql("k", SLOT_COUNT),
    );
    let rows = client.query(&sql, &[&keys]).await.unwrap();
    assert_eq!(rows.len(), keys.len());
    for row in rows {
        let key: String = row.get(0);
        let pg_slot: i32 = row.get(1);
        let satisfies: bool = row.get(2);
        let ours = Placement::slot_of(&KeyValue::from_text(ty, &key).unwrap());
        assert_eq!(ours as i32, pg_slot, "{sql_type} key {key:?}");
        assert!(
            satisfies,
            "satisfies_hash_partition disagrees for {sql_type} key {key:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_match_postgres_hash_partitioning() {
    let (shards, dir) = tokio::task::spawn_blocking(|| common::start_shards(1))
        .await
        .unwrap();
    let shards = common::ShardsGuard { shards, dir };
    let shards = &shards.shards;
    let client = common::connect(&shards[0].url("postgres")).await.unwrap();

    let mut ints: Vec<String> = (-500..500).map(|i: i64| (i * 7919).to_string()).collect();
    ints.extend(
        [
            "0",
            "-1",
            "2147483647",
            "-2147483648",
            "4294967296",
            "9223372036854775807",
            "-9223372036854775808",
        ]
        .map(String::from),
    );
    check(&client, KeyType::Integer, "int8", &ints).await;
    check(
        &client,
        KeyType::Integer,
        "int4",
        &(-500..500)
            .map(|i: i32| (i * 1_000_003).to_string())
            .collect::<Vec<_>>(),
    )
    .await;

    let mut texts: Vec<String> = (0..1000)
        .map(|i| {
            "abcdefghijklmnopqrstuvwxyz0123456789".repeat(2)[..(i % 50)].to_string()
                + &i.to_string()
        })
        .collect();
    texts.extend(["", "ä", "日本語のキー", "with space", "'quoted'"].map(String::from));
    check(&client, KeyType::Text, "text", &texts).await;

    let uuids: Vec<String> = (0..1000u64)
        .map(|i| {
            let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            format!(
                "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
                h >> 32,
                (h >> 16) & 0xffff,
                h & 0xfff,
                (h >> 20) & 0xfff,
                h & 0xffff_ffff_ffff
            )
        })
        .collect();
    check(&client, KeyType::Uuid, "uuid", &uuids).await;
}
