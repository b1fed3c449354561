//! Differential testing: the same schema, data and queries through shardgate on three shards
//! and on one plain PostgreSQL must give the same rows. Every ORDER BY ends in the unique key,
//! so row order is fully determined and compared exactly; other results are compared as sorted
//! multisets. A seeded generator adds random queries; the seed is printed on failure and can be
//! replayed with SHARDGATE_DIFF_SEED. The random queries and writes, and the fixed queries, run
//! in shard and in snapshot consistency. SHARDGATE_DIFF_QUERIES sets how many random queries
//! run; SHARDGATE_DIFF_REFUSALS=1 prints each refused one with the proxy's reason.

#[path = "differential/bound.rs"]
mod bound;
mod common;
#[path = "differential/generator.rs"]
mod generator;
#[path = "differential/writes.rs"]
mod writes;

use common::{rows, TestCluster};
use shardgate::localpg::{free_port, ClusterOptions, LocalCluster, PgInstall};
use tokio_postgres::Client;

const TABLES: &str = r#"
[tables.accounts]
shard_key = "id"
key_type = "bigint"
[tables.orders]
shard_key = "account_id"
key_type = "bigint"
[tables.users]
shard_key = "name"
key_type = "text"
[tables.lines]
shard_key = "account_id"
key_type = "bigint"
[tables.regions]
reference = true
"#;

const SCHEMA: &str = "
create table accounts (id bigint primary key, owner text, balance numeric(12,2), score float8, active bool,
                       opened date, updated timestamptz, tag uuid, note text, region int, ratio numeric);
create table orders (account_id bigint, order_no int, amount numeric(10,2), primary key (account_id, order_no));
create table users (name text primary key, age int, city text);
create table regions (id int primary key, label text);
create table lines (id serial primary key, account_id bigint not null, note text, unique (account_id, id));
";

const ROWS: i64 = 240;

/// Deterministic pseudo-random numbers (xorshift64*), so data and queries are replayable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

fn data_statements() -> Vec<String> {
    let mut rng = Rng(0x5EED);
    let mut out = Vec::new();
    let owners = ["ann", "bob", "Cid", "dora", "émile", "zoe", "Zed", "al"];
    for id in 1..=ROWS {
        let owner = rng.pick(&owners);
        let balance = format!("{}.{:02}", rng.below(2000) as i64 - 500, rng.below(100));
        let score = match rng.below(10) {
            0 => "'NaN'".to_string(),
            1 => "null".to_string(),
            _ => format!("{}", (rng.below(100_000) as f64 - 50_000.0) / 64.0),
        };
        let active = if rng.below(2) == 0 { "true" } else { "false" };
        let opened = format!(
            "'20{:02}-{:02}-{:02}'",
            rng.below(25),
            1 + rng.below(12),
            1 + rng.below(28)
        );
        let updated = format!(
            "'2024-{:02}-{:02} {:02}:{:02}:00{}'",
            1 + rng.below(12),
            1 + rng.below(28),
            rng.below(24),
            rng.below(60),
            rng.pick(&["+00", "+02", "-05", "+05:30"])
        );
        let tag = format!(
            "'{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}'",
            rng.next() as u32,
            rng.below(0xffff),
            rng.below(0xfff),
            rng.below(0xfff),
            rng.next() & 0xffff_ffff_ffff
        );
        let note = if rng.below(4) == 0 {
            "null".to_string()
        } else {
            format!("'n{}'", rng.below(30))
        };
        let region = rng.below(5);
        // Equal values written with different scales, as a numeric without typmod keeps them.
        let ratio = rng.pick(&[
            "1.5", "1.50", "2", "2.0", "2.000", "-0.5", "0", "0.00", "null",
        ]);
        out.push(format!(
            "insert into accounts (id, owner, balance, score, active, opened, updated, tag, note, region, ratio) values ({id}, '{owner}', {balance}, {score}, {active}, {opened}, {updated}, {tag}, {note}, {region}, {ratio})"
        ));
        for n in 0..rng.below(4) {
            out.push(format!(
                "insert into orders (account_id, order_no, amount) values ({id}, {n}, {}.{:02})",
                rng.below(900),
                rng.below(100)
            ));
        }
    }
    for i in 0..60 {
        out.push(format!(
            "insert into users (name, age, city) values ('user{i:03}', {}, '{}')",
            18 + rng.below(60),
            rng.pick(&["Paris", "Lyon", "Oslo", "Kyoto"])
        ));
    }
    out
}

// No account is in region 5.
const REGIONS: &str = "insert into regions values (0, 'north'), (1, 'south'), (2, 'east'), (3, 'west'), (4, 'center'), (5, 'far')";

async fn compare(proxy: &Client, plain: &Client, sql: &str, ordered: bool, seed: Option<u64>) {
    let via = proxy
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("proxy failed on {sql}: {e:?} (seed {seed:?})"));
    let direct = plain
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("plain failed on {sql}: {e:?}"));
    let (mut a, mut b) = (rows(&via), rows(&direct));
    if !ordered {
        a.sort();
        b.sort();
    }
    assert_eq!(a, b, "results differ for: {sql} (seed {seed:?})");
}

/// The plain PostgreSQL the proxy is compared with; stopped and removed even if a test panics.
struct Plain {
    cluster: LocalCluster,
    dir: std::path::PathBuf,
}

