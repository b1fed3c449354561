//! The clock rewrite (`now()`, `CURRENT_DATE` ... become `shardgate` functions in every Query
//! and Parse of a several-shard session) against PostgreSQL's own parser: for thousands of
//! texts that call the clock or only look like it, mutated as the fuzzer mutates statements, a
//! text PostgreSQL reads without a syntax error must still be read once rewritten, and one it
//! refuses as a syntax error is still refused. Parsed with PREPARE (nothing runs) on a shard,
//! where the `shardgate` functions exist.

mod common;

use common::TestCluster;

/// Whether PostgreSQL finds a syntax error in `sql` (PREPARE parses and analyses, never runs).
async fn syntax_error(c: &tokio_postgres::Client, sql: &str) -> bool {
    match c.prepare(sql).await {
        Ok(_) => false,
        Err(e) => e.code().map(|c| c.code()) == Some("42601"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewritten_texts_parse_where_the_clients_parse() {
    let tc = TestCluster::start(2).await;
    let shard = tc.direct(0).await;
    shard
        .batch_execute("create table t (id int, at timestamptz, x int, a time, d date)")
        .await
        .unwrap();
    let (mut rewritten, mut differ) = (0, Vec::new());
    for sql in shardgate::fuzz::clock_texts(0xc10c, 4000) {
        let Some(stamped) = shardgate::sql::clock::stamped(&sql) else {
            continue;
        };
        rewritten += 1;
        let (before, after) = (
            syntax_error(&shard, &sql).await,
            syntax_error(&shard, &stamped).await,
        );
        if before != after {
            differ.push((sql, stamped, before));
        }
    }
    shard.batch_execute("drop table t").await.unwrap();
    // The mutations must reach the rewrite often, with and without syntax errors around it.
    assert!(rewritten > 2000, "{rewritten}");
    assert!(
        differ.is_empty(),
        "{} of {rewritten}: {differ:#?}",
        differ.len()
    );
}
