//! UPDATE ... FROM and DELETE ... USING of a sharded table joined to a co-located sharded
//! table by the key, on three unlike shards beside one PostgreSQL holding the same rows: each
//! shard joins its own rows, as SQLAlchemy's multi-table UPDATE and hand-written cleanup
//! statements expect; the rows returned and the tables after each write are the one server's.
//! Joined by another column, the write is refused and changes nothing.

mod common;

use common::beside::Beside;
use common::{code, rows};

const TABLES: &str = r#"
[tables.accounts]
shard_key = "id"
key_type = "bigint"
[tables.orders]
shard_key = "account_id"
key_type = "bigint"
[tables.regions]
reference = true
"#;

const SCHEMA: &str = "
create table regions (id int primary key, label text);
insert into regions values (1, 'north'), (2, 'south'), (3, 'east');
create table accounts (id bigint primary key, region int, balance numeric);
insert into accounts select i, 1 + i % 3, i * 10 from generate_series(1, 30) i;
create table orders (account_id bigint, order_no int, amount numeric, primary key (account_id, order_no));
insert into orders select 1 + i % 30, i, i * 2 from generate_series(1, 90) i;
";

/// The rows `sql` returns through the proxy and on the one server, sorted, must be alike,
/// and so must both tables afterwards.
async fn same_write(b: &Beside, sql: &str) {
    let sorted = |mut r: Vec<Vec<Option<String>>>| {
        r.sort();
        r
    };
    let want = sorted(rows(&b.one.simple_query(sql).await.unwrap()));
    let got =
        b.c.simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}: {:?}", e.as_db_error()));
    assert_eq!(sorted(rows(&got)), want, "{sql}");
    same_tables(b, sql).await;
}

async fn same_tables(b: &Beside, after: &str) {
    for read in [
        "select * from accounts order by id",
        "select * from orders order by account_id, order_no",
    ] {
        let want = rows(&b.one.simple_query(read).await.unwrap());
        let got = rows(&b.c.simple_query(read).await.unwrap());
        assert_eq!(got, want, "{read} after {after}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_joined_to_a_colocated_table_by_the_key_run_where_the_rows_are() {
    let b = Beside::start("one_joined_writes", TABLES, SCHEMA).await;
    for sql in [
        "update orders o set amount = o.amount + a.balance from accounts a where a.id = o.account_id and a.region = 2 returning o.account_id, o.order_no, o.amount",
        "update orders set amount = 0 from accounts where accounts.id = orders.account_id and accounts.balance > 250",
        // A reference table joined in FROM beside the co-located one.
        "update orders o set amount = o.amount * 2 from accounts a join regions r on r.id = a.region where o.account_id = a.id and r.label = 'east' returning o.account_id, r.label",
        // The written table's key given: one shard.
        "update accounts a set balance = a.balance - o.amount from orders o where o.account_id = a.id and o.order_no = 7 and a.id = 8 returning a.id, a.balance",
        "delete from orders o using accounts a where o.account_id = a.id and a.balance < 60 returning o.account_id, o.order_no",
        "delete from accounts a using orders o, regions r where a.id = o.account_id and r.id = a.region and r.label = 'north' and o.amount > 150",
    ] {
        same_write(&b, sql).await;
    }

    // Bound, in a transaction block, then rolled back.
    let bound = "update orders o set amount = o.amount + $1::int from accounts a where a.id = o.account_id and a.region = $2";
    b.c.batch_execute("begin").await.unwrap();
    b.one.batch_execute("begin").await.unwrap();
    let got = b.c.execute(bound, &[&5i32, &2i32]).await.unwrap();
    let want = b.one.execute(bound, &[&5i32, &2i32]).await.unwrap();
    assert!(want > 0, "{bound}: the one server updates rows");
    assert_eq!(got, want, "{bound}");
    same_tables(&b, bound).await;
    b.c.batch_execute("rollback").await.unwrap();
    b.one.batch_execute("rollback").await.unwrap();
    same_tables(&b, "a rolled back write").await;

    // Joined by other columns, a shard would miss the rows of the others.
    for sql in [
        "update accounts a set balance = 0 from orders o where o.order_no = a.id",
        "delete from orders o using accounts a where a.region = o.order_no",
        "update orders o set amount = 1 from accounts a where a.id = o.account_id or a.region = 1",
        "update orders o set amount = 1 from (select id from accounts) a where a.id = o.account_id",
    ] {
        match b.c.simple_query(sql).await {
            Ok(m) => panic!("{sql}: answered {:?} instead of a refusal", rows(&m)),
            Err(e) => assert_eq!(code(&e), "0A000", "{sql}: {e}"),
        }
        same_tables(&b, sql).await;
    }
    b.stop().await;
}
