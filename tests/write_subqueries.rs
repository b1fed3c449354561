//! UPDATE and DELETE whose subqueries read every shard and name nothing of the write: the
//! subqueries answered first, the write then run where its own conditions send it. On three
//! unlike shards beside one PostgreSQL holding the same rows, each write's count and RETURNING
//! rows and the tables after it compared with what the one server does.

mod common;

use common::beside::Beside;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, IsolationLevel};

/// Orders placed by their own id: a customer's orders lie on every shard.
const TABLES: &str = "[tables.customers]\nshard_key = \"id\"\nkey_type = \"bigint\"\n\
                      [tables.orders]\nshard_key = \"id\"\nkey_type = \"bigint\"\n\
                      [tables.regions]\nreference = true\n\
                      [tables.notes]\nshard_key = \"id\"\nkey_type = \"bigint\"\n";

const SCHEMA: &str = "
create table customers (id bigint primary key, name text, banned bool, score numeric);
create table orders (id bigint primary key, customer_id bigint, total numeric, note text);
create table regions (id int primary key, busiest bigint, orders bigint);
insert into customers select i, 'c' || i, i % 7 = 0, i * 1.5 from generate_series(1, 60) i;
insert into orders select i, case when i % 17 = 0 then null else (i * 7) % 70 end, (i * 13) % 250,
    case when i % 3 = 0 then 'x' end
  from generate_series(1, 200) i;
insert into regions values (1, null, null), (2, null, null);
create table notes (id bigserial primary key, body text, n numeric);
";

/// `sql` does through the proxy what it does on the one server, and writes some rows.
async fn written(b: &Beside, sql: &str) {
    let want = common::outcome(&b.one, sql).await;
    assert!(
        want.as_ref()
            .is_ok_and(|(_, counts)| counts.iter().any(|n| *n > 0)),
        "{sql}: the one server wrote rows: {want:?}"
    );
    assert_eq!(common::outcome(&b.c, sql).await, want, "{sql}");
}

