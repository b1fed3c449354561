//! Functions defined on the shards that read a sharded table. On each shard such a function
//! reads only that shard's rows, so a statement calling it would answer for one shard: the
//! proxy refuses it, whether the function was made through the proxy or on the shards
//! directly; functions that read no sharded table are called as before. A function that
//! writes a reference table would change one copy only: refused too.

mod common;

use common::{answer, code, rows, TestCluster};
use std::time::{Duration, Instant};
use tokio_postgres::Client;

const TABLES: &str = "[tables.accounts]\nshard_key = \"id\"\nkey_type = \"bigint\"\n\
    [tables.countries]\nreference = true\n";

/// The tables both tests call functions over: 30 accounts spread over the shards, and two
/// countries in every copy.
const SCHEMA: &str = "create table accounts (id bigint primary key, owner text);
    insert into accounts select g, 'o' || g from generate_series(1, 30) g;
    create table countries (code text primary key, name text);
    insert into countries values ('fr', 'France'), ('de', 'Germany');";

/// `sql` is refused with a message naming each of `named`.
async fn refused(c: &Client, sql: &str, named: &[&str]) {
    match c.simple_query(sql).await {
        Ok(m) => panic!("{sql}: answered {:?} instead of a refusal", rows(&m)),
        Err(e) => {
            assert_eq!(code(&e), "0A000", "{sql}: {e}");
            let message = common::db_error(&e).message().to_string();
            assert!(
                named.iter().all(|n| message.contains(n)),
                "{sql}: {message}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_of_functions_that_read_sharded_tables_are_refused() {
    let tc = TestCluster::start_unlike(3, "health_check_interval_secs = 1", TABLES).await;
    let c = tc.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    c.batch_execute(
        "create function account_count() returns bigint language sql stable
             as 'select count(*) from accounts';
         create function owner_of(k bigint) returns text language plpgsql stable as $$
             begin return (select owner from public.Accounts where id = k); end $$;
         create function all_accounts() returns setof bigint language sql stable
             as 'select id from accounts';
         create function outer_count() returns bigint language sql stable
             as 'select account_count() + 0';
         create function twice(x int) returns int language sql immutable as 'select 2 * x';
         create function country_name(c text) returns text language sql stable
             as 'select name from countries where code = c';",
    )
    .await
    .unwrap();
    // Every shard holds some of the rows, so one shard's count would show.
    let per_shard = tc
        .count_on_each_shard("select count(*) from accounts")
        .await;
    assert!(per_shard.iter().all(|&n| n > 0 && n < 30), "{per_shard:?}");

    for sql in [
        "select account_count()",
        "select outer_count()",
        "select id, account_count() from accounts where id = 3",
        "select owner_of(5)",
        "select id, owner_of(id + 1) from accounts where id = 3",
        "select * from all_accounts()",
        "select count(*) from accounts a join all_accounts() x on x = a.id",
        "update accounts set owner = owner_of(2) where id = 3",
        "insert into accounts values (100, owner_of(1))",
    ] {
        refused(&c, sql, &["accounts"]).await;
        // Twice: a second planning may go by a learned route.
        refused(&c, sql, &["accounts"]).await;
    }
    // Extended protocol, as drivers send it.
    let e = c.query("select owner_of($1)", &[&5i64]).await.unwrap_err();
    assert_eq!(code(&e), "0A000", "{e}");
    // Functions that read no sharded table run as before.
    assert_eq!(answer(&c, "select twice(21)").await, [[Some("42".into())]]);
    assert_eq!(
        answer(&c, "select country_name('fr')").await,
        [[Some("France".into())]]
    );
    assert_eq!(
        answer(&c, "select id, twice(id::int) from accounts where id = 3").await,
        [[Some("3".into()), Some("6".into())]]
    );

    // Made on every shard directly, behind the proxy: refused once the watch has looked.
    for i in 0..tc.shards.len() {
        tc.direct(i)
            .await
            .batch_execute(
                "create function hidden_count() returns bigint language sql stable \
                 as 'select count(*) from accounts'",
            )
            .await
            .unwrap();
    }
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        match c.simple_query("select hidden_count()").await {
            Err(e) if code(&e) == "0A000" => break,
            _ if Instant::now() < until => tokio::time::sleep(Duration::from_millis(200)).await,
            other => panic!("still answered after a minute: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_of_functions_that_write_a_reference_table_are_refused() {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let c = tc.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    c.batch_execute(
        "create function add_country(c text, n text) returns text language plpgsql as $$
             begin insert into public.Countries values (c, n); return c; end $$;
         create function add_twice(c text) returns text language sql
             as $$ select add_country(c, c) $$;
         create function add_dynamic(c text) returns text language plpgsql as $$
             begin execute 'insert into countries values ($1, $1)' using c; return c; end $$;
         create function read_dynamic(c text) returns bigint language plpgsql as $$
             declare n bigint;
             begin execute 'select count(*) from countries where code = $1' into n using c;
             return n; end $$;",
    )
    .await
    .unwrap();
    for sql in [
        "select add_country('it', 'Italy')",
        "select add_twice('es')",
        "select id, add_country('nl', owner) from accounts where id = 3",
        "update accounts set owner = add_country('pt', 'Portugal') where id = 4",
    ] {
        refused(&c, sql, &["add_country", "countries"]).await;
    }
    // Text a function runs (dynamic SQL) is read for the tables it writes too.
    refused(
        &c,
        "select add_dynamic('gr')",
        &["add_dynamic", "countries"],
    )
    .await;
    let read = c.simple_query("select read_dynamic('fr')").await.unwrap();
    assert_eq!(rows(&read), vec![vec![Some("1".to_string())]]);
    let e = c
        .query("select add_country($1, 'Belgium')", &[&"be"])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000", "{e}");
    // Every copy as it was.
    let copies = tc
        .count_on_each_shard("select count(*) from countries")
        .await;
    assert_eq!(copies, vec![2, 2, 2]);
    // The write as a statement of its own reaches every copy.
    c.batch_execute("insert into countries values ('it', 'Italy')")
        .await
        .unwrap();
    let copies = tc
        .count_on_each_shard("select count(*) from countries")
        .await;
    assert_eq!(copies, vec![3, 3, 3]);
}
