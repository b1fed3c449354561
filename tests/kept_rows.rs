//! Outer joins that keep a reference table's rows against a sharded table (`regions r LEFT
//! JOIN accounts a`, RIGHT the other way round, FULL): a reference row comes back unmatched
//! only when no shard matches it, as one PostgreSQL holding every row answers. Compared with
//! one server on three unlike shards, where each region's accounts are spread over the shards
//! and some regions have none anywhere.

mod common;

use common::beside::Beside;

const TABLES: &str = "[tables.accounts]\nshard_key = \"id\"\nkey_type = \"bigint\"\n\
                      [tables.regions]\nreference = true\n[tables.prices]\nreference = true\n";

/// Regions 0 to 7, accounts only in 0 to 4; a region twice with the same values (no key),
/// one with a quote, a backslash and a NULL in its row, and one matched by nothing.
const SCHEMA: &str = "
    create table regions (id int, label text, note text);
    insert into regions values (0, 'north', null), (1, 'south', 'it''s'), (2, 'east', E'a\\\\b'),
      (3, 'west', '(x,\"y\")'), (4, 'centre', ''), (5, 'empty', null), (5, 'empty', null),
      (6, 'far', 'none'), (7, null, null);
    create table accounts (id bigint primary key, region int, owner text, balance numeric(12,2));
    insert into accounts
      select i, i % 5, 'o' || (i % 7), i * 1.5 from generate_series(1, 60) i;
    create table prices (region int, price money);
    insert into prices values (1, 12.5), (6, 3);";

async fn start(name: &'static str) -> Beside {
    Beside::start(name, TABLES, SCHEMA).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_rows_kept_by_an_outer_join_come_back_once() {
    let b = start("kept_rows").await;
    for sql in [
        // Every region with its accounts, or none; sorted, cut, and filtered on either side.
        "select r.id, r.label, a.id from regions r left join accounts a on a.region = r.id order by r.id, a.id",
        "select r.id, a.id from regions r left join accounts a on a.region = r.id and a.balance > 80 order by r.id, a.id limit 9 offset 3",
        "select r.label, a.owner from regions r left join accounts a on a.region = r.id where r.id > 2 and (a.owner is null or a.owner = 'o3') order by 1, 2",
        // The regions no account matches (the anti-join), and the NULL-extended rows counted.
        "select r.id, r.note from regions r left join accounts a on a.region = r.id and a.owner = 'o1' where a.id is null order by r.id",
        "select r.id, count(*), count(a.id), sum(a.balance) from regions r left join accounts a on a.region = r.id and a.id < 20 group by r.id order by r.id",
        "select count(*) from regions r left join accounts a on a.region = r.id and a.id % 9 = 0",
        "select distinct r.label, a.id is null from regions r left join accounts a on a.region = r.id and a.id > 55 order by 1, 2",
        // RIGHT JOIN the other way round, and FULL, which keeps both sides' unmatched rows.
        "select a.id, r.id from accounts a right join regions r on a.region = r.id and a.id < 8 order by r.id, a.id",
        "select a.id, r.id from regions r full join accounts a on a.region = r.id + 2 order by a.id, r.id",
        "select count(*), count(a.id), count(r.id) from accounts a full join regions r on a.id = r.id * 11",
        // A sharded table joined on after it by the key, LEFT or inner.
        "select r.id, a.id, x.owner from regions r left join accounts a on a.region = r.id and a.id < 30 left join accounts x on x.id = a.id and x.balance > 20 order by 1, 2",
        "select r.id, count(x.id) from regions r left join accounts a on a.region = r.id join accounts x on x.id = a.id where x.owner <> 'o2' group by r.id order by 1",
        // A tied subquery beside it, and a subquery answered first in WHERE.
        "select r.id, a.id, (select count(*) from accounts x where x.id = a.id) from regions r left join accounts a on a.region = r.id and a.id < 12 order by 1, 2",
        "select r.id, a.id from regions r left join accounts a on a.region = r.id where r.id <= (select max(region) from accounts) order by 1, 2",
    ] {
        b.same(sql).await;
    }
    b.stop().await;
}

/// With bound values, in binary results; prepared once and run with other values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_outer_joins_keep_reference_rows_once() {
    let b = start("kept_rows_bound").await;
    let sql = "select r.id, a.id, a.balance::text from regions r left join accounts a on a.region = r.id and a.id > $1 where r.id < $2 order by 1, 2";
    let statement = b.c.prepare(sql).await.unwrap();
    let rows = |rows: &[tokio_postgres::Row]| -> Vec<(Option<i32>, Option<i64>, Option<String>)> {
        rows.iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    };
    for (over, below) in [(50i64, 6i32), (58, 8), (0, 1)] {
        let got = b.c.query(&statement, &[&over, &below]).await.unwrap();
        let want = b.one.query(sql, &[&over, &below]).await.unwrap();
        assert!(!want.is_empty());
        assert_eq!(rows(&got), rows(&want), "{over} {below}");
    }
    b.stop().await;
}

