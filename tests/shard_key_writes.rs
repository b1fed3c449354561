//! Writes that name a sharded table's key in SET, on three unlike shards: an UPDATE or an
//! upsert's DO UPDATE that keeps each row's key runs (an ORM's `save()` writes every column),
//! one that would change a key fails with 0A000 and changes nothing on any shard, where before
//! an upsert moved the key and left the row on the old key's shard. An upsert whose conflict
//! target leaves out the key is refused: it would miss a conflicting row on another shard.

mod common;

use common::{answer, code, db_error, TestCluster};

const TABLES: &str = r#"
[tables.accounts]
shard_key = "id"
key_type = "bigint"
[tables.lines]
shard_key = "account_id"
key_type = "bigint"
"#;

async fn cluster() -> TestCluster {
    let tc = TestCluster::start_unlike(3, "", TABLES).await;
    let c = tc.client().await;
    c.batch_execute(
        "create table accounts (id bigint primary key, owner text);
         create table lines (id serial primary key, account_id bigint not null, note text);
         insert into accounts values (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd'), (5, 'e'), (6, 'f');
         insert into lines (account_id, note) values (1, 'x'), (2, 'x'), (3, 'x'), (4, 'x'), (5, 'x'), (6, 'x');",
    )
    .await
    .unwrap();
    tc
}

/// Each shard's rows of `accounts`, as `id:owner`, sorted.
async fn accounts_on_each_shard(tc: &TestCluster) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for i in 0..3 {
        let rows = answer(
            &tc.direct(i).await,
            "select id || ':' || owner from accounts order by id",
        )
        .await;
        out.push(rows.into_iter().map(|r| r[0].clone().unwrap()).collect());
    }
    out
}

/// The id of the one row of `lines` under `account`.
async fn line_of(c: &tokio_postgres::Client, account: i64) -> i32 {
    c.query_one("select id from lines where account_id = $1", &[&account])
        .await
        .unwrap()
        .get(0)
}

