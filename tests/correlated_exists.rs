//! `[NOT] EXISTS` correlated to the outer query by equalities that are not the shard key (a
//! foreign key to a table placed by another key, one column or several), as Django's
//! `Exists(OuterRef(...))` and SQLAlchemy's `any()` write it: read as the inner values first,
//! then tested with an IN that keeps EXISTS's true-or-false answer, NULL outer values and NULL
//! inner values included; and the row and array comparisons with IN that this reads through,
//! written by the client. On three unlike shards beside one PostgreSQL holding the same rows.

mod common;

use common::beside::Beside;

/// Orders are placed by their own id: a customer's orders lie on every shard.
const TABLES: &str = "[tables.customers]\nshard_key = \"id\"\nkey_type = \"bigint\"\n\
                      [tables.orders]\nshard_key = \"id\"\nkey_type = \"bigint\"\n";

const SCHEMA: &str = "
create table customers (id bigint primary key, name text, region int);
create table orders (id bigint primary key, customer_id bigint, total numeric, note text, region int);
insert into customers select i, 'c' || i, i % 4 from generate_series(1, 60) i;
insert into customers values (61, null, null);
insert into orders select i, case when i % 17 = 0 then null else (i * 7) % 70 end, (i * 13) % 250,
    case when i % 3 = 0 then 'x' end, case when i % 11 <> 0 then i % 4 end
  from generate_series(1, 200) i;
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exists_correlated_off_the_key_reads_the_inner_values_first() {
    let b = Beside::start("one_correlated_exists", TABLES, SCHEMA).await;
    for sql in [
        "select id from customers c where exists (select 1 from orders o where o.customer_id = c.id and o.total > 200) order by id",
        "select id from customers c where not exists (select 1 from orders o where o.customer_id = c.id and o.total > 100) order by id",
        // Django's form: parenthesized outer column, LIMIT 1, in the select list.
        "select id, exists (select 1 as a from orders u0 where u0.customer_id = (c.id) limit 1) as e from customers c order by id",
        "select id, not exists (select * from orders where orders.customer_id = c.id) from customers c order by id",
        // NULL outer values (region of customer 61) and NULL inner values (customer_id).
        "select id from customers c where not exists (select 1 from orders o where o.customer_id = c.region) order by id",
        "select id, exists (select 1 from orders o where c.region = o.customer_id and o.note is null) from customers c order by id",
        // Under OR, NOT, in a grouped query, and tied by a cast.
        "select count(*) from customers c where c.region = 1 or exists (select 1 from orders o where c.id = o.customer_id and o.note is null)",
        "select id from customers c where not (exists (select 1 from orders o where o.customer_id = c.id)) order by id",
        "select c.region, count(*) from customers c where exists (select 1 from orders o where o.customer_id = c.id) group by c.region order by 1",
        "select id from customers c where exists (select 1 from orders o where o.customer_id::text = (c.id)::text and o.total < 50) order by id",
        // The outer side an expression of outer columns.
        "select id, exists (select 1 from orders o where o.customer_id = c.id + 1 and o.total > 100) from customers c order by id",
        "select id from customers c where not exists (select 1 from orders o where o.customer_id = coalesce(c.region, 0) * 10) order by id",
        // Several equalities: a row compared with rows, NULL regions on both sides.
        "select id from customers c where exists (select 1 from orders o where o.customer_id = c.id and o.region = c.region) order by id",
        "select id from customers c where not exists (select 1 from orders o where c.region = o.region and o.customer_id = c.id and o.total > 50) order by id",
        "select id, exists (select 1 from orders o where o.region = c.region and o.customer_id = c.id + 1) as e from customers c order by id",
        // The same comparisons written by the client: rows and arrays with [NOT] IN.
        "select id from customers c where (c.id, c.region) in (select customer_id, region from orders where total > 20) order by id",
        "select id from customers c where (c.id, c.region) not in (select customer_id, region from orders where note = 'x') order by id",
        "select id, (c.region, c.id) in (select region, customer_id from orders) from customers c order by id",
        "select id from customers c where array[c.region, 1] in (select array[region, 1] from orders where total < 40) order by id",
    ] {
        b.same(sql).await;
    }
    // Bound values, answered at Bind.
    let sql = "select id from customers c where exists (select 1 from orders o where o.customer_id = c.id and o.note = $1) and c.region <> $2 order by id";
    let ids =
        |rows: Vec<tokio_postgres::Row>| -> Vec<i64> { rows.iter().map(|r| r.get(0)).collect() };
    let want = ids(b.one.query(sql, &[&"x", &2i32]).await.unwrap());
    assert!(!want.is_empty());
    assert_eq!(
        ids(b.c.query(sql, &[&"x", &2i32]).await.unwrap()),
        want,
        "{sql}"
    );
    // Correlated by another comparison beside the equality, or by it alone: still refused.
    for sql in [
        "select id from customers c where exists (select 1 from orders o where o.customer_id = c.id and o.total > c.region)",
        "select id from customers c where exists (select 1 from orders o where o.customer_id > c.id)",
    ] {
        b.refused(sql).await;
    }
    // Two reads need one snapshot: refused in a READ COMMITTED transaction block, as other
    // subqueries read first are.
    b.c.batch_execute("begin").await.unwrap();
    let e = b
        .c
        .simple_query("select id from customers c where exists (select 1 from orders o where o.customer_id = c.id)")
        .await
        .unwrap_err();
    assert_eq!(common::code(&e), "0A000", "{e}");
    b.c.batch_execute("rollback").await.unwrap();
    b.stop().await;
}
