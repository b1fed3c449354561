//! LATERAL subqueries over sharded tables, compared with one PostgreSQL holding the same rows,
//! on three unlike shards. Tied to the outer table by the shard key (`WHERE e.account_id =
//! a.id`, also through derived tables inside it, each tied so), a LATERAL subquery reads only
//! rows of its outer row's key, which live on that row's shard, so each shard runs the
//! statement as written; not tied, it would read one shard's rows only, and is refused.

mod common;

use common::beside::Beside;

const TABLES: &str = "[tables.accounts]\nshard_key = \"id\"\nkey_type = \"bigint\"\n\
                      [tables.entries]\nshard_key = \"account_id\"\nkey_type = \"bigint\"\n\
                      [tables.regions]\nreference = true\n";

/// Accounts 1 to 40 in four regions; up to five entries each (none for every sixth account).
const SCHEMA: &str = "
    create table regions (code text primary key, label text);
    insert into regions values ('r0', 'north'), ('r1', 'south'), ('r2', 'east'), ('r3', 'west');
    create table accounts (id bigint primary key, region text, balance numeric);
    create table entries (id bigint, account_id bigint, amount numeric, kind int);
    insert into accounts select i, 'r' || (i % 4), i * 2.5 from generate_series(1, 40) i;
    insert into entries select i, (i % 40) + 1, (i * 37) % 100, i % 3
      from generate_series(1, 200) i where (i % 40) % 6 <> 5";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lateral_subquery_tied_by_the_key_runs_on_each_shard() {
    let b = Beside::start("one_lateral", TABLES, SCHEMA).await;
    let top2 = "(select e.id, e.amount from entries e where e.account_id = a.id order by e.amount desc, e.id limit 2)";
    for sql in [
        // The top rows of each key.
        format!("select a.id, t.id, t.amount from accounts a join lateral {top2} t on true order by 1, 3 desc, 2"),
        format!("select a.id, t.amount from accounts a left join lateral {top2} t on true where a.id > 30 order by 1, 2 nulls first"),
        format!("select a.id, t.amount from accounts a cross join lateral {top2} t order by t.amount desc, a.id limit 5"),
        format!("select a.id, t.amount from accounts a, lateral {top2} t where a.id in (3, 17) order by 1, 2"),
        // Merged over the lateral rows: groups, a reference table joined too.
        format!("select a.region, count(*), sum(t.amount) from accounts a join lateral {top2} t on true group by 1 order by 1"),
        format!("select r.label, max(t.amount) from accounts a join regions r on r.code = a.region join lateral {top2} t on true group by 1 order by 1"),
        // Paged through a derived table inside, with a LATERAL inside that tied to the derived
        // table's key (the shapes Drizzle's relational queries send).
        "select a.id, p.data from accounts a left join lateral (select coalesce(json_agg(json_build_array(t.id, t.amount, o.data) order by t.amount desc, t.id), '[]'::json) as data from (select * from entries t where t.account_id = a.id order by t.amount desc, t.id limit 3) t left join lateral (select json_build_array(o.region) as data from (select * from accounts o where o.id = t.account_id limit 1) o) o on true) p on true order by a.id".to_string(),
        "select e.id, o.data from entries e left join lateral (select json_build_array(o.id, o.region) as data from (select * from accounts o where o.id = e.account_id limit 1) o) o on true where e.amount > 90 order by e.account_id, e.id".to_string(),
        // A derived table inside that limits every shard's rows together is answered first.
        "select a.id, t.n from accounts a join lateral (select count(*) n from (select * from entries e order by e.id limit 5) e where e.account_id = a.id) t on true where t.n > 0 order by 1".to_string(),
        // An aggregate per outer row.
        "select a.id, s.n, s.total from accounts a left join lateral (select count(*) n, sum(e.amount) total from entries e where e.account_id = a.id and e.kind = 1) s on true order by 1".to_string(),
    ] {
        b.same(&sql).await;
    }
    // Bound, as drivers send it.
    let sql = format!("select a.id, t.amount::text from accounts a join lateral {top2} t on true where a.id > $1 order by 1, 2");
    let pairs = |rows: Vec<tokio_postgres::Row>| -> Vec<(i64, String)> {
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    };
    let want = pairs(b.one.query(&sql, &[&25i64]).await.unwrap());
    let got = pairs(b.c.query(&sql, &[&25i64]).await.unwrap());
    assert_eq!(got, want);
    assert!(!want.is_empty());
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lateral_subquery_not_tied_by_the_key_is_refused() {
    let b = Beside::start("one_lateral_untied", TABLES, SCHEMA).await;
    for sql in [
        // Other accounts' entries, on other shards.
        "select a.id, t.n from accounts a join lateral (select count(*) n from entries e where e.amount > a.balance) t on true",
        // A key equality through OR ties nothing.
        "select a.id, t.n from accounts a join lateral (select count(*) n from entries e where e.account_id = a.id or e.kind = 1) t on true",
        // Named without an alias, the inner table hides the outer one: this ties nothing.
        "select entries.id, t.n from entries join lateral (select count(*) n from entries where entries.account_id = entries.account_id) t on true",
        // Every account of a region, over every shard.
        "select r.code, t.n from regions r join lateral (select count(*) n from accounts a where a.region = r.code) t on true",
    ] {
        b.refused(sql).await;
    }
    b.stop().await;
}
