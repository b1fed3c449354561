//! Subqueries over sharded tables that no shard answers alone (not tied to the outer table by
//! the shard key) and that refer to nothing outside themselves: the proxy answers each first
//! and runs the statement with the answer in its place. Compared with one PostgreSQL holding
//! the same rows, on three unlike shards with the rows each subquery reads on all of them.

mod common;

use common::beside::Beside;
use tokio_postgres::SimpleQueryMessage;

const TABLES: &str = "[tables.accounts]\nshard_key = \"id\"\nkey_type = \"bigint\"\n\
                      [tables.orders]\nshard_key = \"account_id\"\nkey_type = \"bigint\"\n";

/// `accounts` 1 to 60 in six regions, owners with quotes and backslashes, some scores NULL;
/// `orders` two for each account but every seventh, some notes NULL.
const SCHEMA: &str = "
    create table accounts (id bigint primary key, region text, owner text,
                           balance numeric(12,2), score float8);
    insert into accounts
      select i, 'r' || (i % 6), 'o''' || (i % 9) || E'\\\\x', i * 1.25 + (i % 4),
             case when i % 5 = 0 then null else i / 3.0 end
      from generate_series(1, 60) i;
    create table orders (account_id bigint, order_no int, amount numeric(12,2), note text);
    insert into orders
      select i, n, i * n * 0.75, case when i % 8 = 0 then null else 'n' || (i % 3) end
      from generate_series(1, 60) i, generate_series(1, 2) n where i % 7 <> 0;";

async fn start(name: &'static str) -> Beside {
    Beside::start(name, TABLES, SCHEMA).await
}

/// The proxy's answer to `sql` and the one server's are the same, rows or none.
async fn same_rows(b: &Beside, sql: &str) {
    let want = common::rows(&b.one.simple_query(sql).await.unwrap());
    let got =
        b.c.simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    assert_eq!(common::rows(&got), want, "{sql}");
}

/// Each form of subquery, wherever the statement holds it, answered as one server answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subqueries_no_shard_answers_alone_are_answered_first() {
    let b = start("one_first").await;
    for sql in [
        // A scalar in WHERE, in the select list, in HAVING, and nested in another.
        "select id, balance from accounts where balance > (select avg(balance) from accounts) order by id",
        "select id, (select max(amount) from orders), balance - (select min(balance) from accounts) from accounts where id < 6 order by id",
        "select region, count(*) from accounts group by region having sum(balance) > (select avg(balance) * 9 from accounts) order by region",
        "select id from accounts where balance > (select avg(balance) from accounts where balance < (select max(amount) from orders)) order by id",
        // IN over a subquery with its own order and limit, and over text with quotes.
        "select id, owner from accounts where id in (select id from accounts order by balance desc, id limit 7) order by id",
        "select id from accounts where owner in (select owner from accounts where id % 10 = 3) order by id",
        "select a.id from accounts a where a.id in (select o.order_no * 10 from orders o where o.amount > 40) order by a.id",
        // ANY and ALL.
        "select id from accounts where balance >= all (select balance from accounts where region = 'r2') order by id",
        "select id from accounts where balance < any (select amount from orders where order_no = 1 and amount < 9) order by id",
        // EXISTS, true and false, in WHERE and as a column.
        "select id, exists (select 1 from orders where amount > 80), not exists (select 1 from orders where amount > 80) from accounts where id < 4 order by id",
        "select count(*) from accounts where not exists (select 1 from orders where note = 'none')",
        // Beside a subquery each shard answers (tied by the key).
        "select a.id from accounts a where exists (select 1 from orders o where o.account_id = a.id) and a.balance > (select avg(amount) from orders) order by a.id",
        // An unaliased inner table hides the outer one of its name: `orders.account_id =
        // orders.account_id` compares the inner row with itself and ties nothing.
        "select count(*) from orders where exists (select 1 from orders where orders.account_id = orders.account_id and orders.amount = 90)",
        // Floats, whose text is exact at the default extra_float_digits.
        "select id from accounts where score = (select max(score) from accounts)",
        "select count(*) from accounts where score < (select avg(score) from accounts)",
    ] {
        b.same(sql).await;
    }
    // No rows, NULLs, and an empty set, as PostgreSQL's three-valued logic has them.
    for sql in [
        "select count(*) from accounts where balance > coalesce((select max(amount) from orders where amount < 0), 0)",
        "select (select max(amount) from orders where amount < 0) is null",
        "select id from accounts where id not in (select account_id from orders where amount < 0) order by id limit 3",
        "select id from accounts where region not in (select note from orders) order by id",
        "select id from accounts where region not in (select note from orders where note is not null) order by id limit 4",
        "select count(*) from accounts where balance > all (select amount from orders where amount < 0)",
        "select id from accounts where exists (select 1 from orders where amount < 0)",
    ] {
        same_rows(&b, sql).await;
    }
    // The column names are PostgreSQL's: a scalar subquery's own column's, exists.
    let sql = "select (select max(amount) from orders), exists (select 1 from orders), id from accounts where id = 1";
    let names = |m: Vec<SimpleQueryMessage>| -> Vec<String> {
        m.iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(r) => {
                    Some(r.columns().iter().map(|c| c.name().to_string()).collect())
                }
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(
        names(b.c.simple_query(sql).await.unwrap()),
        names(b.one.simple_query(sql).await.unwrap())
    );
    b.stop().await;
}

