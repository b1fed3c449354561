//! Values an INSERT gives itself to a sequence-filled column that a unique index without the
//! shard key holds (`lines.id serial PRIMARY KEY` on a table sharded by `account_id`), on three
//! unlike shards. Each shard checks the index against its own rows only, so before this change
//! a given id that another shard held was written a second time. Now it fails with 23505 as in
//! PostgreSQL, in every protocol, two writers of one value take turns, and the sequence never
//! hands out a value given. The same holds for a value an UPDATE sets and a COPY gives.

mod common;

use common::{answer, code, copy_in, db_error, TestCluster};

const TABLES: &str = r#"
[tables.lines]
shard_key = "account_id"
key_type = "bigint"
"#;

async fn cluster() -> TestCluster {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let c = tc.client().await;
    c.batch_execute(
        "create table lines (id serial primary key, account_id bigint not null, note text);
         insert into lines (account_id, note) values (1, 'x'), (2, 'x'), (3, 'x'), (4, 'x'), (5, 'x'), (6, 'x');",
    )
    .await
    .unwrap();
    tc
}

/// Two accounts whose rows live on different shards.
fn apart(tc: &TestCluster) -> (i64, i64) {
    (1..100)
        .flat_map(|a| (1..100).map(move |b| (a, b)))
        .find(|&(a, b)| tc.owner(a) != tc.owner(b))
        .unwrap()
}

/// Every shard's ids of `lines`, as one sorted list (a duplicate shows twice).
async fn ids_everywhere(tc: &TestCluster) -> Vec<i64> {
    let mut ids = Vec::new();
    for i in 0..3 {
        for r in answer(&tc.direct(i).await, "select id from lines").await {
            ids.push(r[0].as_ref().unwrap().parse().unwrap());
        }
    }
    ids.sort_unstable();
    ids
}

