//! Shard keys that are NULL, over several shards, compared with one PostgreSQL holding the same
//! rows, on three unlike shards. A row whose key is NULL lives on one shard (the home shard),
//! but a NULL an outer join makes stands for no row and comes from every shard.
//!
//! Every shard has accounts without entries and entries without an account, so every shard's
//! outer join makes rows whose other table's key is NULL: grouped or made DISTINCT by that key,
//! they are one group across the shards, not one per shard. And a few entries have no account
//! at all (a NULL key), which makes `id IN (SELECT account_id FROM entries)` NULL, not false,
//! for the accounts without entries.

mod common;

use common::beside::Beside;

const TABLES: &str = "[tables.accounts]\nshard_key = \"id\"\nkey_type = \"bigint\"\n\
                      [tables.entries]\nshard_key = \"account_id\"\nkey_type = \"bigint\"\n";

/// Accounts 1 to 60 but the multiples of 5; entries 1 to 90 of accounts `(i * 7) % 45`, so
/// accounts 46 to 59 have none and the multiples of 5 below 45 have entries and no account;
/// entries 91 to 93 of no account (NULL).
const SCHEMA: &str = "
    create table accounts (id bigint primary key, region text);
    create table entries (id bigint, account_id bigint, kind int, amount numeric);
    insert into accounts select i, 'r' || (i % 4) from generate_series(1, 60) i where i % 5 <> 0;
    insert into entries select i, (i * 7) % 45, i % 3, i * 1.5 from generate_series(1, 90) i;
    insert into entries select i, null, i % 3, i from generate_series(91, 93) i";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_an_outer_join_makes_null_groups_its_rows_across_shards() {
    let b = Beside::start("one_outer_null_keys", TABLES, SCHEMA).await;
    for sql in [
        // The NULL group holds the accounts without entries, found on every shard.
        "select e.account_id, count(*), count(a.id) from accounts a full join entries e on e.account_id = a.id group by e.account_id order by 1 nulls first",
        "select a.id, sum(e.amount), count(*) from entries e left join accounts a on a.id = e.account_id group by a.id order by 1 nulls first",
        "select a.id, count(*) from accounts a right join entries e on e.account_id = a.id group by a.id having count(*) > 1 order by 1 nulls first",
        "select distinct a.id, e.kind from accounts a right join entries e on e.account_id = a.id where a.id is null order by 1, 2",
        "select distinct e.account_id, a.region from accounts a full join entries e on e.account_id = a.id order by 1 nulls first, 2 nulls first",
        // Counted through a derived table, as an ORM counts a distinct query.
        "select count(*) from (select distinct e.account_id from accounts a left join entries e on e.account_id = a.id) s",
        "select count(*) from (select a.id from entries e left join accounts a on a.id = e.account_id group by a.id) s",
        // The preserved side's key still holds each group on one shard.
        "select a.id, count(e.id) from accounts a left join entries e on e.account_id = a.id group by a.id order by 1",
        "select e.account_id, max(a.region), count(*) from accounts a right join entries e on e.account_id = a.id group by e.account_id order by 1",
        "select distinct a.id, e.account_id from accounts a left join entries e on e.account_id = a.id order by 1, 2 nulls first",
    ] {
        b.same(sql).await;
    }
    b.stop().await;
}

/// `key IN (SELECT key ...)` runs on each shard where a false and a NULL answer alike leave the
/// row out (WHERE, through AND and OR); anywhere else the shards without the NULL key would
/// answer false where one PostgreSQL answers NULL, so the subquery is answered first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_null_key_among_a_subquerys_keys_makes_in_null_everywhere() {
    let b = Beside::start("one_null_key_in", TABLES, SCHEMA).await;
    let keys = "(select e.account_id from entries e)";
    for sql in [
        format!("select count(*) from accounts a where not (a.id in {keys})"),
        format!("select count(*) from accounts a where (a.id in {keys}) is not true"),
        format!("select count(*) from accounts a where coalesce(a.id in {keys}, true)"),
        format!(
            "select a.id in {keys}, count(*) from accounts a group by 1 order by 1 nulls first"
        ),
        format!("select a.id, a.id in {keys} from accounts a order by 1"),
        // Where false and NULL alike leave the row out, as before.
        format!("select count(*) from accounts a where a.id in {keys} or a.region = 'r1'"),
        format!("select count(*) from accounts a where a.id in {keys} and a.id < 40"),
    ] {
        b.same(&sql).await;
    }
    // A write that needs it per row answers it first too: NULL for every account without
    // entries, so nothing is written, as on one server.
    let write = format!("update accounts set region = 'none' where not (id in {keys})");
    let want = common::outcome(&b.one, &write).await;
    assert_eq!(want, Ok((Vec::new(), vec![0])), "{write}");
    assert_eq!(common::outcome(&b.c, &write).await, want, "{write}");
    b.same("select count(*) from accounts where region = 'none' or region is null")
        .await;
    b.stop().await;
}