/// A scalar subquery of several rows fails as it does on one server, and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scalar_subquery_of_several_rows_fails_as_postgresql_fails() {
    let b = start("one_first_errors").await;
    let sql = "select id from accounts where balance = (select balance from accounts where id < 5)";
    let want = common::code(&b.one.simple_query(sql).await.unwrap_err());
    let got = common::code(&b.c.simple_query(sql).await.unwrap_err());
    assert_eq!((got.as_str(), want.as_str()), ("21000", "21000"));
    b.same("select count(*) from accounts").await;
    b.stop().await;
}

/// What the proxy cannot answer this way is refused: a subquery naming the outer query's
/// columns, one inside a READ COMMITTED transaction block (it and the statement would read two
/// snapshots; REPEATABLE READ reads one), and float answers whose text the session rounds;
/// answers too large to hold fail the statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_needs_the_outer_query_or_two_snapshots_is_refused() {
    let b = start("one_first_refused").await;
    b.refused(
        "select id from accounts a where a.balance > (select avg(o.amount) from orders o where o.order_no = a.id)",
    )
    .await;
    // `balance` is the outer table's, written without its name.
    b.refused(
        "select id from accounts where exists (select 1 from orders o where o.amount > balance)",
    )
    .await;
    let sql =
        "select id from accounts where balance > (select avg(balance) from accounts) order by id";
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
    b.c.batch_execute("set extra_float_digits = 0")
        .await
        .unwrap();
    b.refused("select id from accounts where score = (select max(score) from accounts)")
        .await;
    b.c.batch_execute("reset extra_float_digits").await.unwrap();
    b.same(sql).await;
    // More rows than the proxy holds for a statement (60 of 300 kB): the statement fails, the
    // session goes on.
    let e = b
        .c
        .simple_query("select id from accounts where owner in (select repeat('x', 300000) || id from accounts)")
        .await
        .unwrap_err();
    assert_eq!(common::code(&e), "54000", "{e}");
    b.same(sql).await;
    b.stop().await;
}

/// One snapshot for a subquery and its statement needs the failpoint that holds the proxy
/// between the two, as the README's test command enables.
#[cfg(feature = "failpoints")]
mod one_snapshot {
    use super::common::{self, rig::Rig};

