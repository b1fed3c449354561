//! Aggregates whose answer is the whole group's over several shards: string_agg, array_agg,
//! jsonb_agg and json_agg with an ORDER BY or DISTINCT inside the call, json_agg and the object
//! aggregates in any form, and percentile_cont, percentile_disc and mode. Each answer is compared with one PostgreSQL holding every row; the shards are
//! unlike (their types and the table's row type have other OIDs on each).

mod common;

use common::{answer, rows, TestCluster};

const TABLES: &str = "[tables.accounts]\nshard_key = \"id\"\nkey_type = \"bigint\"\n";

const SCHEMA: &str = "create type tier as enum ('gold', 'silver', 'bronze');
     create table accounts (id bigint primary key, region text, note text, level tier, amount numeric);
     insert into accounts select i, 'r' || (i % 4), case when i % 5 <> 0 then 'n' || (i % 7) end,
       (array['bronze', 'gold', 'silver'])[i % 3 + 1]::tier, (i % 6) * 1.5
       from generate_series(1, 60) i";

/// Ordered calls give one PostgreSQL's answer exactly: the order inside the call, ties broken
/// by a unique key, NULLs where they sort, FILTER, an empty group, an item computed over the
/// call, a derived table, an enum key and a composite value; DISTINCT removes duplicates across
/// shards, for sums, averages and variances too; percentiles and modes are the whole group's,
/// with fractions written or bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_and_distinct_calls_match_one_postgresql() {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let c = tc.client().await;
    let one = tc
        .spread_beside_one(&c, SCHEMA, "accounts", "one_ordered_agg")
        .await;
    for sql in [
        "select region, string_agg(note, ' | ' order by id desc), count(*) from accounts group by region order by region",
        "select string_agg(note, ',' order by note nulls first, id) from accounts",
        "select region, string_agg(note, e'\\t' order by amount desc, id) filter (where id > 20) from accounts group by 1 order by 1",
        "select array_agg(id order by id desc), array_agg(note order by id) from accounts",
        "select region, array_agg(level order by level, id) from accounts group by region order by region",
        "select array_agg(distinct region order by region desc), string_agg(distinct note, '/') from accounts",
        "select region, array_agg(distinct amount) from accounts group by region order by region",
        "select jsonb_agg(note order by id), json_agg(amount order by id desc) from accounts where id < 20",
        "select region, json_agg(a order by a.id) from accounts a where id % 9 = 0 group by region order by 1",
        "select string_agg(note, ',' order by id) from accounts where id < 0",
        "select region, string_agg('x', '' order by id) || count(*) as s from accounts group by region order by 1",
        "select region, coalesce(string_agg(note, ',' order by id), '-') || '!' as s from accounts group by region order by 1",
        "select string_agg(n, ',' order by n, i) from (select note n, id i from accounts) s",
        "select region, string_agg(note, ',' order by id), sum(amount), count(distinct note) from accounts group by region order by 1",
        "select region, count(*) from accounts group by region having sum(distinct amount) > 10 \
           order by string_agg(note, ',' order by id) desc",
        "select region, sum(distinct amount), avg(distinct amount), count(distinct amount), \
           stddev(distinct id % 7), max(distinct note), bool_or(distinct id > 50) from accounts group by region order by 1",
        "select sum(distinct amount) filter (where id > 30), var_samp(distinct amount) from accounts",
        "select region, percentile_cont(0.5) within group (order by amount), \
           percentile_disc(array[0.1, 0.9]) within group (order by id desc) from accounts group by region order by region",
        "select mode() within group (order by note), percentile_cont(0.25) within group (order by id) filter (where id > 10) from accounts",
        "select region, jsonb_object_agg(id, note) from accounts where id < 30 group by region order by 1",
        "select level, percentile_cont(array[0.2, 0.5]) within group (order by amount desc) from accounts group by level order by level",
    ] {
        let want = answer(&one, sql).await;
        assert_eq!(answer(&c, sql).await, want, "{sql}");
        // An answer of values, not of NULLs alone, unless no row matches.
        assert!(
            want.iter().flatten().flatten().count() >= want.len().max(1) || sql.contains("id < 0"),
            "{sql}: {want:?}"
        );
    }
    // HAVING on a gathered call, under a count of the groups it keeps.
    let sql = "select count(*) from (select region from accounts group by region \
               having string_agg(note, ',' order by id desc) = 'n2,n5,n4,n0,n3,n6,n5,n1,n4,n0,n6,n2') s";
    assert_eq!(answer(&c, sql).await, [[Some("1".to_string())]], "{sql}");
    // Every shard held values of each group, so a shard's own answer would show.
    let per_shard = tc
        .count_on_each_shard("select count(*) from accounts")
        .await;
    assert!(per_shard.iter().all(|&n| n > 0 && n < 60), "{per_shard:?}");

    // Extended protocol: a bound separator, binary arrays of an enum and of bigints.
    let sql = "select region, string_agg(note, $1 order by id), array_agg(id order by id desc), \
               array_agg(level::text order by level desc, id), \
               percentile_disc($2) within group (order by id) from accounts group by region order by region";
    type Row = (String, Option<String>, Vec<i64>, Vec<String>, i64);
    let read = |rows: Vec<tokio_postgres::Row>| -> Vec<Row> {
        rows.iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
            .collect()
    };
    let want = read(one.query(sql, &[&"; ", &0.3f64]).await.unwrap());
    assert_eq!(want.len(), 4);
    assert_eq!(read(c.query(sql, &[&"; ", &0.3f64]).await.unwrap()), want);
    // Evaluated on a shard other than the first, whose OIDs for the enum and the row type
    // differ: binary arrays of both gathered from the shards holding the chosen keys alone.
    let away: Vec<i64> = (1..=60).filter(|&id| tc.owner(id) != 0).collect();
    let sql = "select region, array_agg(level order by level desc, id)::text[], \
               json_agg(a order by id)::text from accounts a where id = any($1) group by region order by region";
    let read = |rows: Vec<tokio_postgres::Row>| -> Vec<(String, Vec<String>, String)> {
        rows.iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    };
    let want = read(one.query(sql, &[&away]).await.unwrap());
    assert_eq!(want.len(), 4);
    assert_eq!(read(c.query(sql, &[&away]).await.unwrap()), want);
    tc.drop_one_server(one, "one_ordered_agg").await;
}

