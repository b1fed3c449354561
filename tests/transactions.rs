//! Distributed transactions on three real shards: writes on several shards commit atomically
//! (two-phase when more than one shard wrote), savepoints span shards, failures roll back
//! everywhere, and recovery resolves in-doubt transactions by their decision row.

mod common;

use common::raw::{self, Raw};
use common::{code, TestCluster};
use tokio_postgres::{Client, SimpleQueryMessage};

const TABLES: &str = r#"
[transactions]
recovery_min_age_secs = 0
recovery_interval_secs = 0
[tables.accounts]
shard_key = "id"
key_type = "bigint"
[tables.countries]
reference = true
[tables.uniq]
shard_key = "id"
key_type = "bigint"
"#;

async fn cluster() -> TestCluster {
    cluster_with(TABLES).await
}

async fn cluster_with(config: &str) -> TestCluster {
    let tc = TestCluster::start_configured(3, "", config).await;
    let c = tc.client().await;
    c.batch_execute("create table accounts (id bigint primary key, balance int not null)")
        .await
        .unwrap();
    c.batch_execute("create table countries (code text primary key, name text)")
        .await
        .unwrap();
    let values: Vec<String> = (1..=30).map(|i| format!("({i}, 100)")).collect();
    c.batch_execute(&format!(
        "insert into accounts (id, balance) values {}",
        values.join(", ")
    ))
    .await
    .unwrap();
    tc
}

/// Two ids on different shards.
fn two_shards(tc: &TestCluster) -> (i64, i64) {
    let b = (2..30).find(|&i| tc.owner(i) != tc.owner(1)).unwrap();
    (1, b)
}

async fn balance(c: &Client, id: i64) -> i32 {
    c.query_one("select balance from accounts where id = $1", &[&id])
        .await
        .unwrap()
        .get(0)
}

async fn prepared_left(tc: &TestCluster) -> i64 {
    let mut n = 0;
    for s in 0..tc.shards.len() {
        n += tc
            .direct(s)
            .await
            .query_one("select count(*) from pg_prepared_xacts", &[])
            .await
            .unwrap()
            .get::<_, i64>(0);
    }
    n
}