async fn refused_as_a_key_change(c: &tokio_postgres::Client, sql: &str) {
    let e = c.simple_query(sql).await.unwrap_err();
    assert_eq!(code(&e), "0A000", "{sql}: {e:?}");
    assert!(
        db_error(&e)
            .message()
            .contains("may not change the shard key"),
        "{sql}: {e:?}"
    );
    assert!(db_error(&e).hint().is_some(), "{sql}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upsert_may_not_move_a_key() {
    let tc = cluster().await;
    let c = tc.client().await;
    let before = accounts_on_each_shard(&tc).await;
    refused_as_a_key_change(&c, "update accounts set id = 40 where id = 4").await;
    for sql in [
        "insert into accounts values (5, 'z') on conflict (id) do update set id = 200",
        "insert into accounts as t values (5, 'z') on conflict (id) do update set owner = 'z', id = t.id + 100",
        "insert into accounts values (5, 'z'), (6, 'z') on conflict (id) do update set id = excluded.id * 10",
        "insert into accounts values (5, 'z') on conflict (id) do update set (id, owner) = (7, 'z')",
    ] {
        refused_as_a_key_change(&c, sql).await;
    }
    assert_eq!(accounts_on_each_shard(&tc).await, before, "nothing moved");
    assert_eq!(
        answer(&c, "select count(*) from accounts where id >= 100").await,
        vec![vec![Some("0".to_string())]]
    );

    // An upsert naming the key with the value it conflicted on writes the rest of the row, as
    // SQLAlchemy's and Django's upserts do.
    let rows = answer(
        &c,
        "insert into accounts values (5, 'e2'), (6, 'f2'), (7, 'g') on conflict (id) do update set id = excluded.id, owner = excluded.owner returning id, owner",
    )
    .await;
    assert_eq!(rows.len(), 3);
    for (id, name) in [(5, "e2"), (6, "f2"), (7, "g")] {
        let on_owner = answer(
            &tc.direct(tc.owner(id)).await,
            &format!("select owner from accounts where id = {id}"),
        )
        .await;
        assert_eq!(on_owner, vec![vec![Some(name.to_string())]], "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_that_keeps_the_key_runs_and_one_that_moves_it_changes_nothing() {
    let tc = cluster().await;
    let c = tc.client().await;
    // An ORM's save() of a row of `lines`, found by its id on whichever shard holds it.
    let id = line_of(&c, 4).await;
    let n = c
        .execute(
            "update lines set account_id = $1, note = $2 where id = $3",
            &[&4i64, &"saved", &id],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        answer(&c, "update lines set account_id = '3', note = 'saved too' where account_id = 3 returning note").await,
        vec![vec![Some("saved too".to_string())]]
    );
    // Moving it to another account's shard: refused, with the row's own shard untouched.
    let e = c
        .execute(
            "update lines set account_id = $1, note = $2 where id = $3",
            &[&5i64, &"moved", &id],
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), "0A000", "{e:?}");
    // Over several shards the statement is one transaction: the rows that kept their key are
    // not written either.
    refused_as_a_key_change(&c, "update lines set account_id = 2, note = 'all'").await;
    refused_as_a_key_change(&c, "update accounts set id = default where id = 1").await;
    let notes = answer(&c, "select account_id, note from lines order by account_id").await;
    let expect: Vec<Vec<Option<String>>> = (1..=6)
        .map(|a| {
            let note = match a {
                3 => "saved too",
                4 => "saved",
                _ => "x",
            };
            vec![Some(a.to_string()), Some(note.to_string())]
        })
        .collect();
    assert_eq!(notes, expect);
    assert_eq!(
        tc.count_on_each_shard("select count(*) from lines where account_id = 4")
            .await
            .iter()
            .sum::<i64>(),
        1
    );

    // Inside a transaction the failure fails it as any error would; a savepoint takes it back.
    c.batch_execute("begin; update accounts set owner = 'kept' where id = 1; savepoint s")
        .await
        .unwrap();
    refused_as_a_key_change(&c, "update accounts set id = 9 where id = 2").await;
    c.batch_execute("rollback to s; commit").await.unwrap();
    assert_eq!(
        answer(
            &c,
            "select owner from accounts where id in (1, 2) order by id"
        )
        .await,
        vec![vec![Some("kept".to_string())], vec![Some("b".to_string())]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upsert_by_a_column_other_than_the_key_is_refused() {
    let tc = cluster().await;
    let c = tc.client().await;
    let id = line_of(&c, 1).await;
    // The row lives on account 1's shard; the new row would go to account 2's, which has no
    // row of that id to conflict with.
    for sql in [
        format!("insert into lines (id, account_id, note) values ({id}, 2, 'up') on conflict (id) do update set note = excluded.note"),
        format!("insert into lines (id, account_id, note) values ({id}, 2, 'up') on conflict (id) do nothing"),
        format!("insert into lines (id, account_id, note) select {id}, 2, 'up' from generate_series(1, 1) on conflict (\"id\") do nothing"),
        // The primary key named instead of its columns: judged by the shards' catalog.
        format!("insert into lines (id, account_id, note) values ({id}, 2, 'up') on conflict on constraint lines_pkey do update set note = excluded.note"),
        format!("prepare up as insert into lines (id, account_id, note) values ({id}, 2, 'up') on conflict on constraint lines_pkey do nothing; execute up"),
        // No target: every unique index arbitrates, the primary key on id among them.
        format!("insert into lines (id, account_id, note) values ({id}, 2, 'up') on conflict do nothing"),
    ] {
        let e = c.simple_query(&sql).await.unwrap_err();
        assert_eq!(code(&e), "0A000", "{sql}: {e:?}");
        assert!(db_error(&e).hint().unwrap().contains("Include the shard key"), "{sql}");
    }
    for sql in [
        "insert into lines (id, account_id, note) values ($1, $2, 'up') on conflict (id) do nothing",
        "insert into lines (id, account_id, note) values ($1, $2, 'up') on conflict on constraint lines_pkey do nothing",
        "insert into lines (id, account_id, note) values ($1, $2, 'up') on conflict do nothing",
    ] {
        let e = c.execute(sql, &[&id, &2i64]).await.unwrap_err();
        assert_eq!(code(&e), "0A000", "{sql}: {e:?}");
    }
    assert_eq!(
        answer(
            &c,
            &format!("select account_id, note from lines where id = {id}")
        )
        .await,
        vec![vec![Some("1".to_string()), Some("x".to_string())]],
        "one row of that id, untouched"
    );
    // Without a target and without an id of its own (the cluster's sequence fills it, as
    // Django's bulk_create(ignore_conflicts=True) of new objects sends), no row of another
    // shard can conflict: it runs.
    answer(
        &c,
        "insert into lines (account_id, note) values (2, 'fresh') on conflict do nothing",
    )
    .await;
    c.execute(
        "insert into lines (account_id, note) values ($1, 'fresh') on conflict do nothing",
        &[&3i64],
    )
    .await
    .unwrap();
    assert_eq!(
        answer(&c, "select count(*) from lines where note = 'fresh'").await,
        vec![vec![Some("2".to_string())]]
    );
    // A target that includes the key finds every row it could conflict with, named by its
    // columns or as a constraint, in either protocol.
    c.batch_execute("alter table lines add constraint lines_account_id unique (account_id, id)")
        .await
        .unwrap();
    for (n, sql) in [
        "insert into lines (id, account_id, note) values ($1, 1, 'up1') on conflict (account_id, id) do update set note = excluded.note",
        "insert into lines (id, account_id, note) values ($1, 1, 'up2') on conflict on constraint lines_account_id do update set note = excluded.note",
    ]
    .into_iter()
    .enumerate()
    {
        c.execute(sql, &[&id]).await.unwrap();
        answer(&c, &sql.replace("$1", &id.to_string()).replace("'up", "'simple up")).await;
        assert_eq!(
            answer(&c, &format!("select account_id, note from lines where id = {id}")).await,
            vec![vec![Some("1".to_string()), Some(format!("simple up{}", n + 1))]]
        );
    }
}