/// The statistics of two variables, ranges, XML and hypothetical ranks are evaluated once over
/// every shard's values: exactly one PostgreSQL's answer where its arithmetic is exact (counts,
/// ranks, ranges, XML in the call's order), and for the double precision statistics within
/// rounding of it (one server's last digits depend on the order it reads the rows in too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_ranges_xml_and_hypothetical_ranks_match_one_postgresql() {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let c = tc.client().await;
    let one = tc
        .spread_beside_one(&c, SCHEMA, "accounts", "one_statistics")
        .await;
    for sql in [
        "select region, regr_count(amount, id), rank(30) within group (order by id), \
           dense_rank(3.0) within group (order by amount desc), percent_rank(3.0) within group (order by amount), \
           cume_dist(20, 'n1') within group (order by id, note) from accounts group by region order by region",
        "select range_agg(int4range(id::int, id::int + 2)), \
           range_intersect_agg(int4range(id::int - 50, id::int + 50)) filter (where id between 10 and 40) from accounts",
        "select region, xmlagg(('<n>' || id || '</n>')::xml order by id) from accounts where id < 20 group by region order by 1",
    ] {
        let want = answer(&one, sql).await;
        assert_eq!(answer(&c, sql).await, want, "{sql}");
        assert!(want.iter().flatten().all(Option::is_some), "{sql}: {want:?}");
    }
    for sql in [
        "select region, corr(amount, id), covar_samp(id, amount), regr_slope(amount, id), \
           regr_intercept(amount, id), regr_r2(amount, id) from accounts group by region order by region",
        "select covar_pop(id, amount), regr_sxx(amount, id), regr_syy(amount, id), regr_sxy(amount, id), \
           regr_avgx(amount, id), regr_avgy(amount, id) from accounts where id > 5",
    ] {
        let (got, want) = (answer(&c, sql).await, answer(&one, sql).await);
        assert_eq!(got.len(), want.len(), "{sql}");
        for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
            let (g, w) = (g.as_deref().unwrap(), w.as_deref().unwrap());
            match (g.parse::<f64>(), w.parse::<f64>()) {
                (Ok(g), Ok(w)) if !w.is_nan() => {
                    assert!((g - w).abs() <= 1e-9 * w.abs().max(1.0), "{sql}: {g} vs {w}")
                }
                _ => assert_eq!(g, w, "{sql}"),
            }
        }
    }
    tc.drop_one_server(one, "one_statistics").await;
}

/// json_agg's separator depends on the values' type, so it is evaluated once over every
/// shard's values rather than joined: the same elements as one PostgreSQL's, in an order
/// neither promises, and for a row value the same layout; json_object_agg likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_agg_holds_every_shards_values_in_one_servers_layout() {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let c = tc.client().await;
    let one = tc
        .spread_beside_one(&c, SCHEMA, "accounts", "one_json_agg")
        .await;
    for sql in [
        "select region, json_agg(note) from accounts group by region order by region",
        "select json_agg(a) from accounts a where id < 8",
        "select json_agg(id) filter (where id > 50) from accounts",
        "select json_agg(id) from accounts where id < 0",
        "select region, json_object_agg(id, note) from accounts group by region order by region",
        "select json_object_agg(id, a) filter (where id < 5) from accounts a",
    ] {
        let (got, want) = (answer(&c, sql).await, answer(&one, sql).await);
        assert_eq!(got.len(), want.len(), "{sql}");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.len(), w.len(), "{sql}");
            for (gv, wv) in g.iter().zip(w) {
                assert_eq!(
                    sorted_elements(&one, gv).await,
                    sorted_elements(&one, wv).await,
                    "{sql}"
                );
                // Elements of a row type stand on lines of their own, as one server writes them.
                if let (Some(gv), Some(wv)) = (gv, wv) {
                    assert_eq!(gv.matches('\n').count(), wv.matches('\n').count(), "{sql}");
                }
            }
        }
    }
    tc.drop_one_server(one, "one_json_agg").await;
}