    /// Outside a transaction block, a row changed after the subquery was answered and before
    /// the statement ran is seen by neither: the statement still finds the row the subquery
    /// found, as one PostgreSQL's one snapshot would.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_subquery_and_its_statement_read_one_snapshot() {
        let rig = Rig::new("").await;
        let port = rig.port();
        let mut proxy = rig.proxy(port, "subquery.before_statement=sleep(3000)");
        let c = common::connect(&rig.url(port)).await.unwrap();
        let richest = rig.account_on(1);
        c.batch_execute(&format!(
            "update accounts set balance = balance + 1000 where id = {richest}"
        ))
        .await
        .unwrap();
        let url = rig.url(port);
        let reader = tokio::spawn(async move {
            let r = common::connect(&url).await.unwrap();
            let found = r
                .simple_query(
                    "select id from accounts where balance = (select max(balance) from accounts)",
                )
                .await
                .unwrap();
            common::rows(&found)
        });
        // The proxy holds at the failpoint once the subquery's transaction is open and idle
        // on the richest account's shard.
        let shard = common::connect(&rig.shards[1].url("postgres"))
            .await
            .unwrap();
        common::process::until_idle_in_transaction(&shard, "max(balance)", &proxy).await;
        c.batch_execute(&format!(
            "update accounts set balance = balance + 1000 where id = {richest}"
        ))
        .await
        .unwrap();
        let found = reader.await.unwrap();
        assert_eq!(found, vec![vec![Some(richest.to_string())]]);
        // A statement after it reads the change.
        let now = c
            .simple_query(
                "select id from accounts where balance = (select max(balance) from accounts)",
            )
            .await
            .unwrap();
        assert_eq!(common::rows(&now), found);
        let balance = c
            .simple_query(&format!(
                "select balance from accounts where id = {richest}"
            ))
            .await
            .unwrap();
        assert_eq!(
            common::rows(&balance),
            vec![vec![Some((common::bank::START_BALANCE + 2000).to_string())]]
        );
        proxy.kill();
    }
}

/// With bound parameters (the extended protocol, as drivers that bind on the server send it):
/// the subqueries are answered at Bind with the values they use, the statement runs with the
/// rest, in binary results; a prepared statement runs again with other values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_statements_have_their_subqueries_answered_first() {
    let b = start("one_first_bound").await;
    let ids = |rows: Vec<tokio_postgres::Row>| -> Vec<(i64, String)> {
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    };
    let sql = "select id, owner from accounts where balance > (select avg(balance) from accounts where region = $1) and id > $2 order by id";
    for (region, above) in [("r1", 3i64), ("r4", 40), ("none", 0)] {
        let want = ids(b.one.query(sql, &[&region, &above]).await.unwrap());
        let got = ids(b.c.query(sql, &[&region, &above]).await.unwrap());
        assert_eq!(got, want, "{sql} with {region}, {above}");
    }
    let prepared = b.c.prepare(prepared_text()).await.unwrap();
    let direct = b.one.prepare(prepared_text()).await.unwrap();
    for (region, n, order_no) in [("r2", 4i64, 1i32), ("r5", 9, 2), ("r0", 1, 1)] {
        let want = ids(b
            .one
            .query(&direct, &[&region, &n, &order_no])
            .await
            .unwrap());
        assert!(!want.is_empty(), "{region} {n} {order_no}");
        let got = ids(b
            .c
            .query(&prepared, &[&region, &n, &order_no])
            .await
            .unwrap());
        assert_eq!(got, want, "{region} {n} {order_no}");
    }
    // Column names as PostgreSQL gives them, EXISTS answered too.
    let sql = "select (select max(account_id) from orders where order_no = $1), exists (select 1 from orders where amount > $2::int), id from accounts where id = 7";
    let want = b.one.query_one(sql, &[&2i32, &80i32]).await;
    let got = b.c.query_one(sql, &[&2i32, &80i32]).await;
    let (want, got) = (want.unwrap(), got.unwrap());
    let read = |r: &tokio_postgres::Row| -> (i64, bool, i64) { (r.get(0), r.get(1), r.get(2)) };
    assert_eq!(read(&got), read(&want));
    let names = |r: &tokio_postgres::Row| -> Vec<String> {
        r.columns().iter().map(|c| c.name().to_string()).collect()
    };
    assert_eq!(names(&got), names(&want));
    b.stop().await;
}

fn prepared_text() -> &'static str {
    "select a.id, a.owner from (select * from accounts where region = $1 order by balance desc, id limit $2) a where a.id in (select account_id from orders where order_no = $3) order by a.id"
}

