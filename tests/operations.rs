//! Operating the proxy as a process: SIGHUP reloads the config file for connections already
//! open, a bad file keeps the running config, SIGTERM lets open transactions finish and SIGINT
//! ends statements in flight, each session told why (57P01).

mod common;

use common::process::ProxyProcess;
use common::raw::{field, query, Raw};
use common::{code, config_for, connect, start_unlike_shards, ShardsGuard};
use shardgate::localpg::free_port;
use std::path::{Path, PathBuf};
use std::time::Duration;

const ACCOUNTS: &str = "\n[tables.accounts]\nshard_key = \"id\"\nkey_type = \"bigint\"\n";
const ORDERS: &str = "\n[tables.orders]\nshard_key = \"account_id\"\nkey_type = \"bigint\"\n";
const ADMIN: &str = "\n[[users]]\nname = \"ops\"\npassword = \"opspw\"\nadmin = true\n";

/// Two unlike shards with `accounts` on them, and the proxy binary running from a config file.
struct Running {
    guard: ShardsGuard,
    config: PathBuf,
    proxy: ProxyProcess,
    url: String,
}

async fn running() -> Running {
    let (shards, dir) = tokio::task::spawn_blocking(|| start_unlike_shards(2))
        .await
        .unwrap();
    let guard = ShardsGuard { shards, dir };
    let port = free_port().unwrap();
    let config = guard.dir.join("shardgate.toml");
    std::fs::write(
        &config,
        format!("{}{ADMIN}{ACCOUNTS}", config_for(port, &guard.shards, "")),
    )
    .unwrap();
    let proxy = ProxyProcess::start(&config, port, "", &guard.dir.join("proxy.log"));
    let url = format!("postgres://app:secret@127.0.0.1:{port}/postgres");
    let c = connect(&url).await.unwrap();
    c.batch_execute(
        "create table accounts (id bigint primary key, balance int not null);
         insert into accounts select g, 100 from generate_series(1, 20) g;
         create table orders (account_id bigint not null, item text)",
    )
    .await
    .unwrap();
    Running {
        guard,
        config,
        proxy,
        url,
    }
}

