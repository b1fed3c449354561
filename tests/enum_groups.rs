//! Enum columns grouped across shards, as ORMs that map an enum to a PostgreSQL ENUM type
//! (SQLAlchemy's `Enum` does by default) group by them. The enum has another OID on each
//! unlike shard; its labels are what the shards write. Equality merges are answered as one
//! PostgreSQL answers them; what needs the enum's declared order stays refused.

mod common;

use common::{answer, code, connect, TestCluster};

const TABLES: &str = "[tables.orders]\nshard_key = \"id\"\nkey_type = \"bigint\"\n";

const SCHEMA: &str = "create type status as enum ('new', 'paid', 'shipped');
    create table orders (id bigint primary key, state status, note text);
    insert into orders select g, (array['shipped', 'new', 'paid'])[g % 3 + 1]::status, \
        case when g % 4 = 0 then null else 'n' || (g % 2) end from generate_series(1, 30) g;
    insert into orders values (31, null, 'x')";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enum_columns_group_across_shards_as_on_one_server() {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let c = tc.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    let admin = tc.direct(0).await;
    admin
        .batch_execute("create database one_enum")
        .await
        .unwrap();
    let one = connect(&tc.shards[0].url("one_enum")).await.unwrap();
    one.batch_execute(SCHEMA).await.unwrap();
    // The type's OID differs between shards, as it does between real ones.
    let oids = tc
        .count_on_each_shard("select 'status'::regtype::oid::bigint")
        .await;
    assert!(oids[0] != oids[1] && oids[1] != oids[2], "{oids:?}");

    // Without an ORDER BY the merge's row order is its own: compared as sets.
    for sql in [
        "select state, count(*) from orders group by state",
        "select distinct state from orders",
        "select count(distinct state) from orders",
        "select count(*) from (select distinct state, note from orders) s",
        "select state, note, count(*) from orders group by state, note",
        "select state from orders union select 'new'",
        "select state, count(*) as n from orders group by state order by n",
    ] {
        let (mut got, mut want) = (answer(&c, sql).await, answer(&one, sql).await);
        got.sort();
        want.sort();
        assert_eq!(got, want, "{sql}");
    }
    // Binary results, as drivers ask for them: the labels, grouped.
    let count: i64 = c
        .query_one(
            "select count(*) from (select distinct state from orders) s",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 4);
    // The enum's own order, which the merge does not know, is refused, never guessed.
    for sql in [
        "select state, count(*) from orders group by state order by state",
        "select max(state) from orders",
        "select distinct state from orders order by state",
        "select state, count(*) from orders group by state having state = 'paid'",
    ] {
        let e = c.simple_query(sql).await.unwrap_err();
        assert_eq!(code(&e), "0A000", "{sql}: {e}");
    }
    drop(one);
    admin
        .batch_execute("drop database one_enum with (force)")
        .await
        .unwrap();
}
