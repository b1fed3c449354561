//! Grouped queries over several shards compared with one PostgreSQL holding the same rows:
//! HAVING's forms, aggregates HAVING and ORDER BY read without selecting them, distinct counts
//! filtered or beside constants, and the count of a grouped query's groups. Each runs on three
//! unlike shards, with rows of every group on more than one shard.

mod common;

use common::beside::Beside;
use common::rows;

const TABLES: &str = "[tables.accounts]\nshard_key = \"id\"\nkey_type = \"bigint\"\n";

/// `accounts (id bigint primary key, region text, kind int, balance numeric)` holds ids 1 to
/// 70 in seven regions (`'r' || (i % 7)`), with the kind and balance of id `i` as the
/// expressions say, through the proxy and on the one server alike.
async fn start(name: &'static str, kind: &str, balance: &str) -> Beside {
    let schema = format!(
        "create table accounts (id bigint primary key, region text, kind int, balance numeric);
         insert into accounts select i, 'r' || (i % 7), {kind}, {balance} from generate_series(1, 70) i"
    );
    Beside::start(name, TABLES, &schema).await
}

/// The count of a grouped query's groups kept by HAVING (a paginator's count over an
/// annotated, filtered query) with the HAVING value bound, as drivers that bind on the server
/// send it: each group is merged across shards before HAVING keeps or drops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_kept_by_a_bound_having_are_counted_across_shards() {
    let b = start("one_kept_count", "i % 2", "i * 1.5").await;
    for (sql, value) in [
        // Every region has 10 rows, spread over the shards: no shard alone holds more than
        // 6 of one, so a count of each shard's kept groups would be 0.
        ("select count(*) from (select region, count(*) from accounts group by region having count(*) > $1) s", 6i64),
        ("select count(*) from (select region, sum(balance) as total from accounts group by region having max(id) >= $1) s", 68),
        ("select count(*) from (select region, kind, count(*) as n from accounts where id > $1 group by region, kind having count(*) > 2) s", 10),
    ] {
        let want: i64 = b.one.query_one(sql, &[&value]).await.unwrap().get(0);
        let got: i64 = b.c.query_one(sql, &[&value]).await.unwrap().get(0);
        assert_eq!(got, want, "{sql} with {value}");
        assert!(want > 0, "{sql}: the groups kept must not be none");
    }
    b.stop().await;
}

/// A constant beside count(DISTINCT ...) without GROUP BY: the merge makes the answer row
/// itself, so the constant is evaluated after it, and comes back as PostgreSQL writes it,
/// also when no shard has a row to count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constants_beside_a_distinct_count_come_back_as_written() {
    let b = start("one_distinct_constant", "i % 2", "i * 1.5").await;
    for filter in ["", " where id > 1000", " where kind = 1"] {
        for items in [
            "count(distinct region), 'total'",
            "1, count(distinct kind), null, -2.5",
            "count(distinct region) + 1, 'k'::text, 1 + 2, true",
            "count(distinct region) as n, 'x' as label, sum(balance)",
        ] {
            b.same(&format!("select {items} from accounts{filter}"))
                .await;
        }
    }
    // Bound, with the constant a parameter; the column names and types are PostgreSQL's.
    let sql = "select count(distinct region), $1::text as label, 7 from accounts where id > $2";
    for bound in [0i64, 1000] {
        let want = b.one.query_one(sql, &[&"all", &bound]).await.unwrap();
        let got = b.c.query_one(sql, &[&"all", &bound]).await.unwrap();
        let read =
            |r: &tokio_postgres::Row| -> (i64, String, i32) { (r.get(0), r.get(1), r.get(2)) };
        assert_eq!(read(&got), read(&want), "{sql} with {bound}");
        let names = |r: &tokio_postgres::Row| -> Vec<String> {
            r.columns().iter().map(|c| c.name().to_string()).collect()
        };
        assert_eq!(names(&got), names(&want));
    }
    b.stop().await;
}

