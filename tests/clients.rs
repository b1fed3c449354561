//! Real clients through a one-shard proxy: psql (with its catalog meta-commands), pgbench in all
//! three query modes, and the Python drivers psycopg 3 and asyncpg; and the same clients, ORMs
//! and pgbench's own workload over three unlike shards.
//!
//! The Python test makes its own virtualenv under `target/pyvenv` (from
//! tests/python/requirements.txt) the first time it runs.

mod common;

use common::TestCluster;
use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_meta_commands_work() {
    let tc = TestCluster::start(1).await;
    let url = tc.url("app", "secret");
    run(Command::new("psql").args([
        &url,
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        "create table widgets(id int primary key, name text)",
    ]));
    let out = run(Command::new("psql").args([
        &url,
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        "\\dt",
        "-c",
        "\\d widgets",
        "-c",
        "\\l",
        "-c",
        "\\dn",
        "-c",
        "select 1 as one",
    ]));
    assert!(out.contains("widgets"), "{out}");
    assert!(out.contains("widgets_pkey"), "\\d shows the index:\n{out}");
    assert!(out.contains("template1"), "\\l lists databases:\n{out}");
    assert!(out.contains("one"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_initialises_and_runs_in_every_mode() {
    let tc = TestCluster::start(1).await;
    let url = tc.url("app", "secret");
    run(Command::new("pgbench").args(["-i", "-s", "1", "-q", &url]));
    for mode in ["simple", "extended", "prepared"] {
        let out =
            run(Command::new("pgbench").args(["-M", mode, "-c", "4", "-j", "2", "-t", "50", &url]));
        assert!(
            out.contains("number of transactions actually processed: 200/200"),
            "{mode}:\n{out}"
        );
        assert!(
            out.contains("number of failed transactions: 0"),
            "{mode}:\n{out}"
        );
    }
}

/// pgbench as its users run it on a cluster: `pgbench -i` (its COPY ... WITH (FREEZE ON) into
/// the sharded accounts table) and its default TPC-B-like script, which writes a sharded row
/// and three reference tables in each transaction, in every query mode. Every row ends up on
/// its own shard, the reference copies stay alike, and the balances add up as on one server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_loads_and_runs_its_tpcb_script_over_three_unlike_shards() {
    let tables = "[tables.pgbench_accounts]\nshard_key = \"aid\"\nkey_type = \"integer\"\n\
                  [tables.pgbench_branches]\nreference = true\n\
                  [tables.pgbench_tellers]\nreference = true\n\
                  [tables.pgbench_history]\nreference = true\n";
    let tc = TestCluster::start_unlike(3, "", tables).await;
    let url = tc.url("app", "secret");
    run(Command::new("pgbench").args(["-i", "-s", "2", "-q", &url]));
    let placement = tc.config.placement().unwrap();
    let mut owned = [0i64; 3];
    for aid in 1..=200_000 {
        owned[placement.shard_of(&shardgate::placement::KeyValue::Integer(aid))] += 1;
    }
    assert_eq!(
        tc.count_on_each_shard("select count(*) from pgbench_accounts")
            .await,
        owned.to_vec(),
        "each account on the shard its key chooses"
    );
    // -n: history keeps every run's rows, so that their deltas can be added up at the end.
    for mode in ["simple", "extended", "prepared"] {
        let out = run(Command::new("pgbench").args([
            "-n",
            "-M",
            mode,
            "-c",
            "4",
            "-j",
            "2",
            "-t",
            "25",
            "--max-tries",
            "10",
            &url,
        ]));
        assert!(
            out.contains("number of transactions actually processed: 100/100"),
            "{mode}:\n{out}"
        );
        assert!(
            out.contains("number of failed transactions: 0"),
            "{mode}:\n{out}"
        );
    }
    let sums = "select (select sum(bbalance) from pgbench_branches)::bigint, \
                (select sum(tbalance) from pgbench_tellers)::bigint, \
                (select coalesce(sum(delta), 0) from pgbench_history)::bigint, \
                (select count(*) from pgbench_history), \
                (select string_agg(tid || ':' || tbalance, ',' order by tid) from pgbench_tellers), \
                (select coalesce(sum(abalance), 0) from pgbench_accounts)::bigint";
    let mut copies = Vec::new();
    let mut accounts = 0i64;
    for i in 0..3 {
        let row = tc.direct(i).await.query_one(sums, &[]).await.unwrap();
        accounts += row.get::<_, i64>(5);
        copies.push((
            row.get::<_, i64>(0),
            row.get::<_, i64>(1),
            row.get::<_, i64>(2),
            row.get::<_, i64>(3),
            row.get::<_, String>(4),
        ));
    }
    assert!(copies.iter().all(|c| *c == copies[0]), "{copies:?}");
    let (branches, tellers, history, rows, _) = &copies[0];
    assert_eq!(*rows, 300, "one history row per transaction");
    assert_eq!(
        (*branches, *tellers, *history),
        (accounts, accounts, accounts)
    );
}

/// pgjdbc, the JDBC driver, over three unlike shards: tests/java/JdbcHabits.java runs its
/// habits through the proxy and against one PostgreSQL database holding the same, and both
/// must print the same answers, with and without the driver's rewrite of batched INSERTs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_habits_answer_as_one_postgresql_over_three_unlike_shards() {
    // Debian's libpostgresql-jdbc-java, which .ci/run installs.
    let jar = "/usr/share/java/postgresql.jar";
    assert!(
        Path::new(jar).exists(),
        "pgjdbc is needed: apt-get install libpostgresql-jdbc-java"
    );
    let tables = "[tables.jdbc_items]\nshard_key = \"id\"\nkey_type = \"bigint\"\n\
                  [tables.jdbc_codes]\nreference = true\n\
                  [tables.jdbc_serial]\nshard_key = \"id\"\nkey_type = \"bigint\"\n";
    let tc = TestCluster::start_unlike(3, "", tables).await;
    let program = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/java/JdbcHabits.java");
    let habits = |url: String, user: &str, password: &str, rewrite: &str| {
        let mut cmd = Command::new("java");
        cmd.arg("-cp")
            .arg(jar)
            .arg(&program)
            .args([&url, user, password, rewrite]);
        run(&mut cmd)
    };
    // The oracle: an empty database on the first shard's server, which the program fills.
    drop(tc.one_server("jdbc_one", &[]).await);
    let proxy = format!("jdbc:postgresql://127.0.0.1:{}/postgres", tc.port);
    let oracle = format!("jdbc:postgresql://127.0.0.1:{}/jdbc_one", tc.shards[0].port);
    for rewrite in ["false", "true"] {
        let through =
            tokio::task::block_in_place(|| habits(proxy.clone(), "app", "secret", rewrite));
        let alone = tokio::task::block_in_place(|| habits(oracle.clone(), "postgres", "", rewrite));
        assert!(!alone.contains("EXCEPTION"), "{alone}");
        assert_eq!(through.lines().count(), 34, "{through}");
        for (got, want) in through.lines().zip(alone.lines()) {
            assert_eq!(got, want, "rewrite {rewrite}:\n{through}");
        }
        // The answers that show the rows spread and a cancel that reached its shards.
        assert!(through.contains("count: 60/178"), "{through}");
        assert!(through.contains("query timeout: 57014"), "{through}");
        assert!(
            through.contains("s0 s1 s2 s3 s4 s5 s6 s7 s8 s9 s10 s11 12"),
            "each key the proxy filled names its row: {through}"
        );
    }
}

/// Tests of this file set up the shared virtualenv and node packages one at a time.
static SETUP: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn venv_python() -> PathBuf {
    let _one_at_a_time = SETUP.lock().unwrap_or_else(|p| p.into_inner());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("target/pyvenv");
    let python = venv.join("bin/python3");
    let stamp = venv.join(".requirements-installed");
    let requirements = root.join("tests/python/requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).unwrap();
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        run(Command::new(&python)
            .args(["-m", "pip", "install", "-q", "-r"])
            .arg(&requirements));
        std::fs::write(&stamp, wanted).unwrap();
    }
    python
}

/// Runs tests/python/`script` in the shared virtualenv against `url`, with `env` set too;
/// returns what it printed (the test fails if the script does).
async fn python_script(script: &str, url: &str, env: &[(&str, &str)]) -> String {
    let python = tokio::task::spawn_blocking(venv_python).await.unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let mut cmd = Command::new(python);
    cmd.arg(path).env("SHARDGATE_URL", url);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_and_asyncpg_work_unchanged() {
    let tc = TestCluster::start(1).await;
    let out = python_script("clients.py", &tc.url("app", "secret"), &[]).await;
    assert!(
        out.contains("psycopg ok") && out.contains("asyncpg ok"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_and_asyncpg_route_parameters_over_three_shards() {
    let tables = "[tables.accounts]\nshard_key = \"id\"\nkey_type = \"bigint\"\n[tables.countries]\nreference = true\n";
    let tc = TestCluster::start_unlike(3, "", tables).await;
    let out = python_script("sharded.py", &tc.url("app", "secret"), &[]).await;
    assert!(
        out.contains("psycopg sharded ok") && out.contains("asyncpg sharded ok"),
        "{out}"
    );
    // Every shard holds some of the rows: they really were spread.
    for i in 0..3 {
        let n: i64 = tc
            .direct(i)
            .await
            .query_one("select count(*) from accounts", &[])
            .await
            .unwrap()
            .get(0);
        assert!(n > 0 && n < 90, "shard {i} holds {n} of 90 rows");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_and_asyncpg_copy_cursors_and_pools_over_three_shards() {
    let tables = "[tables.events]\nshard_key = \"id\"\nkey_type = \"bigint\"\n[tables.events2]\nshard_key = \"id\"\nkey_type = \"bigint\"\n";
    let tc = TestCluster::start_unlike(3, "", tables).await;
    let out = python_script("coverage.py", &tc.url("app", "secret"), &[]).await;
    assert!(
        out.contains("psycopg coverage ok") && out.contains("asyncpg coverage ok"),
        "{out}"
    );
    // COPY spread the rows: every shard holds some, none holds all.
    let spread = tc.count_on_each_shard("select count(*) from events").await;
    assert!(spread.iter().all(|n| *n > 0 && *n < 300), "{spread:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlalchemy_app_runs_unchanged_over_three_shards() {
    let tables = "[tables.customers]\nshard_key = \"id\"\nkey_type = \"bigint\"\n[tables.orders]\nshard_key = \"customer_id\"\nkey_type = \"bigint\"\n[tables.payments]\nshard_key = \"customer_id\"\nkey_type = \"bigint\"\n[tables.tenants]\nreference = true\n[routing]\nundeclared_tables = \"reference\"\n";
    for driver in ["psycopg", "asyncpg"] {
        let tc = TestCluster::start_unlike(3, "", tables).await;
        let url = tc.url("app", "secret");
        let out = python_script("orm_app.py", &url, &[("SHARDGATE_DRIVER", driver)]).await;
        assert!(out.contains(&format!("orm app ok {driver}")), "{out}");
        // The customers really are spread.
        let spread = tc
            .count_on_each_shard("select count(*) from customers")
            .await;
        assert!(spread.iter().all(|n| *n > 0), "{spread:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_migrates_and_its_orm_works_over_three_shards() {
    let python = tokio::task::spawn_blocking(venv_python).await.unwrap();
    let tables = "[tables.shop_item]\nshard_key = \"id\"\nkey_type = \"bigint\"\n[tables.shop_line]\nshard_key = \"item_id\"\nkey_type = \"bigint\"\n[routing]\nundeclared_tables = \"reference\"\n";
    let tc = TestCluster::start_unlike(3, "", tables).await;
    let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/django_app");
    let django = |args: &[&str]| {
        let mut cmd = Command::new(&python);
        cmd.args(args)
            .current_dir(&app)
            .env("PYTHONPATH", &app)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("DJANGO_SETTINGS_MODULE", "settings")
            .env("SHARDGATE_URL", tc.url("app", "secret"));
        cmd
    };
    let out = run(&mut django(&["-m", "django", "migrate", "--no-input"]));
    assert!(out.contains("Applying shop.0001_initial... OK"), "{out}");
    assert!(out.contains("Applying shop.0002_shelf... OK"), "{out}");
    let out = run(&mut django(&["run.py"]));
    assert!(out.contains("django ok 45"), "{out}");
    // The shelf made after loaddata's sequence reset has one id on every copy.
    assert_eq!(
        tc.count_on_each_shard(
            "select count(*) from shop_shelf where id = 901 and name = 'after load'"
        )
        .await,
        vec![1, 1, 1]
    );
    // Django's own tables have a copy on every shard; the items are spread.
    assert_eq!(
        tc.count_on_each_shard("select count(*) from auth_user")
            .await,
        vec![1, 1, 1]
    );
    let spread = tc
        .count_on_each_shard("select count(*) from shop_item")
        .await;
    assert!(spread.iter().all(|n| *n > 0), "{spread:?}");
}

/// `node` with tests/node's packages installed (once) under target/nodeenv.
fn node_modules() -> PathBuf {
    let _one_at_a_time = SETUP.lock().unwrap_or_else(|p| p.into_inner());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let env = root.join("target/nodeenv");
    let stamp = env.join(".package-installed");
    let wanted = std::fs::read_to_string(root.join("tests/node/package.json")).unwrap();
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        std::fs::create_dir_all(&env).unwrap();
        std::fs::write(env.join("package.json"), &wanted).unwrap();
        run(Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent"])
            .current_dir(&env));
        std::fs::write(&stamp, wanted).unwrap();
    }
    env.join("node_modules")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_works_over_three_shards() {
    let modules = tokio::task::spawn_blocking(node_modules).await.unwrap();
    let tables = "[tables.accounts]\nshard_key = \"id\"\nkey_type = \"bigint\"\n";
    let tc = TestCluster::start_unlike(3, "", tables).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node/clients.js");
    let out = run(Command::new("node")
        .arg(script)
        .env("NODE_PATH", modules)
        .env("SHARDGATE_URL", tc.url("app", "secret")));
    assert!(out.contains("node-postgres ok"), "{out}");
    let spread = tc
        .count_on_each_shard("select count(*) from accounts")
        .await;
    assert!(spread.iter().all(|n| *n > 0), "{spread:?}");
}

/// Sequelize, Knex, TypeORM and Drizzle over three unlike shards: tests/node/orms.js runs their habits
/// through the proxy and against one PostgreSQL database, and both must print the same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_orms_answer_as_one_postgresql_over_three_unlike_shards() {
    let modules = tokio::task::spawn_blocking(node_modules).await.unwrap();
    let tables = "[tables.seq_customers]\nshard_key = \"id\"\nkey_type = \"bigint\"\n\
                  [tables.seq_orders]\nshard_key = \"customer_id\"\nkey_type = \"bigint\"\n\
                  [tables.kx_users]\nshard_key = \"id\"\nkey_type = \"bigint\"\n\
                  [tables.kx_events]\nshard_key = \"user_id\"\nkey_type = \"bigint\"\n\
                  [tables.to_authors]\nshard_key = \"id\"\nkey_type = \"bigint\"\n\
                  [tables.to_posts]\nshard_key = \"author_id\"\nkey_type = \"bigint\"\n\
                  [tables.dz_authors]\nshard_key = \"id\"\nkey_type = \"bigint\"\n\
                  [tables.dz_posts]\nshard_key = \"author_id\"\nkey_type = \"bigint\"\n";
    let tc = TestCluster::start_unlike(3, "", tables).await;
    drop(tc.one_server("orms_one", &[]).await);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node/orms.js");
    let orms = |url: String| {
        tokio::task::block_in_place(|| {
            run(Command::new("node")
                .arg(&script)
                .env("NODE_PATH", &modules)
                .env("SHARDGATE_URL", url))
        })
    };
    let through = orms(tc.url("app", "secret"));
    let alone = orms(tc.shards[0].url("orms_one"));
    assert!(!alone.contains("ERROR"), "{alone}");
    assert_eq!(through.lines().count(), 66, "{through}");
    for (got, want) in through.lines().zip(alone.lines()) {
        assert_eq!(got, want, "{through}");
    }
    // The steps ran: the rows went in, and the group ordered through the model came back.
    assert!(through.contains("sequelize bulkCreate: 30"), "{through}");
    assert!(
        through.contains(r#"typeorm find relations paged: [["3",3],["5",1]]"#),
        "{through}"
    );
    assert!(
        through.contains(r#"sequelize group: [{"status":"new","n":"23""#),
        "{through}"
    );
    // Each author's two most liked posts, loaded through a LATERAL join.
    assert!(
        through
            .contains(r#"drizzle findFirst: {"id":7,"name":"au7","city":"c0","posts":[{"id":7,"#),
        "{through}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_meta_commands_work_on_three_shards() {
    let tables = "[tables.widgets]\nshard_key = \"id\"\nkey_type = \"bigint\"\n";
    let tc = TestCluster::start_unlike(3, "", tables).await;
    let url = tc.url("app", "secret");
    run(Command::new("psql").args([
        &url,
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        "create table widgets(id bigint primary key, name text)",
    ]));
    run(Command::new("psql").args([
        &url,
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        "insert into widgets (id, name) values (1, 'a')",
        "-c",
        "insert into widgets (id, name) values (2, 'b')",
    ]));
    let out = run(Command::new("psql").args([
        &url,
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        "\\dt",
        "-c",
        "\\d widgets",
        "-c",
        "\\l",
        "-c",
        "select count(*) as n from widgets",
    ]));
    assert!(out.contains("widgets_pkey"), "\\d widgets:\n{out}");
    assert!(out.contains("template1"), "\\l:\n{out}");
    assert!(out.contains(" n \n---\n 2\n"), "count over shards:\n{out}");
}

/// pg_dump through the proxy (leaving out the schema the proxy keeps on the shards) dumps each
/// shard's rows once, and psql restores the dump through the proxy: each row back on its
/// shard, the reference table whole on every copy. `pg_dump -t` looks its tables up with
/// `OPERATOR(pg_catalog.=) ANY (...)`, which the proxy plans as the plain operator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_dump_and_a_restore_through_the_proxy_over_three_unlike_shards() {
    let tables = "[tables.widgets]\nshard_key = \"id\"\nkey_type = \"bigint\"\n[tables.colors]\nreference = true\n";
    let tc = TestCluster::start_unlike(3, "", tables).await;
    let url = tc.url("app", "secret");
    let c = tc.client().await;
    c.batch_execute(
        "create type size as enum ('s', 'm', 'l');
         create table colors (code text primary key, name text);
         insert into colors values ('r', 'red'), ('g', 'green');
         create table widgets (id bigint primary key, color text, size size);
         insert into widgets select i, case when i % 2 = 0 then 'r' else 'g' end,
           (array['s', 'm', 'l'])[i % 3 + 1]::size from generate_series(1, 60) i",
    )
    .await
    .unwrap();
    let placed = tc.count_on_each_shard("select count(*) from widgets").await;
    assert!(placed.iter().all(|&n| n > 0 && n < 60), "{placed:?}");
    let one_table = run(Command::new("pg_dump").args([&url, "-t", "widgets", "--data-only"]));
    let rows = one_table
        .lines()
        .skip_while(|l| !l.starts_with("COPY public.widgets"))
        .skip(1)
        .take_while(|l| *l != "\\.")
        .count();
    assert_eq!(rows, 60, "{one_table}");
    let dir = common::TempDir::new("dump");
    let file = dir.path().join("all.sql");
    let file = file.to_str().unwrap();
    run(Command::new("pg_dump").args([&url, "-N", "shardgate", "-f", file]));
    c.batch_execute("drop table widgets, colors; drop type size")
        .await
        .unwrap();
    run(Command::new("psql").args([&url, "-q", "-v", "ON_ERROR_STOP=1", "-f", file]));
    assert_eq!(
        tc.count_on_each_shard("select count(*) from widgets").await,
        placed
    );
    assert_eq!(
        tc.count_on_each_shard("select count(*) from colors").await,
        vec![2, 2, 2]
    );
    let summary = common::answer(
        &c,
        "select count(*), sum(id), count(distinct size), min(size) from widgets",
    )
    .await;
    assert_eq!(
        summary,
        vec![vec![
            Some("60".to_string()),
            Some("1830".to_string()),
            Some("3".to_string()),
            Some("s".to_string())
        ]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_and_asyncpg_everyday_habits_on_three_unlike_shards() {
    everyday_habits("").await;
}

/// The same habits with every session in snapshot consistency, where a statement joins a
/// transaction's cut, and an autocommit read takes one, on its own schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_and_asyncpg_everyday_habits_in_snapshot_consistency() {
    everyday_habits("[transactions]\nsnapshot = true\nconsistency = \"snapshot\"\n").await;
}

async fn everyday_habits(transactions: &str) {
    let tables = format!("{transactions}[tables.items]\nshard_key = \"id\"\nkey_type = \"bigint\"\n[tables.countries]\nreference = true\n[tables.feelings]\nshard_key = \"id\"\nkey_type = \"bigint\"\n");
    let tc = TestCluster::start_unlike(3, "", &tables).await;
    let out = python_script("everyday.py", &tc.url("app", "secret"), &[]).await;
    assert!(
        out.contains("psycopg everyday ok") && out.contains("asyncpg everyday ok"),
        "{out}"
    );
    // Every copy of the reference table holds the one row.
    assert_eq!(
        tc.count_on_each_shard("select count(*) from countries")
            .await,
        vec![1, 1, 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlalchemy_transaction_mix_passes_in_snapshot_as_in_shard_consistency() {
    let config = format!(
        "[transactions]\nsnapshot = true\n[tables.accounts]\nshard_key = \"id\"\nkey_type = \"bigint\"\n[tables.plans]\nreference = true\n{}",
        common::SNAPSHOT_READER
    );
    let tc = TestCluster::start_unlike(3, "", &config).await;
    for (mode, url) in [
        ("shard", tc.url("app", "secret")),
        ("snapshot", tc.url("reader", "none")),
    ] {
        let out = python_script("orm_mix.py", &url, &[("SHARDGATE_MODE", mode)]).await;
        assert!(
            out.contains(&format!("sqlalchemy mix ok {mode} 105")),
            "{mode}: {out}"
        );
    }
}

/// TLS to the proxy with `[tls] mode = "require"`, on two unlike shards: psql, psycopg and
/// asyncpg verify the proxy's certificate (verify-full), and plaintext logins are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_with_psql_psycopg_and_asyncpg_verifying_the_proxy() {
    let certs_dir = common::TempDir::new("tls");
    let certs = common::certs::make(certs_dir.path());
    let tail = format!(
        "[tables.accounts]\nshard_key = \"id\"\nkey_type = \"bigint\"\n\
         [tls]\nmode = \"require\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        certs.cert.display(),
        certs.key.display()
    );
    let tc = TestCluster::start_unlike(2, "", &tail).await;
    let url = format!("postgres://app:secret@localhost:{}/postgres", tc.port);
    let verified = format!(
        "{url}?sslmode=verify-full&sslrootcert={}",
        certs.ca.display()
    );
    run(Command::new("psql").args([
        &verified,
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        "create table accounts (id bigint primary key, balance int);
         insert into accounts select g, 10 from generate_series(1, 50) g",
    ]));
    let out = run(Command::new("psql").args([
        &verified,
        "-At",
        "-c",
        "\\conninfo",
        "-c",
        "select sum(balance) from accounts",
    ]));
    assert!(out.contains("SSL connection (protocol: TLS"), "{out}");
    assert!(out.contains("\n500"), "{out}");
    // require: encrypted, the certificate not checked (as libpq does it).
    let out = run(Command::new("psql").args([
        &format!("{url}?sslmode=require"),
        "-At",
        "-c",
        "select count(*) from accounts",
    ]));
    assert_eq!(out.trim(), "50");
    let refused = Command::new("psql")
        .args([&format!("{url}?sslmode=disable"), "-c", "select 1"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("SSL connection is required"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let ca = certs.ca.display().to_string();
    let out = python_script("tls.py", &url, &[("SHARDGATE_CA", &ca)]).await;
    for line in [
        "psycopg tls 500",
        "psycopg plaintext refused",
        "asyncpg tls [1, 2, 3]",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
}

/// docker-compose.yml read as Compose reads it: three healthy-checked shards, the proxy waiting
/// for them and restarted on failure, Prometheus scraping it; and the config it mounts passes
/// `shardgate check-config`. (No Docker here: this checks the file, not a running stack.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_compose_file_holds_together_and_its_config_checks() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = python_script("compose_check.py", "", &[("SHARDGATE_ROOT", root)]).await;
    let config = out
        .lines()
        .find_map(|l| l.strip_prefix("config: "))
        .unwrap_or_else(|| panic!("no config path in:\n{out}"));
    let checked = run(Command::new(env!("CARGO_BIN_EXE_shardgate")).args(["check-config", config]));
    assert!(checked.contains("config OK"), "{checked}");
    assert!(checked.contains("accounts"), "{checked}");
}

/// psycopg 3, asyncpg, node-postgres and pgbench with 24 clients each over a pool of 3
/// connections per shard: prepared statements, settings and transactions on every shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_with_many_more_clients_than_pooled_connections() {
    drivers_over_a_small_pool(3).await;
}

/// The same through the one-shard relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_with_many_more_clients_than_pooled_connections_on_one_shard() {
    drivers_over_a_small_pool(1).await;
}

async fn drivers_over_a_small_pool(shards: usize) {
    let modules = tokio::task::spawn_blocking(node_modules).await.unwrap();
    let tables = "[tables.accounts]\nshard_key = \"id\"\nkey_type = \"bigint\"\n[pool]\nsize = 3\n";
    let tc = TestCluster::start_unlike(shards, "", tables).await;
    let values: Vec<String> = (1..=60).map(|i| format!("({i}, {})", i * 10)).collect();
    tc.client()
        .await
        .batch_execute(&format!(
            "create table accounts (id bigint primary key, balance int);
             insert into accounts values {}",
            values.join(", ")
        ))
        .await
        .unwrap();
    let url = tc.url("app", "secret");
    let out = python_script("pooled.py", &url, &[]).await;
    assert!(out.contains("pooled ok"), "{out}");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node/pooled.js");
    let out = run(Command::new("node")
        .arg(script)
        .env("NODE_PATH", modules)
        .env("SHARDGATE_URL", &url));
    assert!(out.contains("node pooled ok"), "{out}");
    // One file per test: the one-shard and three-shard tests run at once in one process.
    let bench = std::env::temp_dir().join(format!(
        "shardgate-pooled-{}-{shards}.sql",
        std::process::id()
    ));
    std::fs::write(
        &bench,
        "\\set id random(1, 60)\nselect balance from accounts where id = :id;\n",
    )
    .unwrap();
    let out = run(Command::new("pgbench")
        .args([
            "-n", "-M", "prepared", "-c", "24", "-j", "2", "-t", "40", "-f",
        ])
        .arg(&bench)
        .arg(&url));
    let _ = std::fs::remove_file(&bench);
    assert!(
        out.contains("number of transactions actually processed: 960/960"),
        "{out}"
    );
    // The pools hold no more than their size on any shard, once the backends of connections
    // closed at the end (pinned sessions give theirs up) have exited: PostgreSQL removes a
    // backend a moment after its socket closes.
    let most = 3 * shards as i64;
    let held = tc
        .session_backends_settled(most, std::time::Duration::from_secs(10))
        .await;
    assert!(held <= most, "{held} session backends");
}

/// `pg_cancel_backend` and `pg_terminate_backend` of the pid each connection was given (one the
/// proxy minted in transaction pooling) reach the proxy's session, with psycopg and asyncpg, on
/// three unlike shards and through the one-shard relay, when the caller is the same user or an
/// admin; another user is refused (42501).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_cancel_and_terminate_each_other_by_their_pids() {
    for shards in [3, 1] {
        let tables =
            "[tables.accounts]\nshard_key = \"id\"\nkey_type = \"bigint\"\n[pool]\nsize = 3\n\
             [[users]]\nname = \"ops\"\npassword = \"ops\"\nadmin = true\n";
        let tc = TestCluster::start_unlike(shards, "", tables).await;
        tc.client()
            .await
            .batch_execute(
                "create table accounts (id bigint primary key, balance int);
                 insert into accounts select i, i * 10 from generate_series(1, 60) i",
            )
            .await
            .unwrap();
        let env = [
            ("OTHER_URL", tc.url("md5user", "md5secret")),
            ("ADMIN_URL", tc.url("ops", "ops")),
        ];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = python_script("signals.py", &tc.url("app", "secret"), &env).await;
        assert!(out.contains("signals ok"), "{shards} shard(s): {out}");
    }
}