impl Drop for Plain {
    fn drop(&mut self) {
        let _ = self.cluster.stop(true);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn setup() -> (TestCluster, Plain, Client, Client) {
    setup_in(Consistency::Shard).await
}

/// The consistency the proxy's sessions start in: the differences between the two modes are
/// in when each shard's snapshot is taken and how a statement joins a transaction, which the
/// same statements exercise differently.
#[derive(Clone, Copy)]
enum Consistency {
    Shard,
    Snapshot,
}

async fn setup_in(consistency: Consistency) -> (TestCluster, Plain, Client, Client) {
    let config = match consistency {
        Consistency::Shard => TABLES.to_string(),
        Consistency::Snapshot => {
            format!("{TABLES}[transactions]\nsnapshot = true\nconsistency = \"snapshot\"\n")
        }
    };
    let tc = TestCluster::start_unlike(3, "", &config).await;
    let (plain, dir) = tokio::task::spawn_blocking(|| {
        let install = PgInstall::find().unwrap();
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("shardgate-diff-plain-{}-{n}", std::process::id()));
        install.make_owned_dir(&dir).unwrap();
        let c = LocalCluster::create_or_reuse(
            &install,
            &dir.join("pg"),
            free_port().unwrap(),
            ClusterOptions::for_tests(),
        )
        .unwrap();
        c.start().unwrap();
        (c, dir)
    })
    .await
    .unwrap();
    let plain = Plain {
        cluster: plain,
        dir,
    };
    let p = tc.client().await;
    let d = common::connect(&plain.cluster.url("postgres"))
        .await
        .unwrap();
    p.batch_execute(SCHEMA).await.unwrap();
    d.batch_execute(SCHEMA).await.unwrap();
    for s in 0..3 {
        tc.direct(s).await.batch_execute(REGIONS).await.unwrap();
    }
    d.batch_execute(REGIONS).await.unwrap();
    for stmt in data_statements() {
        p.batch_execute(&stmt)
            .await
            .unwrap_or_else(|e| panic!("{stmt}: {e:?}"));
        d.batch_execute(&stmt).await.unwrap();
    }
    (tc, plain, p, d)
}

/// The random queries' seed: SHARDGATE_DIFF_SEED, or the clock; printed for a replay.
fn seed() -> u64 {
    let seed = std::env::var("SHARDGATE_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("differential seed: {seed} (replay with SHARDGATE_DIFF_SEED={seed})");
    seed
}

const SORTABLE: &[&str] = &[
    "id", "owner", "balance", "score", "active", "opened", "updated", "tag", "note", "region",
    "ratio",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_results_as_one_postgres() {
    same_results(Consistency::Shard).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_results_as_one_postgres_in_snapshot_consistency() {
    same_results(Consistency::Snapshot).await;
}

async fn same_results(consistency: Consistency) {
    let (_tc, _plain, p, d) = setup_in(consistency).await;
    let mut count = 0;

    // Point lookups and IN lists.
    for id in (1..=ROWS).step_by(4).chain([0, ROWS + 5]) {
        compare(
            &p,
            &d,
            &format!("select * from accounts where id = {id}"),
            true,
            None,
        )
        .await;
        count += 1;
    }
    for k in 0..20 {
        let list: Vec<String> = (0..(3 + k % 7))
            .map(|j| ((k * 37 + j * 11) % (ROWS + 3)).to_string())
            .collect();
        compare(
            &p,
            &d,
            &format!(
                "select id, owner, balance from accounts where id in ({}) order by id",
                list.join(",")
            ),
            true,
            None,
        )
        .await;
        compare(
            &p,
            &d,
            &format!(
                "select owner from accounts where id = any(array[{}])",
                list.join(",")
            ),
            false,
            None,
        )
        .await;
        count += 2;
    }
    for name in ["user000", "user017", "user059", "nobody"] {
        compare(
            &p,
            &d,
            &format!("select * from users where name = '{name}'"),
            true,
            None,
        )
        .await;
        count += 1;
    }
    // Ranges and full scans, ordered by every sortable type in both directions.
    for col in SORTABLE {
        for dir_ in ["asc", "desc", "asc nulls first", "desc nulls last"] {
            compare(
                &p,
                &d,
                &format!("select id, {col} from accounts where id > 20 order by {col} {dir_}, id"),
                true,
                None,
            )
            .await;
            compare(
                &p,
                &d,
                &format!("select * from accounts order by {col} {dir_}, id limit 7 offset 5"),
                true,
                None,
            )
            .await;
            count += 2;
        }
    }
    compare(&p, &d, "select * from accounts", false, None).await;
    compare(
        &p,
        &d,
        "select owner, balance from accounts where balance between 0 and 500",
        false,
        None,
    )
    .await;
    compare(
        &p,
        &d,
        "select name, age from users where age > 40 order by city, name",
        true,
        None,
    )
    .await;
    compare(
        &p,
        &d,
        "select id from accounts order by 1 desc limit 3",
        true,
        None,
    )
    .await;
    compare(
        &p,
        &d,
        "select id as k, owner from accounts order by k limit 10 offset 100",
        true,
        None,
    )
    .await;
    compare(
        &p,
        &d,
        "select id from accounts where id > 1000 order by id",
        true,
        None,
    )
    .await;
    compare(
        &p,
        &d,
        "select id from accounts order by id limit 0",
        true,
        None,
    )
    .await;
    compare(
        &p,
        &d,
        "select * from accounts order by lower(owner) desc, id limit 20",
        true,
        None,
    )
    .await;
    compare(
        &p,
        &d,
        "select id, owner from accounts order by balance * -1, score, id limit 25 offset 3",
        true,
        None,
    )
    .await;
    count += 9;
    // Aggregates combined across shards (float sums excluded: their rounding depends on order).
    for sql in [
        "select count(*) from accounts",
        "select count(*), count(note), sum(balance), min(balance), max(balance), avg(balance) from accounts",
        "select avg(id), avg(region), sum(region), min(owner), max(owner), min(opened), max(updated) from accounts",
        "select min(score), max(score) from accounts",
        "select count(*), sum(balance), avg(balance) from accounts where id > 1000",
        "select owner, count(*), sum(balance), avg(balance), min(id) from accounts group by owner order by owner",
        "select region, avg(id), max(opened), min(updated), count(note) from accounts group by region order by 1",
        "select active, count(*) from accounts group by active having count(*) > 100 order by active",
        "select owner from accounts group by owner having sum(balance) > 1000 and min(id) < 50 order by owner desc",
        "select distinct owner from accounts order by owner",
        "select distinct region, active from accounts order by region, active",
        "select owner, count(*) as n from accounts group by owner order by n desc, owner limit 3",
        "select owner, count(*) as n from accounts group by owner order by n desc, owner limit 2 offset 2",
        "select region, owner, sum(balance) from accounts group by region, owner order by region, owner",
        "select count(*) from accounts group by owner order by 1",
        "select sum(amount), avg(amount), count(*) from orders",
        "select account_id, sum(amount) from orders where account_id < 40 group by account_id order by account_id",
        "select a.owner, count(*) from accounts a join orders o on o.account_id = a.id group by a.owner order by a.owner",
        "select city, avg(age), max(name) from users group by city order by city",
        "select id from accounts where id in (select account_id from orders where amount > 50) order by id",
        "select a.id from accounts a where exists (select 1 from orders o where o.account_id = a.id and o.order_no = 2) order by a.id",
        "select a.owner, count(*) from accounts a where not exists (select 1 from orders o where a.id = o.account_id) group by a.owner order by a.owner",
        // Subqueries no shard answers alone, answered first by the proxy.
        "select * from accounts where id not in (select account_id from orders) order by id",
        "select a.id, (select count(*) from orders) from accounts a order by a.id",
        "select exists (select 1 from accounts having count(*) > 5)",
        // EXISTS correlated by one equality off the key: the inner values read first, the
        // outer column bare or qualified.
        "select * from accounts a where exists (select 1 from orders o where o.amount = a.balance) order by id",
        "select id, not exists (select 1 from orders o where o.amount = balance) from accounts a order by id",
        "select count(*) from (select distinct owner, region from accounts order by 1, 2 limit 5) s",
        "select s.owner, s.balance from (select owner, balance from accounts order by balance desc, id limit 7) s order by s.owner, s.balance",
        "select count(*) as count_1 from (select id, owner from accounts where balance > 100) as anon_1",
        "select s.owner, sum(s.balance) from (select owner, balance from accounts where region = 2) s group by s.owner order by s.owner",
        "select a.id, a.owner, count(o.order_no) from accounts a left join orders o on o.account_id = a.id group by a.id order by a.id limit 20",
        "select account_id, count(*) from orders group by account_id having count(*) > 1 order by 2 desc, 1 limit 10",
        "select count(*) from (select distinct a.id, a.owner from accounts a join orders o on o.account_id = a.id where o.amount > 10) s",
        "select count(*) from (select account_id, sum(amount) from orders group by account_id) s",
        // Outer joins keeping a reference table's rows: the rows some shard matches read first.
        "select r.label, a.id from regions r left join accounts a on a.id = r.id * 50 order by r.label, a.id",
        "select r.label, a.id from accounts a full join regions r on a.id = r.id * 50 order by r.label, a.id",
        "select r.id, count(*), count(a.id), sum(a.balance) from regions r left join accounts a on a.region = r.id and a.balance > 500 group by r.id order by r.id",
        "select r.label from regions r left join accounts a on a.region = r.id and a.owner = 'nobody' where a.id is null order by r.label",
        "select count(*) from accounts a right join regions r on a.id = r.id order by 1",
        // ... and the sharded tables joined on after it by the key.
        "select r.label, a.id, o.order_no from regions r left join accounts a on a.id = r.id * 50 left join orders o on o.account_id = a.id order by 1, 2, 3",
        "select r.id, count(o.order_no), sum(o.amount) from regions r left join accounts a on a.region = r.id and a.balance > 900 left join orders o on o.account_id = a.id group by r.id order by r.id",
        // Derived tables that combine every shard's rows, answered first.
        "select count(*) from (select owner, region, count(*) from accounts group by rollup (owner, region)) s",
        // An empty grouping set groups by nothing: one group of all the rows, even of none.
        "select count(*), sum(balance) from accounts group by ()",
        "select count(*), max(id) from accounts where id < 0 group by ()",
        "select region, count(*) from accounts group by (), region order by region",
        "with s as (select region, avg(balance) from accounts group by region) select count(*) from s",
        "select s.region, s.n, r.label from (select region, count(*) n from accounts group by region) s join regions r on r.id = s.region order by s.region",
        // Tied subqueries sorted by, and under DISTINCT.
        "select a.id, (select count(*) from orders o2 where o2.account_id = a.id) from accounts a order by (select count(*) from orders o2 where o2.account_id = a.id) desc, a.id limit 10",
        "select distinct (select count(*) from orders o where o.account_id = a.id) n from accounts a order by n",
        // Derived tables standing for a sharded table's rows: filtered, or grouped by the key.
        "select a.id, (select max(o.amount) from orders o where o.account_id = a.id) from (select * from accounts where region = 2) a order by a.id",
        "select a.owner, o.n from accounts a join (select account_id, count(*) n from orders group by account_id) o on o.account_id = a.id order by a.id limit 15",
        "select count(*) from (select id as k, owner from accounts where balance > 100) a where a.k in (select account_id from orders where amount > 50)",
        "select count(distinct owner), count(distinct region), count(*), sum(balance) from accounts",
        "select owner, count(distinct region), avg(balance), max(id) from accounts group by owner order by owner",
        "select region, count(distinct balance) as n from accounts group by region having count(distinct balance) > 3 order by n desc, region",
        "select count(distinct score), count(distinct opened), count(distinct note) from accounts",
        "select count(distinct owner) from accounts where id > 100000",
        "select count(distinct round(balance / 10, (id % 3)::int)) from accounts",
        "select account_id % 7, count(distinct amount) from orders group by 1 order by 1",
        // Constants beside aggregates, zero defaults (Django's Sum(..., default=0)) and FILTER
        // (Django's Count(..., filter=Q(...))), with and without rows.
        "select 'total' as label, count(*), 1 + 2, null from accounts",
        "select 'none', count(*), sum(balance) from accounts where id > 100000",
        "select 1 from accounts order by count(*)",
        "select owner, 'k'::text, count(*) from accounts group by owner order by owner",
        "select coalesce(sum(balance), 0), coalesce(count(score), 0), coalesce(sum(ratio), 0) from accounts",
        "select coalesce(sum(balance), 0), coalesce(sum(region), 0) from accounts where id > 100000",
        "select region, coalesce(sum(balance), 0) as total from accounts where id % 4 = 0 group by region order by total, region",
        "select count(*) filter (where balance > 100), sum(balance) filter (where active), avg(balance) filter (where region = 2), \
         min(owner) filter (where id > 200), max(opened) filter (where note is null) from accounts",
        // UNION ALL of each shard's rows, ordered and limited on output columns.
        "select id, balance from accounts where region = 1 union all select account_id, amount from orders where order_no = 2 order by 2 desc, id limit 7 offset 3",
        "select owner as who from accounts where id < 20 union all select owner from accounts where id = 200 union all select owner from accounts where id > 230 order by who, 1",
        "select id from accounts where id = 17 union all select account_id from orders where account_id = 17",
        // UNION keeps one of each row across shards (one NULL among them), and reference or
        // constant branches every shard returns.
        "select owner from accounts where region = 1 union select owner from accounts where region = 2 order by 1",
        "select id, balance from accounts where balance > 500 union select account_id, amount from orders where amount > 800 \
         order by 2 desc, 1 limit 7 offset 2",
        "select region from accounts union all select id from regions union select 99 order by region",
        "select note from accounts union select null union select 'zz' order by 1 nulls first",
        "select distinct owner from accounts union select lower(label) from regions union select upper(owner) from accounts where id = 17 order by 1 limit 5",
        "select balance, active from accounts where id % 5 = 0 union distinct select amount, order_no > 1 from orders order by 1, 2",
        "select id from accounts where id = 17 union select account_id from orders where account_id = 17",
        // DISTINCT ON (Django's distinct("x") with order_by("x", ...)): the first row per value.
        "select distinct on (owner) owner, id, balance from accounts order by owner, balance desc, id",
        "select distinct on (region, active) region, active, id from accounts where id > 30 order by active desc, region, id limit 6 offset 2",
        "select distinct on (a.owner) a.owner, o.amount from accounts a join orders o on o.account_id = a.id order by a.owner, o.amount desc, a.id, o.order_no",
        "select distinct on (ratio) ratio, id from accounts order by ratio nulls first, id",
        "select distinct on (note) id from accounts where region = 1 order by note desc, id",
        // FETCH FIRST, as Hibernate pages: read as LIMIT.
        "select id, owner from accounts order by balance desc, id offset 5 rows fetch first 4 rows only",
        "select id from accounts where region = 2 order by id fetch first row only",
        "select owner, count(*) from accounts group by owner order by 2 desc, 1 fetch next 3 rows only",
        "select id from accounts order by id offset 230 rows fetch first 50 rows only",
        // CTEs read once, as the derived tables they stand for (one named as the table it reads).
        "with big as (select * from accounts where balance > 200) select owner, count(*) from big group by owner order by owner",
        "with accounts as (select * from accounts where id < 30) select count(*), sum(balance) from accounts",
        "with a as (select id, owner from accounts where region = 2), b (k, o) as (select id, owner from a where id > 50) \
         select o, count(*) from b group by o order by o",
        "with t as (select * from accounts where id = 17) select id, owner from t",
        "with per as (select account_id, sum(amount) as s from orders group by account_id) select count(*) from per where s > 500",
        // Django's values("x").distinct().count(): values on several shards, NULL among them.
        "select count(*) from (select distinct accounts.owner as col1 from accounts) subquery",
        "select count(*) from (select distinct note as col1 from accounts where region < 3) subquery",
        "select count(*) as n from (select distinct score from accounts where id > 100) s",
        "select count(*) from (select distinct ratio from accounts) s",
        "select count(*) from (select distinct o.amount > 100 from accounts a join orders o on o.account_id = a.id) s",
        "select count(*) from (select distinct note from accounts where id > 100000) s",
        // Several columns: rows distinct across shards, NULLs and equal numerics among them.
        "select count(*) from (select distinct owner, region from accounts) s",
        "select count(*) as __count from (select distinct a.owner as col1, o.amount > 100 as col2 \
         from accounts a join orders o on o.account_id = a.id) subquery",
        "select count(*) from (select distinct note, ratio, active from accounts where region < 3) s",
        "select count(*) from (select distinct owner, note from accounts where id > 100000) s",
        "select count(*) from (select distinct id, owner from accounts where id = 17) s",
        // Django's count() of a grouped query (a paginator over values().annotate()): groups
        // distinct across shards, NULL groups among them, GROUP BY by position or expression.
        "select count(*) from (select accounts.owner as col1, count(accounts.id) as n from accounts group by 1) subquery",
        "select count(*) from (select region, active, sum(balance) from accounts group by region, active) s",
        "select count(*) from (select score, max(id) from accounts group by score) s",
        "select count(*) from (select note, count(*) from accounts where id > 100000 group by note) s",
        "select count(*) as __count from (select a.owner as col1, sum(o.amount) as total from accounts a \
         join orders o on o.account_id = a.id group by 1) subquery",
        "select count(*) from (select date_trunc('year', opened), id % 3 from accounts group by 1, 2) s",
        "select count(*) from (select account_id, sum(amount) from orders where account_id < 40 group by account_id) s",
        // With HAVING: the groups it keeps, merged and filtered before they are counted.
        "select count(*) from (select owner, count(*) from accounts group by owner having count(*) > 3) s",
        "select count(*) as __count from (select region as col1, sum(balance) as total from accounts \
         group by 1 having sum(balance) > 5000) subquery",
        "select count(*) from (select note, count(*) from accounts group by note having max(id) > 200) s",
        "select count(*) from (select owner, count(*) from accounts where id > 100000 group by owner having count(*) > 0) s",
        // ... but its outputs the count does not read are not evaluated, as on one server.
        "select count(*) from (select owner, sum(1 / (region - region)) from accounts group by owner) s",
        // A literal beside a distinct count without GROUP BY, with rows and without; HAVING
        // and ORDER BY over aggregates and items the select list leaves out.
        "select 1, count(distinct owner), 'total' from accounts",
        "select count(distinct owner), null from accounts where id > 100000",
        "select owner from accounts group by owner having avg(balance) > 400 and count(distinct region) > 3 \
         order by sum(balance) / count(*) desc, owner",
        // Items over merged aggregates and group columns, computed after the merge.
        "select owner, round(avg(balance), 2), count(*)::int, sum(balance) / count(*) as per, max(balance) - min(balance) \
         from accounts group by owner order by 3 desc, owner",
        "select count(*)::int2, sum(amount) * 2, round(avg(amount)), coalesce(sum(amount), 1) from orders",
        "select region, region * 10 + count(*) as k, lower(min(owner)) || '-' || region from accounts group by region order by k desc, region",
        "select a.owner, count(o.order_no)::float8 / count(distinct a.id) from accounts a join orders o on o.account_id = a.id group by a.owner order by 1",
        "select coalesce(max(note), 'none') || count(*), count(distinct owner) + 1 from accounts where id > 100000",
        "select active, case when count(*) > 50 then 'many' else 'few' end, avg(region)::int from accounts group by active order by active",
        "select r.id, coalesce(sum(a.balance), 0) + 1 from regions r left join accounts a on a.region = r.id group by r.id order by 2, 1",
        "select owner, count(*)::int as n from accounts group by owner having count(*) > 3 order by n desc, owner limit 4",
        // INTERSECT, EXCEPT and nested unions of rows carrying the shard key at one position.
        "select id, owner from accounts where balance > 300 except select id, owner from accounts where region = 2 order by id",
        "select id from accounts where active intersect select account_id from orders where amount > 400 order by 1 desc limit 6",
        "select account_id, order_no from orders except all select account_id, order_no from orders where amount < 100 order by 1, 2",
        "select id from accounts where region = 0 union all (select account_id from orders where order_no = 1 \
         union select id from accounts where region = 3) order by 1",
        "select id from accounts where id = 17 intersect select account_id from orders where account_id = 17",
        // count(*) OVER () beside a page of rows: the whole result's count in every row.
        "select id, owner, count(*) over () as total from accounts where balance > 100 order by id limit 5",
        "select *, count(*) over () from accounts where region = 2 order by id limit 3 offset 2",
        "select count(*) over () as n, id from accounts where id > 100000",
        "select id, count(note) over () from accounts where region < 2 order by balance desc, id limit 4",
        "select count(*) filter (where active) over () as a, id, owner from accounts order by owner, id limit 3",
        // Sorted by the total too, which every row shares: the other keys order the rows.
        "select id, count(*) over () as t from accounts order by t, id",
        "select owner, id, count(*) over () from accounts where balance > 100 order by 3 desc, owner, id limit 7",
        "select a.id, o.order_no, count(*) over () from accounts a join orders o on o.account_id = a.id \
         where o.amount > 300 order by a.id, o.order_no limit 6",
        // Windows partitioned by the shard key: each shard holds whole partitions.
        "select account_id, order_no, amount, row_number() over (partition by account_id order by amount desc, order_no) \
         from orders order by account_id, order_no",
        "select * from (select account_id, order_no, row_number() over (partition by account_id order by order_no desc) rn \
         from orders) s where rn <= 2 order by account_id, order_no",
        "select id, owner, sum(balance) over (partition by id), count(*) over (partition by id, region) from accounts order by id limit 9",
        "select o.account_id, o.amount, rank() over (partition by o.account_id order by o.amount), \
         lag(o.order_no) over (partition by o.account_id order by o.order_no) from orders o join accounts a on a.id = o.account_id \
         where a.region = 1 order by 1, 2, 3",
        "select account_id, order_no from orders order by row_number() over (partition by account_id order by order_no), account_id, order_no limit 10",
        // Windows partitioned otherwise, over one table: its rows read first, then one server.
        "select id, row_number() over (partition by region order by id) from accounts order by id",
        "select id, count(*) over () * 2, avg(balance) over () from accounts where region = 1 order by id",
        "select id, owner, rank() over (partition by owner order by balance desc, id) from accounts where balance > 500 order by id",
        // SQLAlchemy's exists(): rows on some shard, on none, on one named by its key.
        "select exists (select 1 from accounts where owner = 'Zed' and balance > 1000) as anon_1",
        "select exists (select 1 from accounts where owner = 'nobody'), not exists (select * from orders where amount > 890)",
        "select exists (select 1 from accounts a join orders o on o.account_id = a.id where o.amount < 5 limit 1)",
        "select not exists (select 1 from accounts where id = 17)",
        // Scalar subqueries tied by the key, in the select list and WHERE.
        "select a.id, (select count(*) from orders o where o.account_id = a.id) as n from accounts a order by n desc, a.id limit 15",
        "select accounts.id, (select count(*) as c from orders u0 where u0.account_id = (accounts.id) group by u0.account_id) as n \
         from accounts where accounts.id % 3 = 0 order by 1",
        "select a.owner, max((select sum(o.amount) from orders o where o.account_id = a.id)) from accounts a group by a.owner order by 1",
        "select a.id from accounts a where a.balance < (select coalesce(sum(o.amount), 0) from orders o where o.account_id = a.id) order by a.id",
        "select a.id from accounts a where 1 not in (select o.order_no from orders o where o.account_id = a.id) and a.id < 60 order by a.id",
        "select owner, count(id) filter (where active) as n, avg(balance) filter (where score > 0) from accounts group by owner \
         having count(id) filter (where active) > 3 order by n desc, owner",
    ] {
        compare(&p, &d, sql, true, None).await;
        count += 1;
    }
    // Items computed over aggregates through tokio-postgres: values bound in binary for the
    // types the server inferred (none declared), results in binary, compared byte for byte.
    let sql =
        "select owner, round(avg(balance), $1), count(*)::int + $2, sum(balance)::float8 / $3, \
               max(note) || $4 from accounts where region < $5 group by owner order by owner";
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
        [&2i32, &10i32, &3.0f64, &"!", &3i32];
    let binary = |rows: Vec<tokio_postgres::Row>| -> Vec<Vec<Option<Vec<u8>>>> {
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| r.get::<_, common::RawValue>(i).0)
                    .collect()
            })
            .collect()
    };
    let via = binary(p.query(sql, &params).await.expect("proxy"));
    let direct = binary(d.query(sql, &params).await.expect("plain"));
    assert!(!via.is_empty());
    assert_eq!(via, direct, "{sql}");
    count += 1;
    // A page with its total, bound and in binary.
    let sql = "select *, count(*) over () from accounts where region = $1 order by id limit 4";
    let via = binary(p.query(sql, &[&2i32]).await.expect("proxy"));
    let direct = binary(d.query(sql, &[&2i32]).await.expect("plain"));
    assert_eq!(via.len(), 4);
    assert_eq!(via, direct, "{sql}");
    count += 1;
    // Equal numbers written differently (numeric 0 and 0.00, float -0 and 0) are one row of a
    // UNION, written as whichever came first: compared as numbers.
    for sql in [
        "select ratio from accounts union select 1.50 union select ratio * 10 from accounts where id < 40 order by 1",
        "select score from accounts union select -0.0::float8 union select 0.0::float8 order by 1 desc",
    ] {
        let numbers = |rows: Vec<Vec<Option<String>>>| -> Vec<Vec<Option<String>>> {
            rows.into_iter()
                .map(|row| {
                    row.into_iter()
                        .map(|v| v.map(|t| format!("{}", t.parse::<f64>().expect("a number") + 0.0)))
                        .collect()
                })
                .collect()
        };
        let (via, direct) = (answer(&p, sql).await, answer(&d, sql).await);
        assert_eq!(via.map(numbers), direct.map(numbers), "{sql}");
        count += 1;
    }
    // Errors as one server gives them, error codes compared.
    for sql in [
        // A key beyond bigint's range is out of range (22003), a malformed one 22P02.
        "select owner from accounts where id = '9223372036854775808'",
        "select owner from accounts where id = '-9223372036854775809' or id = 3",
        "select owner from accounts where id = '1.5'",
        "select sum(balance)::int2 from accounts",
        "select count(*) / (count(*) - count(*)) from accounts",
        "select owner, (max(balance) * 1000000)::int2 from accounts group by owner",
        "select id from accounts union all select account_id from orders order by 0",
        "select id from accounts union all select account_id from orders order by 2",
        // A grouped query counted: its items are still analysed as on one server.
        "select count(*) from (select owner, balance from accounts group by owner) s",
    ] {
        assert_eq!(answer(&p, sql).await, answer(&d, sql).await, "{sql}");
        assert!(answer(&p, sql).await.is_err(), "{sql}");
        count += 1;
    }
    compare(
        &p,
        &d,
        "select owner, region, count(*) from accounts group by owner, region",
        false,
        None,
    )
    .await;
    compare(&p, &d, "select distinct note from accounts", false, None).await;
    // Unsorted rows with their total: shard after shard, each row carrying the whole count.
    compare(
        &p,
        &d,
        "select id, count(*) over () from accounts where balance > 500",
        false,
        None,
    )
    .await;
    compare(
        &p,
        &d,
        "select distinct note from accounts where id > 100000",
        false,
        None,
    )
    .await;
    count += 4;
    // Co-located joins and reference tables.
    for id in (3..=ROWS).step_by(17) {
        compare(&p, &d, &format!("select a.id, o.order_no, o.amount from accounts a join orders o on o.account_id = a.id where a.id = {id} order by o.order_no"), true, None).await;
        compare(&p, &d, &format!("select a.owner, r.label from accounts a join regions r on r.id = a.region where a.id = {id}"), true, None).await;
        count += 2;
    }
    compare(&p, &d, "select a.id, o.amount from accounts a join orders o on o.account_id = a.id order by o.amount desc, a.id, o.order_no limit 15", true, None).await;
    compare(&p, &d, "select * from regions order by id", true, None).await;
    count += 2;
    // Every region with its accounts' aggregates, regions without accounts (5, and those the
    // join's condition leaves unmatched on some shards) among them, as Django's
    // annotate(Count(...)) over a reference parent asks.
    for on in ["", " and a.balance > 1200"] {
        compare(
            &p,
            &d,
            &format!(
                "select r.id, r.label, count(a.id), sum(a.balance), min(a.owner), max(a.opened),                  avg(a.region), count(distinct a.owner) from regions r left outer join accounts a                  on a.region = r.id{on} group by r.id, r.label order by count(a.id) desc, r.id"
            ),
            true,
            None,
        )
        .await;
        count += 1;
    }

    // Writes by key, then reads.
    for id in [5, 50, 150, 200] {
        let upd = format!(
            "update accounts set balance = balance + 1.25, note = 'touched' where id = {id}"
        );
        p.batch_execute(&upd).await.unwrap();
        d.batch_execute(&upd).await.unwrap();
        let del = format!("delete from orders where account_id = {id} and order_no = 0");
        p.batch_execute(&del).await.unwrap();
        d.batch_execute(&del).await.unwrap();
    }
    compare(
        &p,
        &d,
        "select id, balance, note from accounts where note = 'touched' order by id",
        true,
        None,
    )
    .await;
    compare(
        &p,
        &d,
        "select account_id, order_no from orders order by account_id, order_no",
        true,
        None,
    )
    .await;
    count += 2;

    // Randomised queries.
    let seed = seed();
    let mut rng = Rng(seed);
    for _ in 0..120 {
        let cols: Vec<&str> = (0..1 + rng.below(3)).map(|_| *rng.pick(SORTABLE)).collect();
        let mut where_ = Vec::new();
        if rng.below(2) == 0 {
            where_.push(format!("balance > {}", rng.below(1500) as i64 - 500));
        }
        if rng.below(3) == 0 {
            where_.push(format!("active = {}", rng.below(2) == 0));
        }
        if rng.below(4) == 0 {
            where_.push(format!(
                "id in ({}, {}, {})",
                rng.below(300),
                rng.below(300),
                rng.below(300)
            ));
        }
        if rng.below(5) == 0 {
            where_.push(format!("id = {}", rng.below(260)));
        }
        let order: Vec<String> = cols
            .iter()
            .map(|c| {
                format!(
                    "{c} {}{}",
                    rng.pick(&["asc", "desc"]),
                    rng.pick(&["", " nulls first", " nulls last"])
                )
            })
            .collect();
        let mut sql = format!("select id, {} from accounts", cols.join(", "));
        if !where_.is_empty() {
            sql.push_str(&format!(" where {}", where_.join(" and ")));
        }
        sql.push_str(&format!(" order by {}, id", order.join(", ")));
        if rng.below(2) == 0 {
            sql.push_str(&format!(" limit {}", rng.below(30)));
        }
        if rng.below(3) == 0 {
            sql.push_str(&format!(" offset {}", rng.below(50)));
        }
        compare(&p, &d, &sql, true, Some(seed)).await;
        count += 1;
    }
    println!("{count} queries compared");
    assert!(
        count >= 200,
        "the suite must compare at least 200 queries, compared {count}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_be_merged_exactly_is_refused() {
    let (_tc, _plain, p, _d) = setup().await;
    for sql in [
        "select count(distinct (owner, region)) from accounts",
        "select string_agg(owner, owner order by id) from accounts",
        "select distinct on (owner) owner, id from accounts",
        "select distinct on (owner) owner, id from accounts order by id",
        "select distinct on (owner) owner, count(*) from accounts group by owner, region order by owner",
        "select id, sum(score) over () from accounts",
        "select *, count(*) over (), * from accounts",
        "select a.id, count(*) over (partition by o.account_id) from accounts a left join orders o on o.account_id = a.id",
        "select * from accounts a join users u on u.name = a.owner",
        "select owner from accounts intersect select owner from accounts where region = 1",
        "select balance from accounts except select amount from orders",
        "select id from accounts union all (select account_id from orders union select id from regions)",
        "select id, region from accounts except select region, id from accounts",
        "select id from accounts union select pg_backend_pid()",
        "select owner, round(avg(balance), 2) + score from accounts group by owner",
        "select count(*) * (select count(*) from regions) from accounts",
        "select json_agg(o) from (select owner o from accounts) s",
        "select count(*) + extract(epoch from now()) from accounts",
        "select owner from accounts union select relname::text from pg_class",
        "select id from accounts union all select id from regions",
        "select id from accounts union all select count(*) from orders",
        "select bit_or(id::bit(8)) from accounts",
        "select distinct corr(id, region) from accounts",
        "select a.id, (select count(*) from orders o where o.amount = a.balance) from accounts a",
        "select (select max(a.balance)) from accounts a",
        "select id, region from accounts order by region fetch first 3 rows with ties",
        "with a as (select * from accounts) select count(*) from a x join a y on x.id = y.id",
        // A write's target is the table, whatever a CTE is called: not one shard's rows only.
        "with accounts as (select 1) delete from accounts where balance > 1400",
        "with accounts as (select 1) update accounts set note = 'cte' where balance > 1400",
        "with accounts as (select * from accounts) select count(*) from accounts x join accounts y on x.owner = y.owner",
        "select count(*) from (select distinct a.owner, o.amount from accounts a join orders o on o.amount = a.balance) s",
        "select count(*) from (select a.owner, count(*) from accounts a join orders o on o.amount = a.balance group by 1) s",
        // An outer join keeping reference rows against two sharded tables, the second not
        // joined by its key.
        "select r.label, a.id from regions r left join accounts a on a.id = r.id * 50 left join orders o on o.order_no = a.id",
    ] {
        let e = p.simple_query(sql).await.map(|_| ()).expect_err(sql);
        assert_eq!(common::code(&e), "0A000", "{sql}");
    }
}

/// What one statement gave: its rows, or the SQLSTATE it failed with.
async fn answer(client: &Client, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    client
        .simple_query(sql)
        .await
        .map(|m| rows(&m))
        .map_err(|e| {
            // SHARDGATE_DIFF_REFUSALS=1 lists each refusal's message: what to answer next.
            if common::code(&e) == "0A000" && std::env::var_os("SHARDGATE_DIFF_REFUSALS").is_some()
            {
                eprintln!(
                    "REFUSED {} || {}",
                    e.as_db_error()
                        .map(|d| d.message().to_string())
                        .unwrap_or_default(),
                    sql
                );
            }
            common::code(&e)
        })
}

/// How the random queries are sent.
enum Sent {
    /// As text with their constants, in the simple protocol.
    Simple,
    /// With their constants bound, in the extended protocol.
    Bound,
}

/// Random queries of the shapes applications send: the proxy either refuses one (0A000) or
/// answers exactly as one PostgreSQL with the same rows does, error codes included.
async fn random_queries(sent: Sent, consistency: Consistency) {
    let (tc, plain, p, d) = setup_in(consistency).await;
    let seed = seed();
    let count = std::env::var("SHARDGATE_DIFF_QUERIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    let mut raw = match sent {
        Sent::Simple => None,
        Sent::Bound => Some((
            bound::login(tc.port, "trustuser").await,
            bound::login(plain.cluster.port, "postgres").await,
        )),
    };
    let mut rng = Rng(seed);
    let (mut answered, mut refused) = (0, 0);
    for _ in 0..count {
        let q = generator::query(&mut rng);
        let (sql, params) = match sent {
            Sent::Simple => (q.sql.clone(), Vec::new()),
            Sent::Bound => bound::parametrize(&q.sql),
        };
        let via = match raw.as_mut() {
            None => answer(&p, &sql).await,
            Some((proxy, _)) => bound::answer(proxy, &sql, &params).await,
        };
        if via.as_ref().err().map(String::as_str) == Some("0A000") {
            refused += 1;
            continue;
        }
        let direct = match raw.as_mut() {
            None => answer(&d, &sql).await,
            Some((_, direct)) => bound::answer(direct, &sql, &params).await,
        };
        let (mut a, mut b) = (via, direct);
        if !q.ordered {
            for r in [&mut a, &mut b].into_iter().flatten() {
                r.sort();
            }
        }
        assert_eq!(a, b, "results differ for: {sql} {params:?} (seed {seed})");
        answered += 1;
    }
    println!("{answered} answered as one PostgreSQL does, {refused} refused");
    assert!(
        answered * 2 > count,
        "most generated queries are of shapes the proxy answers: {answered} of {count}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_queries_are_answered_as_one_postgres_answers_or_refused() {
    random_queries(Sent::Simple, Consistency::Shard).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_queries_with_bound_values_are_answered_as_one_postgres_answers_or_refused() {
    random_queries(Sent::Bound, Consistency::Shard).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_queries_in_snapshot_consistency_are_answered_as_one_postgres_or_refused() {
    random_queries(Sent::Simple, Consistency::Snapshot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bound_queries_in_snapshot_consistency_are_answered_as_one_postgres_or_refused() {
    random_queries(Sent::Bound, Consistency::Snapshot).await;
}