/// Two reads, so one snapshot: refused in a READ COMMITTED transaction block (with a hint),
/// answered in REPEATABLE READ; shapes other than one reference and one sharded table stay
/// refused, in or out of a transaction block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_needs_two_snapshots_or_another_shape_is_refused() {
    let b = start("kept_rows_refused").await;
    let sql =
        "select r.id, a.id from regions r left join accounts a on a.region = r.id order by 1, 2";
    b.c.batch_execute("begin").await.unwrap();
    let e = b.c.simple_query(sql).await.unwrap_err();
    assert_eq!(common::code(&e), "0A000");
    let hint = common::db_error(&e).hint().unwrap_or_default().to_string();
    assert!(hint.contains("REPEATABLE READ"), "{hint}");
    b.c.batch_execute("rollback").await.unwrap();
    b.c.batch_execute("begin isolation level repeatable read")
        .await
        .unwrap();
    b.same(sql).await;
    b.c.batch_execute("commit").await.unwrap();
    for refused in [
        // Joined on after it not by the key, or by RIGHT JOIN.
        "select r.id, a.id from regions r left join accounts a on a.region = r.id left join accounts x on x.owner = a.owner",
        "select r.id, a.id from regions r left join accounts a on a.region = r.id right join accounts x on x.id = a.id",
        "select r.id, a.id from regions r left join accounts a using (id)",
        "select r.id from regions r left join (select * from accounts where id > 3) a on a.region = r.id",
    ] {
        b.refused(refused).await;
    }
    // Money is written under each server's lc_monetary: its rows are not known by their text.
    let e =
        b.c.simple_query(
            "select p.price, a.id from prices p left join accounts a on a.region = p.region",
        )
        .await
        .unwrap_err();
    assert_eq!(common::code(&e), "0A000");
    assert!(
        common::db_error(&e).message().contains("column price"),
        "{e}"
    );
    // The refusal of another shape is the plain one, not the transaction's.
    b.c.batch_execute("begin").await.unwrap();
    let e =
        b.c.simple_query("select r.id, a.id from regions r left join accounts a using (id)")
            .await
            .unwrap_err();
    assert!(
        common::db_error(&e)
            .message()
            .starts_with("an outer join keeping"),
        "{e}"
    );
    b.c.batch_execute("rollback").await.unwrap();
    b.same(sql).await;
    b.stop().await;
}

/// The rows some shard matches and the statement read one snapshot, held apart by a
/// failpoint.
#[cfg(feature = "failpoints")]
mod one_snapshot {
    use super::common::{self, rig::Rig};
    use std::io::Write;

    /// An account that would match a region no shard matched is added between the two reads:
    /// neither sees it, so the region comes back once, unmatched, as one snapshot of one
    /// server shows it (with a new snapshot for the statement it would also come back
    /// matched, from the shard that holds the account).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_matched_rows_and_the_statement_read_one_snapshot() {
        let rig = Rig::new("").await;
        std::fs::OpenOptions::new()
            .append(true)
            .open(rig.dir.join("proxy.toml"))
            .unwrap()
            .write_all(b"\n[tables.branches]\nreference = true\n")
            .unwrap();
        let port = rig.port();
        let mut proxy = rig.proxy(port, "kept_rows.before_statement=sleep(3000)");
        let c = common::connect(&rig.url(port)).await.unwrap();
        // Matched on one shard, and a key new to the cluster on another that is not the
        // first (which runs the outer join itself).
        let placement = rig.config.placement().unwrap();
        let held = rig.account_on(1);
        let added = (1_000_000..)
            .find(|&k| placement.shard_of(&shardgate::placement::KeyValue::Integer(k)) == 2)
            .unwrap();
        c.batch_execute(&format!(
            "create table branches (account bigint); insert into branches values ({held}), ({added})"
        ))
        .await
        .unwrap();
        let sql = "select b.account, a.id from branches b left join accounts a on a.id = b.account order by 1";
        let url = rig.url(port);
        let reader = tokio::spawn(async move {
            let r = common::connect(&url).await.unwrap();
            common::rows(&r.simple_query(sql).await.unwrap())
        });
        // The proxy holds at the failpoint once it has read the matched rows.
        let shard = common::connect(&rig.shards[0].url("postgres"))
            .await
            .unwrap();
        common::process::until_idle_in_transaction(&shard, "ROW(b.*)", &proxy).await;
        c.batch_execute(&format!(
            "insert into accounts (id, balance) values ({added}, 0)"
        ))
        .await
        .unwrap();
        let found = reader.await.unwrap();
        assert_eq!(
            found,
            vec![
                vec![Some(held.to_string()), Some(held.to_string())],
                vec![Some(added.to_string()), None],
            ]
        );
        // A statement after it sees the account.
        let now = common::rows(&c.simple_query(sql).await.unwrap());
        assert_eq!(
            now,
            vec![
                vec![Some(held.to_string()), Some(held.to_string())],
                vec![Some(added.to_string()), Some(added.to_string())],
            ]
        );
        proxy.kill();
    }
}

