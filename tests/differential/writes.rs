//! Random writes, sent through the proxy and to one plain PostgreSQL with the same rows: the
//! shapes applications and ORMs write with (multi-row INSERT, ON CONFLICT, UPDATE and DELETE
//! under every filter the read generator draws, RETURNING, UPDATE ... FROM and DELETE ...
//! USING a reference table or a table joined by the key, INSERT ... SELECT, writes to the
//! reference table (some computing values each server draws its own way), MERGE, writing
//! CTEs), alone or a few in one transaction that commits or rolls back; as text, or with their
//! constants bound.
//!
//! Each statement must be refused (0A000) or have the plain server's outcome: the same rows
//! returned, the same count, or the same SQLSTATE. After each statement outside a transaction,
//! and after each transaction, the shards are read directly, not through the proxy: the union
//! of their rows of each sharded table must be the plain server's, every row on the shard that
//! owns its key, and every shard's copy of the reference table the plain server's.

use super::common::{outcome, rows, Outcome, TestCluster};
use super::generator::{filter, filters};
use super::Rng;
use shardgate::placement::KeyValue;
use tokio_postgres::Client;

/// An id of an account that exists (most often), or of one that does not yet.
fn id(rng: &mut Rng) -> u64 {
    if rng.below(3) == 0 {
        241 + rng.below(60)
    } else {
        1 + rng.below(240)
    }
}

fn account_values(rng: &mut Rng, id: u64) -> String {
    format!(
        "({id}, '{}', {}.{:02}, {}, '{}')",
        rng.pick(&["ann", "new", "Zed", "émile"]),
        rng.below(1000) as i64 - 200,
        rng.below(100),
        rng.below(5),
        if rng.below(2) == 0 { "true" } else { "false" },
    )
}

/// The values of a row of an account that may exist already, as an upsert gives them.
fn row_of_some_account(rng: &mut Rng) -> String {
    let i = id(rng);
    account_values(rng, i)
}

fn returning(rng: &mut Rng, what: &str) -> String {
    if rng.below(3) == 0 {
        format!(" returning {what}")
    } else {
        String::new()
    }
}

