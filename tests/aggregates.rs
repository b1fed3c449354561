//! Aggregates over several shards the proxy cannot combine: PostgreSQL's less common ones and
//! those the shards define themselves. Each shard would answer with its own partial result;
//! the proxy must refuse rather than hand the client one row per shard.

mod common;

use common::{rows, TestCluster};
use std::time::Duration;

const TABLES: &str = "[tables.accounts]\nshard_key = \"id\"\nkey_type = \"bigint\"\n";

fn refused(r: Result<Vec<tokio_postgres::SimpleQueryMessage>, tokio_postgres::Error>, sql: &str) {
    match r {
        Ok(m) => panic!("{sql}: answered {:?} instead of a refusal", rows(&m)),
        Err(e) => assert_eq!(common::code(&e), "0A000", "{sql}: {e}"),
    }
}

async fn one_value(c: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    rows(
        &c.simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}")),
    )
}

/// Calls of aggregates the planner does not combine are refused wherever they stand: in the
/// select list, under DISTINCT, in a derived table, in ORDER BY; those it combines give
/// one PostgreSQL's answer; an aggregate made through the proxy (also inside a transaction,
/// also from DO) is known from the next statement on; one made on the shards directly, behind
/// the proxy, from the next look at their catalogs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_that_cannot_be_combined_are_refused_never_answered_per_shard() {
    let tc = TestCluster::start_unlike(3, "health_check_interval_secs = 1", TABLES).await;
    let c = tc.client().await;
    c.batch_execute(
        "create table accounts (id bigint primary key, balance int, active bool);
         insert into accounts select i, i * 10, i % 4 <> 0 from generate_series(1, 40) i",
    )
    .await
    .unwrap();
    // Every shard holds some of the rows, so a per-shard answer would show.
    let per_shard = tc
        .count_on_each_shard("select count(*) from accounts")
        .await;
    assert!(per_shard.iter().all(|&n| n > 0 && n < 40), "{per_shard:?}");

    for sql in [
        "select bit_xor(id::bit(8)) from accounts",
        "select distinct regr_count(id, balance) from accounts",
        "select * from (select bit_or(id::bit(8)) from accounts) s",
    ] {
        refused(c.simple_query(sql).await, sql);
    }
    // The refusal names what the client wrote, not the proxy's hidden column for it.
    let sql = "select count(distinct (id, balance)) from accounts";
    let e = c.simple_query(sql).await.expect_err(sql);
    assert_eq!(common::code(&e), "0A000", "{e}");
    let said = e.as_db_error().map(|d| d.message()).unwrap_or_default();
    assert!(
        said.contains("count(DISTINCT ...) of a value of type record")
            && !said.contains("__shardgate"),
        "{said}"
    );
    // A window beside an aggregate numbers the one group: one server computes it over the
    // rows, read first.
    assert_eq!(
        one_value(
            &c,
            "select count(*), row_number() over (order by count(*)) from accounts"
        )
        .await,
        vec![vec![Some("40".into()), Some("1".into())]]
    );
    // An aggregate in ORDER BY alone makes one group, whose constant is carried.
    assert_eq!(
        one_value(&c, "select 1 from accounts order by count(*)").await,
        vec![vec![Some("1".into())]]
    );
    // Combined: booleans as the least and greatest of the shards' answers.
    assert_eq!(
        one_value(
            &c,
            "select bool_and(active), bool_or(active), every(id > 0), bool_and(id > 40) from accounts"
        )
        .await,
        vec![vec![
            Some("f".into()),
            Some("t".into()),
            Some("t".into()),
            Some("f".into())
        ]]
    );
    assert_eq!(
        one_value(
            &c,
            "select id % 4 = 0, bool_or(balance > 350) from accounts group by 1 order by 1"
        )
        .await,
        vec![
            vec![Some("f".into()), Some("t".into())],
            vec![Some("t".into()), Some("t".into())]
        ]
    );

    // HAVING compares a combined boolean with a constant as PostgreSQL reads it.
    let by_group =
        "select id % 4 = 0, bool_or(active) from accounts group by 1 having bool_or(active) =";
    for (word, want) in [
        ("true", "f"),
        ("yes", "f"),
        ("on", "f"),
        ("no", "t"),
        ("0", "t"),
    ] {
        assert_eq!(
            one_value(&c, &format!("{by_group} '{word}'")).await,
            vec![vec![
                Some(want.into()),
                Some(if want == "f" { "t" } else { "f" }.into())
            ]],
            "{word}"
        );
    }
    // And refuses what it does not read as one, as PostgreSQL does.
    let e = c
        .simple_query(&format!("{by_group} 'maybe'"))
        .await
        .expect_err("not a boolean");
    assert_eq!(common::code(&e), "22P02", "{e}");

    // Made through the proxy: refused over several shards, answered on one.
    c.batch_execute("create aggregate total(int8) (sfunc = int8pl, stype = int8, initcond = '0')")
        .await
        .unwrap();
    refused(
        c.simple_query("select total(id) from accounts").await,
        "total",
    );
    assert_eq!(
        one_value(&c, "select total(id) from accounts where id = 7").await,
        vec![vec![Some("7".into())]]
    );
    let other = tc.client().await;
    refused(
        other
            .simple_query("select total(balance) from accounts")
            .await,
        "total from another session",
    );
    // Inside the transaction that makes it, and from DO.
    c.batch_execute("begin").await.unwrap();
    c.batch_execute("create aggregate in_txn(int8) (sfunc = int8pl, stype = int8)")
        .await
        .unwrap();
    refused(
        c.simple_query("select in_txn(id) from accounts").await,
        "in_txn",
    );
    c.batch_execute("rollback").await.unwrap();
    c.batch_execute(
        "do $$ begin execute 'create aggregate from_do(int8) (sfunc = int8pl, stype = int8)'; end $$",
    )
    .await
    .unwrap();
    refused(
        c.simple_query("select from_do(id) from accounts").await,
        "from_do",
    );

    // Made on every shard directly: known once the proxy's next look at the catalogs is in.
    for s in 0..3 {
        tc.direct(s)
            .await
            .batch_execute("create aggregate behind(int8) (sfunc = int8pl, stype = int8)")
            .await
            .unwrap();
    }
    let fresh = tc.client().await;
    let mut seen = false;
    // The look comes every second; a minute is only a bound on a hang.
    for _ in 0..600 {
        match fresh.simple_query("select behind(id) from accounts").await {
            Err(e) => {
                assert_eq!(common::code(&e), "0A000", "{e}");
                seen = true;
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(seen, "an aggregate made on the shards was never recognised");
    assert_eq!(
        one_value(&fresh, "select behind(id) from accounts where id = 9").await,
        vec![vec![Some("9".into())]]
    );
}

/// Values PostgreSQL calls equal but writes differently (numeric 1.0 and 1.00, float -0 and 0,
/// char 'a' and 'a  ', interval '1 day' and '24:00:00'), each kind on some shards, make one
/// group and one DISTINCT row, as on one server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_written_differently_but_equal_group_together() {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let c = tc.client().await;
    c.batch_execute(
        "create table accounts (id bigint primary key, v numeric, f float8, t bpchar, i interval,
                                 tm time, ip inet);
         insert into accounts select g,
             case when g % 2 = 0 then 1.0 else 1.00 end,
             case when g % 2 = 0 then '0'::float8 else '-0'::float8 end,
             case when g % 2 = 0 then 'a' else 'a  ' end,
             case when g % 2 = 0 then interval '1 day' else interval '24 hours' end,
             case when g % 2 = 0 then '12:00'::time else '12:00:00.000'::time end,
             case when g % 2 = 0 then '10.0.0.1'::inet else '10.0.0.1/32'::inet end
           from generate_series(1, 24) g",
    )
    .await
    .unwrap();
    // Both ways of writing each value are on more than one shard.
    for (column, ways) in [
        ("v::text", 2),
        ("f::text", 2),
        ("t::bytea", 2),
        ("i::text", 2),
    ] {
        let found = tc
            .count_on_each_shard(&format!("select count(distinct {column}) from accounts"))
            .await;
        assert!(
            found.iter().filter(|&&n| n == ways).count() >= 2,
            "{column}: {found:?}"
        );
    }
    // One group and one DISTINCT row per value, whatever way the value was written.
    for column in ["v", "f", "t", "i", "tm", "ip"] {
        let groups = one_value(
            &c,
            &format!("select count(*) from accounts group by {column}"),
        )
        .await;
        assert_eq!(groups, vec![vec![Some("24".into())]], "group by {column}");
        let distinct = one_value(&c, &format!("select distinct {column} from accounts")).await;
        assert_eq!(distinct.len(), 1, "distinct {column}: {distinct:?}");
        let counted = one_value(
            &c,
            &format!("select count(distinct {column}) from accounts"),
        )
        .await;
        assert_eq!(
            counted,
            vec![vec![Some("1".into())]],
            "count(distinct {column})"
        );
    }
}