/// A derived table that picks some of every shard's rows (a top-N, then joined, filtered or
/// aggregated) is answered first and read as VALUES of those rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derived_tables_that_limit_their_rows_are_answered_first() {
    let b = start("one_first_derived").await;
    for sql in [
        "select a.id, a.owner, a.balance from (select * from accounts order by balance desc, id limit 12) a order by a.id",
        "select sum(s.balance), count(*) from (select balance from accounts order by balance desc limit 5) s",
        "select t.id, o.order_no, o.amount from (select id from accounts order by score desc nulls last, id limit 6) t join orders o on o.account_id = t.id order by t.id, o.order_no",
        "select x.k, x.\"Owner\" from (select id, owner as \"Owner\" from accounts order by id offset 55) as x (k) order by x.k",
        "select count(*) from (select id from accounts order by id limit 4) a where a.id in (select account_id from orders where amount > 2)",
    ] {
        b.same(sql).await;
    }
    same_rows(
        &b,
        "select * from (select id, balance from accounts where balance < 0 order by id limit 3) a",
    )
    .await;
    b.stop().await;
}

/// A correlated subquery that names the outer table's columns without the table: the proxy
/// reads the tables' columns (in the client's transaction) and writes each such name
/// qualified, as PostgreSQL resolves it, so the subquery is seen to be tied by the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outer_columns_named_without_their_table_are_placed_as_postgresql_places_them() {
    let b = start("one_first_bare").await;
    let tied = [
        "select id from accounts where exists (select 1 from orders o where o.account_id = id and amount > 40) order by id",
        "select id, (select sum(amount) from orders where account_id = id) from accounts where id < 20 order by id",
        "select id, owner from accounts a where 1 < (select count(*) from orders where account_id = id and note is not null) order by 2, 1",
    ];
    for sql in tied {
        b.same(sql).await;
    }
    // Tied, so a READ COMMITTED transaction block answers them too (one statement, one read).
    b.c.batch_execute("begin").await.unwrap();
    for sql in tied {
        b.same(sql).await;
    }
    b.c.batch_execute("commit").await.unwrap();
    // With bound values.
    let sql = "select id from accounts where exists (select 1 from orders where account_id = id and amount > $1::int) order by id";
    let ids =
        |rows: Vec<tokio_postgres::Row>| -> Vec<i64> { rows.iter().map(|r| r.get(0)).collect() };
    let want = ids(b.one.query(sql, &[&30i32]).await.unwrap());
    assert!(!want.is_empty());
    assert_eq!(ids(b.c.query(sql, &[&30i32]).await.unwrap()), want);
    // A column of that name added to the subquery's table in this transaction, uncommitted:
    // PostgreSQL now reads the inner one, and so does the proxy.
    let sql = "select count(*) from accounts where exists (select 1 from orders o where o.account_id = id and owner = 'o''7\\x')";
    let schema_change = "alter table orders add column owner text; update orders set owner = 'o''7\\x' where account_id = 8";
    for c in [&b.one, &b.c] {
        c.batch_execute("begin isolation level repeatable read")
            .await
            .unwrap();
        c.batch_execute(schema_change).await.unwrap();
    }
    let want = common::rows(&b.one.simple_query(sql).await.unwrap());
    let got = common::rows(&b.c.simple_query(sql).await.unwrap());
    assert_eq!(got, want);
    assert_eq!(want, vec![vec![Some("1".to_string())]]);
    for c in [&b.one, &b.c] {
        c.batch_execute("rollback").await.unwrap();
    }
    // Without the column, `owner` is the outer table's again.
    b.same(sql).await;
    let outer = common::rows(&b.c.simple_query(sql).await.unwrap());
    assert_ne!(outer, want);
    b.stop().await;
}