/// HAVING over a boolean aggregate: compared with `true` or `false` (as Django writes a
/// filter on one), alone, or negated, merged across shards before the condition is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn having_a_boolean_aggregate_keeps_the_groups_one_postgresql_keeps() {
    // Within each region some rows are big and some not, on different shards: a shard alone
    // would see some regions as all big.
    let b = start(
        "one_bool_having",
        "i % 2",
        "case when i % 5 = 0 then null else i * 1.5 end",
    )
    .await;
    for having in [
        "bool_and(balance > 20) = false",
        "bool_or(balance > 100) = true",
        "every(kind = 1) = false and count(*) > 3",
        "bool_and(balance > 9)",
        "not bool_or(balance > 99)",
        "(every(balance < 100))",
        "not (bool_and(balance > 20))",
    ] {
        b.same(&format!(
            "select region, count(*) from accounts where id > 2 group by region having {having} order by region"
        ))
        .await;
    }
    b.stop().await;
}

/// HAVING and ORDER BY over an avg or a count(DISTINCT ...) the select list leaves out (as
/// Django's `alias()` then `filter()` writes them): carried as hidden columns and merged as
/// selected ones are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unselected_averages_and_distinct_counts_filter_and_sort_groups() {
    let b = start(
        "one_unselected",
        "case when i % 7 < 3 then 1 else i % 3 end",
        "i * 1.5",
    )
    .await;
    for sql in [
        "select region, count(*) from accounts group by region having avg(balance) > 52 order by region",
        "select region from accounts group by region having count(distinct kind) > 1 order by region",
        "select region, max(id) from accounts group by region order by avg(balance) desc, region",
        "select region, count(*) from accounts group by region order by count(distinct kind), region",
        "select region from accounts group by region having avg(balance::float8) < 53.5 order by region",
        // A decimal cast as SQLAlchemy binds one, against numeric and float columns.
        "select region from accounts group by region having sum(balance) > 530.25::numeric order by region",
        "select region from accounts group by region having avg(balance::float8) > 53.5::numeric order by region",
        "select region, count(distinct kind) from accounts where id > 5 group by region having count(distinct id % 4) > 3 and avg(id) > 34 order by 1",
    ] {
        b.same(sql).await;
    }
    // Without GROUP BY the merge makes the answer row; under grouping sets a distinct count
    // is refused selected or not.
    b.refused("select count(*) from accounts having count(distinct kind) > 1")
        .await;
    b.refused("select region, count(*) from accounts group by rollup(region) having count(distinct kind) > 1")
        .await;
    b.stop().await;
}

/// HAVING and ORDER BY over an item computed from aggregates that the select list leaves
/// out: computed after the merge from hidden parts, as a selected one is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unselected_items_computed_over_aggregates_filter_and_sort_groups() {
    let b = start("one_unselected_computed", "i % 3", "i * 1.5").await;
    for sql in [
        "select region, count(*) from accounts group by region having sum(balance) / count(*) > 53 order by region",
        "select region from accounts group by region having count(*)::int * 2 > 19 and max(id) - min(id) >= 63 order by region",
        "select region, kind from accounts group by region, kind order by max(id) - min(id) desc, sum(balance) / count(*), region, kind",
        "select kind, count(*) from accounts group by kind having round(sum(balance) / count(*), 1) < 54 order by kind",
    ] {
        b.same(sql).await;
    }
    // Bound.
    let sql = "select kind from accounts group by kind having max(id) - min(id) > $1 order by kind";
    let read =
        |rows: Vec<tokio_postgres::Row>| -> Vec<i32> { rows.iter().map(|r| r.get(0)).collect() };
    let want = read(b.one.query(sql, &[&67i64]).await.unwrap());
    assert!(!want.is_empty() && want.len() < 3, "{want:?}");
    assert_eq!(read(b.c.query(sql, &[&67i64]).await.unwrap()), want);
    // Averages and distinct counts among the parts.
    b.same(
        "select region from accounts group by region having avg(balance) * 2 > 106 order by region",
    )
    .await;
    b.same("select kind, count(*) from accounts group by kind order by round(avg(balance) - min(balance), 3) desc, avg(balance::float8) - min(id), kind")
        .await;
    b.same("select region from accounts group by region having count(distinct kind) filter (where id % 4 = 0) * 2 > 4 or region = 'r1' order by region")
        .await;
    b.same("select count(distinct region) from accounts having count(distinct region) > 2")
        .await;
    b.stop().await;
}