/// Float sums are added from the shards' partial sums as text: exact under the default
/// extra_float_digits, rounded below it, where they are refused rather than added rounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn float_sums_are_exact_or_refused_when_the_session_rounds_floats() {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let c = tc.client().await;
    let rows = "select g as id, (g * 1.123456789)::float8 as f from generate_series(100, 160) g";
    c.batch_execute(&format!(
        "create table accounts (id bigint primary key, f float8); insert into accounts {rows}"
    ))
    .await
    .unwrap();
    // One server's answer: the same rows in a temporary table of a shard's.
    let one = tc.direct(0).await;
    one.batch_execute(&format!("create temp table alone as {rows}"))
        .await
        .unwrap();
    let sums = "sum(f), avg(f)";
    let want = one_value(&one, &format!("select {sums} from alone")).await;
    let got = one_value(&c, &format!("select {sums} from accounts")).await;
    assert_eq!(got, want);
    c.batch_execute("set extra_float_digits = -8")
        .await
        .unwrap();
    refused(
        c.simple_query(&format!("select {sums} from accounts"))
            .await,
        "rounded floats",
    );
    // Binary results carry every bit.
    let exact: (f64, f64) = {
        let r = c
            .query_one(&format!("select {sums} from accounts"), &[])
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    let direct = one
        .query_one(&format!("select {sums} from alone"), &[])
        .await
        .unwrap();
    assert_eq!(exact, (direct.get::<_, f64>(0), direct.get::<_, f64>(1)));
}