/// An aggregate reading an ordered derived table's rows in the order they come (as PostgREST's
/// `json_agg(_postgrest_t)` does) gets them in that order: the derived table is answered first
/// and the aggregate runs on one server over its rows, as one PostgreSQL would. Inside a READ
/// COMMITTED block that is one read when nothing else is read, and refused otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_derived_table_feeds_its_aggregate_in_order() {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let c = tc.client().await;
    let one = tc
        .spread_beside_one(&c, SCHEMA, "accounts", "one_fed_in_order")
        .await;
    for sql in [
        "select json_agg(t) from (select id, note from accounts where id < 20 order by id desc) t",
        "select string_agg(n, '|'), count(*) from (select note n from accounts where note is not null order by note desc, id) s",
        "select coalesce(json_agg(t), '[]') from (select id from accounts where id < 0 order by id) t",
    ] {
        assert_eq!(answer(&c, sql).await, answer(&one, sql).await, "{sql}");
    }
    // PostgREST's read, in its READ COMMITTED block: once the ordered table is read, nothing
    // else is, so one read answers it.
    let postgrest = "with pgrst_source as (select id, region, note, amount from accounts \
         where id < 25 order by amount desc, id) \
         select null::bigint as total_result_set, pg_catalog.count(_postgrest_t) as page_total, \
         coalesce(json_agg(_postgrest_t), '[]') as body, \
         nullif(current_setting('response.headers', true), '') as response_headers \
         from (select * from pgrst_source) _postgrest_t";
    let want = answer(&one, postgrest).await;
    c.batch_execute("begin isolation level read committed read only")
        .await
        .unwrap();
    assert_eq!(answer(&c, postgrest).await, want);
    // With a subquery of its own to read first, it would take two reads: refused there.
    let e = c
        .simple_query(
            "select json_agg(t) from (select id from accounts \
             where amount > (select min(amount) from accounts) order by id) t",
        )
        .await
        .unwrap_err();
    assert_eq!(common::code(&e), "0A000", "{e}");
    c.batch_execute("rollback").await.unwrap();
    tc.drop_one_server(one, "one_fed_in_order").await;
}

/// What the gathering cannot answer as one server would is refused: a separator that differs
/// by row, DISTINCT ordered by something else than the value, an unordered json_agg over a
/// derived table that is not ordered (the order rows come in then is no one's), the call in a
/// window, a fraction that differs by row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_the_gathering_cannot_answer_are_refused() {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let c = tc.client().await;
    c.batch_execute(SCHEMA).await.unwrap();
    for sql in [
        "select string_agg(note, region order by id) from accounts",
        "select array_agg(distinct note order by id) from accounts",
        "select json_agg(n) from (select note n from accounts) s",
        "select id, string_agg(note, ',' order by id) over () from accounts",
        "select percentile_disc(amount / 10) within group (order by id) from accounts",
    ] {
        match c.simple_query(sql).await {
            Ok(m) => panic!("{sql}: answered {:?} instead of a refusal", rows(&m)),
            Err(e) => assert_eq!(common::code(&e), "0A000", "{sql}: {e}"),
        }
    }
    // Named by the client's call, not by what the shards would gather for it.
    let e = c
        .simple_query("select json_agg(t) from (select id, note from accounts where id < 30) t")
        .await
        .unwrap_err();
    let message = common::db_error(&e).message().to_string();
    assert!(
        message.starts_with("json_agg(t) over a derived table"),
        "{message}"
    );
}

/// A JSON array's elements sorted by `one`, a JSON object as jsonb (both ignoring layout);
/// any other value as it is.
async fn sorted_elements(one: &tokio_postgres::Client, value: &Option<String>) -> Option<String> {
    let v = value.as_ref()?;
    let sql = match v.chars().next() {
        Some('[') => {
            "select (select jsonb_agg(e order by e) from jsonb_array_elements($1::text::jsonb) e)::text"
        }
        Some('{') => "select $1::text::jsonb::text",
        _ => return Some(v.clone()),
    };
    Some(one.query_one(sql, &[v]).await.unwrap().get(0))
}