/// count(DISTINCT x) FILTER (WHERE ...), as Django writes `Count("x", distinct=True,
/// filter=Q(...))`: the values the filter keeps, counted across shards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_distinct_counts_count_the_values_the_filter_keeps() {
    let b = start(
        "one_filtered_distinct",
        "i % 5",
        "case when i % 9 = 0 then null else i * 1.5 end",
    )
    .await;
    for sql in [
        "select count(distinct kind) filter (where balance > 50) from accounts",
        "select count(distinct kind) filter (where id > 1000), count(*) from accounts",
        "select region, count(distinct kind) filter (where balance < 60), count(distinct kind) from accounts group by region order by region",
        "select kind, count(distinct region) filter (where balance is null or id % 2 = 0) as n from accounts group by kind having count(distinct region) filter (where id > 20) > 5 order by kind",
    ] {
        b.same(sql).await;
    }
    // Row values are not among the types the merge compares, filtered or not.
    b.refused("select count(distinct (region, kind)) filter (where id > 3) from accounts")
        .await;
    b.stop().await;
}

/// bit_or, bit_and and bit_xor of integers: the shards' partials combined, NULLs skipped, in
/// text and in binary at each integer width; over bit strings refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitwise_aggregates_of_integers_combine_across_shards() {
    let b = start(
        "one_bits",
        "case when i % 11 = 0 then null else (i * 37) % 64 end",
        "i * 1.5",
    )
    .await;
    for sql in [
        "select bit_or(kind), bit_and(kind | 1), bit_or(id), bit_and(-id), bit_or(kind::int2), bit_xor(kind), bit_xor(id) from accounts",
        "select region, bit_or(kind), bit_and(kind), bit_xor(kind::int2) from accounts group by region order by region",
        "select region, count(*) from accounts group by region having bit_or(kind) > 60 order by bit_and(id), region",
        "select bit_or(kind), count(*) from accounts where id > 1000",
    ] {
        b.same(sql).await;
    }
    // Binary results, as tokio-postgres asks for them.
    let sql = "select region, bit_or(kind::int2), bit_and(kind), bit_or(id) from accounts group by region order by region";
    type Bits = (String, Option<i16>, Option<i32>, Option<i64>);
    let read = |rows: Vec<tokio_postgres::Row>| -> Vec<Bits> {
        rows.iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()
    };
    let want = read(b.one.query(sql, &[]).await.unwrap());
    assert_eq!(want.len(), 7);
    assert_eq!(read(b.c.query(sql, &[]).await.unwrap()), want);
    b.refused("select bit_or(kind::bit(8)) from accounts").await;
    b.stop().await;
}

/// Columns named through the table in one place and bare in another, as ORMs write them
/// (Sequelize groups by `"region"` and orders by `"Account"."region"`): over one table both
/// are the same column, grouped, selected, filtered and sorted alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_named_with_and_without_its_table_is_one_group_column() {
    let b = start("one_qualified", "i % 4", "i * 2.5").await;
    for sql in [
        r#"SELECT "region", count("id") AS "n", sum("balance") AS "t" FROM "accounts" AS "Account" GROUP BY "region" ORDER BY "Account"."region" ASC"#,
        "select accounts.region, count(*) from accounts group by region order by accounts.region desc",
        "select region, kind, max(balance) from accounts a group by a.region, a.kind having min(a.id) > 2 order by a.kind, region",
        "select distinct a.kind from accounts a order by kind",
        // A bare ORDER BY name means the output column: `lower(a.region) AS region`.
        "select lower(a.region) as region, count(*) from accounts a group by a.region order by region desc",
    ] {
        b.same(sql).await;
    }
    b.stop().await;
}