/// ROLLUP, CUBE and GROUPING SETS over several shards give one PostgreSQL's groups: a set's
/// group found on several shards is one group, and a NULL a set leaves out never meets a NULL
/// value of a set that groups by the column. Simple and extended protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouping_sets_merge_as_one_postgresql_groups_them() {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let c = tc.client().await;
    let schema =
        "create table accounts (id bigint primary key, region text, kind int, balance numeric);
         insert into accounts select i, case when i % 5 = 0 then null else 'r' || (i % 3) end,
           i % 2, i * 1.5 from generate_series(1, 60) i";
    let one = tc
        .spread_beside_one(&c, schema, "accounts", "one_grouping")
        .await;
    let ordered = "order by 1 nulls first, 2 nulls first, 3";
    for sql in [
        format!("select region, kind, count(*) from accounts group by rollup(region, kind) {ordered}"),
        format!("select region, kind, sum(balance) from accounts group by cube(region, kind) {ordered}"),
        format!(
            "select region, grouping(region), avg(balance) from accounts \
             group by grouping sets ((region), ()) {ordered}"
        ),
        format!(
            "select region, kind, max(id) from accounts group by region, rollup(kind) \
             having count(*) > 2 {ordered}"
        ),
        "select count(*), min(balance) from accounts where false group by rollup(region) order by 1"
            .to_string(),
        // Sorted by the sets, grouping(...) not selected.
        "select region, kind, count(*) from accounts group by rollup(region, kind) \
         order by grouping(region, kind), 1 nulls first, 2 nulls first"
            .to_string(),
        // The key itself in a set: the empty set's group spans every shard.
        format!("select id % 4, count(*), min(id) from accounts group by rollup(id % 4, id) {ordered} limit 6"),
    ] {
        let want = rows(&one.simple_query(&sql).await.unwrap());
        assert_eq!(one_value(&c, &sql).await, want, "{sql}");
    }
    // Extended protocol, with the kind bound.
    let sql = format!(
        "select region, kind, count(*) from accounts where kind >= $1 \
         group by cube(region, kind) {ordered}"
    );
    let typed = |rows: Vec<tokio_postgres::Row>| -> Vec<(Option<String>, Option<i32>, i64)> {
        rows.iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    };
    let want = typed(one.query(&sql, &[&0i32]).await.unwrap());
    assert!(want.len() > 8, "{want:?}");
    assert_eq!(typed(c.query(&sql, &[&0i32]).await.unwrap()), want);
    for sql in [
        "select region, count(distinct kind) from accounts group by rollup(region)",
        "select distinct region, count(*) from accounts group by rollup(region)",
        // A set named twice: PostgreSQL returns its groups twice, which the merge would
        // take for one group found on two shards.
        "select region, count(*) from accounts group by cube(region, region)",
        "select kind % 2, count(*) from accounts group by rollup(kind % 2, kind % 2)",
        "select region, count(*) from accounts group by region, grouping sets ((region), ())",
    ] {
        refused(c.simple_query(sql).await, sql);
    }
    tc.drop_one_server(one, "one_grouping").await;
}

