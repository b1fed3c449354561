//! inet, cidr, macaddr and macaddr8 columns sorted across shards as one PostgreSQL sorts them
//! (IPv4 before IPv6, the shared network part, then the shorter mask, then the address), with
//! min and max over them, in text and binary results, on three unlike shards beside one
//! PostgreSQL holding the same rows. Django's `GenericIPAddressField` is an inet column.

mod common;

use common::beside::Beside;

const TABLES: &str = "[tables.hosts]\nshard_key = \"id\"\nkey_type = \"bigint\"\n";

const SCHEMA: &str = "
create table hosts (id bigint primary key, ip inet, net cidr, mac macaddr, mac8 macaddr8);
insert into hosts select i,
    (array['0.0.0.0/0', '9.255.255.255', '10.0.0.0/8', '10.0.0.1/8', '10.0.0.0', '10.0.0.1',
           '192.168.0.0/16', '192.168.1.5/24', '::/0', '::1', '::ffff:1.2.3.4', 'fe80::1/64',
           '255.255.255.255', null])[1 + i % 14]::inet,
    (array['10.0.0.0/8', '10.1.0.0/16', '0.0.0.0/0', '2001:db8::/32', '192.168.1.0/24', null])[1 + i % 6]::cidr,
    (array['08:00:2b:01:02:03', 'ff:ff:ff:ff:ff:ff', '00:00:00:00:00:00', '08:00:2b:01:02:0f', null])[1 + i % 5]::macaddr,
    (array['08:00:2b:01:02:03:04:05', '00:00:00:00:00:00:00:01', null])[1 + i % 3]::macaddr8
  from generate_series(1, 70) i;
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_addresses_sort_as_postgresql_does() {
    let b = Beside::start("one_network_order", TABLES, SCHEMA).await;
    for sql in [
        "select ip, id from hosts order by ip, id",
        "select id, net from hosts order by net desc nulls last, ip, id limit 30",
        "select mac, mac8, id from hosts order by mac, mac8 desc, id",
        "select ip, count(*) from hosts group by ip order by ip desc",
        "select min(ip), max(ip), min(net), max(net) from hosts",
        "select net, min(ip), max(ip) from hosts group by net order by net",
    ] {
        b.same(sql).await;
    }
    // Binary results, the sort keys not selected: the proxy reads their binary forms.
    let sql = "select id from hosts order by ip desc, net, mac, mac8, id";
    let ids =
        |rows: Vec<tokio_postgres::Row>| -> Vec<i64> { rows.iter().map(|r| r.get(0)).collect() };
    let want = ids(b.one.query(sql, &[]).await.unwrap());
    assert_eq!(want.len(), 70);
    assert_eq!(ids(b.c.query(sql, &[]).await.unwrap()), want, "{sql}");
    b.stop().await;
}