/// A bare ORDER BY (or DISTINCT ON) name means the output column named so first, also one
/// named without an alias (`kind::text` is named `kind`): sorted as text, not as the integer
/// column. The shards sort so; a merge sorting by the table's column would interleave their
/// rows out of order. Output names come before an item that holds the column itself, and an
/// item after a `*` is sorted by its own expression (its position is not known).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_sort_name_means_the_output_column_named_so() {
    let b = start("one_output_names", "i % 12", "i * 0.5").await;
    for sql in [
        "select kind::text from accounts where id < 40 order by kind, id",
        "select id, kind::text from accounts where id < 40 order by kind desc, id limit 15",
        "select distinct on (kind) kind::text, id from accounts order by kind, id",
        "select distinct kind::text from accounts order by kind",
        "select kind::text, count(*) from accounts group by kind order by kind",
        "select kind::text, sum(balance) from accounts group by kind order by kind desc limit 4",
        // Named by an alias, or an input column under another output name: the integer.
        "select kind::text as k, count(*) from accounts group by kind order by kind",
        "select id, kind::text as k from accounts where id < 30 order by kind, id",
        // An output name comes before an item holding the column itself.
        "select kind as x, kind::text from accounts where id < 30 order by kind desc, id",
        "select id, kind as k, balance::text as kind from accounts where id < 30 order by kind, id",
        // After a `*`, where the item's position is not known: sorted by its expression.
        "select *, -id as k from accounts where id < 20 order by k",
        "select *, upper(region) from accounts where id < 20 order by upper, id",
        "select a.*, -id from accounts a where id < 20 order by -id",
    ] {
        b.same(sql).await;
    }
    b.stop().await;
}

/// A bare GROUP BY or HAVING name is the table's column first, as PostgreSQL resolves it, even
/// where an output column has that alias (`upper(region) AS region ... GROUP BY region` keeps
/// 'r1' and 'R1' apart); an alias naming no column groups by its expression. SELECT DISTINCT
/// over groups it does not select is refused (the merge makes one row per group).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_group_name_is_the_column_before_the_alias() {
    let b = start("one_group_names", "i % 5", "i * 1.5").await;
    b.c.batch_execute("update accounts set region = upper(region) where id % 2 = 0")
        .await
        .unwrap();
    b.one
        .batch_execute("update accounts set region = upper(region) where id % 2 = 0")
        .await
        .unwrap();
    for sql in [
        "select upper(region) as region, count(*) from accounts group by region order by 1, 2",
        "select kind % 2 as kind, sum(balance) from accounts group by kind order by 1, 2",
        "select upper(region) as region, count(*) from accounts group by region having region = 'r1' order by 1",
        "select upper(region) as r, count(*) from accounts group by r order by 1",
        "select distinct kind from accounts group by kind order by 1",
        // Grouped by the shard key, each shard's groups are whole; DISTINCT over the key too.
        "select distinct id, kind from accounts group by id order by 1",
    ] {
        b.same(sql).await;
    }
    for sql in [
        "select distinct kind from accounts group by kind, region",
        "select distinct kind % 2 from accounts group by kind",
        // Groups of two shards alike once the key is left out.
        "select distinct kind from accounts group by id",
    ] {
        b.refused(sql).await;
    }
    b.stop().await;
}