/// Variance and standard deviation over integers and numerics are computed from the merged
/// count, sum and sum of squares exactly as PostgreSQL computes them (same digits, same scale,
/// NULL for too few values, 0 for equal ones, NaN over NaN or infinities, which numeric sums
/// and averages carry as PostgreSQL's do); over floats they are refused, with a hint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variance_and_standard_deviation_match_one_postgresql() {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let c = tc.client().await;
    // Scales from 0 to 9 digits and magnitudes from 1e-6 to 1e12, so that the quotient's
    // scale and the root's rounding take every path; groups of one row, of equal values, of
    // NULLs only, holding NaN, an infinity, and infinities of both signs.
    let schema = "create table accounts (id bigint primary key, region text, n int, b bigint, x numeric, f float8);
         insert into accounts select i, 'r' || (i % 7), i % 1000 - 300, (i * 7919 % 100003)::bigint * 1000003,
           round((i * 7919 % 10007) * power(10::numeric, i % 19 - 6), i % 10), i / 7.0
           from generate_series(1, 400) i;
         insert into accounts values (1001, 'one', 5, 5, 5.5, 1), (1002, 'equal', 3, 3, 2.50, 1),
           (1003, 'equal', 3, 3, 2.5, 1), (1004, 'nulls', null, null, null, null),
           (1005, 'nan', 1, 1, 'NaN', 1), (1006, 'nan', 2, 2, 7, 1),
           (1007, 'inf', 1, 1, 'Infinity', 1), (1008, 'inf', 2, 2, 3, 1),
           (1009, 'infs', 1, 1, 'Infinity', 1), (1010, 'infs', 2, 2, '-Infinity', 1)";
    let one = tc
        .spread_beside_one(&c, schema, "accounts", "one_variance")
        .await;
    for sql in [
        "select stddev(x), variance(x), stddev_pop(x), var_pop(x), stddev_samp(n), var_samp(b), \
         stddev_pop(b), var_pop(n) from accounts",
        "select region, stddev(x), var_samp(x), stddev_pop(x), var_pop(x), stddev(n), variance(b) \
         from accounts group by region order by region",
        "select region, round(stddev(x), 3), stddev(x) filter (where id % 2 = 0) as even \
         from accounts group by region order by stddev(x) desc nulls last, region",
        "select region, count(*) from accounts group by region having var_pop(n) > 1000 order by 1",
        "select stddev(x), var_samp(n) from accounts where id < 0",
        "select stddev(x) from accounts where id in (1002, 1003)",
        "select region, sum(x), avg(x), var_samp(x) from accounts where region in ('nan', 'inf', 'infs') group by region order by 1",
    ] {
        let want = rows(&one.simple_query(sql).await.unwrap());
        assert_eq!(one_value(&c, sql).await, want, "{sql}");
    }
    // Extended protocol, with a bound factor inside the argument.
    let sql =
        "select region, stddev(x * $1::int)::text from accounts group by region order by region";
    let texts = |rows: Vec<tokio_postgres::Row>| -> Vec<(String, Option<String>)> {
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    };
    let factor = 3i32;
    let want = texts(one.query(sql, &[&factor]).await.unwrap());
    assert_eq!(texts(c.query(sql, &[&factor]).await.unwrap()), want);
    let e = c
        .simple_query("select stddev(f) from accounts")
        .await
        .expect_err("a float's standard deviation would not have PostgreSQL's last digits");
    assert_eq!(common::code(&e), "0A000", "{e}");
    let hint = e.as_db_error().and_then(|d| d.hint()).unwrap_or_default();
    assert!(hint.contains("cast the argument to numeric"), "{hint}");
    // DISTINCT (or an order) inside the call: the values gathered, the call evaluated once
    // (floats too: DISTINCT sorts them, so they are added in one server's order).
    for sql in [
        "select stddev(distinct x), var_samp(x order by id), variance(distinct f) from accounts",
        "select region, stddev_pop(distinct n) from accounts group by region order by 1",
    ] {
        let want = rows(&one.simple_query(sql).await.unwrap());
        assert_eq!(one_value(&c, sql).await, want, "{sql}");
    }
    tc.drop_one_server(one, "one_variance").await;
}

