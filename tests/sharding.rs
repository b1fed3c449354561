//! Routing on three real shards: rows land where placement says, point statements run on the
//! owning shard, reads without a key are merged exactly, and what would be wrong is refused.

mod common;

use common::{answer, code, db_error, TestCluster};

const TABLES: &str = r#"
[tables.accounts]
shard_key = "id"
key_type = "bigint"
[tables.ledger]
shard_key = "account_id"
key_type = "bigint"
[tables.countries]
reference = true
"#;

async fn cluster() -> TestCluster {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let c = tc.client().await;
    c.batch_execute("create table accounts (id bigint primary key, owner text, balance numeric not null, cc text)").await.unwrap();
    c.batch_execute("create table ledger (entry int, account_id bigint, amount numeric)")
        .await
        .unwrap();
    c.batch_execute("create table countries (code text primary key, name text)")
        .await
        .unwrap();
    for id in 1..=60i64 {
        c.batch_execute(&format!("insert into accounts (id, owner, balance, cc) values ({id}, 'owner {id:02}', {}.5, 'c{}')", id * 10 % 37, id % 3))
            .await
            .unwrap();
    }
    tc
}

/// `sql` fails with 0A000 and a hint.
async fn refused_with_hint(c: &tokio_postgres::Client, sql: &str) {
    let e = c.simple_query(sql).await.unwrap_err();
    assert_eq!(code(&e), "0A000", "{sql}: {e:?}");
    assert!(db_error(&e).hint().is_some(), "{sql}");
}

