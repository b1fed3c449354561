//! `SELECT setval(...)` through the proxy, on a sequence that fills `lines.id` of a table sharded
//! by `account_id`, on three unlike shards. Before this, a move back below the ids in use let
//! the sequence hand them out again to rows on other shards (no shard's index sees the
//! others'), values the proxy had drawn before a move were still handed out after it, and a
//! reference table's sequence moved on one copy only, so its copies drew apart. `SELECT
//! nextval(...)` and `setval` of the sequence of a reference table, or of a table living on one
//! shard other than the first, moved the first shard's copy, which nobody draws from there.
//! `ALTER SEQUENCE ... RESTART` and an identity column's `RESTART` went through unchecked.
//! A setval over a table's rows (Django's sequence reset after `loaddata`) was refused over a
//! sharded table, and set a reference table's sequence on one copy. `nextval(...)` inside an
//! INSERT's VALUES (as SQLAlchemy writes a column with a `Sequence`) ran on the row's shard,
//! whose copy of the sequence hands out the values the cluster's already did.

mod common;

use common::{answer, code, db_error, TestCluster};

const TABLES: &str = "[tables.lines]\nshard_key = \"account_id\"\nkey_type = \"bigint\"\n[tables.marks]\nshard_key = \"account_id\"\nkey_type = \"bigint\"\n[tables.refs]\nreference = true\n";

async fn next_id(c: &tokio_postgres::Client, account: i64) -> Option<String> {
    let sql = format!("insert into lines (account_id) values ({account}) returning id");
    answer(c, &sql).await[0][0].clone()
}

/// Every shard's copy of `refs` holds these rows (`id || name`, in id order).
async fn every_copy_holds(tc: &TestCluster, rows: &str) {
    every_copy_answers(
        tc,
        "select string_agg(id || name, ',' order by id) from refs",
        rows,
    )
    .await
}

/// Every shard answers `sql` (one value) with `expected`.
async fn every_copy_answers(tc: &TestCluster, sql: &str, expected: &str) {
    for shard in 0..3 {
        let held = answer(&tc.direct(shard).await, sql).await;
        assert_eq!(held[0][0].as_deref(), Some(expected), "shard {shard}");
    }
}