async fn tables_alike(b: &Beside) {
    b.same("select * from customers order by id").await;
    b.same("select * from orders order by id").await;
    b.same("select * from regions order by id").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_answer_their_subqueries_over_every_shard_first() {
    let b = Beside::start("write_subqueries", TABLES, SCHEMA).await;
    for sql in [
        // IN and NOT IN of another sharded table's values, NULLs among them.
        "update orders set note = 'banned' where customer_id in (select id from customers where banned)",
        "delete from orders where customer_id not in (select id from customers where score > 20) returning id, total",
        // A comparison with an aggregate of the written table itself, read before the write.
        "update customers set score = score + 1 where score > (select avg(total) from orders) / 3 returning id, score",
        "delete from customers where score < (select min(total) from orders where total > 0) + 3",
        // EXISTS correlated by an equality off the key, and a reference table set from
        // aggregates over every shard (every copy gets the same values).
        "update customers c set name = name || '!' where exists (select 1 from orders o where o.customer_id = c.id and o.total > 200)",
        "update regions set busiest = (select customer_id from orders where customer_id is not null group by customer_id order by count(*) desc, customer_id limit 1), orders = (select count(*) from orders) where id = 1",
        // INSERT ... VALUES: a value, the shard key itself, rows of several shards, a
        // reference table's copies, ON CONFLICT's SET and RETURNING (read before the insert,
        // as one server's statement snapshot is).
        "insert into orders (id, customer_id, total, note) values (5000, 3, (select max(total) from orders), 'max')",
        "insert into orders (id, customer_id, total) values ((select max(id) + 1 from orders), 4, 1) returning id, total",
        "insert into customers (id, name, score) values (5001, 'a', (select avg(score) from customers)), (5002, 'b', (select min(total) from orders)), (5003, 'c', 1) returning id, name, score",
        "insert into regions (id, busiest, orders) values (3, (select max(customer_id) from orders), (select count(*) from orders))",
        "insert into customers (id, name, score) values (1, 'dup', 0) on conflict (id) do update set score = (select max(total) from orders) returning id, score",
        "insert into orders (id, customer_id, total) values (5004, 1, 2) returning id, (select count(*) from orders) as before",
    ] {
        written(&b, sql).await;
        tables_alike(&b).await;
    }
    // A key the cluster's sequence fills (its values are the proxy's own, so only the other
    // columns are compared), beside a value answered first.
    written(
        &b,
        "insert into notes (body, n) values ('count', (select count(*) from orders)), ('sum', (select sum(total) from orders))",
    )
    .await;
    b.same("select body, n from notes order by body").await;
    assert_eq!(
        common::answer(
            &b.c,
            "select count(distinct id) from notes where id is not null"
        )
        .await,
        vec![vec![Some("2".to_string())]]
    );
    // In a REPEATABLE READ block, after a write of its own the subquery sees.
    for c in [&b.one, &b.c] {
        c.batch_execute(
            "begin isolation level repeatable read;
             insert into orders values (1000, 3, 999, 'late');
             update customers set banned = true where id in (select customer_id from orders where total > 900);
             commit",
        )
        .await
        .unwrap();
    }
    tables_alike(&b).await;
    // A READ COMMITTED block takes a snapshot per statement: refused there, nothing written.
    b.c.batch_execute("begin").await.unwrap();
    let e =
        b.c.simple_query(
            "delete from orders where customer_id in (select id from customers where banned)",
        )
        .await
        .unwrap_err();
    assert_eq!(common::code(&e), "0A000", "{e}");
    b.c.batch_execute("rollback").await.unwrap();
    // A subquery that names the write keeps the refusal.
    b.refused(
        "update orders o set total = (select max(score) from customers c where c.name = o.note)",
    )
    .await;
    tables_alike(&b).await;
    b.stop().await;
}

/// The rows (as text) and count a bound write answers, or its SQLSTATE.
async fn bound_outcome(
    c: &Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<String>, String> {
    let rows = c.query(sql, params).await.map_err(|e| common::code(&e))?;
    let mut out: Vec<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    out.sort();
    Ok(out)
}

/// `sql`, bound to `params` (the extended protocol), does through the proxy what it does on
/// the one server; it returns `id::text` of the rows it writes, and writes some.
async fn written_bound(b: &Beside, sql: &str, params: &[&(dyn ToSql + Sync)]) {
    let want = bound_outcome(&b.one, sql, params).await;
    assert!(
        want.as_ref().is_ok_and(|rows| !rows.is_empty()),
        "{sql}: the one server wrote rows: {want:?}"
    );
    assert_eq!(bound_outcome(&b.c, sql, params).await, want, "{sql}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_writes_answer_their_subqueries_at_bind() {
    let mut b = Beside::start("write_subqueries_bound", TABLES, SCHEMA).await;
    // Values inside the subquery only, outside it only, and on both sides (the write keeps
    // the ones outside, renumbered).
    written_bound(
        &b,
        "update orders set note = 'bound' where customer_id in (select id from customers where score > $1::int) returning id::text",
        &[&40i32],
    )
    .await;
    written_bound(
        &b,
        "update customers set score = score + $1::int where score > (select avg(total) from orders) / $2::int returning id::text",
        &[&2i32, &3i32],
    )
    .await;
    written_bound(
        &b,
        "delete from orders where customer_id in (select id from customers where id > $1) and total > $2::int returning id::text",
        &[&20i64, &100i32],
    )
    .await;
    written_bound(
        &b,
        "insert into orders (id, customer_id, total) values ($1, $2, (select max(total) from orders where customer_id <> $2)) returning id::text",
        &[&7000i64, &9i64],
    )
    .await;
    // A reference table: every copy written with the same answer.
    written_bound(
        &b,
        "update regions set orders = (select count(*) from orders where total > $1::int) where id = $2 returning id::text",
        &[&100i32, &2i32],
    )
    .await;
    let copies =
        b.tc.count_on_each_shard("select orders from regions where id = 2")
            .await;
    assert!(
        copies.iter().all(|n| *n > 0 && *n == copies[0]),
        "{copies:?}"
    );
    // Rows of several shards, each taking its own bound values.
    written_bound(
        &b,
        "insert into customers (id, name, score) values ($1, $3, (select avg(total) from orders where customer_id > $4)), ($2, $3 || '2', 1) returning id::text",
        &[&7001i64, &7002i64, &"bound", &10i64],
    )
    .await;
    tables_alike(&b).await;
    // One prepared statement run twice with other values: each Bind answers the subquery
    // again, with its own values.
    let sql = "update orders set total = total + 1 where customer_id not in (select id from customers where id < $1 and id is not null) and customer_id is not null and id % $2 = 0";
    for c in [&b.one, &b.c] {
        let st = c.prepare(sql).await.unwrap();
        for (below, every) in [(30i64, 3i64), (50, 4)] {
            assert!(
                c.execute(&st, &[&below, &every]).await.unwrap() > 0,
                "{sql}"
            );
        }
    }
    tables_alike(&b).await;
    // In a REPEATABLE READ block the block's snapshot serves both; in a READ COMMITTED one
    // the write is refused and nothing is written.
    let sql = "update customers set name = name || '?' where id in (select customer_id from orders where total > $1::int)";
    for c in [&mut b.one, &mut b.c] {
        let t = c
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .start()
            .await
            .unwrap();
        t.execute("insert into orders values (2000, 5, 990, 'late')", &[])
            .await
            .unwrap();
        assert!(t.execute(sql, &[&980i32]).await.unwrap() > 0);
        t.commit().await.unwrap();
    }
    tables_alike(&b).await;
    let t = b.c.transaction().await.unwrap();
    let e = t.execute(sql, &[&0i32]).await.unwrap_err();
    assert_eq!(common::code(&e), "0A000", "{e}");
    t.rollback().await.unwrap();
    tables_alike(&b).await;
    b.stop().await;
}

/// The shard that owns customer `id`, as the proxy routes it.
async fn shard_of(b: &Beside, id: i64) -> String {
    let route = common::answer(&b.c, &format!("show shardgate.route customers {id}")).await;
    route[0][3].clone().unwrap()
}

/// `one_shot` without its Sync: one statement of a longer batch.
fn unsynced<S: AsRef<str>>(sql: &str, params: &[S]) -> Vec<u8> {
    let mut m = common::raw::one_shot(sql, &[], params);
    m.truncate(m.len() - 5);
    m
}

/// A write whose subqueries read every shard, as the first statement of an implicit
/// transaction (a query of several statements; an extended-protocol batch that writes on
/// several shards up to its Sync): that transaction takes the one snapshot both parts need.
/// After other statements of it, which each took a snapshot of their own, it is refused with
/// the reason and what to do, and nothing of the transaction is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_answered_first_open_implicit_transactions() {
    let b = Beside::start("write_subqueries_implicit", TABLES, SCHEMA).await;
    let (one, mut other) = (1i64, 2i64);
    while shard_of(&b, other).await == shard_of(&b, one).await {
        other += 1;
    }
    written(
        &b,
        &format!(
            "update orders set note = 'first' where customer_id in (select id from customers where banned); \
             update customers set name = name || '!' where id in ({one}, {other})"
        ),
    )
    .await;
    tables_alike(&b).await;

    let later = format!(
        "update customers set name = name || '?' where id in ({one}, {other}); \
         update orders set note = 'later' where customer_id in (select id from customers where banned)"
    );
    let e = b.c.simple_query(&later).await.unwrap_err();
    let e = e.as_db_error().expect("a refusal");
    assert_eq!(e.code().code(), "0A000", "{e:?}");
    assert!(e.message().contains("implicit"), "{e:?}");
    assert!(e.hint().is_some_and(|h| h.contains("of its own")), "{e:?}");
    tables_alike(&b).await;

    // The same in one extended-protocol batch: the subquery's write first, then single-row
    // writes on two shards, one Sync.
    let subquery = "update orders set total = total + 1 where customer_id in (select id from customers where banned and id > $1)";
    let row = "update customers set score = 0 where id = $1";
    let mut batch = unsynced(subquery, &["10".to_string()]);
    batch.extend(unsynced(row, &[one.to_string()]));
    batch.extend(unsynced(row, &[other.to_string()]));
    batch.extend(common::raw::message(b'S', &[]));
    let (mut raw, _) = common::raw::Raw::login(b.tc.port).await;
    raw.send(&batch).await;
    let answers = raw.until_ready().await;
    let errors: Vec<_> = answers
        .iter()
        .filter(|(t, _)| *t == b'E')
        .map(|(_, body)| common::raw::field(body, b'M'))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(answers.iter().filter(|(t, _)| *t == b'C').count(), 3);
    b.one
        .batch_execute(&format!(
            "begin; update orders set total = total + 1 where customer_id in (select id from customers where banned and id > 10); \
             update customers set score = 0 where id in ({one}, {other}); commit"
        ))
        .await
        .unwrap();
    tables_alike(&b).await;

    // Single-row writes first: the subquery's write is refused, and the batch's implicit
    // transaction rolls back on every shard.
    let mut batch = unsynced(row, &[one.to_string()]);
    batch.extend(unsynced(row, &[other.to_string()]));
    batch.extend(unsynced(subquery, &["10".to_string()]));
    batch.extend(common::raw::message(b'S', &[]));
    raw.send(&batch).await;
    let answers = raw.until_ready().await;
    let error = answers
        .iter()
        .find(|(t, _)| *t == b'E')
        .map(|(_, body)| body)
        .expect("a refusal");
    assert_eq!(common::raw::field(error, b'C').as_deref(), Some("0A000"));
    let message = common::raw::field(error, b'M').unwrap_or_default();
    assert!(message.contains("implicit"), "{message}");
    tables_alike(&b).await;
    drop(raw);
    b.stop().await;
}