/// A bare GROUP BY name that an alias takes and the statement names nowhere else as a column
/// is settled from the catalog, as PostgreSQL settles it: the table's column when it has one
/// (`region AS kind ... GROUP BY kind, region` groups by the column kind), the alias's item
/// otherwise; bound, in a transaction block, and for a column the transaction just added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_name_an_alias_takes_is_the_catalogs_column_first() {
    let b = start("one_group_catalog", "i % 5", "i * 1.5").await;
    for sql in [
        "select region as kind, count(*) from accounts group by kind, region order by 1, 2",
        "select 1 as kind, count(*) from accounts group by kind order by 2",
        "select region as kind, count(*) from accounts a group by a.kind, region order by 1, 2",
        "select count(*), upper(region) as r from accounts group by r order by 2",
        "select upper(region) as r, sum(balance) from accounts group by r having sum(balance) > 10 order by 1",
        "select region as id, count(*) from accounts group by id order by 1, 2 limit 5",
        // Inside a derived table, a CTE, a subquery, and a count of the groups.
        "select * from (select region as kind, count(*) from accounts group by kind, region) s order by 1, 2",
        "with x as (select upper(region) as r, count(*) as n from accounts group by r) select * from x order by 1",
        "select id from accounts where region in (select region as r from accounts group by r having count(*) > 9) order by id limit 5",
        "select count(*) from (select upper(region) as r from accounts group by r) s",
        "select count(*) from (select region as kind from accounts group by kind, region) s",
    ] {
        b.same(sql).await;
    }
    let bound = "select region as kind, count(*) from accounts where id > $1 group by kind, region order by 1, 2";
    let pairs = |rows: Vec<tokio_postgres::Row>| -> Vec<(String, i64)> {
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    };
    let want = pairs(b.one.query(bound, &[&5i64]).await.unwrap());
    assert_eq!(want.len(), 35, "one row per region and kind");
    let got = pairs(b.c.query(bound, &[&5i64]).await.unwrap());
    assert_eq!(got, want, "{bound}");

    // The transaction's own column counts: grouped by it, not by the constant.
    let added = "begin; alter table accounts add column r int; update accounts set r = id % 2";
    let read = "select 1 as r, count(*) from accounts group by r order by 2";
    b.one.batch_execute(added).await.unwrap();
    let want = rows(&b.one.simple_query(read).await.unwrap());
    b.one.batch_execute("rollback").await.unwrap();
    assert_eq!(want.len(), 2, "{read}: two groups by the new column");
    b.c.batch_execute(added).await.unwrap();
    let got = b.c.simple_query(read).await;
    b.c.batch_execute("rollback").await.unwrap();
    assert_eq!(rows(&got.unwrap()), want, "{read}");
    b.stop().await;
}

/// HAVING compares a number in the type PostgreSQL picks from both sides, not in the
/// aggregate's: an integer against `68.5` as numeric, a real against `6.9` as float8 (which
/// no real equals) but against `'6.9'` as real, a numeric against a float8 parameter as
/// float8. A quoted decimal against an integer, and a number against text, are PostgreSQL's
/// errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn having_compares_numbers_in_the_type_postgresql_picks() {
    let b = start("one_having_types", "i % 2", "i / 7.0").await;
    let add = "alter table accounts add column f4 real; update accounts set f4 = id * 0.1";
    b.c.batch_execute(add).await.unwrap();
    b.one.batch_execute(add).await.unwrap();
    let grouped = |having: &str| {
        format!("select region, max(id), max(f4) from accounts group by region having {having} order by region")
    };
    for having in [
        "max(id) > 68.5",
        "max(id) = 70.0",
        "count(*) >= 1e1",
        "68.5 < max(id)",
        "max(f4) = '6.9'",
        "max(f4) > 6.85",
        "max(balance) > 9.857142857142857",
        "max(balance) >= 9.857142857142857::float8",
        "avg(id) > 3.55e1",
    ] {
        b.same(&grouped(having)).await;
    }
    // No real equals the float8 nearest 6.9, so no group is kept; the proxy compared the
    // decimal with the real read as float8 and kept region r4's.
    let none = grouped("max(f4) = 6.9");
    assert!(rows(&b.one.simple_query(&none).await.unwrap()).is_empty());
    assert!(
        rows(&b.c.simple_query(&none).await.unwrap()).is_empty(),
        "{none}"
    );

    // Bound as drivers bind it after the server described it: float8, in binary.
    let bound = grouped("max(balance) >= $1::float8");
    let value: f64 = 69.0 / 7.0;
    let read =
        |r: Vec<tokio_postgres::Row>| -> Vec<String> { r.iter().map(|r| r.get(0)).collect() };
    let want = read(b.one.query(&bound, &[&value]).await.unwrap());
    let got = read(b.c.query(&bound, &[&value]).await.unwrap());
    assert_eq!(got, want, "{bound}");
    // Compared as numeric, 69 / 7.0 (9.8571428571428571) is below the float8 written as
    // 9.857142857142858; as float8 the two are equal, so the answer shows which comparison
    // ran.
    let as_numeric = rows(
        &b.one
            .simple_query(&grouped(&format!("max(balance) >= {value}")))
            .await
            .unwrap(),
    );
    assert_ne!(
        as_numeric.len(),
        want.len(),
        "the float8 and numeric comparisons differ"
    );

    for (having, code) in [("max(id) > '68.5'", "22P02"), ("max(region) > 5", "42883")] {
        let sql = grouped(having);
        let want = b.one.simple_query(&sql).await.expect_err(&sql);
        let got = b.c.simple_query(&sql).await.expect_err(&sql);
        assert_eq!(common::code(&want), code, "{sql}");
        assert_eq!(common::code(&got), code, "{sql}: {got}");
    }
    b.stop().await;
}