/// Each statement refused (0A000) for moving the sequence below the ids in use, the hint
/// naming the setval past them.
async fn refused_below(c: &tokio_postgres::Client, statements: &[&str], hint: &str) {
    for sql in statements {
        let e = c.simple_query(sql).await.unwrap_err();
        assert_eq!(code(&e), "0A000", "{sql}: {e:?}");
        let got = db_error(&e).hint().unwrap();
        assert!(got.contains(hint), "{sql}: {got}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setval_is_refused_below_the_ids_in_use_and_drops_the_drawn_values() {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let c = tc.client().await;
    c.batch_execute(
        "create table lines (id serial primary key, account_id bigint not null);
         insert into lines (account_id) select g from generate_series(1, 20) g;",
    )
    .await
    .unwrap();

    // Back to or below the largest id in use: refused in each spelling and protocol.
    refused_below(
        &c,
        &[
            "select setval('lines_id_seq', 1, false)",
            "select setval('lines_id_seq', 20, false)",
            "select pg_catalog.setval(pg_get_serial_sequence('\"lines\"', 'id'), 19, true) as v",
        ],
        "setval('lines_id_seq', 20)",
    )
    .await;
    let e = c
        .query(
            "select setval($1::text::regclass, $2, false)",
            &[&"lines_id_seq", &1i64],
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000", "{e:?}");
    // The sequence did not move: the next row gets an id no row holds.
    assert_eq!(next_id(&c, 21).await.as_deref(), Some("21"));

    // Past them it runs, and the next row gets the value after it, not one the proxy drew
    // before the move.
    answer(&c, "select setval('lines_id_seq', 500)").await;
    assert_eq!(next_id(&c, 22).await.as_deref(), Some("501"));
    // Rows the transaction wrote itself count: back below one of them is refused.
    c.batch_execute("begin; insert into lines (id, account_id) values (900, 30)")
        .await
        .unwrap();
    let e = c
        .simple_query("select setval('lines_id_seq', 600)")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000", "{e:?}");
    assert!(db_error(&e).hint().unwrap().contains("900"), "{e:?}");
    c.batch_execute("rollback").await.unwrap();
    // In REPEATABLE READ, rows committed after the transaction's snapshot count too.
    c.batch_execute("begin isolation level repeatable read; select count(*) from lines")
        .await
        .unwrap();
    let other = tc.client().await;
    other
        .batch_execute("insert into lines (id, account_id) values (2000, 31)")
        .await
        .unwrap();
    let e = c
        .simple_query("select setval('lines_id_seq', 1500)")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000", "{e:?}");
    c.batch_execute("rollback").await.unwrap();
    other
        .batch_execute("delete from lines where id = 2000")
        .await
        .unwrap();

    // Emptied, and reset to 1 as a test suite resets it between tests: the next row gets 1,
    // as from PostgreSQL.
    c.batch_execute("delete from lines").await.unwrap();
    answer(
        &c,
        "select setval(pg_get_serial_sequence('lines', 'id'), 1, false)",
    )
    .await;
    assert_eq!(next_id(&c, 23).await.as_deref(), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setval_of_a_reference_tables_sequence_moves_every_copy() {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let c = tc.client().await;
    c.batch_execute(
        "create table refs (id serial primary key, name text);
         insert into refs (name) values ('a'), ('b');",
    )
    .await
    .unwrap();
    // As pg_dump's restore sets it, then bound as a driver sends it.
    answer(
        &c,
        "select pg_catalog.setval('public.refs_id_seq', 100, true)",
    )
    .await;
    c.execute("insert into refs (name) values ('c')", &[])
        .await
        .unwrap();
    let moved = c
        .query_one(
            "select setval($1::text::regclass, $2)",
            &[&"refs_id_seq", &200i64],
        )
        .await
        .unwrap();
    assert_eq!(moved.get::<_, i64>(0), 200);
    c.execute("insert into refs (name) values ('d')", &[])
        .await
        .unwrap();
    every_copy_holds(&tc, "1a,2b,101c,201d").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nextval_and_setval_move_the_copies_a_table_draws_from() {
    let tail = format!("{TABLES}[routing]\nundeclared_tables = \"s1\"\n");
    let tc = TestCluster::start_unlike(3, "", &tail).await;
    let c = tc.client().await;
    c.batch_execute(
        "create table refs (id serial primary key, name text);
         insert into refs (name) values ('a'), ('b');
         create table pinned (id serial primary key, v text);
         insert into pinned (v) values ('x');",
    )
    .await
    .unwrap();

    // A reference table's sequence: drawn from on every copy, in each protocol, so the next
    // row gets one id on all of them.
    assert_eq!(
        answer(&c, "select nextval('refs_id_seq')").await[0][0].as_deref(),
        Some("3")
    );
    let drawn = c
        .query_one(
            "select pg_catalog.nextval($1::text::regclass)",
            &[&"refs_id_seq"],
        )
        .await
        .unwrap();
    assert_eq!(drawn.get::<_, i64>(0), 4);
    c.execute("insert into refs (name) values ('c')", &[])
        .await
        .unwrap();
    every_copy_holds(&tc, "1a,2b,5c").await;

    // A table on the second shard draws from that shard's copy: the calls move it.
    assert_eq!(
        answer(&c, "select nextval('pinned_id_seq')").await[0][0].as_deref(),
        Some("2")
    );
    answer(&c, "select setval('pinned_id_seq', 50)").await;
    assert_eq!(
        answer(&c, "insert into pinned (v) values ('y') returning id").await[0][0].as_deref(),
        Some("51")
    );
    let rows = answer(
        &tc.direct(1).await,
        "select string_agg(id || v, ',' order by id) from pinned",
    )
    .await;
    assert_eq!(rows[0][0].as_deref(), Some("1x,51y"));

    // Planned as one statement, SQL EXECUTE would reach the first shard only: refused.
    c.batch_execute("prepare draw as select nextval('refs_id_seq')")
        .await
        .unwrap();
    let e = c.simple_query("execute draw").await.unwrap_err();
    assert_eq!(code(&e), "0A000", "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_below_the_ids_in_use_is_refused() {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let c = tc.client().await;
    c.batch_execute(
        "create table lines (id serial primary key, account_id bigint not null);
         insert into lines (account_id) select g from generate_series(1, 20) g;
         create table marks (id bigint generated by default as identity primary key, account_id bigint);
         insert into marks (account_id) select g from generate_series(1, 5) g;",
    )
    .await
    .unwrap();

    // Back to or below the largest id in use: refused in each spelling and protocol, and in
    // a transaction, which it fails.
    refused_below(
        &c,
        &[
            "alter sequence lines_id_seq restart",
            "ALTER SEQUENCE IF EXISTS public.lines_id_seq INCREMENT BY 1 RESTART WITH 20",
            "alter sequence lines_id_seq start with 7 restart",
        ],
        "setval('lines_id_seq', 20)",
    )
    .await;
    let e = c
        .execute("alter sequence lines_id_seq restart with 3", &[])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000", "{e:?}");
    c.batch_execute("begin").await.unwrap();
    let e = c
        .simple_query("alter table only marks alter column id restart with 3, alter column account_id set not null")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000", "{e:?}");
    assert!(db_error(&e).message().contains("marks"), "{e:?}");
    let e = c.simple_query("select 1").await.unwrap_err();
    assert_eq!(code(&e), "25P02", "{e:?}");
    c.batch_execute("rollback").await.unwrap();
    // Nothing moved: the next rows get ids no row holds.
    assert_eq!(next_id(&c, 21).await.as_deref(), Some("21"));
    let sql = "insert into marks (account_id) values (6) returning id";
    assert_eq!(answer(&c, sql).await[0][0].as_deref(), Some("6"));

    // Past them they run, and the next row gets the value they restart at.
    c.batch_execute(
        "alter sequence lines_id_seq restart with 100; alter table marks alter id restart with 50",
    )
    .await
    .unwrap();
    assert_eq!(next_id(&c, 22).await.as_deref(), Some("100"));
    assert_eq!(answer(&c, sql).await[0][0].as_deref(), Some("50"));
    // A sequence or table that is not there is left to the statement.
    answer(&c, "alter sequence if exists nothing_here restart").await;
    let e = c
        .simple_query("alter table nothing_here alter column id restart")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42P01", "{e:?}");

    // Emptied, a restart back to the start runs: the next row gets 1, as from PostgreSQL.
    // In one transaction: the rows it deleted no longer hold their values.
    c.batch_execute("begin; delete from lines; alter sequence lines_id_seq restart; commit")
        .await
        .unwrap();
    assert_eq!(next_id(&c, 23).await.as_deref(), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setval_over_a_tables_rows_reads_every_shard() {
    let tail = format!("{TABLES}[routing]\nundeclared_tables = \"s2\"\n");
    let tc = TestCluster::start_unlike(3, "", &tail).await;
    let c = tc.client().await;
    c.batch_execute(
        "create table lines (id serial primary key, account_id bigint not null);
         create table refs (id serial primary key, name text);
         create table pinned (id serial primary key, v text);",
    )
    .await
    .unwrap();
    let reset = |table: &str| {
        format!(
            "SELECT setval(pg_get_serial_sequence('\"{table}\"','id'), coalesce(max(\"id\"), 1), max(\"id\") IS NOT null) FROM \"{table}\";"
        )
    };

    // Rows loaded with their ids and the sequence reset in one transaction, as Django's
    // loaddata does: the largest id over every shard, the loaded rows counted.
    c.batch_execute(
        "begin; insert into lines (id, account_id) values (40, 1), (7, 2), (300, 3), (12, 4)",
    )
    .await
    .unwrap();
    assert_eq!(
        answer(&c, &reset("lines")).await[0][0].as_deref(),
        Some("300")
    );
    c.batch_execute("commit").await.unwrap();
    assert_eq!(next_id(&c, 5).await.as_deref(), Some("301"));
    // Extended protocol, a bound WHERE: the smallest id of the rows it names.
    let set = c
        .query_one(
            "select setval('lines_id_seq', min(id) + 1000) from lines where account_id > $1",
            &[&2i64],
        )
        .await
        .unwrap();
    assert_eq!(set.get::<_, i64>(0), 1012);
    assert_eq!(next_id(&c, 6).await.as_deref(), Some("1013"));
    // The form people write after a load, a subquery over the table: the largest id is on a
    // shard other than the first, where the call runs.
    let far = (100..).find(|a| tc.owner(*a) != 0).unwrap();
    c.execute(
        "insert into lines (id, account_id) values (5000, $1)",
        &[&far],
    )
    .await
    .unwrap();
    let sql = "select setval('lines_id_seq', (select max(id) from lines) + 10)";
    assert_eq!(answer(&c, sql).await[0][0].as_deref(), Some("5010"));
    assert_eq!(next_id(&c, 8).await.as_deref(), Some("5011"));
    // A reference table's sequence set from a sharded table's rows: each copy would read its
    // own shard's rows.
    let e = c
        .simple_query("select setval('refs_id_seq', (select max(id) from lines))")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000", "{e:?}");
    // Emptied: coalesce(max, 1) and is_called false, so the next row gets 1.
    c.batch_execute("delete from lines").await.unwrap();
    assert_eq!(
        answer(&c, &reset("lines")).await[0][0].as_deref(),
        Some("1")
    );
    assert_eq!(next_id(&c, 7).await.as_deref(), Some("1"));

    // A reference table: every copy's sequence, so the next row gets one id on all of them.
    c.batch_execute(
        "insert into refs (id, name) values (90, 'a'), (95, 'b');
         insert into pinned (id, v) values (60, 'x');",
    )
    .await
    .unwrap();
    assert_eq!(
        answer(&c, &reset("refs")).await[0][0].as_deref(),
        Some("95")
    );
    c.execute("insert into refs (name) values ('c')", &[])
        .await
        .unwrap();
    every_copy_holds(&tc, "90a,95b,96c").await;
    // A table living on the third shard: its own copy of the sequence.
    assert_eq!(
        answer(&c, &reset("pinned")).await[0][0].as_deref(),
        Some("60")
    );
    let sql = "insert into pinned (v) values ('y') returning id";
    assert_eq!(answer(&c, sql).await[0][0].as_deref(), Some("61"));

    // What the proxy does not read so stays refused over several shards.
    let e = c
        .simple_query("select setval('lines_id_seq', max(id) + count(*)) from lines")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000", "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nextval_in_a_statement_on_a_sharded_table_draws_from_the_cluster() {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let c = tc.client().await;
    // The key in the primary key, as sharded schemas often have it: no shard's index judges
    // an id alone, so only the sequence keeps them apart.
    c.batch_execute(
        "create table lines (id serial, account_id bigint not null, note text, primary key (account_id, id));
         insert into lines (account_id) select g from generate_series(1, 20) g;",
    )
    .await
    .unwrap();
    // Rows of accounts on every shard, the call in the simple and the extended protocol
    // (prepared, as a driver repeats it), under two spellings of the sequence.
    for account in 21..27i64 {
        let sql = format!(
            "insert into lines (id, account_id) values (nextval('lines_id_seq'), {account})"
        );
        c.batch_execute(&sql).await.unwrap();
    }
    let insert = c
        .prepare("insert into lines (id, account_id, note) values (pg_catalog.nextval('public.lines_id_seq'::regclass), $1, nextval('lines_id_seq')::text) returning id")
        .await
        .unwrap();
    for account in 27..33i64 {
        c.query_one(&insert, &[&account]).await.unwrap();
    }
    // Every id is the cluster's: none handed out twice, none from a shard's own copy.
    let ids = answer(
        &c,
        "select count(*), count(distinct id), count(*) filter (where id <= 20 and account_id > 20) from lines",
    )
    .await;
    assert_eq!(
        ids[0],
        vec![Some("32".into()), Some("32".into()), Some("0".into())]
    );
    // Anywhere else in a statement on a sharded table it is refused.
    for sql in [
        "update lines set note = nextval('lines_id_seq')::text where account_id = 1",
        "select nextval('lines_id_seq') from lines where account_id = 1",
        "insert into lines (account_id) select nextval('lines_id_seq')",
        "insert into lines (id, account_id) values (nextval('lines_id_seq'), 1) returning setval('lines_id_seq', 1)",
    ] {
        let e = c.simple_query(sql).await.unwrap_err();
        assert_eq!(code(&e), "0A000", "{sql}: {e:?}");
    }
    let e = c
        .query(
            "select nextval('lines_id_seq') from lines where account_id = $1",
            &[&1i64],
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000", "{e:?}");
}

/// `nextval()` in statements on reference tables and tables living on one shard: a reference
/// table's write calling the cluster's sequence ran on every copy, each calling its own copy of
/// it (the first shard's value on one, another shard's stale one elsewhere), and a read calling
/// a reference table's sequence moved the first copy alone. Now each call is right where its
/// sequence is drawn from, drawn from the cluster in an INSERT's VALUES, or refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nextval_beside_tables_that_are_not_sharded_calls_the_copy_drawn_from() {
    let tail = format!("{TABLES}[routing]\nundeclared_tables = \"s2\"\n");
    let tc = TestCluster::start_unlike(3, "", &tail).await;
    let c = tc.client().await;
    c.batch_execute(
        "create table lines (id serial primary key, account_id bigint not null);
         insert into lines (account_id) select g from generate_series(1, 5) g;
         create table refs (id serial primary key, name text, code bigint);
         create table pinned (id serial primary key, code bigint);",
    )
    .await
    .unwrap();
    // The cluster's sequence, drawn once for every copy, in each protocol; the table's own
    // sequence, called on every copy as its default would be.
    c.batch_execute("insert into refs (name, code) values ('a', nextval('lines_id_seq'))")
        .await
        .unwrap();
    c.execute(
        "insert into refs (id, name, code) values (nextval('refs_id_seq'), $1, nextval('lines_id_seq'))",
        &[&"b"],
    )
    .await
    .unwrap();
    let codes = "select string_agg(id || name || (code > 5 and code < 1000)::text, ',' order by id) from refs";
    every_copy_answers(&tc, codes, "1atrue,2btrue").await;
    let distinct = answer(&c, "select count(distinct code) from refs").await;
    assert_eq!(distinct[0][0].as_deref(), Some("2"));
    // On the shard a table lives on: its own sequence as written, the cluster's drawn.
    c.batch_execute(
        "insert into pinned (id, code) values (nextval('pinned_id_seq'), nextval('lines_id_seq'))",
    )
    .await
    .unwrap();
    let pinned = answer(
        &tc.direct(2).await,
        "select id || ':' || (code > 5)::text from pinned",
    )
    .await;
    assert_eq!(pinned[0][0].as_deref(), Some("1:true"));
    // The other calls would each move some copy on its own, or (a reference table's own
    // sequence outside an INSERT's VALUES) be called in the order each copy visits its rows:
    // refused, nothing moved.
    for (sql, why) in [
        (
            "update refs set code = nextval('lines_id_seq')",
            "is drawn from",
        ),
        (
            "select nextval('refs_id_seq') from generate_series(1, 3)",
            "is drawn from",
        ),
        (
            "select nextval('lines_id_seq') from pinned",
            "is drawn from",
        ),
        (
            "insert into refs (name, code) select 'c', nextval('lines_id_seq')",
            "is drawn from",
        ),
        (
            "insert into refs (name, code) values ('c', setval('lines_id_seq', 500))",
            "is drawn from",
        ),
        (
            "insert into pinned (code) values (nextval('refs_id_seq'))",
            "is drawn from",
        ),
        (
            "update refs set code = nextval('refs_id_seq')",
            "order it visits",
        ),
        (
            "insert into refs (id, name) select nextval('refs_id_seq'), 'c'",
            "order it visits",
        ),
    ] {
        let e = c.simple_query(sql).await.unwrap_err();
        assert_eq!(code(&e), "0A000", "{sql}: {e:?}");
        assert!(db_error(&e).message().contains(why), "{sql}: {e:?}");
    }
    let e = c
        .query(
            "select nextval($1::text::regclass) from refs",
            &[&"refs_id_seq"],
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000", "{e:?}");
    c.batch_execute("insert into refs (name) values ('c')")
        .await
        .unwrap();
    every_copy_holds(&tc, "1a,2b,3c").await;
}