/// string_agg without an ORDER BY in the call joins the shards' partial strings with its
/// separator: the same values, each once, as one PostgreSQL joins them (in an order neither
/// promises), NULL where no row has a value; over an ordered derived table, in its order; a
/// bytea call and one over an unordered derived table are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn string_agg_joins_every_shards_values_with_its_separator() {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let c = tc.client().await;
    let schema = "create table accounts (id bigint primary key, region text, note text);
         insert into accounts select i, 'r' || (i % 4), case when i % 5 <> 0 then 'n' || i end
           from generate_series(1, 60) i";
    let one = tc
        .spread_beside_one(&c, schema, "accounts", "one_string_agg")
        .await;
    // Each joined string as its sorted pieces: the order of the values is unspecified.
    let pieces =
        |rows: Vec<Vec<Option<String>>>, separator: &str| -> Vec<Vec<Option<Vec<String>>>> {
            rows.into_iter()
                .map(|row| {
                    row.into_iter()
                        .map(|v| {
                            v.map(|v| {
                                let mut p: Vec<String> =
                                    v.split(separator).map(str::to_string).collect();
                                p.sort();
                                p
                            })
                        })
                        .collect()
                })
                .collect()
        };
    for sql in [
        "select region, string_agg(note, ' | '), count(*) from accounts group by region order by region",
        "select string_agg(note, ' | ') from accounts",
        "select string_agg(note, ' | ') filter (where id > 50) from accounts",
        "select string_agg(note, ' | ') from accounts where id < 0",
        "select region, string_agg(note, ' | ') || ' | end' as s from accounts group by region order by region",
    ] {
        let want = pieces(rows(&one.simple_query(sql).await.unwrap()), " | ");
        let got = pieces(one_value(&c, sql).await, " | ");
        assert_eq!(got, want, "{sql}");
        assert!(want.iter().flatten().flatten().any(|p| p.len() > 3) || sql.contains("id <"), "{sql}");
    }
    // Bound separator, extended protocol.
    let sql = "select region, string_agg(note, $1) from accounts group by region order by region";
    let joined = |rows: Vec<tokio_postgres::Row>| -> Vec<Vec<Option<String>>> {
        rows.iter().map(|r| vec![r.get(0), r.get(1)]).collect()
    };
    let want = pieces(joined(one.query(sql, &[&";"]).await.unwrap()), ";");
    assert_eq!(
        pieces(joined(c.query(sql, &[&";"]).await.unwrap()), ";"),
        want
    );
    // Fed an ordered derived table's rows in their order, as one server feeds them.
    let sql = "select string_agg(n, ',') from (select note n from accounts order by id desc) s";
    assert_eq!(
        one_value(&c, sql).await,
        rows(&one.simple_query(sql).await.unwrap()),
        "{sql}"
    );
    for sql in [
        "select string_agg(note::bytea, ',') from accounts",
        "select string_agg(n, ',') from (select note n from accounts) s",
    ] {
        refused(c.simple_query(sql).await, sql);
    }
    tc.drop_one_server(one, "one_string_agg").await;
}

