//! A sharded table's key column must compare keys exactly as the proxy hashes them, or rows
//! are stored on one shard and looked for on another. On three unlike shards: DDL through the
//! proxy that would break that is refused, whether the router reads it or not; tables made on
//! the shards directly are checked at start and reload; one broken on a shard while the proxy
//! runs makes the proxy not ready and its rows refused until it is put right.

mod common;

use common::TestCluster;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_column_that_compares_otherwise_than_its_key_type_is_refused() {
    let tc = TestCluster::start_unlike(
        3,
        "",
        "[tables.people]\nshard_key = \"name\"\nkey_type = \"text\"\n\
         [tables.tickets]\nshard_key = \"id\"\nkey_type = \"bigint\"\n",
    )
    .await;
    let c = tc.client().await;
    // char(n) ignores trailing blanks, so 'ab' and 'ab ' would be one key stored by two hashes;
    // a float key rounds.
    for ddl in [
        "create table people (name char(8) primary key)",
        "create table people (name bpchar primary key)",
        "create table tickets (id float8 primary key)",
        "create table tickets (id numeric primary key)",
        // Computed by each shard from other columns: no INSERT can route by it, and an UPDATE
        // of `n` would change it in place.
        "create table tickets (n bigint, id bigint generated always as (n * 2) stored)",
    ] {
        let e = c.batch_execute(ddl).await.expect_err(ddl);
        assert_eq!(e.code().map(|c| c.code()), Some("0A000"), "{ddl}: {e}");
    }
    assert_eq!(
        tc.count_on_each_shard(
            "select count(*) from pg_class where relname in ('people', 'tickets')"
        )
        .await,
        [0, 0, 0]
    );
    // A collation that may be nondeterministic: this one ignores case.
    c.batch_execute(
        "create collation sg_nocase (provider = icu, locale = 'und-u-ks-level2', deterministic = false)",
    )
    .await
    .unwrap();
    let e = c
        .batch_execute("create table people (name text collate sg_nocase primary key)")
        .await
        .expect_err("a key that ignores case");
    assert_eq!(e.code().map(|c| c.code()), Some("0A000"), "{e}");
    // The types each key type reads as PostgreSQL compares them, with a deterministic
    // collation.
    c.batch_execute(
        "create table people (name varchar(40) collate \"und-x-icu\" primary key);
         create table tickets (id bigserial primary key, note text)",
    )
    .await
    .unwrap();
    c.batch_execute("insert into people values ('ab'); insert into tickets (note) values ('x')")
        .await
        .unwrap();
    // Nor may its type be changed to one.
    let e = c
        .batch_execute("alter table people alter column name type char(8)")
        .await
        .expect_err("ALTER to char(8)");
    assert_eq!(e.code().map(|c| c.code()), Some("0A000"), "{e}");
    c.batch_execute("alter table people alter column name type text")
        .await
        .unwrap();
    let n: i64 = c
        .query_one("select count(*) from people where name = 'ab'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

/// Tables made on the shards directly, before the proxy is told of them: the proxy reads each
/// shard's catalog at start and when a reload declares a table, and refuses a key column that
/// compares otherwise than its key type, whichever shard holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_column_made_on_the_shards_directly_is_checked_at_start_and_reload() {
    let tc = TestCluster::start_unlike(3, "", "").await;
    // Unlike shards: people is text on two of them and char(8) on the third; tickets' key is
    // an integer under a text declaration on one. A domain over text and a deterministic ICU
    // collation compare as text does; a nondeterministic one does not.
    for (i, ddl) in [
        "create table people (name text primary key);
         create table tickets (id text primary key);
         create domain label as text;
         create table tags (tag label collate \"und-x-icu\" primary key)",
        "create table people (name text primary key);
         create table tickets (id integer primary key);
         create domain label as text;
         create table tags (tag label primary key)",
        "create table people (name char(8) primary key);
         create collation sg_nocase (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
         create table notes (body text collate sg_nocase primary key);
         create table tags (tag varchar(20) primary key)",
    ]
    .into_iter()
    .enumerate()
    {
        tc.direct(i).await.batch_execute(ddl).await.unwrap();
    }
    let declared = |tables: &str| {
        let text = format!("{}\n{tables}", common::config_for(0, &tc.shards, ""));
        shardgate::config::Config::from_toml(&text).unwrap()
    };
    let start = |tables: &str| {
        let config = declared(tables);
        async move { shardgate::server::Proxy::start(&config).await }
    };
    let text_key = |table: &str, key: &str| {
        format!("[tables.{table}]\nshard_key = \"{key}\"\nkey_type = \"text\"\n")
    };
    for (tables, shard, says) in [
        (text_key("people", "name"), "s2", "of type character(8)"),
        (text_key("tickets", "id"), "s1", "of type integer"),
        (
            text_key("notes", "body"),
            "s2",
            "nondeterministic collation sg_nocase",
        ),
    ] {
        let e = match start(&tables).await {
            Ok(_) => panic!("a proxy started with {tables}"),
            Err(e) => e.to_string(),
        };
        assert!(e.starts_with(&format!("shard {shard}: ")), "{e}");
        assert!(e.contains(says), "{e}");
    }
    let good = format!("{}{}", text_key("tags", "tag"), text_key("absent", "k"));
    let proxy = start(&good).await.expect("routable key columns");
    proxy.shutdown().await;

    // A reload that declares a table is held to the same check; the running config stays.
    let dir = common::TempDir::new("key-columns-reload");
    let file = dir.path().join("shardgate.toml");
    let running = tc.proxy.as_ref().unwrap();
    running.set_config_path(file.clone());
    let with = |tables: &str| format!("{}\n{tables}", common::config_for(0, &tc.shards, ""));
    std::fs::write(&file, with(&text_key("people", "name"))).unwrap();
    let e = running.reload().await.expect_err("people is char(8) on s2");
    assert!(e.contains("of type character(8)"), "{e}");
    std::fs::write(&file, with(&text_key("tags", "tag"))).unwrap();
    let done = running.reload().await.expect("tags is routable");
    assert_eq!(done.added_tables, ["tags"]);
    let c = tc.client().await;
    c.batch_execute("insert into tags values ('a'), ('b'), ('c')")
        .await
        .unwrap();
    let n: i64 = c
        .query_one("select count(*) from tags where tag = 'b'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

/// DDL whose columns the router cannot read (CREATE TABLE AS, LIKE, an ALTER with COLLATE,
/// code in DO) is judged by what it left on each shard, inside its own transaction: a key
/// column of another type is rolled back on every shard, whichever protocol sent it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_the_router_cannot_read_is_judged_by_what_it_leaves() {
    let tc = TestCluster::start_unlike(
        3,
        "",
        "[tables.people]\nshard_key = \"name\"\nkey_type = \"text\"\n\
         [tables.shape]\nreference = true\n",
    )
    .await;
    let c = tc.client().await;
    c.batch_execute("create table shape (name char(8), note text)")
        .await
        .unwrap();
    let refused = [
        "create table people as select 'ab'::char(8) as name",
        "create table people (like shape)",
        "do $$ begin execute 'create table people (name char(8))'; end $$",
    ];
    for ddl in refused {
        let e = c.batch_execute(ddl).await.expect_err(ddl);
        assert_eq!(e.code().map(|c| c.code()), Some("0A000"), "{ddl}: {e}");
        assert!(
            common::db_error(&e).message().contains("character(8)"),
            "{ddl}: {e}"
        );
    }
    // The check names the catalogs, functions and operators in pg_catalog, whatever the
    // session's search_path puts first (here a lower() and an = that never match).
    c.batch_execute(
        "create schema shadow;
         create function shadow.lower(text) returns text language sql as 'select ''x''';
         create function shadow.never(name, text) returns bool language sql as 'select false';
         create operator shadow.= (leftarg = name, rightarg = text, function = shadow.never);
         create function shadow.never(text, text) returns bool language sql as 'select false';
         create operator shadow.= (leftarg = text, rightarg = text, function = shadow.never);
         set search_path = shadow, pg_catalog, public",
    )
    .await
    .unwrap();
    let e = c.batch_execute(refused[0]).await.expect_err(refused[0]);
    assert_eq!(e.code().map(|c| c.code()), Some("0A000"), "{e}");
    c.batch_execute("reset search_path; drop schema shadow cascade")
        .await
        .unwrap();
    let none = "select count(*) from pg_class where relname = 'people'";
    assert_eq!(tc.count_on_each_shard(none).await, [0, 0, 0]);

    c.batch_execute("create table people (name text primary key)")
        .await
        .unwrap();
    c.batch_execute("insert into people values ('ab'), ('cd'), ('ef')")
        .await
        .unwrap();
    // An ALTER with a COLLATE, which the router cannot read: over the extended protocol, then
    // in the client's transaction, where the refusal fails the transaction and its COMMIT
    // rolls back.
    let alter = "alter table people alter column name type char(8) collate \"C\"";
    let e = c.execute(alter, &[]).await.expect_err(alter);
    assert_eq!(e.code().map(|c| c.code()), Some("0A000"), "{e}");
    c.batch_execute("begin").await.unwrap();
    let e = c.batch_execute(alter).await.expect_err(alter);
    assert_eq!(e.code().map(|c| c.code()), Some("0A000"), "{e}");
    c.batch_execute("commit").await.unwrap();
    let typed = "select count(*) from pg_attribute where attrelid = 'people'::regclass \
                 and attname = 'name' and atttypid = 'text'::regtype";
    assert_eq!(tc.count_on_each_shard(typed).await, [1, 1, 1]);
    // The session is whole, and the rows are where the proxy looks for them.
    let n: i64 = c
        .query_one("select count(*) from people where name = $1", &[&"cd"])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    // A form the router cannot read that keeps the key routable still runs.
    c.batch_execute("alter table people alter column name type varchar(20) collate \"C\"")
        .await
        .unwrap();
}

/// A key column made bad on a shard directly while the proxy runs is seen by the proxy's watch
/// over the key columns: it reports itself not ready, naming the table, and refuses every
/// statement on the table's rows (a statement prepared before too), while other tables and
/// the DDL that puts it right run. Once the column is right, the rows are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_column_broken_on_a_shard_while_the_proxy_runs_is_refused_until_put_right() {
    let tc = TestCluster::start_unlike(
        3,
        "health_check_interval_secs = 1",
        "[tables.people]\nshard_key = \"name\"\nkey_type = \"text\"\n\
         [tables.accounts]\nshard_key = \"id\"\nkey_type = \"bigint\"\n",
    )
    .await;
    let ready = tc.proxy.as_ref().unwrap().readiness();
    assert_eq!(ready(), Ok(()));
    let until = |want: bool| {
        let ready = ready.clone();
        async move {
            // The watch asks every second; a minute is only a bound on a hang.
            for _ in 0..600 {
                let now = ready();
                if now.is_ok() == want {
                    return now;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("readiness never became {want}: {:?}", ready());
        }
    };
    let c = tc.client().await;
    c.batch_execute(
        "create table people (name text primary key, n int);
         insert into people select 'p' || i, i from generate_series(1, 30) i;
         create table accounts (id bigint primary key);
         insert into accounts select generate_series(1, 30)",
    )
    .await
    .unwrap();
    let by_name = c
        .prepare("select n from people where name = $1")
        .await
        .unwrap();
    let n: i32 = c.query_one(&by_name, &[&"p7"]).await.unwrap().get(0);
    assert_eq!(n, 7);

    // Behind the proxy, one shard's key column becomes char(8), which ignores trailing blanks.
    tc.direct(2)
        .await
        .batch_execute("alter table people alter column name type char(8)")
        .await
        .unwrap();
    let e = until(false).await.unwrap_err();
    assert!(
        e.starts_with("shard s2: ") && e.contains("character(8)"),
        "{e}"
    );
    let refused = |e: tokio_postgres::Error, what: &str| {
        assert_eq!(e.code().map(|c| c.code()), Some("0A000"), "{what}: {e}");
        let db = common::db_error(&e);
        assert!(
            db.message()
                .starts_with("the rows of people cannot be routed now: shard s2: ")
                && db.message().contains("character(8)"),
            "{what}: {e}"
        );
        assert!(
            db.hint()
                .is_some_and(|h| h.contains("health_check_interval_secs")),
            "{what}: {e}"
        );
    };
    // The session that prepared its statement before, and a new one.
    let e = c.query_one(&by_name, &[&"p7"]).await.expect_err("prepared");
    refused(e, "a statement prepared before");
    let other = tc.client().await;
    for sql in [
        "select n from people where name = 'p7'",
        "select count(*) from people",
        "insert into people values ('p31', 31)",
        "update people set n = 0 where name = 'p1'",
    ] {
        let e = other.batch_execute(sql).await.expect_err(sql);
        refused(e, sql);
    }
    // On a client of its own: after a failed copy_in, tokio-postgres reads the answer to the
    // CopyFail it sends as out of turn, with PostgreSQL itself too.
    match tc
        .client()
        .await
        .copy_in::<_, bytes::Bytes>("copy people from stdin")
        .await
    {
        Ok(_) => panic!("COPY into people was let in"),
        Err(e) => refused(e, "COPY"),
    }
    let n: i64 = other
        .query_one("select count(*) from accounts where id = 3", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "another table is served");
    // DDL on another table runs: the bad table is not judged again.
    other
        .batch_execute("create index accounts_id_desc on accounts (id desc)")
        .await
        .unwrap();
    // Nothing was written on any shard.
    assert_eq!(
        tc.count_on_each_shard("select count(*) from people where n = 0 or n = 31")
            .await,
        [0, 0, 0]
    );

    // Put right through the proxy: the DDL runs, and its own check finds the column right.
    other
        .batch_execute("alter table people alter column name type text")
        .await
        .unwrap();
    until(true).await.unwrap();
    // The watch saw it right before the proxy called itself ready: the rows are served again,
    // the blanks char(8) padded the keys with gone, to the session that was refused too.
    let n: i32 = c.query_one(&by_name, &[&"p7"]).await.unwrap().get(0);
    assert_eq!(n, 7);
    let n: i64 = other
        .query_one("select count(*) from people where name = 'p30'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}