fn signal(proxy: &ProxyProcess, sig: i32) {
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(proxy.child.id() as i32, sig) };
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Waits until the proxy's log has a line containing `needle` (a reload is applied by the
/// process in its own time); false if it never does.
async fn logged(proxy: &ProxyProcess, needle: &str) -> bool {
    for _ in 0..500 {
        if std::fs::read_to_string(&proxy.log)
            .unwrap_or_default()
            .contains(needle)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_declares_tables_for_open_connections_and_refuses_bad_files() {
    let r = running().await;
    let c = connect(&r.url).await.unwrap();
    let err = c
        .batch_execute("insert into orders values (1, 'tea')")
        .await
        .unwrap_err();
    assert_eq!(code(&err), "0A000", "not declared yet");

    append(&r.config, ORDERS);
    signal(&r.proxy, libc::SIGHUP);
    assert!(
        logged(&r.proxy, "tables added: orders").await,
        "{}",
        r.proxy.log_tail()
    );
    // The connection opened before the reload places rows by the new declaration: each order
    // lands on its account's shard.
    for id in 1..=20 {
        c.execute("insert into orders values ($1, 'tea')", &[&(id as i64)])
            .await
            .unwrap();
    }
    for (i, shard) in r.guard.shards.iter().enumerate() {
        let direct = connect(&shard.url("postgres")).await.unwrap();
        let stray = direct
            .query_one(
                "select count(*) from orders o where not exists \
                 (select 1 from accounts a where a.id = o.account_id)",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(
            stray.get::<_, i64>(0),
            0,
            "shard {i}: orders away from their account"
        );
    }
    let n = c
        .query_one("select count(*) from orders", &[])
        .await
        .unwrap();
    assert_eq!(n.get::<_, i64>(0), 20);

    // A file that does not parse, and one that moves rows: both refused, the running config
    // stays, and the connection goes on.
    let good = std::fs::read_to_string(&r.config).unwrap();
    append(&r.config, "\n[tables.broken\n");
    signal(&r.proxy, libc::SIGHUP);
    assert!(logged(&r.proxy, "config not reloaded").await);
    std::fs::write(
        &r.config,
        good.replace(
            "key_type = \"bigint\"\n\n[tables.orders]",
            "key_type = \"text\"\n\n[tables.orders]",
        ),
    )
    .unwrap();
    signal(&r.proxy, libc::SIGHUP);
    assert!(logged(&r.proxy, "the declaration of accounts changed").await);
    let n = c
        .query_one("select balance from accounts where id = 7", &[])
        .await
        .unwrap();
    assert_eq!(n.get::<_, i32>(0), 100);
    c.execute("insert into orders values (21, 'more tea')", &[])
        .await
        .unwrap();
}

/// Logs in as the trust user and runs `sql`; returns its answer.
async fn session(port: u16, sql: &str) -> (Raw, Vec<(u8, Vec<u8>)>) {
    let (mut raw, _) = Raw::login(port).await;
    raw.send(&query(sql)).await;
    let answer = raw.until_ready().await;
    assert!(answer.iter().all(|m| m.0 != b'E'), "{sql}");
    (raw, answer)
}

/// The SQLSTATE of the next message, which must be an ErrorResponse.
async fn next_error(raw: &mut Raw) -> String {
    let (tag, body) = raw
        .recv()
        .await
        .expect("a message before the connection ends");
    assert_eq!(tag, b'E', "an error, not {}", tag as char);
    field(&body, b'C').unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_open_transactions_commit_and_ends_idle_sessions_at_once() {
    let mut r = running().await;
    let port = r.proxy.port;
    let (mut idle, _) = session(port, "select 1").await;
    // A transfer between two accounts on different shards, open when the stop begins.
    let (mut busy, _) = session(
        port,
        "begin; update accounts set balance = balance - 10 where id = 1",
    )
    .await;
    signal(&r.proxy, libc::SIGTERM);
    assert_eq!(next_error(&mut idle).await, "57P01");
    assert!(idle.is_closed().await);
    // The transaction goes on to its end, and its commit holds.
    busy.send(&query(
        "update accounts set balance = balance + 10 where id = 2; commit",
    ))
    .await;
    let answer = busy.until_ready().await;
    assert!(answer.iter().all(|m| m.0 != b'E'), "{answer:?}");
    assert_eq!(next_error(&mut busy).await, "57P01");
    assert!(
        r.proxy.exited(Duration::from_secs(30)).await,
        "{}",
        r.proxy.log_tail()
    );
    assert!(r.proxy.child.wait().unwrap().success());
    let (mut total, mut moved) = (0, 0);
    for shard in &r.guard.shards {
        let direct = connect(&shard.url("postgres")).await.unwrap();
        let row = direct
            .query_one(
                "select coalesce(sum(balance), 0)::int, \
                 count(*) filter (where (id, balance) in ((1, 90), (2, 110))) from accounts",
                &[],
            )
            .await
            .unwrap();
        total += row.get::<_, i32>(0);
        moved += row.get::<_, i64>(1);
    }
    assert_eq!(total, 2000, "money is neither made nor lost");
    assert_eq!(
        moved, 2,
        "the transaction that was open at SIGTERM committed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_ends_a_statement_in_flight_with_57p01() {
    let r = running().await;
    let (mut raw, _) = Raw::login(r.proxy.port).await;
    // Every shard sleeps; the answer would take a minute.
    raw.send(&query(
        "select pg_sleep(60) from accounts where id in (1, 2)",
    ))
    .await;
    // The statement has reached the shards once they show it running.
    let direct = connect(&r.guard.shards[0].url("postgres")).await.unwrap();
    for _ in 0..500 {
        let n: i64 = direct
            .query_one(
                "select count(*) from pg_stat_activity where query like 'select pg_sleep%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(&r.proxy, libc::SIGINT);
    assert_eq!(next_error(&mut raw).await, "57P01");
    assert!(raw.is_closed().await);
}

/// Makes `shard` accept only TLS over TCP, with the test CA's server certificate (Unix-socket
/// logins stay open for the test's own checks).
fn tls_only(shard: &shardgate::localpg::LocalCluster, certs: &common::certs::Certs) {
    use std::os::unix::fs::PermissionsExt;
    shard.stop(false).unwrap();
    // The server must own its key; the copy is made as the server's user.
    std::fs::set_permissions(&certs.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    for (from, to) in [(&certs.cert, "server.crt"), (&certs.key, "server.key")] {
        let out = shard
            .install
            .run_as_owner(
                std::process::Command::new("cp")
                    .arg(from)
                    .arg(shard.data_dir.join(to)),
            )
            .unwrap();
        assert!(out.status.success());
    }
    let out = shard
        .install
        .run_as_owner(
            std::process::Command::new("chmod")
                .arg("600")
                .arg(shard.data_dir.join("server.key")),
        )
        .unwrap();
    assert!(out.status.success());
    append(
        &shard.data_dir.join("postgresql.auto.conf"),
        "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
    );
    std::fs::write(
        shard.data_dir.join("pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
    )
    .unwrap();
    shard.start().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_that_only_takes_tls_is_reached_with_verify_full() {
    let (shards, dir) = tokio::task::spawn_blocking(|| start_unlike_shards(2))
        .await
        .unwrap();
    let guard = ShardsGuard { shards, dir };
    let certs_dir = guard.dir.join("certs");
    std::fs::create_dir_all(&certs_dir).unwrap();
    let certs = common::certs::make(&certs_dir);
    tls_only(&guard.shards[1], &certs);
    let plain_url = guard.shards[1].url("postgres");
    let tls_url = format!(
        "{plain_url}?sslmode=verify-full&sslrootcert={}",
        certs.ca.display()
    );
    // Plaintext is refused by the shard itself.
    assert!(connect(&plain_url).await.is_err());

    let port = free_port().unwrap();
    let text = format!("{}{ACCOUNTS}", config_for(port, &guard.shards, "")).replace(
        &format!("url = \"{plain_url}\""),
        &format!("url = \"{tls_url}\""),
    );
    let config = shardgate::config::Config::from_toml(&text).unwrap();
    let proxy = shardgate::server::Proxy::start(&config)
        .await
        .expect("the proxy reaches the TLS-only shard");
    let url = format!("postgres://app:secret@127.0.0.1:{port}/postgres");
    let c = connect(&url).await.unwrap();
    c.batch_execute(
        "create table accounts (id bigint primary key, balance int not null);
         insert into accounts select g, 100 from generate_series(1, 40) g",
    )
    .await
    .unwrap();
    // A transaction over both shards commits (two-phase, one of them over TLS).
    c.batch_execute("begin; update accounts set balance = balance + 1; commit")
        .await
        .unwrap();
    let total: i64 = c
        .query_one("select sum(balance) from accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 40 * 101);
    // The TLS shard holds rows, and every connection the proxy made to it is encrypted.
    let socket = format!(
        "postgres://postgres@{}:{}/postgres",
        guard.shards[1]
            .data_dir
            .display()
            .to_string()
            .replace('/', "%2F"),
        guard.shards[1].port
    );
    let direct = connect(&socket).await.unwrap();
    let row = direct
        .query_one(
            "select (select count(*) from accounts), \
             count(*) filter (where s.ssl), count(*) filter (where not s.ssl) \
             from pg_stat_ssl s join pg_stat_activity a using (pid) \
             where a.client_addr is not null",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, i64>(0) > 0, "rows on the TLS shard");
    assert!(
        row.get::<_, i64>(1) > 0,
        "encrypted connections from the proxy"
    );
    assert_eq!(row.get::<_, i64>(2), 0, "no plaintext TCP connection");
    drop(c);
    proxy.shutdown().await;

    // A CA that did not sign the shard's certificate: the proxy says so and does not start.
    let other_dir = guard.dir.join("other-ca");
    std::fs::create_dir_all(&other_dir).unwrap();
    let other = common::certs::make(&other_dir);
    let text = text.replace(
        &certs.ca.display().to_string(),
        &other.ca.display().to_string(),
    );
    let config = shardgate::config::Config::from_toml(&text).unwrap();
    let err = match shardgate::server::Proxy::start(&config).await {
        Ok(_) => panic!("the proxy must not trust a certificate its CA did not sign"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("s1") && err.contains("certificate"), "{err}");
}

/// A config that lists one database as two shards is refused at start with an error naming
/// both (it used to hang: the start's placement bootstrap waited on itself), while two
/// databases of one server are two shards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_listed_as_two_shards_is_refused_at_start() {
    let (shards, dir) = tokio::task::spawn_blocking(|| start_unlike_shards(2))
        .await
        .unwrap();
    let guard = ShardsGuard { shards, dir };
    let first = guard.shards[0].url("postgres");
    let second = guard.shards[1].url("postgres");
    let start = |text: String| async move {
        let config = shardgate::config::Config::from_toml(&text).unwrap();
        // A hang fails here rather than holding the suite.
        tokio::time::timeout(
            Duration::from_secs(60),
            shardgate::server::Proxy::start(&config),
        )
        .await
        .expect("the proxy answers at start rather than hang")
    };

    // The first shard's database again under another address.
    let port = free_port().unwrap();
    let text = format!("{}{ACCOUNTS}", config_for(port, &guard.shards, "")).replace(
        &format!("url = \"{second}\""),
        &format!("url = \"{}\"", first.replace("127.0.0.1", "localhost")),
    );
    let err = match start(text).await {
        Ok(_) => panic!("one database listed as two shards must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("s0") && err.contains("s1") && err.contains("one database"),
        "{err}"
    );

    // Another database of the first shard's server is a shard of its own.
    let c = connect(&first).await.unwrap();
    c.batch_execute("create database other").await.unwrap();
    let port = free_port().unwrap();
    let text = format!("{}{ACCOUNTS}", config_for(port, &guard.shards, "")).replace(
        &format!("url = \"{second}\""),
        &format!("url = \"{}/other\"", first.rsplit_once('/').unwrap().0),
    );
    let proxy = start(text).await.expect("two databases of one server");
    proxy.shutdown().await;
}

/// A start held up by a shard (here by a lock on the proxy's placement table, which the start
/// reads) says in its log what it waits for, and still ends on SIGINT, saying so, instead of
/// leaving a process that ignores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_held_up_by_a_shard_says_so_and_ends_on_sigint() {
    let (shards, dir) = tokio::task::spawn_blocking(|| start_unlike_shards(2))
        .await
        .unwrap();
    let guard = ShardsGuard { shards, dir };
    let port = free_port().unwrap();
    let text = format!("{}{ACCOUNTS}", config_for(port, &guard.shards, ""));
    // A first start leaves the proxy's tables on the shards.
    let config = shardgate::config::Config::from_toml(&text).unwrap();
    shardgate::server::Proxy::start(&config)
        .await
        .unwrap()
        .shutdown()
        .await;
    let path = guard.dir.join("held.toml");
    std::fs::write(&path, &text).unwrap();
    let log = guard.dir.join("held.log");

    let c = connect(&guard.shards[0].url("postgres")).await.unwrap();
    c.batch_execute("begin; lock table shardgate.placement in access exclusive mode")
        .await
        .unwrap();
    let out = std::fs::File::create(&log).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_shardgate"))
        .args(["--config".as_ref(), path.as_os_str()])
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    // Polled from another session: one inside a transaction sees the activity of its start.
    let watch = connect(&guard.shards[0].url("postgres")).await.unwrap();
    let waiting = "select count(*) from pg_stat_activity \
                   where application_name = 'shardgate-control' and wait_event_type = 'Lock'";
    let mut held = false;
    for _ in 0..300 {
        if watch
            .query_one(waiting, &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
            > 0
        {
            held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let interrupt = |pid: u32| {
        std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .unwrap()
    };
    if !held {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "the start does not wait on the lock:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
    }
    // The start reports the step it waits in (every `start_progress::EVERY`).
    let reported = |log: &std::path::Path| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains("start still waiting: reading the placement recorded on the shards")
    };
    for _ in 0..300 {
        if reported(&log) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let said_before = reported(&log);
    assert!(interrupt(child.id()).success());
    let mut status = None;
    for _ in 0..200 {
        status = child.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    c.batch_execute("rollback").await.unwrap();
    let said = std::fs::read_to_string(&log).unwrap();
    let status = status.expect("the proxy ends on SIGINT during its start");
    assert!(!status.success(), "{said}");
    assert!(said.contains("stopped by a signal"), "{said}");
    assert!(said_before, "the wait was not reported:\n{said}");
}

/// psql against the admin console; returns its output, or its error text when `ok` is false.
fn console(port: u16, user: &str, args: &[&str]) -> (bool, String) {
    let password = if user == "ops" { "opspw" } else { "secret" };
    let out = std::process::Command::new("psql")
        .arg(format!(
            "postgres://{user}:{password}@127.0.0.1:{port}/shardgate"
        ))
        .args(["-X", "-v", "ON_ERROR_STOP=1"])
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn show(port: u16, command: &str) -> String {
    let (ok, text) = console(port, "ops", &["-At", "-c", command]);
    assert!(ok, "{command}: {text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_console_answers_its_commands_and_only_admins() {
    let r = running().await;
    let port = r.proxy.port;
    // A client in the middle of a transaction, for CLIENTS, POOLS and TRANSACTIONS to show.
    let (mut busy, _) = session(
        port,
        "begin; update accounts set balance = balance + 1 where id = 1",
    )
    .await;

    let shards = show(port, "SHOW SHARDS");
    for name in ["s0|", "s1|"] {
        let line = shards.lines().find(|l| l.starts_with(name)).expect(name);
        assert!(line.contains("|up|"), "{line}");
        let latency = line.rsplit('|').next().unwrap();
        assert!(latency.parse::<f64>().is_ok(), "{line}");
    }
    let clients = show(port, "SHOW CLIENTS");
    assert!(
        clients.contains("|trustuser|") && clients.contains("|in transaction|"),
        "{clients}"
    );
    // The pid the session was given, which pg_terminate_backend takes.
    let busy_line = clients.lines().find(|l| l.contains("|in transaction|"));
    let pid = busy_line.and_then(|l| l.rsplit('|').next()?.parse::<i32>().ok());
    assert!(pid.is_some_and(|p| p > 0), "{clients}");
    let pools = show(port, "SHOW POOLS");
    assert!(
        pools
            .lines()
            .any(|l| l.starts_with("s0|transaction|1|1|0|0|20")),
        "{pools}"
    );
    let txns = show(port, "SHOW TRANSACTIONS");
    assert!(txns.lines().any(|l| l.starts_with("open|client")), "{txns}");
    let stats = show(port, "SHOW STATS");
    assert!(stats.contains("shardgate_clients_connected||1"), "{stats}");
    let config = show(port, "SHOW CONFIG");
    assert!(
        config.contains("shards[1].url|") && config.contains("tables.accounts.shard_key|id"),
        "{config}"
    );
    assert!(
        !config.contains("opspw") && !config.contains("secret"),
        "{config}"
    );
    let slots = show(port, "SHOW SLOTS");
    assert_eq!(
        slots
            .lines()
            .filter(|l| l.starts_with("s0|") || l.starts_with("s1|"))
            .count(),
        2,
        "{slots}"
    );
    // psql's expanded display works as for any result.
    let (ok, expanded) = console(port, "ops", &["-x", "-c", "SHOW CLIENTS"]);
    assert!(
        ok && expanded.contains("-[ RECORD 1 ]") && expanded.contains("state "),
        "{expanded}"
    );

    // RELOAD, as SIGHUP.
    append(&r.config, ORDERS);
    let (ok, text) = console(port, "ops", &["-c", "RELOAD"]);
    assert!(ok && text.contains("tables added: orders"), "{text}");

    // PAUSE waits for the open transaction, then holds new ones until RESUME.
    let pause = tokio::task::spawn_blocking(move || show(port, "PAUSE"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !pause.is_finished(),
        "PAUSE returned with a transaction open"
    );
    busy.send(&query("commit")).await;
    assert!(busy.until_ready().await.iter().all(|m| m.0 != b'E'));
    pause.await.unwrap();
    let c = connect(&r.url).await.unwrap();
    let held = tokio::spawn(async move {
        c.execute("insert into orders values (1, 'held')", &[])
            .await
            .map(|_| ())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !held.is_finished(),
        "a new transaction started while paused"
    );
    show(port, "RESUME");
    held.await.unwrap().unwrap();

    // Unknown commands and other users.
    let (ok, text) = console(port, "ops", &["-c", "SHOW NOTHING"]);
    assert!(!ok && text.contains("SHOW HELP"), "{text}");
    let (ok, text) = console(port, "app", &["-c", "SHOW CLIENTS"]);
    assert!(
        !ok && text.contains("may not use the admin console"),
        "{text}"
    );
}
