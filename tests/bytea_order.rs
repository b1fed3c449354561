//! `bytea` columns sorted across shards as one PostgreSQL sorts them, by their bytes (a
//! prefix before what extends it): in the hex and escape output forms and in binary, under
//! ORDER BY, DISTINCT and GROUP BY, on three unlike shards beside one PostgreSQL holding the
//! same rows.

mod common;

use common::beside::Beside;

const TABLES: &str = "[tables.blobs]\nshard_key = \"id\"\nkey_type = \"bigint\"\n";

/// Bytes across the whole range (0x00, 0x7f, 0x80, 0xff), prefixes of one another, the
/// empty value, a backslash and NULL.
const SCHEMA: &str = "
create table blobs (id bigint primary key, b bytea);
insert into blobs select i, case when i % 11 = 0 then null
    else decode(lpad(to_hex(i * 37 % 256), 2, '0') || repeat(lpad(to_hex(i % 3 * 127), 2, '0'), i % 4), 'hex') end
  from generate_series(1, 60) i;
insert into blobs values (61, ''), (62, '\\x5c'), (63, '\\x5c5c00'), (64, '\\xff'), (65, '\\xffff');
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytea_sorts_by_its_bytes_across_shards() {
    let b = Beside::start("one_bytea_order", TABLES, SCHEMA).await;
    let reads = [
        "select b, id from blobs order by b, id",
        "select id, b from blobs order by b desc nulls last, id limit 12",
        "select distinct b from blobs order by 1 nulls first",
        "select b, count(*) from blobs group by b order by b desc",
    ];
    for sql in reads {
        b.same(sql).await;
    }
    for c in [&b.c, &b.one] {
        c.batch_execute("set bytea_output = escape").await.unwrap();
    }
    for sql in reads {
        b.same(sql).await;
    }
    // Binary results (tokio-postgres asks for them).
    let sql = "select b from blobs where b is not null order by b desc, id";
    let values = |rows: Vec<tokio_postgres::Row>| -> Vec<Vec<u8>> {
        rows.iter().map(|r| r.get(0)).collect()
    };
    let want = values(b.one.query(sql, &[]).await.unwrap());
    assert!(want.len() > 50);
    assert_eq!(values(b.c.query(sql, &[]).await.unwrap()), want, "{sql}");
    b.stop().await;
}