/// Rows whose columns are of types the database created (enums, one in a schema of its own
/// whose names need quotes, arrays of them, a composite, a domain) on shards that number them
/// differently.
const CREATED_TYPES: &str = "
    create type mood as enum ('sad', 'ok', 'happy');
    create schema \"Odd\";
    create type \"Odd\".\"Ring\" as enum ('in', 'out');
    create type pair as (a int, b text);
    create domain positive as numeric check (value > 0);
    create table accounts (id bigint primary key, mood mood, moods mood[], ring \"Odd\".\"Ring\",
                           p pair, price positive, spot point);
    insert into accounts
      select i, (array['sad', 'ok', 'happy'])[i % 3 + 1]::mood,
             array[(array['sad', 'ok'])[i % 2 + 1], 'happy']::mood[],
             (array['in', 'out'])[i % 2 + 1]::\"Odd\".\"Ring\",
             row(i % 4, 'p' || (i % 5))::pair, i * 1.5, point(i / 3.0, i)
      from generate_series(1, 40) i;
    create table orders (account_id bigint, order_no int);";

/// A subquery's answer of a type the database created is written back under the type's name,
/// which each shard reads as its own OID for it: scalar and IN answers of an enum, derived
/// tables holding enums, arrays, a composite and a domain, and PostgREST's read of a whole
/// row in its READ COMMITTED block. Compared as arrays of that type, or under a session whose
/// floats would be rounded, they are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_of_types_the_database_created_are_written_back_by_name() {
    let b = Beside::start("one_first_types", TABLES, CREATED_TYPES).await;
    let postgrest = "with pgrst_source as (select accounts.* from accounts \
         where id < 25 order by price desc, id) \
         select null::bigint as total_result_set, pg_catalog.count(_postgrest_t) as page_total, \
         coalesce(json_agg(_postgrest_t), '[]') as body \
         from (select * from pgrst_source) _postgrest_t";
    for sql in [
        "select id from accounts where mood = (select mood from accounts order by id desc limit 1) order by id",
        "select id, ring from accounts where ring = (select ring from accounts order by id limit 1) and id < 9 order by id",
        "select id from accounts where mood in (select mood from accounts where id in (1, 2)) order by id",
        "select id from accounts where mood <> all (select mood from accounts where id = 3) order by id",
        "select * from (select * from accounts order by price desc limit 5) t order by t.id",
        "select m, n from (select mood m, count(*) n from accounts group by mood) s order by m",
        "select (t.p).b, t.moods[1] from (select p, moods from accounts order by id limit 4) t order by 1, 2",
        "select r, max(id) from (select ring r, id from accounts order by id desc limit 7) s group by r order by r",
        postgrest,
    ] {
        b.same(sql).await;
    }
    b.c.batch_execute("begin isolation level read committed read only")
        .await
        .unwrap();
    b.same(postgrest).await;
    // Bound, as PostgREST sends it: answered at Bind.
    let bound = "select coalesce(json_agg(_postgrest_t), '[]')::text \
         from (select * from accounts where id < $1 order by price desc, id) _postgrest_t";
    let want: String = b.one.query_one(bound, &[&20i64]).await.unwrap().get(0);
    let got: String = b.c.query_one(bound, &[&20i64]).await.unwrap().get(0);
    assert_eq!(got, want);
    assert!(want.contains("\"ring\":\"out\""), "{want}");
    b.c.batch_execute("commit").await.unwrap();
    // Arrays compared with IN or ANY: the answer would read as one array of their elements.
    b.refused(
        "select id from accounts where moods = any (select moods from accounts where id < 3)",
    )
    .await;
    // Rounded floats, inside a point or a composite, would not read back as the same values;
    // an enum holds none.
    b.c.batch_execute("set extra_float_digits = 0")
        .await
        .unwrap();
    b.refused("select * from (select id, spot from accounts order by id limit 3) t")
        .await;
    b.refused("select * from (select id, p from accounts order by id limit 3) t")
        .await;
    b.same("select m, n from (select mood m, count(*) n from accounts group by mood) s order by m")
        .await;
    b.c.batch_execute("reset extra_float_digits").await.unwrap();
    b.same("select * from (select id, spot, p from accounts order by id limit 3) t order by id")
        .await;
    b.stop().await;
}