/// array_agg and jsonb_agg without an ORDER BY inside the call hold every shard's values, as
/// one PostgreSQL's do (compared after sorting the elements, whose order neither promises), in
/// text and in binary results; arrays of arrays are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn array_agg_and_jsonb_agg_hold_every_shards_values() {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let c = tc.client().await;
    let schema = "create table accounts (id bigint primary key, region text, note text);
         insert into accounts select i, 'r' || (i % 4), case when i % 5 <> 0 then 'n,' || i end
           from generate_series(1, 60) i";
    let one = tc
        .spread_beside_one(&c, schema, "accounts", "one_array_agg")
        .await;
    for sql in [
        "select region, array_agg(id), array_agg(note), jsonb_agg(note), count(*) from accounts group by region order by region",
        "select array_agg(id) filter (where id > 50), jsonb_agg(id) from accounts",
        "select array_agg(id), jsonb_agg(note) from accounts where id < 0",
    ] {
        let want = rows(&one.simple_query(sql).await.unwrap());
        let got = one_value(&c, sql).await;
        assert_eq!(got.len(), want.len(), "{sql}");
        for (g, w) in got.iter().zip(&want) {
            for (gv, wv) in g.iter().zip(w) {
                let (gv, wv) = (elements(&one, gv).await, elements(&one, wv).await);
                assert_eq!(gv, wv, "{sql}");
            }
        }
    }
    // Binary results (tokio-postgres asks for them), NULL elements among them.
    let sql = "select region, array_agg(id), array_agg(note) from accounts group by region order by region";
    type Arrays = Vec<(String, Vec<i64>, Vec<Option<String>>)>;
    let binary = |rows: Vec<tokio_postgres::Row>| -> Arrays {
        rows.iter()
            .map(|r| {
                let mut ids: Vec<i64> = r.get(1);
                let mut notes: Vec<Option<String>> = r.get(2);
                ids.sort();
                notes.sort();
                (r.get(0), ids, notes)
            })
            .collect()
    };
    let want = binary(one.query(sql, &[]).await.unwrap());
    assert!(want.iter().all(|(_, ids, _)| ids.len() == 15), "{want:?}");
    assert_eq!(binary(c.query(sql, &[]).await.unwrap()), want);
    for sql in ["select array_agg(array[id, id]) from accounts"] {
        refused(c.simple_query(sql).await, sql);
    }
    tc.drop_one_server(one, "one_array_agg").await;
}

/// A text array's or JSON array's elements in an order of their own, sorted by `one`; any
/// other value as it is.
async fn elements(one: &tokio_postgres::Client, value: &Option<String>) -> Option<String> {
    let v = value.as_ref()?;
    if !v.starts_with(['[', '{']) {
        return Some(v.clone());
    }
    let sql = if v.starts_with('[') {
        "select (select jsonb_agg(e order by e) from jsonb_array_elements($1::text::jsonb) e)::text"
    } else {
        "select array(select e from unnest($1::text::text[]) e order by e nulls first)::text"
    };
    Some(one.query_one(sql, &[v]).await.unwrap().get(0))
}