fn duplicate(e: &tokio_postgres::Error, id: i64, what: &str) {
    assert_eq!(code(e), "23505", "{what}: {e:?}");
    let db = db_error(e);
    assert_eq!(
        db.message(),
        "duplicate key value violates unique constraint \"lines_pkey\"",
        "{what}"
    );
    assert_eq!(
        db.detail(),
        Some(format!("Key (id)=({id}) already exists.").as_str()),
        "{what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_given_id_another_shard_holds_is_a_duplicate_in_every_protocol() {
    let tc = cluster().await;
    let c = tc.client().await;
    // The row with id 1 lives under account 1; account `other` lives on another shard.
    let other = (2..100).find(|&a| tc.owner(a) != tc.owner(1)).unwrap();
    let before = ids_everywhere(&tc).await;

    // In the simple protocol: plain, with Django's quoted columns, a literal in quotes, no
    // column list, SQL EXECUTE, beside a new row, and a new id twice in one statement under
    // keys on two shards (neither shard would see the other).
    c.batch_execute(
        "prepare put(int, bigint) as insert into lines (id, account_id, note) values ($1, $2, 'dup')",
    )
    .await
    .unwrap();
    for (sql, id) in [
        (format!("insert into lines (id, account_id, note) values (1, {other}, 'dup')"), 1),
        (format!("insert into lines (\"id\", \"account_id\", \"note\") values (2, {other}, 'dup')"), 2),
        (format!("insert into lines values ('2', {other}, 'dup')"), 2),
        (format!("execute put(3, {other})"), 3),
        (format!("insert into lines (id, account_id, note) values (900, {other}, 'new'), (4, {other}, 'dup')"), 4),
        (format!("insert into lines (id, account_id) values (902, 1), (902, {other})"), 902),
    ] {
        duplicate(&c.simple_query(&sql).await.unwrap_err(), id, &sql);
    }
    // Bound values; INSERT ... SELECT, whose rows the proxy reads first.
    let e = c
        .execute(
            "insert into lines (id, account_id, note) values ($1, $2, 'dup')",
            &[&1i32, &other],
        )
        .await
        .unwrap_err();
    duplicate(&e, 1, "bound");
    let e = c
        .simple_query(&format!(
            "insert into lines (id, account_id, note) select g, {other}, 'dup' from generate_series(3, 4) g"
        ))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "23505", "{e:?}");
    assert_eq!(ids_everywhere(&tc).await, before, "nothing written");

    // A value nobody holds is written, where its key puts it.
    let n = c
        .execute(
            "insert into lines (id, account_id, note) values ($1, $2, 'new')",
            &[&901i32, &other],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let on_owner = answer(
        &tc.direct(tc.owner(other)).await,
        "select account_id from lines where id = 901",
    )
    .await;
    assert_eq!(on_owner, vec![vec![Some(other.to_string())]]);

    // A computed value cannot be looked for as the shard will compute it.
    let e = c
        .simple_query(&format!(
            "insert into lines (id, account_id) values ((random() * 100)::int, {other})"
        ))
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000", "{e:?}");
    assert!(db_error(&e).hint().unwrap().contains("DEFAULT"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sequence_never_hands_out_a_given_value() {
    let tc = cluster().await;
    let c = tc.client().await;
    // The values the sequence would hand out next (each INSERT draws from the proxy's block),
    // then each given by an application, some in the same statement as rows left to the
    // sequence.
    let next: i64 = answer(&c, "insert into lines (account_id) values (7) returning id").await[0]
        [0]
    .as_ref()
    .unwrap()
    .parse()
    .unwrap();
    c.simple_query(&format!(
        "insert into lines (id, account_id) values ({}, 8), (default, 9), ({}, 10)",
        next + 1,
        next + 3
    ))
    .await
    .unwrap();
    c.execute(
        "insert into lines (id, account_id) values ($1, 11)",
        &[&((next + 150) as i32)],
    )
    .await
    .unwrap();
    // More rows than the proxy's block of drawn values holds, so the sequence is drawn from
    // again past the given values.
    c.simple_query("insert into lines (account_id) select g from generate_series(12, 250) g")
        .await
        .unwrap();
    let ids = ids_everywhere(&tc).await;
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(ids.len(), 6 + 1 + 3 + 1 + 239);
    assert_eq!(ids, unique, "no id twice across the shards");
    assert!(*ids.last().unwrap() > next + 150, "{ids:?}");

    // A value far beyond the sequence is refused with the way to move it first.
    let e = c
        .simple_query("insert into lines (id, account_id) values (50000000, 1)")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000", "{e:?}");
    assert!(db_error(&e).hint().unwrap().contains("setval"), "{e:?}");
    c.simple_query("select setval('lines_id_seq', 50000000)")
        .await
        .unwrap();
    c.simple_query("insert into lines (id, account_id) values (50000000, 1)")
        .await
        .unwrap();
}

/// Until a statement waits for a lock of `locktype` on `shard` (`waiting` must not end
/// before).
async fn waits_on<T>(
    shard: &tokio_postgres::Client,
    locktype: &str,
    waiting: &tokio::task::JoinHandle<T>,
) {
    let sql =
        format!("select count(*) from pg_locks where locktype = '{locktype}' and not granted");
    for _ in 0..600 {
        if answer(shard, &sql).await[0][0].as_deref() == Some("1") {
            return;
        }
        assert!(
            !waiting.is_finished(),
            "the writer did not wait on {locktype}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the writer never waited on {locktype}");
}

/// Until a second writer waits for the first one's lock on the first shard.
async fn one_waits<T>(home: &tokio_postgres::Client, waiting: &tokio::task::JoinHandle<T>) {
    waits_on(home, "advisory", waiting).await
}

/// How the second writer writes the id: an INSERT, or an UPDATE setting it on its row.
#[derive(Clone, Copy)]
enum Second {
    Inserts,
    Sets,
}

/// `first` inserts `id` under account `a` in a transaction it keeps open; `second` then writes
/// it under `b` (as `how` says) in its own transaction (opened by `begin`), waits for the
/// first's lock, and answers once `first` ends with `end`.
async fn second_after_first(
    (home, first): (&tokio_postgres::Client, &tokio_postgres::Client),
    (second, begin, how): (tokio_postgres::Client, &str, Second),
    (id, a, b): (i64, i64, i64),
    end: &str,
) -> (
    tokio_postgres::Client,
    Result<Vec<tokio_postgres::SimpleQueryMessage>, tokio_postgres::Error>,
) {
    first.batch_execute("begin").await.unwrap();
    first
        .simple_query(&format!(
            "insert into lines (id, account_id) values ({id}, {a})"
        ))
        .await
        .unwrap();
    second.batch_execute(begin).await.unwrap();
    let sql = match how {
        Second::Sets => format!("update lines set id = {id} where account_id = {b}"),
        Second::Inserts => format!("insert into lines (id, account_id) values ({id}, {b})"),
    };
    let waiting = tokio::spawn(async move {
        let r = second.simple_query(&sql).await;
        (second, r)
    });
    one_waits(home, &waiting).await;
    first.batch_execute(end).await.unwrap();
    waiting.await.unwrap()
}

/// Once the first writer of `id` (then `id + 1`) commits, the second gets 23505: at READ
/// COMMITTED, and at REPEATABLE READ with a snapshot on every shard older than that commit,
/// which does not see the first's row; PostgreSQL's unique check would, and so does the
/// proxy's.
async fn second_sees_the_commit(
    writers: (&tokio_postgres::Client, &tokio_postgres::Client),
    (second, how): (tokio_postgres::Client, Second),
    (id, a, b): (i64, i64, i64),
) -> tokio_postgres::Client {
    let (second, r) =
        second_after_first(writers, (second, "begin", how), (id, a, b), "commit").await;
    duplicate(&r.unwrap_err(), id, "after the first committed");
    second.batch_execute("rollback").await.unwrap();
    let begin = "begin isolation level repeatable read; select count(*) from lines";
    let (second, r) =
        second_after_first(writers, (second, begin, how), (id + 1, a, b), "commit").await;
    duplicate(&r.unwrap_err(), id + 1, "repeatable read");
    second.batch_execute("rollback").await.unwrap();
    second
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_of_one_value_take_turns() {
    let tc = cluster().await;
    let (a, b) = apart(&tc);
    let first = tc.client().await;
    let home = tc.direct(0).await;
    let second = (tc.client().await, Second::Inserts);
    let second = second_sees_the_commit((&home, &first), second, (700, a, b)).await;

    // When the first rolls back, the second's value is free.
    let second = (second, "begin", Second::Inserts);
    let (second, r) = second_after_first((&home, &first), second, (703, a, b), "rollback").await;
    r.unwrap();
    second.batch_execute("commit").await.unwrap();
    let rows = answer(&first, "select account_id from lines where id = 703").await;
    assert_eq!(rows, vec![vec![Some(b.to_string())]]);

    // In one transaction, its own row on another shard is seen.
    first.batch_execute("begin").await.unwrap();
    first
        .simple_query(&format!(
            "insert into lines (id, account_id) values (702, {a})"
        ))
        .await
        .unwrap();
    let e = first
        .simple_query(&format!(
            "insert into lines (id, account_id) values (702, {b})"
        ))
        .await
        .unwrap_err();
    duplicate(&e, 702, "own transaction");
    first.batch_execute("rollback").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_with_ids_is_looked_at_as_an_insert_is() {
    let tc = cluster().await;
    let c = tc.client().await;
    let other = (2..100).find(|&a| tc.owner(a) != tc.owner(1)).unwrap();
    let before = ids_everywhere(&tc).await;
    // An id another account's line holds, in text and CSV; one id twice under two keys.
    for (sql, data) in [
        (
            "copy lines (id, account_id, note) from stdin",
            format!("800\t{other}\tnew\n1\t{other}\tdup\n"),
        ),
        (
            "copy lines (account_id, id) from stdin (format csv)",
            format!("{other},\"2\"\n"),
        ),
        (
            "copy lines (id, account_id) from stdin",
            format!("801\t1\n801\t{other}\n"),
        ),
    ] {
        let e = copy_in(&c, sql, data.as_bytes()).await.unwrap_err();
        assert_eq!(code(&e), "23505", "{sql}: {e:?}");
        assert!(
            db_error(&e).detail().unwrap().contains("already exists"),
            "{e:?}"
        );
    }
    assert_eq!(ids_everywhere(&tc).await, before, "nothing kept");

    // New ids, in binary too, are kept; the sequence then moves past them.
    let n = copy_in(
        &c,
        "copy lines (id, account_id, note) from stdin",
        format!("802\t1\ta\n803\t{other}\tb\n").as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(n, 2);
    let mut binary = b"PGCOPY\n\xff\r\n\0".to_vec();
    binary.extend_from_slice(&[0; 8]);
    binary.extend_from_slice(&2i16.to_be_bytes());
    binary.extend_from_slice(&4i32.to_be_bytes());
    binary.extend_from_slice(&804i32.to_be_bytes());
    binary.extend_from_slice(&8i32.to_be_bytes());
    binary.extend_from_slice(&other.to_be_bytes());
    binary.extend_from_slice(&(-1i16).to_be_bytes());
    let n = copy_in(
        &c,
        "copy lines (id, account_id) from stdin (format binary)",
        &binary,
    )
    .await
    .unwrap();
    assert_eq!(n, 1);
    let e = copy_in(
        &c,
        "copy lines (id, account_id) from stdin (format binary)",
        &binary,
    )
    .await
    .unwrap_err();
    assert_eq!(code(&e), "23505", "{e:?}");
    c.simple_query("insert into lines (account_id) select g from generate_series(1, 120) g")
        .await
        .unwrap();
    let ids = ids_everywhere(&tc).await;
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(ids, unique, "no id twice across the shards");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_an_update_sets_is_looked_for_on_every_shard() {
    let tc = cluster().await;
    let c = tc.client().await;
    // Accounts of one row each: `other` on another shard than account 1, `a` and `b` apart.
    let other = (100..200).find(|&x| tc.owner(x) != tc.owner(1)).unwrap();
    let a = other + 1;
    let b = (a + 1..300).find(|&x| tc.owner(x) != tc.owner(a)).unwrap();
    c.simple_query(&format!(
        "insert into lines (account_id, note) values ({a}, 'a'), ({b}, 'b'), ({other}, 'o')"
    ))
    .await
    .unwrap();
    let before = ids_everywhere(&tc).await;

    // Id 1 lives under account 1, on another shard: by key, by several keys, with RETURNING,
    // through SQL EXECUTE; then two rows on two shards given one new id, named by their keys
    // and by another column over every shard.
    c.batch_execute(
        "prepare move_to(int, bigint) as update lines set id = $1 where account_id = $2",
    )
    .await
    .unwrap();
    for sql in [
        format!("update lines set id = 1 where account_id = {other}"),
        format!("update lines set id = 1, note = 'n' where account_id in ({other}, 99999)"),
        format!("update lines set id = 1 where note = 'o' and account_id = {other} returning id"),
        format!("execute move_to(1, {other})"),
    ] {
        duplicate(&c.simple_query(&sql).await.unwrap_err(), 1, &sql);
    }
    let sql = format!("update lines set id = 800 where account_id in ({a}, {b})");
    duplicate(&c.simple_query(&sql).await.unwrap_err(), 800, &sql);
    let sql = "update lines set id = 801 where note in ('a', 'b')";
    duplicate(&c.simple_query(sql).await.unwrap_err(), 801, sql);
    // Bound, twice through one prepared statement (the second Bind may take the fast path).
    let set = c
        .prepare("update lines set id = $1 where account_id = $2")
        .await
        .unwrap();
    for _ in 0..2 {
        duplicate(
            &c.execute(&set, &[&1i32, &other]).await.unwrap_err(),
            1,
            "bound",
        );
    }
    // An upsert's DO UPDATE setting the id.
    c.batch_execute("create unique index lines_account_note on lines (account_id, note)")
        .await
        .unwrap();
    let upsert = format!(
        "insert into lines (account_id, note) values ({other}, 'o') on conflict (account_id, note) do update set"
    );
    let sql = format!("{upsert} id = 1 returning id");
    duplicate(&c.simple_query(&sql).await.unwrap_err(), 1, &sql);
    // In a transaction: the statement fails and nothing of it is kept.
    c.batch_execute("begin").await.unwrap();
    let e = c
        .simple_query(&format!(
            "update lines set id = 1 where account_id = {other}"
        ))
        .await
        .unwrap_err();
    duplicate(&e, 1, "in a transaction");
    c.batch_execute("rollback").await.unwrap();
    // After a savepoint, the shard ran the write before the look failed it: rolling back to
    // the savepoint undoes it there, and the transaction commits what came before.
    c.batch_execute(&format!(
        "begin; update lines set note = 'kept' where account_id = {a}; savepoint s"
    ))
    .await
    .unwrap();
    let e = c
        .simple_query(&format!(
            "update lines set id = 1 where account_id = {other}"
        ))
        .await
        .unwrap_err();
    duplicate(&e, 1, "after a savepoint");
    c.batch_execute("rollback to savepoint s; commit")
        .await
        .unwrap();
    let kept = answer(
        &c,
        &format!("select note from lines where account_id = {a}"),
    )
    .await;
    assert_eq!(kept, vec![vec![Some("kept".to_string())]]);
    assert_eq!(ids_everywhere(&tc).await, before, "nothing written");

    // What changes no row conflicts with nothing, as in PostgreSQL; a row's own id is its own.
    let n = c
        .execute(
            "update lines set id = 1 where account_id = $1",
            &[&99999i64],
        )
        .await
        .unwrap();
    assert_eq!(n, 0);
    c.simple_query("update lines set id = 1 where account_id = 1 and id = 1")
        .await
        .unwrap();
    // A new id is set, and the sequence never hands it out.
    assert_eq!(c.execute(&set, &[&850i32, &other]).await.unwrap(), 1);
    let next = answer(&c, "select nextval('lines_id_seq')").await;
    assert!(next[0][0].as_ref().unwrap().parse::<i64>().unwrap() > 850);
    let ids = ids_everywhere(&tc).await;
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(ids, unique, "no id twice across the shards");

    // The row the upsert proposed carries the sequence's value.
    let n = c
        .execute(&format!("{upsert} id = excluded.id"), &[])
        .await
        .unwrap();
    assert_eq!(n, 1);
    // Values the look cannot read as the shard will write them are refused.
    let default = format!("{upsert} id = default");
    for (sql, hint) in [
        (
            "update lines set id = default where account_id = 1",
            "nextval",
        ),
        (default.as_str(), "nextval"),
        (
            "update lines set id = id + 1000 where account_id = 1",
            "constant",
        ),
        (
            "update lines set (id, note) = (5000, 'x') where account_id = 1",
            "on its own",
        ),
    ] {
        let e = c.simple_query(sql).await.unwrap_err();
        assert_eq!(code(&e), "0A000", "{sql}: {e:?}");
        assert!(db_error(&e).hint().unwrap().contains(hint), "{sql}: {e:?}");
    }

    // An UPDATE waits for an INSERT of the value on another shard, and sees its commit.
    let home = tc.direct(0).await;
    let first = tc.client().await;
    let second = (tc.client().await, Second::Sets);
    second_sees_the_commit((&home, &first), second, (720, a, b)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_through_the_lock_of_set_values_is_ended() {
    let tc = cluster().await;
    // Account `r`'s row lives off the first shard, where writers of such values lock first.
    let r = (1..=6).find(|&x| tc.owner(x) != 0).unwrap();
    let (holder, writer) = (tc.client().await, tc.client().await);
    holder
        .batch_execute(&format!(
            "begin; update lines set note = 'held' where account_id = {r}"
        ))
        .await
        .unwrap();
    writer.batch_execute("begin").await.unwrap();
    // The writer takes the lock on every shard, then waits for the holder's row; the holder
    // then waits for the writer's lock: a cycle over two shards, which neither shard sees.
    let sets = |c: tokio_postgres::Client, sql: String| {
        tokio::spawn(async move {
            let r = c.simple_query(&sql).await;
            (c, r)
        })
    };
    let writing = sets(
        writer,
        format!("update lines set id = 5000 where account_id = {r}"),
    );
    waits_on(&tc.direct(tc.owner(r)).await, "transactionid", &writing).await;
    let other = if r == 1 { 2 } else { 1 };
    let holding = sets(
        holder,
        format!("update lines set id = 5001 where account_id = {other}"),
    );
    let guard = std::time::Duration::from_secs(60);
    let (mut one, mut two) = (writing, holding);
    let first = tokio::time::timeout(guard, async {
        tokio::select! {
            r = &mut one => (r.unwrap(), two),
            r = &mut two => (r.unwrap(), one),
        }
    })
    .await
    .expect("the cycle was ended");
    let ((loser, err), still) = match first {
        ((c, Err(e)), still) => ((c, e), still),
        ((_, Ok(_)), _) => panic!("one went on while the other held what it needed"),
    };
    assert_eq!(code(&err), "40P01", "{err:?}");
    loser.batch_execute("rollback").await.unwrap();
    let (winner, r) = tokio::time::timeout(guard, still)
        .await
        .expect("the other went on")
        .unwrap();
    r.unwrap();
    winner.batch_execute("commit").await.unwrap();
    let ids = ids_everywhere(&tc).await;
    assert_eq!(ids.iter().filter(|&&i| i == 5000 || i == 5001).count(), 1);
}