/// Windows not partitioned by the shard key, over one table: its rows (those its WHERE keeps,
/// or every one when the WHERE calls a function that may answer otherwise twice) are read first, and one server computes the windows over them, as
/// it would over the table: ranks per region, running sums, named windows, the top rows per
/// region through a derived table, bound values, and inside a READ COMMITTED block (one read).
/// Joined tables keep the refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_over_one_tables_rows_read_first() {
    let b = start("one_first_windows").await;
    for sql in [
        "select id, region, rank() over (partition by region order by balance desc, id) from accounts order by id",
        "select id, row_number() over (order by score desc nulls last, id) rn, \
           sum(balance) over (partition by region order by id rows between 1 preceding and current row) \
           from accounts where balance > 20 order by id limit 15",
        "select * from (select id, region, row_number() over (partition by region order by balance desc, id) rn \
           from accounts) s where rn <= 2 order by region, rn",
        "select owner, lag(balance) over w, lead(id) over w from accounts a where a.id < 30 \
           window w as (partition by owner order by id) order by id",
        "select id, dense_rank() over (partition by length(owner) order by region) from accounts \
           where length(owner) > 3 and id % 2 = 0 order by id",
        "select id, percent_rank() over (order by balance, id) from accounts where balance > random() - 1 order by id",
    ] {
        b.same(sql).await;
    }
    // Bound, as drivers send it.
    let sql = "select id::text, (rank() over (partition by region order by balance, id))::text \
               from accounts where id > $1 order by id";
    let want: Vec<(String, String)> = b
        .one
        .query(sql, &[&40i64])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let got: Vec<(String, String)> =
        b.c.query(sql, &[&40i64])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
    assert_eq!(got, want);
    assert_eq!(want.len(), 20);
    // One read: a READ COMMITTED block may have it.
    b.c.batch_execute("begin").await.unwrap();
    b.same("select id, ntile(3) over (partition by region order by id) from accounts order by id")
        .await;
    b.c.batch_execute("commit").await.unwrap();
    b.refused(
        "select a.id, rank() over (partition by a.region order by o.amount) from accounts a \
         join orders o on o.account_id = a.id",
    )
    .await;
    // A cursor over such a query is not read first: refused, the session goes on.
    b.c.batch_execute("begin").await.unwrap();
    let e = b
        .c
        .batch_execute("declare w cursor for select id, rank() over (partition by region order by id) from accounts")
        .await
        .unwrap_err();
    assert_eq!(common::code(&e), "0A000", "{e}");
    b.c.batch_execute("rollback").await.unwrap();
    b.same("select id, ntile(2) over (partition by region order by id) from accounts order by id")
        .await;
    b.stop().await;
}

/// Windows over groups of one table's rows (a region's rank by its total, a running total of
/// groups, the top groups through a derived table, as BI tools and Django's `Window` over
/// `values().annotate()` write them): the groups are made of several shards' rows, so the rows
/// are read first and one server groups them and computes the windows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_over_groups_of_one_tables_rows_read_first() {
    let b = start("one_first_grouped_windows").await;
    for sql in [
        "select region, sum(balance) s, rank() over (order by sum(balance) desc) from accounts \
           group by region order by 3, 1",
        "select * from (select region, sum(balance) s, rank() over (order by sum(balance) desc) r \
           from accounts group by region) x where r <= 2 order by r, region",
        "select region, count(*), sum(count(*)) over (order by region) from accounts \
           where score is not null group by region having count(*) > 5 order by region",
        "select owner, max(balance), row_number() over (order by max(balance) desc, owner) \
           from accounts where id > 7 group by owner order by 3",
        "select distinct region, count(*) over (partition by region) from accounts order by 1",
        "select sum(balance), rank() over (order by sum(balance)) from accounts",
    ] {
        b.same(sql).await;
    }
    // Grouped by the shard key too: still the one server's groups and ranks.
    b.same(
        "select id, sum(balance), dense_rank() over (order by sum(balance) desc, id) from accounts \
         group by id order by 3 limit 5",
    )
    .await;
    b.stop().await;
}
