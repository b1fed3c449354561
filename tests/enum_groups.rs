//! Enum columns grouped and sorted across shards, as ORMs that map an enum to a PostgreSQL
//! ENUM type (SQLAlchemy's `Enum` does by default) group and order by them. The enum has
//! another OID on each unlike shard; its labels are what the shards write. Equality merges and
//! ORDER BY are answered as one PostgreSQL answers them (ORDER BY in the labels' declared
//! order, which is not their alphabetical one), and so are min/max, also inside items and
//! HAVING conditions computed after the merge; items and conditions computed from a grouped
//! enum, and shards that declare the enum differently, are refused.

mod common;

use common::{answer, code, db_error, TestCluster};

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
    let one = tc.one_server("one_enum", &[SCHEMA]).await;
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
        // An enum's min and max read by an item computed after the merge, bound in the type.
        "select max(state)::text, min(state)::text || '!' as low from orders",
        "select coalesce(min(state), 'paid') as m from orders where id > 1000",
        "select note, max(state)::text as top from orders group by note",
        // HAVING evaluated after the merge reads the enum in its type, by its declared order.
        "select note, max(state) from orders group by note having max(state) > 'new'",
        "select note, count(*) from orders group by note having min(state) < 'paid'",
    ] {
        let (mut got, mut want) = (answer(&c, sql).await, answer(&one, sql).await);
        got.sort();
        want.sort();
        assert_eq!(got, want, "{sql}");
    }
    // Evaluated on the first shard the read reaches: here one that numbers the enum its own way.
    let on = |s: usize| tc.keys_on(s, 1..31, 3);
    let ids: Vec<String> = [on(1), on(2)].concat().iter().map(i64::to_string).collect();
    let sql = format!(
        "select max(state)::text as top, min(state)::text as low from orders where id in ({})",
        ids.join(", ")
    );
    assert_eq!(answer(&c, &sql).await, answer(&one, &sql).await, "{sql}");
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
    // What the merge does not combine by the enum's order is refused, never guessed.
    for sql in [
        "select state, count(*) from orders group by state having state = 'paid'",
        "select state::text, count(*) from orders group by state",
    ] {
        let e = c.simple_query(sql).await.unwrap_err();
        assert_eq!(code(&e), "0A000", "{sql}: {e}");
    }
    tc.drop_one_server(one, "one_enum").await;
}

/// Declared out of alphabetical order, then given a label in the middle through the proxy (in
/// statements of their own: a label added in a transaction cannot be used in it).
const MOOD: [&str; 2] = [
    "create type mood as enum ('sad', 'ok', 'happy')",
    "alter type mood add value 'meh' before 'ok'",
];

const MOODS: &str = "create table orders (id bigint primary key, m mood, n int);
    insert into orders select g, (array['happy', 'sad', 'meh', 'ok'])[g % 4 + 1]::mood, g % 5 \
        from generate_series(1, 40) g;
    insert into orders values (41, null, 1), (42, null, 2)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enum_columns_sort_across_shards_in_their_declared_order() {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let c = tc.client().await;
    for sql in MOOD {
        c.batch_execute(sql).await.unwrap();
    }
    c.batch_execute(MOODS).await.unwrap();
    let one = tc.one_server("one_mood", &[MOOD[0], MOOD[1], MOODS]).await;
    for sql in [
        "select id, m from orders order by m, id",
        "select id, m from orders order by m desc nulls last, id desc limit 9",
        "select id, m from orders order by m nulls first, id limit 5 offset 1",
        "select m, count(*) from orders group by m order by m",
        "select m, n, count(*) from orders group by m, n order by m desc, n",
        "select distinct m from orders order by m desc",
        "select distinct on (m) m, id from orders order by m, id desc",
        "select m from orders union select 'ok' order by m",
        "select min(m), max(m), count(m) from orders",
        "select n, min(m), max(m) from orders group by n order by max(m) desc, n",
        "select n, max(m) from orders where m <> 'happy' group by n order by n",
    ] {
        assert_eq!(answer(&c, sql).await, answer(&one, sql).await, "{sql}");
    }
    // Bound and in binary, as drivers send and read them: the ids come in the enum's order.
    let ids = |rows: Vec<tokio_postgres::Row>| {
        rows.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>()
    };
    let sql = "select id, m from orders where n <> $1 order by m desc, id limit 12";
    assert_eq!(
        ids(c.query(sql, &[&3i32]).await.unwrap()),
        ids(one.query(sql, &[&3i32]).await.unwrap())
    );

    // A shard that declares the enum otherwise sorts its rows otherwise: refused.
    tc.direct(1)
        .await
        .batch_execute("alter type mood add value 'glad' before 'sad'")
        .await
        .unwrap();
    // Another statement's DDL through the proxy makes it read the catalog again at once.
    c.batch_execute("create table other_thing (x int)")
        .await
        .unwrap();
    let e = c
        .simple_query("select id, m from orders order by m, id")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000", "{e}");
    assert!(db_error(&e).message().contains("enum"), "{e:?}");
    let e = c
        .simple_query("select m, count(*) from orders group by m order by m")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000", "{e}");
    c.batch_execute("drop table other_thing; drop table orders; drop type mood")
        .await
        .unwrap();
    tc.drop_one_server(one, "one_mood").await;
}