/// One write statement.
pub fn statement(rng: &mut Rng) -> String {
    let cols = "(id, owner, balance, region, active)";
    let w = |rng: &mut Rng| filters(rng, "").unwrap_or_else(|| "true".into());
    match rng.below(43) {
        // The same column set by an UPDATE: on one account's rows, several accounts' (rows
        // on several shards given one id), or rows named by another column; and by an
        // upsert's DO UPDATE.
        38 => format!(
            "update lines set id = {} where {}{}",
            1 + rng.below(25),
            match rng.below(3) {
                0 => format!("account_id = {}", id(rng)),
                1 => format!("account_id in ({}, {})", id(rng), id(rng)),
                _ => format!("note = '{}'", rng.pick(&["n", "m", "u"])),
            },
            returning(rng, "id, account_id")
        ),
        39 => format!(
            "insert into lines (id, account_id, note) values ({}, {}, 'u') on conflict (account_id, id) do update set id = {}{}",
            1 + rng.below(20),
            1 + rng.below(4),
            1 + rng.below(25),
            returning(rng, "id, account_id")
        ),
        // Ids an application gives a sequence-filled column held unique without the key: one
        // another account's line may hold already, alone or with a second row, plain or as
        // an upsert by the account and id.
        36 => format!(
            "insert into lines (id, account_id, note) values ({}, {}, 'n'){}",
            1 + rng.below(20),
            id(rng),
            if rng.below(2) == 0 {
                format!(", ({}, {}, 'm')", 1 + rng.below(20), id(rng))
            } else {
                String::new()
            }
        ),
        37 => format!(
            "insert into lines (id, account_id, note) values ({}, {}, 'u') on conflict (account_id, id) do update set note = excluded.note || lines.note{}",
            1 + rng.below(20),
            1 + rng.below(4),
            returning(rng, "id, account_id, note")
        ),
        // An ORM's save(), naming the key with the value each row has; an upsert naming it
        // with the value it conflicted on; and (refused) one that would move a row.
        33 => format!(
            "update accounts set id = id, note = 'saved{}' where {}{}",
            rng.below(9),
            w(rng),
            returning(rng, "id, note")
        ),
        34 => format!(
            "insert into accounts {cols} values {} on conflict (id) do update set id = excluded.id, owner = excluded.owner{}",
            row_of_some_account(rng),
            returning(rng, "id, owner")
        ),
        35 => format!(
            "insert into accounts {cols} values {} on conflict (id) do update set id = excluded.id + 1000",
            row_of_some_account(rng),
        ),
        // Django's update(x=Subquery(...)): a row set from its own children, or (refused) from
        // rows of other keys.
        31 => format!(
            "update accounts set balance = (select coalesce(sum(o.amount), 0) from orders o where o.account_id = accounts.id) where {}{}",
            w(rng),
            returning(rng, "id, balance")
        ),
        32 => format!(
            "update accounts set region = (select count(*) from orders o where o.order_no = {}) where {}",
            rng.below(4),
            w(rng)
        ),
        24 => format!(
            "insert into accounts (id, owner, balance, region) select id + 1000, owner, balance, region from accounts where {} on conflict (id) do nothing{}",
            w(rng),
            returning(rng, "id")
        ),
        25 => format!(
            "insert into orders values ({}, {}, {}.5)",
            id(rng),
            rng.below(6),
            rng.below(100)
        ),
        26 => format!(
            "insert into accounts {cols} values {} on conflict on constraint accounts_pkey do update set owner = excluded.owner || accounts.owner",
            {
                let i = id(rng);
                account_values(rng, i)
            }
        ),
        27 => format!(
            "update accounts set (owner, region) = ('{}', {}) where {}",
            rng.pick(&["pat", "Kim"]),
            rng.below(5),
            w(rng)
        ),
        28 => format!(
            "with picked as (select id from regions where label like '%{}%') update accounts set region = (select min(id) from picked) where id = {}",
            rng.pick(&["th", "e"]),
            id(rng)
        ),
        // Joined to a co-located table by the key: each shard joins its own rows; joined by
        // another column (refused), a shard would miss the rows of the others.
        40 => format!(
            "update orders o set amount = o.amount + 1 from accounts a where a.id = o.account_id and {}{}",
            filter(rng, "a."),
            returning(rng, "o.account_id, o.order_no, o.amount, a.owner")
        ),
        41 => match rng.below(3) {
            0 => "update accounts a set note = 'n' || o.order_no from orders o where o.order_no = a.id".into(),
            _ => format!(
                "delete from orders o using accounts a where o.account_id = a.id and {}{}",
                filter(rng, "a."),
                returning(rng, "o.account_id, o.order_no")
            ),
        },
        // A source the merge answers: groups over several shards, read once, then written
        // by each row's key.
        42 => format!(
            "insert into orders (account_id, order_no, amount) select min(id), {}, sum(balance) from accounts where {} group by region on conflict do nothing{}",
            90 + rng.below(5),
            filter(rng, ""),
            returning(rng, "account_id, amount")
        ),
        29 => format!(
            "update accounts set note = (select label from regions r where r.id = accounts.region) where {}{}",
            w(rng),
            returning(rng, "id, note")
        ),
        30 => format!(
            "delete from orders where (account_id, order_no) in (({}, 0), ({}, 1)) returning amount",
            id(rng),
            id(rng)
        ),
        22 => format!(
            "delete from accounts a using regions r where r.id = a.region and r.label = '{}' and {}{}",
            rng.pick(&["north", "east", "west"]),
            filter(rng, "a."),
            returning(rng, "a.id, r.label")
        ),
        // Refused: each copy would draw its own.
        23 => format!(
            "update regions set label = {} where id = {}",
            rng.pick(&["random()::text", "clock_timestamp()::text", "gen_random_uuid()::text"]),
            rng.below(5)
        ),
        0 => {
            // Distinct ids: a row given twice would fail on one server and maybe not over
            // several shards, for reasons the test is not about.
            let mut ids: Vec<u64> = (0..1 + rng.below(3)).map(|_| id(rng)).collect();
            ids.sort_unstable();
            ids.dedup();
            let values: Vec<String> = ids.iter().map(|&i| account_values(rng, i)).collect();
            format!(
                "insert into accounts {cols} values {}{}",
                values.join(", "),
                returning(rng, "id, owner")
            )
        }
        1 => format!(
            "insert into accounts {cols} values {} on conflict (id) do nothing{}",
            row_of_some_account(rng),
            returning(rng, "id")
        ),
        2 => format!(
            "insert into accounts {cols} values {} on conflict (id) do update set balance = accounts.balance + excluded.balance, note = 'upserted'{}",
            row_of_some_account(rng),
            returning(rng, "id, balance, note")
        ),
        3 => format!(
            "update accounts set balance = balance + {}, note = 'w{}' where {}{}",
            rng.below(50),
            rng.below(9),
            w(rng),
            returning(rng, "id, balance")
        ),
        4 => format!(
            "update accounts set region = (select min(id) from regions where label like '%{}%') where {}",
            rng.pick(&["th", "e", "st"]),
            filter(rng, "")
        ),
        5 => format!(
            "update accounts a set note = r.label from regions r where r.id = a.region and {}{}",
            filter(rng, "a."),
            returning(rng, "a.id, r.label")
        ),
        6 => format!(
            "delete from accounts where {}{}",
            filter(rng, ""),
            returning(rng, "id, balance")
        ),
        7 => format!(
            "update accounts set id = id + 1000 where id = {}",
            id(rng)
        ),
        8 => format!(
            "delete from orders where account_id in (select id from accounts where {})",
            filter(rng, "")
        ),
        9 => format!(
            "update orders set amount = amount + 1 where account_id = {}{}{}",
            id(rng),
            if rng.below(2) == 0 { " and order_no = 1" } else { "" },
            returning(rng, "account_id, order_no, amount")
        ),
        10 => format!(
            "insert into orders (account_id, order_no, amount) select id, {}, balance from accounts where {} on conflict do nothing",
            7 + rng.below(3),
            w(rng)
        ),
        11 => format!(
            "update regions set label = label || '{}' where id = {}",
            rng.pick(&["x", "y"]),
            rng.below(7)
        ),
        12 => format!(
            "insert into regions values ({}, 'r{}') on conflict (id) do update set label = excluded.label{}",
            5 + rng.below(3),
            rng.below(9),
            returning(rng, "id, label")
        ),
        13 => "delete from regions where id >= 5".into(),
        14 => format!(
            "insert into users values ('user{:03}', {}, 'Lyon'){}",
            rng.below(90),
            20 + rng.below(50),
            returning(rng, "name")
        ),
        15 => format!(
            "update users set age = age + 1 where {}{}",
            rng.pick(&[
                "name = 'user007'",
                "name like 'user0%'",
                "city = 'Oslo'",
                "age > 60",
                "name in ('user001', 'user050', 'user088')",
            ]),
            returning(rng, "name, age")
        ),
        16 => format!(
            "delete from users where name = 'user{:03}'",
            rng.below(90)
        ),
        17 => format!(
            "update accounts set balance = balance * 2 where id = {} returning *",
            id(rng)
        ),
        18 => format!(
            "with moved as (delete from orders where account_id = {} returning *) select count(*) from moved",
            id(rng)
        ),
        19 => format!(
            "update accounts set score = coalesce(score, 0) + 1 where id in ({}, {}, {})",
            id(rng),
            id(rng),
            id(rng)
        ),
        20 => {
            let i = id(rng);
            format!(
                "merge into accounts a using (values ({i}, {})) v(id, d) on a.id = v.id \
                 when matched then update set balance = a.balance + v.d \
                 when not matched then insert (id, owner, balance) values (v.id, 'm', v.d)",
                rng.below(40)
            )
        }
        _ => format!(
            "delete from orders where amount < {}{}",
            rng.below(60),
            returning(rng, "account_id, order_no")
        ),
    }
}

