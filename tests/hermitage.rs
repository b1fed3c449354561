//! Hermitage's PostgreSQL isolation cases (read committed and repeatable read), run through the
//! proxy on three unlike shards with the two rows of every case on different shards, in the
//! simple and in the extended protocol, in both consistencies.
//!
//! Each case is the published sequence of steps, one session per transaction; a step that
//! PostgreSQL blocks is started in the background and the test waits until a shard reports a
//! backend waiting on a lock. What each step must return is what PostgreSQL returns. In
//! snapshot consistency that holds for every case. Shard consistency differs in exactly two
//! repeatable read cases, G-single and G-single with a write predicate (each shard's snapshot
//! is taken when the transaction first touches that shard; see docs/snapshot.md).

mod common;

use common::TestCluster;
use std::sync::Arc;
use tokio_postgres::{Client, SimpleQueryMessage};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Protocol {
    Simple,
    Extended,
}

type Rows = Vec<(i32, i32)>;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Consistency {
    Shard,
    Snapshot,
}

struct Bench {
    tc: TestCluster,
    consistency: Consistency,
    /// Keys standing for Hermitage's rows 1 and 2 (on different shards), and 3 and 4.
    k: [i32; 5],
}

const TABLES: &str = "[tables.test]\nshard_key = \"id\"\nkey_type = \"bigint\"\n";

impl Bench {
    async fn start(consistency: Consistency) -> Bench {
        let tail = match consistency {
            Consistency::Shard => TABLES.to_string(),
            Consistency::Snapshot => format!(
                "{TABLES}[transactions]\nsnapshot = true\n{}",
                common::SNAPSHOT_READER
            ),
        };
        let tc = TestCluster::start_unlike(3, "", &tail).await;
        let c = tc.client().await;
        c.batch_execute("create table test (id int primary key, value int)")
            .await
            .unwrap();
        // Hermitage's rows 1 and 2 on two different shards; 3 and 4 anywhere.
        let shard_of = |k: i32| {
            let c = &c;
            async move {
                let rows = c
                    .simple_query(&format!("show shardgate.route test {k}"))
                    .await
                    .unwrap();
                rows.iter()
                    .find_map(|m| match m {
                        SimpleQueryMessage::Row(r) => r.get(3).map(str::to_string),
                        _ => None,
                    })
                    .unwrap()
            }
        };
        let first = shard_of(1).await;
        let mut second = 2;
        while shard_of(second).await == first {
            second += 1;
        }
        Bench {
            tc,
            consistency,
            k: [0, 1, second, 1000, 1001],
        }
    }

    /// A session in this bench's consistency.
    async fn session(&self) -> Client {
        match self.consistency {
            Consistency::Shard => self.tc.client().await,
            Consistency::Snapshot => {
                let c = common::connect(&self.tc.url("reader", "none"))
                    .await
                    .unwrap();
                let mode = c.simple_query("show shardgate.consistency").await.unwrap();
                assert!(
                    matches!(&mode[..], [SimpleQueryMessage::RowDescription(_), SimpleQueryMessage::Row(r), ..] if r.get(0) == Some("snapshot")),
                    "the user's default consistency applies"
                );
                c
            }
        }
    }

    /// Hermitage's setup: rows 1 => 10 and 2 => 20, nothing else.
    async fn setup(&self) {
        let c = self.tc.client().await;
        c.batch_execute(&format!(
            "delete from test; insert into test (id, value) values ({}, 10), ({}, 20)",
            self.k[1], self.k[2]
        ))
        .await
        .unwrap();
    }

    /// `sql` with Hermitage's row numbers `{1}`..`{4}` replaced by this bench's keys.
    fn sql(&self, template: &str) -> String {
        let mut s = template.to_string();
        for i in 1..=4 {
            s = s.replace(&format!("{{{i}}}"), &self.k[i].to_string());
        }
        s
    }

    /// Rows as Hermitage names them (`(1, 10)` for the key standing for row 1).
    fn named(&self, rows: Rows) -> Rows {
        let mut named: Rows = rows
            .into_iter()
            .map(|(id, v)| {
                let n = (1..=4usize)
                    .find(|&i| self.k[i] == id)
                    .map_or(id, |i| i as i32);
                (n, v)
            })
            .collect();
        named.sort();
        named
    }

    async fn sessions(&self, n: usize) -> Vec<Arc<Client>> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(Arc::new(self.session().await));
        }
        out
    }

    /// Waits until some shard has a backend waiting for a lock (a step PostgreSQL blocks).
    async fn until_blocked(&self) {
        for _ in 0..3000 {
            let waiting: i64 = self
                .tc
                .count_on_each_shard(
                    "select count(*) from pg_stat_activity where wait_event_type = 'Lock'",
                )
                .await
                .iter()
                .sum();
            if waiting > 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("no step ever blocked on a lock");
    }
}