fn rows_affected(msgs: &[SimpleQueryMessage]) -> Vec<u64> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_over_two_shards_commits_on_both() {
    let tc = cluster().await;
    let c = tc.client().await;
    let (a, b) = two_shards(&tc);
    c.batch_execute(&format!(
        "begin; update accounts set balance = balance - 10 where id = {a}; \
         update accounts set balance = balance + 10 where id = {b}; commit"
    ))
    .await
    .unwrap();
    assert_eq!((balance(&c, a).await, balance(&c, b).await), (90, 110));
    assert_eq!(prepared_left(&tc).await, 0);
    // The decision row is on one of the two written shards.
    let mut decisions = 0;
    for s in [tc.owner(a), tc.owner(b)] {
        decisions += tc
            .direct(s)
            .await
            .query_one(
                "select count(*) from shardgate.commit_record where outcome = 'c'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
    }
    assert!(decisions >= 1, "the decider recorded its decision");
    // ROLLBACK undoes both.
    c.batch_execute(&format!(
        "begin; update accounts set balance = 0 where id = {a}; \
         update accounts set balance = 0 where id = {b}; rollback"
    ))
    .await
    .unwrap();
    assert_eq!((balance(&c, a).await, balance(&c, b).await), (90, 110));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_for_query_reports_the_session_state_like_postgres() {
    let tc = cluster().await;
    let (a, b) = two_shards(&tc);
    let (mut r, _) = Raw::login(tc.port).await;
    let status = |msgs: Vec<(u8, Vec<u8>)>| {
        let z = msgs
            .iter()
            .find(|(t, _)| *t == b'Z')
            .expect("ReadyForQuery");
        (
            z.1[0],
            msgs.iter()
                .find(|(t, _)| *t == b'E')
                .map(|(_, e)| raw::field(e, b'C').unwrap()),
        )
    };
    r.send(&raw::query("begin")).await;
    assert_eq!(status(r.until_ready().await), (b'T', None));
    r.send(&raw::query(&format!(
        "update accounts set balance = 1 where id = {a}"
    )))
    .await;
    assert_eq!(status(r.until_ready().await), (b'T', None));
    r.send(&raw::query(&format!(
        "update accounts set balance = 1/0 where id = {b}"
    )))
    .await;
    assert_eq!(status(r.until_ready().await), (b'E', Some("22012".into())));
    r.send(&raw::query("select 1")).await;
    assert_eq!(status(r.until_ready().await), (b'E', Some("25P02".into())));
    // COMMIT of a failed transaction rolls back and says so.
    r.send(&raw::query("commit")).await;
    let msgs = r.until_ready().await;
    let tag = msgs.iter().find(|(t, _)| *t == b'C').unwrap();
    assert_eq!(tag.1, b"ROLLBACK\0");
    assert_eq!(status(msgs), (b'I', None));
    let c = tc.client().await;
    assert_eq!(balance(&c, a).await, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autocommit_writes_on_several_shards_are_atomic_and_counted() {
    let tc = cluster().await;
    let c = tc.client().await;
    // A multi-row INSERT split over the shards, RETURNING every row.
    let rows = c
        .query(
            "insert into accounts (id, balance) values (101, 1), (102, 2), (103, 3), (104, 4), (105, 5), (106, 6) returning id",
            &[],
        )
        .await
        .unwrap();
    let mut ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    ids.sort();
    assert_eq!(ids, vec![101, 102, 103, 104, 105, 106]);
    for id in 101..=106i64 {
        let d = tc.direct(tc.owner(id)).await;
        let n: i64 = d
            .query_one("select count(*) from accounts where id = $1", &[&id])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "row {id} is on its owner");
    }
    // Counts are summed over the shards.
    let msgs = c
        .simple_query("update accounts set balance = balance + 1 where id > 100")
        .await
        .unwrap();
    assert_eq!(rows_affected(&msgs), vec![6]);
    let msgs = c
        .simple_query("delete from accounts where id in (101, 102, 103)")
        .await
        .unwrap();
    assert_eq!(rows_affected(&msgs), vec![3]);
    // Extended protocol, with a parameter.
    let n = c
        .execute(
            "update accounts set balance = balance - 1 where id > $1",
            &[&100i64],
        )
        .await
        .unwrap();
    assert_eq!(n, 3);
    // A split INSERT with one bad row inserts nothing anywhere.
    let e = c
        .batch_execute(
            "insert into accounts (id, balance) values (201, 1), (202, 2), (203, 3), (204, null)",
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), "23502");
    let n: i64 = c
        .query_one("select count(*) from accounts where id > 200", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // A reference-table write reaches every copy and counts one.
    let msgs = c
        .simple_query("insert into countries (code, name) values ('fr', 'France')")
        .await
        .unwrap();
    assert_eq!(rows_affected(&msgs), vec![1]);
    for s in 0..3 {
        let n: i64 = tc
            .direct(s)
            .await
            .query_one("select count(*) from countries", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "shard {s}");
    }
    // DDL is one distributed transaction: a shard that refuses it leaves it nowhere.
    tc.direct(2)
        .await
        .batch_execute("create table clash (x int)")
        .await
        .unwrap();
    let e = c
        .batch_execute("create table clash (x int)")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "42P07");
    for s in 0..2 {
        let n: i64 = tc
            .direct(s)
            .await
            .query_one(
                "select count(*) from pg_tables where tablename = 'clash'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "shard {s} has no half-made table");
    }
    c.batch_execute("alter table accounts add column note text")
        .await
        .unwrap();
    assert_eq!(prepared_left(&tc).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn savepoints_span_shards_enlisted_before_and_after() {
    let tc = cluster().await;
    let c = tc.client().await;
    let (a, b) = two_shards(&tc);
    c.batch_execute(&format!(
        "begin; update accounts set balance = 1 where id = {a}; savepoint s1; \
         update accounts set balance = 2 where id = {b}; update accounts set balance = 3 where id = {a}; \
         rollback to savepoint s1; commit"
    ))
    .await
    .unwrap();
    // b's shard joined after the savepoint; rolling back to it undid b's write too.
    assert_eq!((balance(&c, a).await, balance(&c, b).await), (1, 100));
    // An error after a savepoint: ROLLBACK TO makes the transaction usable again.
    c.batch_execute("begin").await.unwrap();
    c.batch_execute(&format!("update accounts set balance = 5 where id = {a}"))
        .await
        .unwrap();
    c.batch_execute("savepoint s2").await.unwrap();
    let e = c
        .batch_execute(&format!("update accounts set balance = 1/0 where id = {b}"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "22012");
    let e = c.batch_execute("select 1").await.unwrap_err();
    assert_eq!(code(&e), "25P02");
    c.batch_execute("rollback to s2").await.unwrap();
    c.batch_execute(&format!("update accounts set balance = 6 where id = {b}"))
        .await
        .unwrap();
    c.batch_execute("release savepoint s2").await.unwrap();
    let e = c.batch_execute("rollback to s2").await.unwrap_err();
    assert_eq!(code(&e), "3B001");
    c.batch_execute("rollback").await.unwrap();
    let e = c.batch_execute("savepoint outside").await.unwrap_err();
    assert_eq!(code(&e), "25P01");
    c.batch_execute(&format!(
        "begin; update accounts set balance = 5 where id = {a}; savepoint s; \
         update accounts set balance = 6 where id = {b}; release savepoint s; commit"
    ))
    .await
    .unwrap();
    assert_eq!((balance(&c, a).await, balance(&c, b).await), (5, 6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_that_refuses_at_commit_rolls_back_every_shard() {
    let tc = cluster().await;
    let (c, mut conn) = tokio_postgres::connect(&tc.url("app", "secret"), tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, mut notices) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(msg)) = futures_util::StreamExt::next(&mut stream).await {
            if let tokio_postgres::AsyncMessage::Notice(n) = msg {
                let _ = tx.send(n.message().to_string());
            }
        }
    });
    // A deferred unique constraint is checked when the shard's transaction ends: at PREPARE
    // TRANSACTION on a participant, at COMMIT on the decider (the lowest written shard).
    c.batch_execute(
        "create table uniq (id bigint, v int, primary key (id) deferrable initially deferred)",
    )
    .await
    .unwrap();
    let on = |s: usize| tc.keys_on(s, 1..500, 1);
    let (low, high) = (on(0), on(2));
    // Participant refuses (shard 2 prepares), then decider refuses (shard 0 commits).
    for (clash, other) in [(&high, low[0]), (&low, high[0])] {
        c.batch_execute("begin").await.unwrap();
        c.batch_execute(&format!(
            "update accounts set balance = 0 where id = {other}"
        ))
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
        c.batch_execute(&format!(
            "insert into uniq (id, v) values ({0}, 1), ({0}, 2)",
            clash[0]
        ))
        .await
        .unwrap();
        let e = c.batch_execute("commit").await.unwrap_err();
        assert_eq!(code(&e), "23505", "{e:?}");
        let n: i64 = c
            .query_one("select count(*) from uniq", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "nothing of the transaction is left");
        assert_ne!(balance(&c, other).await, 0, "the other shard rolled back");
        assert_eq!(prepared_left(&tc).await, 0);
        // The failed PREPARE ended the participant's transaction: no ROLLBACK went there to
        // answer "there is no transaction in progress".
        let said: Vec<String> = std::iter::from_fn(|| notices.try_recv().ok()).collect();
        assert!(said.is_empty(), "notices: {said:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_resolves_in_doubt_branches_by_their_decision_row() {
    let tc = cluster().await;
    let (a, b) = two_shards(&tc);
    let (sa, sb) = (tc.owner(a), tc.owner(b));
    // Two transactions left prepared on b's shard as a crashed proxy would leave them, with
    // a's shard as decider: one decided 'c', one never decided.
    let decider = tc.direct(sa).await;
    let branch = tc.direct(sb).await;
    let committed = format!("sg_00000000000000aa_1_s{sa}");
    let undecided = format!("sg_00000000000000aa_2_s{sa}");
    branch
        .batch_execute(&format!(
            "begin; update accounts set balance = 500 where id = {b}; prepare transaction '{committed}'"
        ))
        .await
        .unwrap();
    decider
        .batch_execute(&format!(
            "insert into shardgate.commit_record (gid, outcome) values ('{committed}', 'c')"
        ))
        .await
        .unwrap();
    branch
        .batch_execute(&format!(
            "begin; insert into accounts (id, balance) values (9000{b}, 1); prepare transaction '{undecided}'"
        ))
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    // A client's own prepared transaction is never touched.
    branch
        .batch_execute("begin; create table mine (x int); prepare transaction 'my_own_gid'")
        .await
        .unwrap();
    let c = tc.client().await;
    let rows = c.simple_query("show shardgate.recover").await.unwrap();
    let outcomes: Vec<(String, String)> = rows
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((r.get(0).unwrap().to_string(), r.get(2).unwrap().to_string()))
            }
            _ => None,
        })
        .collect();
    assert!(
        outcomes.contains(&(committed.clone(), "commit".into())),
        "{outcomes:?}"
    );
    assert!(
        outcomes.contains(&(undecided.clone(), "rollback".into())),
        "{outcomes:?}"
    );
    assert_eq!(balance(&c, b).await, 500, "the decided branch committed");
    let gids: Vec<String> = branch
        .query("select gid from pg_prepared_xacts", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(gids, vec!["my_own_gid".to_string()]);
    // The fence left an abort decision for the undecided gid: a late coordinator cannot
    // commit it any more.
    let outcome: String = decider
        .query_one(
            "select outcome::text from shardgate.commit_record where gid = $1",
            &[&undecided],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(outcome, "a");
    branch
        .batch_execute("rollback prepared 'my_own_gid'")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_two_phase_commands_and_disconnects() {
    let tc = cluster().await;
    let c = tc.client().await;
    for sql in [
        "prepare transaction 'x'",
        "commit prepared 'x'",
        "rollback prepared 'x'",
    ] {
        let e = c.batch_execute(sql).await.unwrap_err();
        assert_eq!(code(&e), "0A000", "{sql}");
    }
    // A client that goes away mid-transaction leaves nothing open on any shard.
    let (a, b) = two_shards(&tc);
    let gone = tc.client().await;
    gone.batch_execute(&format!(
        "begin; update accounts set balance = 0 where id = {a}; update accounts set balance = 0 where id = {b}"
    ))
    .await
    .unwrap();
    drop(gone);
    for _ in 0..100 {
        let mut open = 0;
        for s in 0..3 {
            open += tc
                .direct(s)
                .await
                .query_one(
                    "select count(*) from pg_stat_activity where state like 'idle in transaction%'",
                    &[],
                )
                .await
                .unwrap()
                .get::<_, i64>(0);
        }
        if open == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!((balance(&c, a).await, balance(&c, b).await), (100, 100));
    assert_eq!(prepared_left(&tc).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_that_cannot_prepare_stop_the_proxy_at_start() {
    let (shards, dir) = tokio::task::spawn_blocking(|| common::start_shards(2))
        .await
        .unwrap();
    let guard = common::ShardsGuard {
        shards: shards.clone(),
        dir,
    };
    let mut unprepared = shards[1].clone();
    unprepared.options.max_prepared_transactions = 0;
    shards[1].stop(false).unwrap();
    unprepared.start().unwrap();
    let text = common::config_for(common_port(), &shards, "");
    let config = shardgate::config::Config::from_toml(&text).unwrap();
    let err = match shardgate::server::Proxy::start(&config).await {
        Ok(_) => panic!("the proxy must refuse to start"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("max_prepared_transactions"), "{err}");
    assert!(err.contains("s1"), "{err}");
    // The shard restarted without prepared transactions is the same directory: stopping the
    // guard's copy stops it.
    drop(guard);
}

fn common_port() -> u16 {
    shardgate::localpg::free_port().unwrap()
}

/// The proxy records a commit decision in the `shardgate` schema as the session's current role.
/// Under a role without rights there, a write on several shards is refused with that reason,
/// every shard rolls back, and the session goes on once the role is reset: no connection is
/// left inside an aborted transaction (a pinned session kept such a one before, and answered
/// 25P02 to everything after).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_several_shards_under_a_role_without_rights_rolls_back_cleanly() {
    let tc = cluster().await;
    let c = tc.client().await;
    let (a, b) = two_shards(&tc);
    c.batch_execute("create role sg_limited; grant select, update on accounts to sg_limited")
        .await
        .unwrap();
    let write = format!("update accounts set balance = balance - 1 where id in ({a}, {b})");
    c.batch_execute("set session authorization sg_limited")
        .await
        .unwrap();
    let e = c.batch_execute(&write).await.unwrap_err();
    assert_eq!(code(&e), "42501");
    let db = e.as_db_error().unwrap();
    assert!(db.message().contains("several shards"), "{}", db.message());
    assert!(
        db.position().is_none(),
        "it points at none of the client's text"
    );
    // Still under the role: reads and one-shard writes go on.
    assert_eq!(balance(&c, a).await, 100);
    c.batch_execute(&format!("update accounts set balance = 50 where id = {a}"))
        .await
        .unwrap();
    c.batch_execute("reset session authorization")
        .await
        .unwrap();
    assert_eq!(balance(&c, a).await, 50);
    assert_eq!(balance(&c, b).await, 100);
    c.batch_execute(&write).await.unwrap();
    assert_eq!((balance(&c, a).await, balance(&c, b).await), (49, 99));
    assert_eq!(prepared_left(&tc).await, 0);
    c.batch_execute("drop owned by sg_limited; drop role sg_limited")
        .await
        .unwrap();
}

/// A read that calls a function writing on its shard (an application's logging or queueing
/// function) wrote there: that shard commits with the others, atomically, as in one PostgreSQL,
/// though no plan saw the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_calling_a_writing_function_commits_with_the_transaction() {
    let tc = cluster().await;
    make_notes(&tc).await;
    let notes = |s| notes(&tc, s);
    let c = tc.client().await;
    let (low, high) = (tc.keys_on(0, 1..31, 1)[0], tc.keys_on(2, 1..31, 1)[0]);
    // A planned write on one shard, the function's clashing writes on the other, both ways
    // round (the lower written shard decides); then the function's writes alone, one shard's
    // clashing.
    let cases = [
        (Some(low), low, high),
        (Some(high), high, low),
        (None, low, high),
    ];
    for (update, noted, clash) in cases {
        c.batch_execute("begin").await.unwrap();
        if let Some(id) = update {
            c.batch_execute(&format!("update accounts set balance = 0 where id = {id}"))
                .await
                .unwrap();
        }
        c.batch_execute(&format!("select note(id) from accounts where id = {noted}"))
            .await
            .unwrap();
        c.batch_execute(&format!(
            "select note(id), note(id) from accounts where id = {clash}"
        ))
        .await
        .unwrap();
        let e = c.batch_execute("commit").await.unwrap_err();
        assert_eq!(code(&e), "23505", "{update:?} {noted} {clash}: {e:?}");
        for s in [0, 2] {
            assert_eq!(notes(s).await, 0, "shard {s} kept a note ({update:?})");
        }
        if let Some(id) = update {
            assert_eq!(balance(&c, id).await, 100, "the update rolled back");
        }
        assert_eq!(prepared_left(&tc).await, 0);
    }
    // Without a clash everything commits.
    c.batch_execute(&format!(
        "begin; update accounts set balance = 7 where id = {low};
         select note(id) from accounts where id = {high}; commit"
    ))
    .await
    .unwrap();
    assert_eq!((balance(&c, low).await, notes(2).await), (7, 1));
}

/// On every shard, a table the configuration does not declare and a function that writes it,
/// made through the proxy so that its planner knows the function from the next transaction
/// on. Deferred, so that a clash shows only when a shard's transaction ends.
async fn make_notes(tc: &TestCluster) {
    let c = tc.client().await;
    c.batch_execute("create table notes (k bigint, primary key (k) deferrable initially deferred)")
        .await
        .unwrap();
    c.batch_execute(
        "create function note(k bigint) returns bigint language sql
           as $$ insert into notes values (k) returning k $$",
    )
    .await
    .unwrap();
}

/// The SQLSTATEs of the errors `raw` gets up to its next ReadyForQuery.
async fn error_codes(raw: &mut Raw) -> Vec<Option<String>> {
    raw.until_ready()
        .await
        .into_iter()
        .filter(|(t, _)| *t == b'E')
        .map(|(_, body)| raw::field(&body, b'C'))
        .collect()
}

async fn notes(tc: &TestCluster, shard: usize) -> i64 {
    tc.direct(shard)
        .await
        .query_one("select count(*) from notes", &[])
        .await
        .unwrap()
        .get(0)
}

/// Outside a transaction block a statement, and a pipeline up to its Sync, is one transaction
/// in PostgreSQL: a function's writes on one shard are undone when another shard fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writing_function_outside_a_transaction_block_is_undone_with_its_statement() {
    // In shard consistency, and in snapshot consistency (the reader's), whose reads of several
    // shards outside a transaction take a cut of their own.
    let gated = TABLES.replace("[transactions]\n", "[transactions]\nsnapshot = true\n");
    let tc = cluster_with(&format!("{gated}{}", common::SNAPSHOT_READER)).await;
    make_notes(&tc).await;
    for url in [tc.url("app", "secret"), tc.url("reader", "none")] {
        notes_undone_with_their_statement(&tc, &url).await;
        tc.client()
            .await
            .batch_execute("truncate notes")
            .await
            .unwrap();
    }
}

async fn notes_undone_with_their_statement(tc: &TestCluster, url: &str) {
    let c = common::connect(url).await.unwrap();
    let (low, high) = (tc.keys_on(0, 1..31, 2), tc.keys_on(2, 1..31, 1)[0]);
    let in_list = format!("{}, {}, {high}", low[0], low[1]);
    let none_left = || async {
        for s in 0..tc.shards.len() {
            assert_eq!(notes(tc, s).await, 0, "shard {s} kept a note ({url})");
        }
    };
    // A read of two shards: shard 0 notes 0 twice, which clashes at its commit.
    let e = c
        .batch_execute(&format!(
            "select note(0) from accounts where id in ({in_list})"
        ))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "23505", "{e:?}");
    none_left().await;
    let e = c
        .query(
            &format!("select note($1::bigint) from accounts where id in ({in_list})"),
            &[&0i64],
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), "23505", "{e:?}");
    none_left().await;
    // A pipeline: a read calling the function on one shard, then a statement failing on
    // another, before one Sync.
    let (mut raw, _) = Raw::login(tc.port).await;
    let mut batch = raw::piped(
        &format!("select note($1::bigint) from accounts where id = {high}"),
        5,
    );
    batch.extend(raw::piped(
        "select 1 / (id - id) from accounts where id = $1",
        low[0],
    ));
    batch.extend(raw::message(b'S', &[]));
    raw.send(&batch).await;
    assert_eq!(error_codes(&mut raw).await, vec![Some("22012".to_string())]);
    none_left().await;
    // A COPY of such a read's rows, as a Query and with the extended protocol. (Drivers'
    // COPY streams end at CopyDone and never read an error that comes at the commit.)
    let copy = format!("copy (select note(0) from accounts where id in ({in_list})) to stdout");
    for request in [raw::query(&copy), raw::one_shot::<&str>(&copy, &[], &[])] {
        raw.send(&request).await;
        assert_eq!(
            error_codes(&mut raw).await,
            vec![Some("23505".to_string())],
            "{copy}"
        );
        none_left().await;
    }
    // With nothing failing, every shard's notes stay.
    c.batch_execute(&format!(
        "select note(id) from accounts where id in ({}, {high})",
        low[0]
    ))
    .await
    .unwrap();
    assert_eq!((notes(tc, 0).await, notes(tc, 2).await), (1, 1));
}