/// Sharded tables and their key columns.
const SHARDED: &[(&str, &str)] = &[
    ("accounts", "id"),
    ("orders", "account_id"),
    ("users", "name"),
    ("lines", "account_id"),
];

async fn table(client: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    rows(&client.simple_query(sql).await.unwrap())
}

/// Panics unless the shards, read directly, hold what the plain server holds, each row where
/// its key puts it.
async fn same_state(tc: &TestCluster, shards: &[Client], plain: &Client, after: &str) {
    let placement = tc.config.placement().unwrap();
    for &(name, key) in SHARDED {
        let sql = format!("select {key}::text, * from {name}");
        let mut union = Vec::new();
        for (s, shard) in shards.iter().enumerate() {
            for row in table(shard, &sql).await {
                let k = row[0].clone().unwrap();
                let owner = placement.shard_of(&if key == "name" {
                    KeyValue::Text(k.clone())
                } else {
                    KeyValue::Integer(k.parse().unwrap())
                });
                assert_eq!(
                    owner, s,
                    "{name} row with key {k} is on shard {s}, its key's shard is {owner}, after: {after}"
                );
                union.push(row);
            }
        }
        union.sort();
        let mut expected = table(plain, &sql).await;
        expected.sort();
        assert_eq!(union, expected, "{name} differs after: {after}");
    }
    let expected = table(plain, "select * from regions order by id").await;
    for (s, shard) in shards.iter().enumerate() {
        let copy = table(shard, "select * from regions order by id").await;
        assert_eq!(
            copy, expected,
            "shard {s}'s copy of regions differs after: {after}"
        );
    }
}