/// One step: the statement's rows (id, value), or its SQLSTATE.
async fn step(c: &Client, protocol: Protocol, sql: &str) -> Result<Rows, String> {
    let code = |e: tokio_postgres::Error| e.code().map_or(e.to_string(), |c| c.code().to_string());
    match protocol {
        Protocol::Simple => {
            let messages = c.simple_query(sql).await.map_err(code)?;
            Ok(messages
                .iter()
                .filter_map(|m| match m {
                    SimpleQueryMessage::Row(r) if r.len() == 2 => Some((
                        r.get(0).unwrap().parse().unwrap(),
                        r.get(1).unwrap().parse().unwrap(),
                    )),
                    _ => None,
                })
                .collect())
        }
        Protocol::Extended => {
            let rows = c.query(sql, &[]).await.map_err(code)?;
            Ok(rows
                .iter()
                .filter(|r| r.len() == 2)
                .map(|r| (r.get(0), r.get(1)))
                .collect())
        }
    }
}

struct Run<'a> {
    b: &'a Bench,
    t: Vec<Arc<Client>>,
    protocol: Protocol,
}

impl<'a> Run<'a> {
    /// Hermitage's setup, then `n` sessions, each in a transaction at `level`.
    async fn start(b: &'a Bench, protocol: Protocol, n: usize, level: &str) -> Run<'a> {
        b.setup().await;
        let r = Run {
            b,
            t: b.sessions(n).await,
            protocol,
        };
        for i in 0..n {
            r.begin(i, level).await;
        }
        r
    }

    async fn begin(&self, i: usize, level: &str) {
        let set = format!("set transaction isolation level {level}");
        match self.protocol {
            // As one Query, the way Hermitage's lines read.
            Protocol::Simple => {
                self.t[i]
                    .simple_query(&format!("begin; {set}"))
                    .await
                    .unwrap();
            }
            Protocol::Extended => {
                step(&self.t[i], self.protocol, "begin").await.unwrap();
                step(&self.t[i], self.protocol, &set).await.unwrap();
            }
        }
    }

    /// Step `sql` (with `{n}` row numbers) in session `i`; panics on an error.
    async fn ok(&self, i: usize, sql: &str) -> Rows {
        let sql = self.b.sql(sql);
        match step(&self.t[i], self.protocol, &sql).await {
            Ok(rows) => self.b.named(rows),
            Err(e) => panic!("{:?} T{}: {sql}: {e}", self.protocol, i + 1),
        }
    }

    /// Step `sql` in session `i`, which must return `want` (Hermitage's row numbers).
    async fn sees(&self, i: usize, sql: &str, want: &[(i32, i32)], case: &str) {
        assert_eq!(
            self.ok(i, sql).await,
            want.to_vec(),
            "{case}: {:?} {:?} T{} {sql}",
            self.b.consistency,
            self.protocol,
            i + 1
        );
    }

    /// Step `sql` in session `i`, which must fail with SQLSTATE `code`.
    async fn fails(&self, i: usize, sql: &str, code: &str) {
        let sql = self.b.sql(sql);
        match step(&self.t[i], self.protocol, &sql).await {
            Err(e) => assert_eq!(e, code, "{:?} T{}: {sql}", self.protocol, i + 1),
            Ok(rows) => panic!(
                "{:?} T{}: {sql} must fail with {code}, gave {rows:?}",
                self.protocol,
                i + 1
            ),
        }
    }

    /// Starts step `sql` in session `i` in the background and waits until it blocks.
    async fn blocked(&self, i: usize, sql: &str) -> tokio::task::JoinHandle<Result<Rows, String>> {
        let (c, sql, protocol) = (self.t[i].clone(), self.b.sql(sql), self.protocol);
        let h = tokio::spawn(async move { step(&c, protocol, &sql).await });
        self.b.until_blocked().await;
        h
    }
}

/// G1a, G1b and G1c, the same steps at both levels. After T1 commits, G1b's second read sees
/// T1's final value at read committed and still the old one at repeatable read.
async fn g1(b: &Bench, protocol: Protocol, level: &str) {
    // G1a: aborted reads are prevented.
    let r = Run::start(b, protocol, 2, level).await;
    r.ok(0, "update test set value = 101 where id = {1}").await;
    r.sees(1, "select * from test", &[(1, 10), (2, 20)], "G1a")
        .await;
    r.ok(0, "abort").await;
    r.sees(1, "select * from test", &[(1, 10), (2, 20)], "G1a")
        .await;
    r.ok(1, "commit").await;

    // G1b: intermediate reads are prevented.
    let r = Run::start(b, protocol, 2, level).await;
    r.ok(0, "update test set value = 101 where id = {1}").await;
    r.sees(1, "select * from test", &[(1, 10), (2, 20)], "G1b")
        .await;
    r.ok(0, "update test set value = 11 where id = {1}").await;
    r.ok(0, "commit").await;
    let after = if level == "repeatable read" { 10 } else { 11 };
    r.sees(1, "select * from test", &[(1, after), (2, 20)], "G1b")
        .await;
    r.ok(1, "commit").await;

    // G1c: circular information flow is prevented.
    let r = Run::start(b, protocol, 2, level).await;
    r.ok(0, "update test set value = 11 where id = {1}").await;
    r.ok(1, "update test set value = 22 where id = {2}").await;
    r.sees(0, "select * from test where id = {2}", &[(2, 20)], "G1c")
        .await;
    r.sees(1, "select * from test where id = {1}", &[(1, 10)], "G1c")
        .await;
    r.ok(0, "commit").await;
    r.ok(1, "commit").await;
}

async fn read_committed(b: &Bench, protocol: Protocol) {
    let rc = "read committed";
    // G0: write cycles are prevented by row locks.
    let r = Run::start(b, protocol, 2, rc).await;
    r.ok(0, "update test set value = 11 where id = {1}").await;
    let t2 = r
        .blocked(1, "update test set value = 12 where id = {1}")
        .await;
    r.ok(0, "update test set value = 21 where id = {2}").await;
    r.ok(0, "commit").await;
    t2.await.unwrap().unwrap();
    r.sees(0, "select * from test", &[(1, 11), (2, 21)], "G0")
        .await;
    r.ok(1, "update test set value = 22 where id = {2}").await;
    r.ok(1, "commit").await;
    r.sees(0, "select * from test", &[(1, 12), (2, 22)], "G0")
        .await;

    g1(b, protocol, rc).await;

    // OTV: an observed transaction does not vanish.
    let r = Run::start(b, protocol, 3, rc).await;
    r.ok(0, "update test set value = 11 where id = {1}").await;
    r.ok(0, "update test set value = 19 where id = {2}").await;
    let t2 = r
        .blocked(1, "update test set value = 12 where id = {1}")
        .await;
    r.ok(0, "commit").await;
    t2.await.unwrap().unwrap();
    r.sees(2, "select * from test where id = {1}", &[(1, 11)], "OTV")
        .await;
    r.ok(1, "update test set value = 18 where id = {2}").await;
    r.sees(2, "select * from test where id = {2}", &[(2, 19)], "OTV")
        .await;
    r.ok(1, "commit").await;
    r.sees(2, "select * from test where id = {2}", &[(2, 18)], "OTV")
        .await;
    r.sees(2, "select * from test where id = {1}", &[(1, 12)], "OTV")
        .await;
    r.ok(2, "commit").await;

    // PMP: read committed lets a predicate read see a row committed since.
    let r = Run::start(b, protocol, 2, rc).await;
    r.sees(0, "select * from test where value = 30", &[], "PMP")
        .await;
    r.ok(1, "insert into test (id, value) values ({3}, 30)")
        .await;
    r.ok(1, "commit").await;
    r.sees(
        0,
        "select * from test where value % 3 = 0",
        &[(3, 30)],
        "PMP",
    )
    .await;
    r.ok(0, "commit").await;

    // PMP for write predicates: the delete re-checks the updated row and skips it.
    let r = Run::start(b, protocol, 2, rc).await;
    r.ok(0, "update test set value = value + 10").await;
    let t2 = r.blocked(1, "delete from test where value = 20").await;
    r.ok(0, "commit").await;
    t2.await.unwrap().unwrap();
    r.sees(
        1,
        "select * from test where value = 20",
        &[(1, 20)],
        "PMP write",
    )
    .await;
    r.ok(1, "commit").await;

    // P4: read committed allows the lost update.
    let r = Run::start(b, protocol, 2, rc).await;
    r.ok(0, "select * from test where id = {1}").await;
    r.ok(1, "select * from test where id = {1}").await;
    r.ok(0, "update test set value = 11 where id = {1}").await;
    let t2 = r
        .blocked(1, "update test set value = 11 where id = {1}")
        .await;
    r.ok(0, "commit").await;
    t2.await.unwrap().unwrap();
    r.ok(1, "commit").await;

    // G-single: read committed allows read skew.
    let r = Run::start(b, protocol, 2, rc).await;
    r.sees(
        0,
        "select * from test where id = {1}",
        &[(1, 10)],
        "G-single",
    )
    .await;
    r.ok(1, "select * from test where id = {1}").await;
    r.ok(1, "select * from test where id = {2}").await;
    r.ok(1, "update test set value = 12 where id = {1}").await;
    r.ok(1, "update test set value = 18 where id = {2}").await;
    r.ok(1, "commit").await;
    r.sees(
        0,
        "select * from test where id = {2}",
        &[(2, 18)],
        "G-single",
    )
    .await;
    r.ok(0, "commit").await;
}

async fn repeatable_read(b: &Bench, protocol: Protocol) {
    let rr = "repeatable read";
    let snapshot = b.consistency == Consistency::Snapshot;
    // G0: write cycles are prevented; the blocked writer fails to serialize.
    let r = Run::start(b, protocol, 2, rr).await;
    r.ok(0, "update test set value = 11 where id = {1}").await;
    let t2 = r
        .blocked(1, "update test set value = 12 where id = {1}")
        .await;
    r.ok(0, "update test set value = 21 where id = {2}").await;
    r.ok(0, "commit").await;
    assert_eq!(t2.await.unwrap(), Err("40001".to_string()), "G0");
    r.ok(1, "abort").await;
    r.sees(0, "select * from test", &[(1, 11), (2, 21)], "G0")
        .await;

    g1(b, protocol, rr).await;

    // OTV: the blocked writer fails to serialize; T3 keeps seeing its snapshot's values.
    let r = Run::start(b, protocol, 3, rr).await;
    r.ok(0, "update test set value = 11 where id = {1}").await;
    r.ok(0, "update test set value = 19 where id = {2}").await;
    let t2 = r
        .blocked(1, "update test set value = 12 where id = {1}")
        .await;
    r.ok(0, "commit").await;
    assert_eq!(t2.await.unwrap(), Err("40001".to_string()), "OTV");
    r.ok(1, "abort").await;
    r.sees(2, "select * from test", &[(1, 11), (2, 19)], "OTV")
        .await;
    r.ok(2, "commit").await;
    // PMP: a predicate read keeps its snapshot.
    let r = Run::start(b, protocol, 2, rr).await;
    r.sees(0, "select * from test where value = 30", &[], "PMP")
        .await;
    r.ok(1, "insert into test (id, value) values ({3}, 30)")
        .await;
    r.ok(1, "commit").await;
    r.sees(0, "select * from test where value % 3 = 0", &[], "PMP")
        .await;
    r.ok(0, "commit").await;

    // PMP for write predicates: the blocked delete fails to serialize.
    let r = Run::start(b, protocol, 2, rr).await;
    r.ok(0, "update test set value = value + 10").await;
    let t2 = r.blocked(1, "delete from test where value = 20").await;
    r.ok(0, "commit").await;
    assert_eq!(t2.await.unwrap(), Err("40001".to_string()), "PMP write");
    r.ok(1, "abort").await;

    // P4: the lost update is prevented.
    let r = Run::start(b, protocol, 2, rr).await;
    r.ok(0, "select * from test where id = {1}").await;
    r.ok(1, "select * from test where id = {1}").await;
    r.ok(0, "update test set value = 11 where id = {1}").await;
    let t2 = r
        .blocked(1, "update test set value = 11 where id = {1}")
        .await;
    r.ok(0, "commit").await;
    assert_eq!(t2.await.unwrap(), Err("40001".to_string()), "P4");
    r.ok(1, "abort").await;

    // G-single (read skew). PostgreSQL shows 2 => 20, and so does snapshot consistency (one
    // cut of every shard at T1's first read). In shard consistency the second shard's
    // snapshot is taken by the read of row 2, after T2 committed: the documented read skew.
    let r = Run::start(b, protocol, 2, rr).await;
    r.sees(
        0,
        "select * from test where id = {1}",
        &[(1, 10)],
        "G-single",
    )
    .await;
    r.ok(1, "select * from test where id = {1}").await;
    r.ok(1, "select * from test where id = {2}").await;
    r.ok(1, "update test set value = 12 where id = {1}").await;
    r.ok(1, "update test set value = 18 where id = {2}").await;
    r.ok(1, "commit").await;
    let (want, case) = if snapshot {
        (20, "G-single")
    } else {
        (18, "G-single (documented read skew)")
    };
    r.sees(0, "select * from test where id = {2}", &[(2, want)], case)
        .await;
    r.ok(0, "commit").await;

    // G-single with predicate dependencies: the first read reaches every shard, so the
    // transaction's snapshots all predate T2 and PostgreSQL's answer holds.
    let r = Run::start(b, protocol, 2, rr).await;
    r.sees(
        0,
        "select * from test where value % 5 = 0",
        &[(1, 10), (2, 20)],
        "G-single predicate",
    )
    .await;
    r.ok(1, "update test set value = 12 where value = 10").await;
    r.ok(1, "commit").await;
    r.sees(
        0,
        "select * from test where value % 3 = 0",
        &[],
        "G-single predicate",
    )
    .await;
    r.ok(0, "commit").await;

    // G-single with a write predicate. PostgreSQL fails the delete with 40001, and so does
    // snapshot consistency. In shard consistency the delete is T1's first statement on row
    // 2's shard: its snapshot there sees 2 => 18, so nothing matches and nothing fails (the
    // documented read skew again).
    let r = Run::start(b, protocol, 2, rr).await;
    r.sees(
        0,
        "select * from test where id = {1}",
        &[(1, 10)],
        "G-single write",
    )
    .await;
    r.ok(1, "select * from test").await;
    r.ok(1, "update test set value = 12 where id = {1}").await;
    r.ok(1, "update test set value = 18 where id = {2}").await;
    r.ok(1, "commit").await;
    if snapshot {
        r.fails(0, "delete from test where value = 20", "40001")
            .await;
    } else {
        r.ok(0, "delete from test where value = 20").await;
    }
    r.ok(0, "abort").await;

    // G2-item: repeatable read allows write skew.
    let r = Run::start(b, protocol, 2, rr).await;
    r.ok(0, "select * from test where id in ({1}, {2})").await;
    r.ok(1, "select * from test where id in ({1}, {2})").await;
    r.ok(0, "update test set value = 11 where id = {1}").await;
    r.ok(1, "update test set value = 21 where id = {2}").await;
    r.ok(0, "commit").await;
    r.ok(1, "commit").await;
    r.sees(0, "select * from test", &[(1, 11), (2, 21)], "G2-item")
        .await;

    // G2: repeatable read allows anti-dependency cycles.
    let r = Run::start(b, protocol, 2, rr).await;
    r.ok(0, "select * from test where value % 3 = 0").await;
    r.ok(1, "select * from test where value % 3 = 0").await;
    r.ok(0, "insert into test (id, value) values ({3}, 30)")
        .await;
    r.ok(1, "insert into test (id, value) values ({4}, 42)")
        .await;
    r.ok(0, "commit").await;
    r.ok(1, "commit").await;
    r.sees(
        0,
        "select * from test where value % 3 = 0",
        &[(3, 30), (4, 42)],
        "G2",
    )
    .await;
}

async fn hermitage(consistency: Consistency) {
    let b = Bench::start(consistency).await;
    for protocol in [Protocol::Simple, Protocol::Extended] {
        read_committed(&b, protocol).await;
        repeatable_read(&b, protocol).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hermitage_in_shard_consistency() {
    hermitage(Consistency::Shard).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hermitage_in_snapshot_consistency_matches_postgres() {
    hermitage(Consistency::Snapshot).await;
}

async fn serializable_on_one_shard(consistency: Consistency) {
    let b = Bench::start(consistency).await;
    let r = Run::start(&b, Protocol::Simple, 1, "serializable").await;
    r.sees(
        0,
        "select * from test where id = {1}",
        &[(1, 10)],
        "one shard",
    )
    .await;
    r.ok(0, "update test set value = 11 where id = {1}").await;
    // Each shard would serialize only its part: refused rather than weakened.
    r.fails(0, "select * from test where id = {2}", "0A000")
        .await;
    r.ok(0, "rollback").await;
    // On one shard it commits.
    let r = Run::start(&b, Protocol::Extended, 1, "serializable").await;
    r.ok(0, "update test set value = 11 where id = {1}").await;
    r.sees(
        0,
        "select * from test where id = {1}",
        &[(1, 11)],
        "one shard",
    )
    .await;
    r.ok(0, "commit").await;
    let c = b.session().await;
    let rows = step(
        &c,
        Protocol::Simple,
        &b.sql("select * from test where id = {1}"),
    )
    .await
    .unwrap();
    assert_eq!(b.named(rows), vec![(1, 11)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serializable_works_on_one_shard_and_does_not_reach_a_second() {
    serializable_on_one_shard(Consistency::Shard).await;
    serializable_on_one_shard(Consistency::Snapshot).await;
}