fn ids(rows: &[tokio_postgres::SimpleQueryMessage]) -> Vec<String> {
    rows.iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some(r.get(0).unwrap_or("NULL").to_string())
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_broadcasts_and_rows_land_on_their_owner() {
    let tc = cluster().await;
    let mut total = 0;
    for s in 0..3 {
        let d = tc.direct(s).await;
        let rows = d
            .simple_query("select id from accounts order by id")
            .await
            .unwrap();
        let here: Vec<i64> = ids(&rows).iter().map(|v| v.parse().unwrap()).collect();
        assert!(!here.is_empty(), "shard {s} holds some rows");
        for id in &here {
            assert_eq!(tc.owner(*id), s, "row {id} is on shard {s}");
        }
        // Placement is computable in SQL on the shard itself.
        let slot_sql = shardgate::placement::KeyType::Integer.slot_sql("id", 1024);
        let mismatches: i64 = d
            .query_one(
                &format!("select count(*) from accounts where {slot_sql} <> all($1::int[])"),
                &[&slots_of(&tc, s)],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(mismatches, 0);
        total += here.len();
    }
    assert_eq!(total, 60);
}

fn slots_of(tc: &TestCluster, shard: usize) -> Vec<i32> {
    let p = tc.config.placement().unwrap();
    (0..1024u32)
        .filter(|&s| p.slots.shard_of_slot(s) == shard)
        .map(|s| s as i32)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_statements_and_merged_reads() {
    let tc = cluster().await;
    let c = tc.client().await;
    assert_eq!(
        ids(&c
            .simple_query("select owner from accounts where id = 42")
            .await
            .unwrap()),
        vec!["owner 42"]
    );
    // A string made numeric is a number, rounded where it meets the integer key, as
    // PostgreSQL reads it.
    for (sql, owners) in [
        (
            "select owner from accounts where id = '41.5'::numeric::int",
            vec!["owner 42"],
        ),
        (
            "select owner from accounts where id = '42.0'::numeric",
            vec!["owner 42"],
        ),
        (
            "select owner from accounts where id = '42.5'::numeric",
            vec![],
        ),
    ] {
        assert_eq!(ids(&c.simple_query(sql).await.unwrap()), owners, "{sql}");
    }
    let all = ids(&c
        .simple_query("select id from accounts order by id")
        .await
        .unwrap());
    assert_eq!(all, (1..=60).map(|i| i.to_string()).collect::<Vec<_>>());
    let top = ids(&c
        .simple_query("select id, balance from accounts order by balance desc, id limit 4 offset 2")
        .await
        .unwrap());
    let mut expect: Vec<(i64, i64)> = (1..=60).map(|i| (i * 10 % 37, i)).collect();
    expect.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    assert_eq!(
        top,
        expect[2..6]
            .iter()
            .map(|(_, i)| i.to_string())
            .collect::<Vec<_>>()
    );
    let listed = ids(&c
        .simple_query("select id from accounts where id in (3, 17, 44, 58) order by id desc")
        .await
        .unwrap());
    assert_eq!(listed, vec!["58", "44", "17", "3"]);
    let unordered = ids(&c
        .simple_query("select owner from accounts where balance > 30")
        .await
        .unwrap());
    assert_eq!(
        unordered.len(),
        (1..=60).filter(|i| i * 10 % 37 > 29).count()
    );
    // Text sort keys, NULLs last, selected by name through *.
    c.batch_execute("update accounts set cc = null where id = 7")
        .await
        .unwrap();
    let by_cc = ids(&c
        .simple_query("select cc, id from accounts order by cc, id limit 100")
        .await
        .unwrap());
    assert_eq!(by_cc.last().map(String::as_str), Some("NULL"));
    assert!(
        by_cc.windows(2).all(|w| w[1] == "NULL" || w[0] <= w[1]),
        "{by_cc:?}"
    );
    // Co-located join on the shard key.
    c.batch_execute("insert into ledger (account_id, entry, amount) values (42, 1, 10)")
        .await
        .unwrap();
    let joined = ids(&c
        .simple_query(
            "select a.owner from accounts a join ledger l on l.account_id = a.id where a.id = 42",
        )
        .await
        .unwrap());
    assert_eq!(joined, vec!["owner 42"]);
    // The proxy tells where a key lives.
    let route = c
        .simple_query("SHOW shardgate.route accounts 42")
        .await
        .unwrap();
    let shard = match &route[1] {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(3).unwrap().to_string(),
        other => panic!("{other:?}"),
    };
    assert_eq!(shard, format!("s{}", tc.owner(42)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_statements_are_refused_without_side_effects() {
    let tc = cluster().await;
    let c = tc.client().await;
    for sql in [
        "update accounts set id = 100 where id = 1",
        "update accounts set balance = 0 where id = 1 or owner = 'x'; update accounts set id = 0 where id = 2",
        "select bit_xor(id::bit(8)) from accounts",
        "select * from accounts a join ledger l on l.amount = a.balance",
        "create table if not exists accounts (id bigint primary key, n int generated always as identity)",
        // Writes reading other shards' rows through a subquery that names the written row
        // (other than by equalities under EXISTS), here in an UPDATE, a DELETE and an upsert's
        // SET: each shard would answer from its own. (Those naming nothing of the write are
        // answered first: see tests/write_subqueries.rs.)
        "update accounts a set balance = (select count(*) - count(*) from ledger l where l.amount = a.balance)",
        "delete from accounts a where exists (select 1 from ledger l where l.amount > a.balance)",
        "insert into accounts (id, owner, balance) values (1, 'x', 1) on conflict (id) do update set balance = (select count(*) * 0 from ledger l where l.amount <> accounts.balance)",
        // Every shard has a row at (0,1).
        "update accounts set balance = 0 where ctid = '(0,1)'",
        // Every copy of a reference table would get a different write.
        "insert into countries values ('x', 'y') on conflict (code) do update set name = (select max(owner) from accounts a where a.cc = countries.code)",
    ] {
        refused_with_hint(&c, sql).await;
    }
    let n = ids(&c
        .simple_query("select id from accounts where balance = 0")
        .await
        .unwrap());
    assert!(n.is_empty(), "nothing was updated");
    assert_eq!(
        tc.count_on_each_shard("select count(*) from countries")
            .await,
        vec![0, 0, 0],
        "no copy of the reference table was written"
    );
    assert_eq!(
        ids(&c
            .simple_query("select count(*) from accounts")
            .await
            .unwrap()),
        vec!["60"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_read_many_shards_and_commit_one() {
    let tc = cluster().await;
    let c = tc.client().await;
    c.batch_execute("begin isolation level repeatable read")
        .await
        .unwrap();
    c.batch_execute("update accounts set owner = 'changed' where id = 5")
        .await
        .unwrap();
    let seen = ids(&c
        .simple_query("select owner from accounts where owner = 'changed'")
        .await
        .unwrap());
    assert_eq!(seen, vec!["changed"]);
    let iso = ids(&c.simple_query("show transaction_isolation").await.unwrap());
    assert_eq!(iso, vec!["repeatable read"]);
    c.batch_execute("commit").await.unwrap();
    let other = tc.client().await;
    assert_eq!(
        ids(&other
            .simple_query("select owner from accounts where id = 5")
            .await
            .unwrap()),
        vec!["changed"]
    );
    // A multi-statement Query is one implicit transaction: a failure undoes its earlier writes.
    let e = c
        .batch_execute("update accounts set owner = 'x' where id = 6; select 1/0")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "22012");
    assert_eq!(
        ids(&c
            .simple_query("select owner from accounts where id = 6")
            .await
            .unwrap()),
        vec!["owner 06"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_settings_reach_every_shard_and_reference_reads_use_one() {
    let tc = cluster().await;
    for s in 0..3 {
        tc.direct(s)
            .await
            .batch_execute("insert into countries values ('fr', 'France'), ('jp', 'Japan')")
            .await
            .unwrap();
    }
    let c = tc.client().await;
    c.batch_execute("set application_name = 'everywhere'")
        .await
        .unwrap();
    let apps = ids(&c
        .simple_query("select current_setting('application_name'), id from accounts order by id")
        .await
        .unwrap());
    assert_eq!(apps.len(), 60);
    assert!(apps.iter().all(|a| a == "everywhere"));
    let countries = ids(&c
        .simple_query("select code from countries order by code")
        .await
        .unwrap());
    assert_eq!(countries, vec!["fr", "jp"], "one copy, not one per shard");
    let joined = ids(&c
        .simple_query(
            "select c.name from accounts a join countries c on c.code = 'jp' where a.id = 9",
        )
        .await
        .unwrap());
    assert_eq!(joined, vec!["Japan"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_routes_by_bound_values() {
    let tc = cluster().await;
    let c = tc.client().await;
    let by_id = c
        .prepare("select owner, balance::text from accounts where id = $1")
        .await
        .unwrap();
    for id in [1i64, 17, 42, 60] {
        let row = c.query_one(&by_id, &[&id]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), format!("owner {id:02}"));
    }
    // Writes by bound key, in and out of transactions.
    let upd = c
        .prepare("update accounts set owner = $2 where id = $1")
        .await
        .unwrap();
    assert_eq!(c.execute(&upd, &[&33i64, &"ext"]).await.unwrap(), 1);
    let mut c = c;
    let tx = c.transaction().await.unwrap();
    tx.execute(
        "update accounts set owner = 'in tx' where id = $1",
        &[&34i64],
    )
    .await
    .unwrap();
    let other = (1..60i64).find(|&i| tc.owner(i) != tc.owner(34)).unwrap();
    // A second shard's write joins the transaction; dropping it rolls back both.
    tx.execute("update accounts set owner = 'no' where id = $1", &[&other])
        .await
        .unwrap();
    drop(tx);
    let row = c
        .query_one("select owner from accounts where id = $1", &[&34i64])
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        "owner 34",
        "the abandoned transaction was rolled back"
    );
    // Scattered reads with parameters, merged in order, binary results.
    let rows = c
        .query(
            "select id, balance from accounts where balance > $1::float8 order by id desc limit 3",
            &[&rust_decimal_free(20)],
        )
        .await
        .unwrap();
    let got: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    let mut expect: Vec<i64> = (1..=60)
        .filter(|i| (i * 10 % 37) as f64 + 0.5 > 20.0)
        .collect();
    expect.reverse();
    assert_eq!(got, expect[..3].to_vec());
    let anyrows = c
        .query(
            "select id from accounts where id = any($1) order by id",
            &[&vec![5i64, 25, 45]],
        )
        .await
        .unwrap();
    assert_eq!(
        anyrows
            .iter()
            .map(|r| r.get::<_, i64>(0))
            .collect::<Vec<_>>(),
        vec![5, 25, 45]
    );
    // Errors in a batch leave the session usable.
    let e = c
        .query_one("select 1/0 from accounts where id = $1", &[&3i64])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "22012");
    assert_eq!(
        c.query_one(
            "select count(*) from pg_class where relname = $1",
            &[&"accounts"]
        )
        .await
        .unwrap()
        .get::<_, i64>(0),
        1
    );
}

/// INSERT ... SELECT whose source the merge answers (groups, an order and a limit), or that
/// reads a sharded table on one shard into a reference table, is read once through the proxy
/// and written as VALUES: into a reference table, every copy gets the same rows; into a
/// sharded table, each row goes to its key's shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_select_of_merged_rows_writes_them_where_they_belong() {
    let tc = cluster().await;
    let c = tc.client().await;
    c.batch_execute(
        "insert into countries select cc, max(owner) from accounts group by cc;
         insert into countries select 'k' || id, owner from accounts where id = 7",
    )
    .await
    .unwrap();
    let mut grouped = answer(
        &c,
        "select cc, max(owner) from accounts group by cc order by cc",
    )
    .await;
    grouped.extend(answer(&c, "select 'k' || id, owner from accounts where id = 7").await);
    grouped.sort();
    assert_eq!(grouped.len(), 4);
    for i in 0..3 {
        let copy = tc
            .direct(i)
            .await
            .simple_query("select code, name from countries order by code")
            .await
            .unwrap();
        assert_eq!(common::rows(&copy), grouped, "copy on shard {i}");
    }
    let returned = answer(
        &c,
        "insert into ledger (entry, account_id, amount) select 9, min(id), sum(balance) \
         from accounts group by cc returning account_id::text, amount::text",
    )
    .await;
    let want = answer(
        &c,
        "select min(id)::text, sum(balance)::text from accounts group by cc order by 1",
    )
    .await;
    let mut got = returned;
    got.sort();
    let mut want = want;
    want.sort();
    assert_eq!(got, want);
    c.batch_execute(
        "insert into ledger (entry, account_id, amount) select 10, id, balance from accounts \
         order by balance desc, id limit 5",
    )
    .await
    .unwrap();
    let top = answer(
        &c,
        "select account_id::text from ledger where entry = 10 order by amount desc, account_id",
    )
    .await;
    let want_top = answer(
        &c,
        "select id::text from accounts order by balance desc, id limit 5",
    )
    .await;
    assert_eq!(top, want_top);
    // Each row on the shard of its key.
    let placed = tc
        .count_on_each_shard(
            "select count(*) from ledger l join accounts a on a.id = l.account_id where l.entry in (9, 10)",
        )
        .await;
    let held = tc
        .count_on_each_shard("select count(*) from ledger where entry in (9, 10)")
        .await;
    assert_eq!(placed, held, "a ledger row landed away from its account");
    assert_eq!(held.iter().sum::<i64>(), 8);
}

/// A multi-row INSERT whose rows go to several shards, each shard given its own rows, with
/// parameters in ON CONFLICT and RETURNING too: every shard's part binds the values the client
/// bound there, whichever rows it got (a shard's rows renumbered alone once made `$2` in DO
/// UPDATE read another row's value).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_insert_binds_its_on_conflict_and_returning_parameters_on_every_shard() {
    let tc = cluster().await;
    let c = tc.client().await;
    let ids: Vec<i64> = {
        let mut v = vec![1i64];
        for i in 2..60i64 {
            if v.iter().all(|&x| tc.owner(x) != tc.owner(i)) {
                v.push(i);
            }
        }
        v
    };
    assert_eq!(ids.len(), 3, "one account on each shard");
    let sql = "insert into accounts (id, owner, balance) values ($1, $2, 1), ($3, $4, 2), ($5, $6, 3) \
               on conflict (id) do update set owner = $2 || '/' || excluded.owner, balance = $7::float8 \
               where accounts.balance < $8::float8 returning id, owner, balance::text, $9::text";
    let rows = c
        .query(
            sql,
            &[
                &ids[0], &"a", &ids[1], &"b", &ids[2], &"c", &7.0f64, &1000.0f64, &"tag",
            ],
        )
        .await
        .unwrap();
    let mut got: Vec<(i64, String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    got.sort();
    let want: Vec<(i64, String, String, String)> = ids
        .iter()
        .zip(["a", "b", "c"])
        .map(|(&id, o)| (id, format!("a/{o}"), "7".to_string(), "tag".to_string()))
        .collect();
    assert_eq!(got, want);
}

/// A numeric parameter without pulling in a decimal crate: float8 compared with numeric.
fn rust_decimal_free(v: i32) -> f64 {
    v as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_combine_partials_from_every_shard() {
    let tc = cluster().await;
    let c = tc.client().await;
    // Each shard alone holds only part of the rows; the combined answer covers all of them.
    let mut per_shard = Vec::new();
    for s in 0..3 {
        let n: i64 = tc
            .direct(s)
            .await
            .query_one("select count(*) from accounts", &[])
            .await
            .unwrap()
            .get(0);
        per_shard.push(n);
    }
    assert!(per_shard.iter().all(|&n| n < 60), "{per_shard:?}");
    assert_eq!(
        ids(&c
            .simple_query("select count(*) from accounts")
            .await
            .unwrap()),
        vec!["60"]
    );
    let avg = ids(&c
        .simple_query("select avg(id) from accounts")
        .await
        .unwrap());
    assert_eq!(avg, vec!["30.5000000000000000"]);
    let by_cc = ids(&c
        .simple_query("select cc, count(*) from accounts group by cc order by cc")
        .await
        .unwrap());
    assert_eq!(by_cc, vec!["c0", "c1", "c2"]);
    // Extended protocol with binary results.
    let row = c
        .query_one(
            "select count(*), sum(id), min(owner) from accounts where id > $1",
            &[&10i64],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, String>(2)),
        (50, "owner 11".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_without_a_column_list_uses_the_catalog_order() {
    let tc = cluster().await;
    let c = tc.client().await;
    c.batch_execute("insert into accounts values (101, 'no list', 1.5, 'c1')")
        .await
        .unwrap();
    // ledger's key is its second column: the catalog order, not the first value, decides.
    c.batch_execute("insert into ledger values (1, 103, 9.5)")
        .await
        .unwrap();
    // Extended protocol: routed by the bound key in catalog position.
    c.execute(
        "insert into accounts values ($1, $2, $3::text::numeric, $4)",
        &[&102i64, &"ext", &"2.5", &"c2"],
    )
    .await
    .unwrap();
    // INSERT ... SELECT within one shard: the source reads one shard and inserts its own keys.
    c.batch_execute("insert into ledger (entry, account_id, amount) select 7, id, balance from accounts where id = 12").await.unwrap();
    for (table, col, id) in [
        ("accounts", "id", 101i64),
        ("accounts", "id", 102),
        ("ledger", "account_id", 103),
        ("ledger", "account_id", 12),
    ] {
        let n: i64 = tc
            .direct(tc.owner(id))
            .await
            .query_one(
                &format!("select count(*) from {table} where {col} = $1"),
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "{table} row {id} is on its owner");
    }
    // From every shard: each row is written to the shard of its own key.
    c.batch_execute(
        "insert into ledger (entry, account_id, amount) select 8, id, balance from accounts",
    )
    .await
    .unwrap();
    let placed = tc
        .count_on_each_shard(
            "select count(*) from ledger l join accounts a on a.id = l.account_id where l.entry = 8",
        )
        .await;
    let held = tc
        .count_on_each_shard("select count(*) from ledger where entry = 8")
        .await;
    assert_eq!(placed, held, "a ledger row landed away from its account");
    assert_eq!(held.iter().sum::<i64>(), 62);
    // Fewer values than columns, with no list: PostgreSQL gives them to the first columns and
    // the rest their defaults, from VALUES and from a SELECT over several rows alike.
    c.batch_execute(
        "insert into accounts select g, 'short', 1 from generate_series(201, 206) g;
         insert into accounts values (207, 'short', 2)",
    )
    .await
    .unwrap();
    let short = answer(
        &c,
        "select count(*), count(balance), count(cc) from accounts where owner = 'short'",
    )
    .await;
    assert_eq!(
        short[0],
        [Some("7".into()), Some("7".into()), Some("0".into())],
        "defaults where no value was given"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serializable_is_refused_on_a_second_shard_not_downgraded() {
    let tc = cluster().await;
    let c = tc.client().await;
    let other = (2..60i64).find(|&i| tc.owner(i) != tc.owner(1)).unwrap();
    // Explicitly, and through the session default.
    for begin in ["begin isolation level serializable", "begin"] {
        if begin == "begin" {
            // As separate statements: in one Query the SET would run in an implicit
            // transaction that has already started at the old level (as in PostgreSQL).
            c.batch_execute("set default_transaction_isolation = serializable")
                .await
                .unwrap();
        }
        c.batch_execute(begin).await.unwrap();
        c.batch_execute("select owner from accounts where id = 1")
            .await
            .unwrap();
        let e = c
            .batch_execute(&format!("select owner from accounts where id = {other}"))
            .await
            .unwrap_err();
        assert_eq!(code(&e), "0A000", "{begin}");
        assert!(db_error(&e).message().contains("SERIALIZABLE"), "{e:?}");
        c.batch_execute("rollback").await.unwrap();
    }
    c.batch_execute("reset default_transaction_isolation")
        .await
        .unwrap();
    // One shard is fine; REPEATABLE READ over several shards is fine.
    c.batch_execute(
        "begin isolation level serializable; select owner from accounts where id = 1; commit",
    )
    .await
    .unwrap();
    c.batch_execute(&format!("begin isolation level repeatable read; select * from accounts where id in (1, {other}); commit")).await.unwrap();
}

/// An INSERT that names no columns routes by the table's columns as they are when it runs: the
/// same text sent again after DDL moved the key column must follow it (the proxy keeps no route
/// learned from the old columns).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_without_columns_follows_the_key_column_after_ddl() {
    let tc = TestCluster::start_unlike(
        3,
        "",
        "[tables.moved]\nshard_key = \"id\"\nkey_type = \"bigint\"\n",
    )
    .await;
    let c = tc.client().await;
    c.batch_execute("create table moved (note text, id bigint primary key)")
        .await
        .unwrap();
    let text = "insert into moved values ($1, $2)";
    for id in 1..=20i64 {
        c.execute(text, &[&format!("n{id}"), &id]).await.unwrap();
    }
    c.batch_execute("alter table moved drop column note; alter table moved add column note text")
        .await
        .unwrap();
    for id in 21..=40i64 {
        c.execute(text, &[&id, &format!("n{id}")]).await.unwrap();
    }
    // A point read goes to the shard that owns the key: each row must be found there.
    for id in 1..=40i64 {
        let n: i64 = c
            .query_one("select count(*) from moved where id = $1", &[&id])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "row {id} is on the shard that owns it");
    }
    assert_eq!(
        tc.count_on_each_shard("select count(*) from moved")
            .await
            .iter()
            .sum::<i64>(),
        40
    );
}

/// With undeclared tables read as reference tables, a relation made from sharded rows would be
/// read on one shard, which holds only its own: such a relation is refused when made, and
/// nothing is created on any shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relations_made_from_sharded_rows_are_refused_where_one_shard_would_be_read() {
    let tables = format!("{TABLES}\n[routing]\nundeclared_tables = \"reference\"\n");
    let tc = TestCluster::start_unlike(3, "", &tables).await;
    let c = tc.client().await;
    c.batch_execute(
        "create table accounts (id bigint primary key, owner text, balance numeric not null, cc text);
         insert into accounts select i, 'o' || i, i, 'c' from generate_series(1, 30) i",
    )
    .await
    .unwrap();
    for sql in [
        "create table copied as select * from accounts",
        "select * into copied from accounts",
        "create view copied as select * from accounts",
        "create materialized view copied as select id from accounts",
    ] {
        refused_with_hint(&c, sql).await;
    }
    assert_eq!(
        tc.count_on_each_shard("select count(*) from pg_class where relname = 'copied'")
            .await,
        vec![0, 0, 0]
    );
    // Over reference tables it is a reference relation like any other.
    c.batch_execute(
        "create table countries (code text primary key, name text);
         insert into countries values ('fr', 'France');
         create view names as select name from countries",
    )
    .await
    .unwrap();
    assert_eq!(
        ids(&c.simple_query("select name from names").await.unwrap()),
        vec!["France"]
    );
}