/// One connection of each side: a client in the simple protocol, or a raw connection that
/// binds the statement's constants.
enum Side<'a> {
    Simple(&'a Client),
    Bound(super::common::raw::Raw),
}

impl Side<'_> {
    /// What `sql` did. Bound, its counts are not compared (the rows and the shards' state are).
    async fn run(&mut self, sql: &str) -> Outcome {
        match self {
            Side::Simple(c) => outcome(c, sql).await,
            Side::Bound(raw) => {
                let (sql, params) = super::bound::parametrize(sql);
                let mut returned = super::bound::answer(raw, &sql, &params).await?;
                returned.sort();
                Ok((returned, Vec::new()))
            }
        }
    }
}

async fn random_writes(sent: super::Sent, consistency: super::Consistency) {
    let (tc, plain, p, d) = super::setup_in(consistency).await;
    let shards = [tc.direct(0).await, tc.direct(1).await, tc.direct(2).await];
    let seed = super::seed();
    let count: usize = std::env::var("SHARDGATE_DIFF_WRITES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let (mut via, mut direct) = match sent {
        super::Sent::Simple => (Side::Simple(&p), Side::Simple(&d)),
        super::Sent::Bound => (
            Side::Bound(super::bound::login(tc.port, "trustuser").await),
            Side::Bound(super::bound::login(plain.cluster.port, "postgres").await),
        ),
    };
    let mut rng = Rng(seed);
    let (mut alike, mut refused, mut sent) = (0, 0, 0);
    while sent < count {
        // Now and then a few statements in one transaction, ended either way.
        let in_txn = rng.below(5) == 0;
        let statements = if in_txn { 2 + rng.below(3) } else { 1 };
        let mut history = Vec::new();
        if in_txn {
            via.run("begin").await.unwrap();
            direct.run("begin").await.unwrap();
        }
        let mut failed = false;
        for _ in 0..statements {
            let sql = statement(&mut rng);
            sent += 1;
            history.push(sql.clone());
            let proxied = via.run(&sql).await;
            if proxied.as_ref().err().map(String::as_str) == Some("0A000") {
                refused += 1;
                failed = true;
                break;
            }
            let expected = direct.run(&sql).await;
            assert_eq!(
                proxied, expected,
                "outcomes differ for: {sql} (seed {seed}, after {history:?})"
            );
            alike += 1;
            if proxied.is_err() {
                failed = true;
                break;
            }
        }
        if in_txn {
            let end = if failed || rng.below(3) == 0 {
                "rollback"
            } else {
                "commit"
            };
            history.push(end.into());
            via.run(end)
                .await
                .unwrap_or_else(|e| panic!("{end} failed: {e:?} (seed {seed}, {history:?})"));
            direct.run(end).await.unwrap();
        }
        same_state(&tc, &shards, &d, &format!("{history:?} (seed {seed})")).await;
    }
    println!("{alike} writes did as one PostgreSQL does, {refused} refused");
    assert!(
        alike * 2 > count,
        "most generated writes are of shapes the proxy runs: {alike} of {count}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_writes_leave_the_shards_as_one_postgres_or_are_refused() {
    random_writes(super::Sent::Simple, super::Consistency::Shard).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_writes_with_bound_values_leave_the_shards_as_one_postgres_or_are_refused() {
    random_writes(super::Sent::Bound, super::Consistency::Shard).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_writes_in_snapshot_consistency_leave_the_shards_as_one_postgres() {
    random_writes(super::Sent::Simple, super::Consistency::Snapshot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bound_writes_in_snapshot_consistency_leave_the_shards_as_one_postgres() {
    random_writes(super::Sent::Bound, super::Consistency::Snapshot).await;
}

/// Each statement's rows sorted: RETURNING gives them in the order each server wrote them.
fn sorted(mut answers: super::bound::Answers) -> super::bound::Answers {
    for rows in answers.iter_mut().flatten() {
        rows.sort();
    }
    answers
}

/// Random writes a few at a time in one pipeline (one Sync, so one implicit transaction), their
/// constants bound, as psycopg's and libpq's pipelines send them. Each pipeline must answer
/// statement by statement as the plain server does; one the proxy refuses part of must leave
/// nothing of its earlier statements behind, on any shard.
async fn random_pipelines(consistency: super::Consistency, paused: bool) {
    let (tc, plain, _p, d) = super::setup_in(consistency).await;
    let shards = [tc.direct(0).await, tc.direct(1).await, tc.direct(2).await];
    let seed = super::seed();
    let count: usize = std::env::var("SHARDGATE_DIFF_PIPELINES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150);
    let mut via = super::bound::login(tc.port, "trustuser").await;
    let mut direct = super::bound::login(plain.cluster.port, "postgres").await;
    let mut rng = Rng(seed);
    let (mut alike, mut refused) = (0, 0);
    for _ in 0..count {
        let statements: Vec<(String, Vec<String>)> = (0..2 + rng.below(3))
            .map(|_| super::bound::parametrize(&statement(&mut rng)))
            .collect();
        let proxied = sorted(super::bound::pipeline(&mut via, &statements, paused).await);
        if proxied
            .iter()
            .any(|a| a.as_ref().err().map(String::as_str) == Some("0A000"))
        {
            refused += 1;
        } else {
            let expected = sorted(super::bound::pipeline(&mut direct, &statements, paused).await);
            assert_eq!(
                proxied, expected,
                "answers differ for the pipeline {statements:?} (seed {seed})"
            );
            alike += 1;
        }
        same_state(&tc, &shards, &d, &format!("{statements:?} (seed {seed})")).await;
    }
    println!("{alike} pipelines did as one PostgreSQL does, {refused} refused and undone");
    assert!(alike > 0 && refused > 0, "{alike} alike, {refused} refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_pipelines_leave_the_shards_as_one_postgres_or_as_they_were() {
    random_pipelines(super::Consistency::Shard, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_pipelines_in_snapshot_consistency_leave_the_shards_as_one_postgres_or_as_they_were()
{
    random_pipelines(super::Consistency::Snapshot, false).await;
}

/// As psycopg sends a pipeline: each statement as it comes, the Sync after them all, so the
/// proxy runs each before it knows the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_paused_pipelines_leave_the_shards_as_one_postgres_or_as_they_were() {
    random_pipelines(super::Consistency::Shard, true).await;
}