/// HAVING on a timestamptz reads its constant as PostgreSQL does: with the zone it names
/// (also written as node-postgres writes a Date, `T` between date and time), or without one in
/// the session's TimeZone, here not UTC (reading it as UTC kept other groups than PostgreSQL
/// keeps).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn having_on_a_timestamptz_reads_the_constant_as_postgresql_does() {
    let b = start("one_having_zones", "i % 2", "i * 1.5").await;
    let add = "alter table accounts add column at timestamptz; \
               update accounts set at = timestamptz '2024-01-01 00:00+00' + id * interval '1 hour'; \
               set timezone = 'Asia/Kolkata'";
    b.c.batch_execute(add).await.unwrap();
    b.one.batch_execute(add).await.unwrap();
    let grouped = |having: &str| {
        format!(
            "select region, max(at) from accounts group by region having {having} order by region"
        )
    };
    for having in [
        "max(at) >= '2024-01-03 20:30:00+05:30'",
        "max(at) >= '2024-01-03T15:00:00.000+00:00'",
        "min(at) < '2024-01-01 05:00:00Z'",
        "max(at) > '2024-01-03 10:00-05'",
        "max(at) >= '2024-01-03 20:30:00'",
        "max(at) - min(at) > interval '2 days 1 hour' or max(at) < 'Jan 2 2024 10:00'",
        "date_trunc('day', max(at)) = '2024-01-04'",
    ] {
        b.same(&grouped(having)).await;
    }
    // Read as UTC, the zoneless constant would keep other groups.
    let kept = |having: &str| {
        let sql = grouped(having);
        let one = &b.one;
        async move { rows(&one.simple_query(&sql).await.unwrap()).len() }
    };
    assert_ne!(
        kept("max(at) >= '2024-01-03 20:30:00'").await,
        kept("max(at) >= '2024-01-03 20:30:00+00'").await
    );
    b.stop().await;
}

/// HAVING in any form PostgreSQL takes (OR, NOT, IN, BETWEEN, LIKE, bound values) is one
/// condition evaluated by one shard over the merged groups, before the items computed after
/// the merge: an item may divide by a sum that HAVING keeps away from zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn having_of_any_form_keeps_groups_before_their_items_are_computed() {
    // Region r0's kinds are all 0.
    let b = start("one_having_forms", "(i % 7) * (i % 2)", "i * 1.5").await;
    for sql in [
        "select region, sum(balance) / sum(kind) as r from accounts group by region having sum(kind) <> 0 order by region",
        "select region, count(*) from accounts group by region having count(*) > 5 and (max(kind) > 4 or region in ('r0', 'r2')) order by region",
        "select region from accounts group by region having sum(balance) between 500 and 540 order by region",
        "select region from accounts group by region having region like 'r%' and not bool_or(kind > 5) order by region",
        "select count(*) from (select region from accounts group by region having sum(balance) not between 500 and 540) s",
    ] {
        b.same(sql).await;
    }
    // Bound values, typed by the server from the condition they are in.
    let sql = "select region, count(*) from accounts group by region \
               having count(*) > $1 or region = $2 order by region";
    let read = |rows: Vec<tokio_postgres::Row>| -> Vec<String> {
        rows.iter().map(|r| r.get::<_, String>(0)).collect()
    };
    let want = read(b.one.query(sql, &[&10i64, &"r3"]).await.unwrap());
    assert_eq!(want, ["r3"]);
    assert_eq!(read(b.c.query(sql, &[&10i64, &"r3"]).await.unwrap()), want);
    // A HAVING that is no condition is PostgreSQL's error.
    let e =
        b.c.simple_query("select region from accounts group by region having count(*)")
            .await
            .unwrap_err();
    assert_eq!(common::code(&e), "42804", "{e}");
    b.stop().await;
}