/// `[NOT] EXISTS` over accounts correlated to a region's row (Django's `Exists(OuterRef(...))`
/// on a reference parent): each shard knows only its own accounts, so the regions some shard
/// matches are read first, and the EXISTS becomes a test of the region's row among them. A
/// region's first account in an order is read the same way, as each region's first row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subqueries_correlated_to_a_reference_row_ask_every_shard() {
    let b = start("kept_rows_exists").await;
    for sql in [
        "select r.id, r.label from regions r where exists (select 1 from accounts a where a.region = r.id and a.balance > 80) order by 1, 2",
        // Both copies of the region stored twice, the one with quotes and a backslash, NULLs.
        "select r.id, r.note, not exists (select 1 from accounts a where a.region = r.id and a.owner = 'o3') from regions r order by 1, 2",
        "select count(*) from regions r where not exists (select 1 from accounts a where a.region = r.id)",
        // As Django writes it: a bare outer column in parentheses, LIMIT 1, named in the list.
        "select label, exists (select 1 as a from accounts u0 where u0.region = (regions.id) limit 1) as has from regions order by 1 nulls first, 2",
        "select r.id from regions r where r.id < 4 and (exists (select 1 from accounts a where a.region = r.id and a.id % 7 = 0) or r.label is null) order by 1",
    ] {
        b.same(sql).await;
    }
    // A value of each region's first account in an order (Django's `Subquery(children
    // .order_by(...).values(...)[:1])`), NULL for a region without one.
    for sql in [
        "select r.id, r.label, (select a.owner from accounts a where a.region = r.id order by a.balance desc, a.id limit 1) from regions r order by 1, 2",
        "select r.id, (select a.balance as b from accounts a where a.region = r.id and a.owner = 'o2' order by 1 limit 1) from regions r order by 1, 2",
        "select r.note from regions r where (select a.id from accounts a where a.region = r.id order by a.id desc limit 1) > 55 order by 1",
    ] {
        b.same(sql).await;
    }
    // Bound values, prepared once and run with others.
    let sql = "select r.id from regions r where exists (select 1 from accounts a where a.region = r.id and a.id > $1) order by 1";
    let statement = b.c.prepare(sql).await.unwrap();
    let ids =
        |rows: Vec<tokio_postgres::Row>| -> Vec<i32> { rows.iter().map(|r| r.get(0)).collect() };
    for over in [0i64, 57, 1000] {
        let want = ids(b.one.query(sql, &[&over]).await.unwrap());
        let got = ids(b.c.query(&statement, &[&over]).await.unwrap());
        assert_eq!(got, want, "{over}");
    }
    // Two reads: refused in a READ COMMITTED transaction block.
    b.c.batch_execute("begin").await.unwrap();
    let e = b.c
        .simple_query("select r.id from regions r where exists (select 1 from accounts a where a.region = r.id)")
        .await
        .unwrap_err();
    assert_eq!(common::code(&e), "0A000");
    b.c.batch_execute("rollback").await.unwrap();
    for refused in [
        // An aggregate's one row exists whatever the shard holds; a subquery inside.
        "select r.id from regions r where exists (select count(*) from accounts a where a.region = r.id)",
        "select r.id from regions r where exists (select 1 from accounts a where a.region = r.id and a.id in (select id from accounts where balance > 3))",
        // More than one row per region, or no order to pick one by.
        "select r.id, (select a.owner from accounts a where a.region = r.id order by a.id limit 2) from regions r",
        "select r.id, (select a.owner from accounts a where a.region = r.id limit 1) from regions r",
    ] {
        b.refused(refused).await;
    }
    // Rows with money in them cannot be known by their text (written under each server's
    // lc_monetary), but one equality reads the inner values instead.
    b.same("select p.region from prices p where exists (select 1 from accounts a where a.region = p.region) order by 1")
        .await;
    b.stop().await;
}
