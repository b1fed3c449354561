//! The `shardgate` binary: check-config, config errors and exit codes, start-up refusal when a
//! shard is unreachable, the Prometheus endpoint, and that passwords never reach the logs.

mod common;

use shardgate::localpg::free_port;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_shardgate");

fn write_config(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("shardgate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A directory of the test's own, removed when dropped.
fn tmpdir(name: &str) -> common::TempDir {
    common::TempDir::new(&format!("cli-{name}"))
}

#[test]
fn check_config_prints_what_it_understood() {
    let dir = tmpdir("ok");
    let path = write_config(
        dir.path(),
        "[server]\nlisten = \"127.0.0.1:7777\"\n[[users]]\nname = \"app\"\npassword = \"topsecret\"\n[[shards]]\nname = \"a\"\nurl = \"postgres://postgres:shardpw@127.0.0.1:5999/db\"\n",
    );
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("listen: 127.0.0.1:7777"), "{stdout}");
    assert!(
        stdout.contains("a: 127.0.0.1:5999 db=db user=postgres"),
        "{stdout}"
    );
    assert!(stdout.contains("app (scram-sha-256)"), "{stdout}");
    assert!(
        !stdout.contains("topsecret") && !stdout.contains("shardpw"),
        "{stdout}"
    );
}

#[test]
fn bad_configs_exit_nonzero_naming_the_problem() {
    let base = "[[users]]\nname = \"app\"\npassword = \"pw\"\n[[shards]]\nname = \"a\"\nurl = \"postgres://u@h/db\"\n";
    let cases = [
        (format!("{base}[server]\nlistne = \"x\"\n"), "listne"),
        (base.replace("name = \"a\"", "name = 5"), "name"),
        (
            format!("{base}[[shards]]\nname = \"a\"\nurl = \"postgres://u@h/db\"\n"),
            "duplicate shard name \"a\"",
        ),
        (
            "[[users]]\nname = \"app\"\nauth = \"trust\"\n".to_string(),
            "no [[shards]]",
        ),
        ("this is not toml".to_string(), "invalid config"),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let dir = tmpdir(&format!("bad{i}"));
        let path = write_config(dir.path(), text);
        for args in [
            vec!["check-config".into(), path.clone().into_os_string()],
            vec!["--config".into(), path.clone().into_os_string()],
        ] {
            let out = Command::new(BIN).args(&args).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "case {i} must fail");
            assert!(stderr.contains(needle), "case {i}: {stderr}");
        }
    }
}

#[test]
fn unreachable_shard_at_start_is_named_and_fatal() {
    let port = free_port().unwrap();
    let dead = free_port().unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nconnect_timeout_secs = 2\n[metrics]\nlisten = \"\"\n[[users]]\nname = \"app\"\npassword = \"pw\"\n[[shards]]\nname = \"deadshard\"\nurl = \"postgres://postgres:sekrit@127.0.0.1:{dead}/db\"\n"
    );
    let dir = tmpdir("dead");
    let path = write_config(dir.path(), &text);
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("shard deadshard"), "{stderr}");
    assert!(!stderr.contains("sekrit"), "{stderr}");
}

struct Running(Child);
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The binary on config `text` (written into `dir`), logging at debug level to `log`, and a
/// client logged in through it once it serves.
async fn start_binary(
    dir: &std::path::Path,
    text: &str,
    port: u16,
    log: &std::path::Path,
) -> (Running, tokio_postgres::Client) {
    let path = write_config(dir, text);
    let out = std::fs::File::create(log).unwrap();
    let proxy = Running(
        Command::new(BIN)
            .args(["--log-level", "debug", "--config"])
            .arg(&path)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("postgres://app:secret@127.0.0.1:{port}/postgres");
    for _ in 0..100 {
        if let Ok(c) = common::connect(&url).await {
            return (proxy, c);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "proxy binary did not come up:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn http_get(port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_readiness_endpoints_and_logs_without_passwords() {
    let (shards, dir) = tokio::task::spawn_blocking(|| common::start_shards(1))
        .await
        .unwrap();
    let guard = common::ShardsGuard { shards, dir };
    let (shards, dir) = (&guard.shards, &guard.dir);
    let port = free_port().unwrap();
    let metrics_port = free_port().unwrap();
    let text = common::config_for(port, shards, "health_check_interval_secs = 1").replace(
        "listen = \"\"",
        &format!("listen = \"127.0.0.1:{metrics_port}\""),
    );
    let log_path = dir.join("proxy.log");
    let (_proxy, client) = start_binary(&dir.join("cfg"), &text, port, &log_path).await;
    for _ in 0..5 {
        client.query_one("select 1", &[]).await.unwrap();
    }
    let _ = common::connect(&format!("postgres://app:wrong@127.0.0.1:{port}/postgres")).await;
    let body = tokio::task::spawn_blocking(move || http_get(metrics_port, "/metrics"))
        .await
        .unwrap();
    for needle in [
        "shardgate_clients_connected 1",
        "shardgate_queries_total{shard=\"s0\"}",
        "shardgate_query_duration_seconds_bucket{shard=\"s0\"",
        "shardgate_backend_connect_errors_total{shard=\"s0\"} 0",
        "shardgate_auth_failures_total 1",
    ] {
        assert!(body.contains(needle), "missing {needle} in:\n{body}");
    }
    // The pool's gauges are current when read: between queries the session's connection is
    // back in the pool, idle, and each query checked it out once.
    let pool = |name: &str| {
        counter_sum(&body, &format!("{name}{{shard=\"s0\"}}"))
            .unwrap_or_else(|| panic!("no {name} in:\n{body}"))
    };
    assert_eq!(pool("shardgate_pool_active_connections"), 0.0);
    assert_eq!(pool("shardgate_pool_waiting_clients"), 0.0);
    assert!(pool("shardgate_pool_idle_connections") >= 1.0, "{body}");
    assert!(
        pool("shardgate_pool_checkout_wait_seconds_count") >= 5.0,
        "{body}"
    );
    drop(client);
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(logs.contains("client connected"), "{logs}");
    assert!(
        !logs.contains("secret") && !logs.contains("md5secret"),
        "a password reached the log:\n{logs}"
    );

    // Health is the process; readiness is every shard answering its probes.
    let get =
        |path: &'static str| tokio::task::spawn_blocking(move || http_get(metrics_port, path));
    let health = get("/healthz").await.unwrap();
    assert!(
        health.starts_with("HTTP/1.0 200") || health.starts_with("HTTP/1.1 200"),
        "{health}"
    );
    let ready = get("/readyz").await.unwrap();
    assert!(ready.contains(" 200 "), "{ready}");
    shards[0].stop(true).unwrap();
    let mut unready = String::new();
    for _ in 0..100 {
        unready = get("/readyz").await.unwrap();
        if unready.contains(" 503 ") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        unready.contains(" 503 ") && unready.contains("s0"),
        "{unready}"
    );
    assert!(get("/healthz").await.unwrap().contains(" 200 "));
    assert!(get("/nowhere").await.unwrap().contains(" 404 "));
}

/// The Prometheus server, from `SHARDGATE_PROMETHEUS` or the Debian package's path.
fn prometheus_binary() -> std::path::PathBuf {
    let path = std::env::var_os("SHARDGATE_PROMETHEUS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/usr/bin/prometheus".into());
    assert!(
        path.exists(),
        "{} not found: install Prometheus (apt-get install prometheus) or set SHARDGATE_PROMETHEUS",
        path.display()
    );
    path
}

/// A real Prometheus scrapes the proxy, and a `shardgate_` series comes back through its
/// HTTP query API, as a dashboard would read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_proxy() {
    let prometheus = prometheus_binary();
    let (shards, dir) = tokio::task::spawn_blocking(|| common::start_shards(2))
        .await
        .unwrap();
    let guard = common::ShardsGuard { shards, dir };
    let (port, metrics_port, prom_port) = (
        free_port().unwrap(),
        free_port().unwrap(),
        free_port().unwrap(),
    );
    let text = common::config_for(port, &guard.shards, "").replace(
        "listen = \"\"",
        &format!("listen = \"127.0.0.1:{metrics_port}\""),
    );
    let log = guard.dir.join("proxy.log");
    let (_proxy, client) = start_binary(&guard.dir.join("proxy"), &text, port, &log).await;
    client.simple_query("select 1").await.unwrap();

    let scrape = guard.dir.join("prometheus.yml");
    std::fs::write(
        &scrape,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: shardgate\n    \
             static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n"
        ),
    )
    .unwrap();
    let prom_log = std::fs::File::create(guard.dir.join("prometheus.log")).unwrap();
    let _prometheus = Running(
        Command::new(prometheus)
            .arg(format!("--config.file={}", scrape.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                guard.dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(prom_log.try_clone().unwrap())
            .stderr(prom_log)
            .spawn()
            .unwrap(),
    );
    let query = "/api/v1/query?query=shardgate_clients_connected";
    let mut answer = String::new();
    for _ in 0..300 {
        answer = tokio::task::spawn_blocking(move || {
            std::net::TcpStream::connect(("127.0.0.1", prom_port))
                .map(|_| http_get(prom_port, query))
                .unwrap_or_default()
        })
        .await
        .unwrap();
        if answer.contains("\"__name__\":\"shardgate_clients_connected\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        answer.contains("\"__name__\":\"shardgate_clients_connected\"")
            && answer.contains("\"job\":\"shardgate\""),
        "Prometheus never returned the series:\n{answer}\n{}",
        std::fs::read_to_string(guard.dir.join("prometheus.log")).unwrap_or_default()
    );
    // One client is connected, and that is the value Prometheus scraped.
    assert!(answer.contains(",\"1\"]"), "{answer}");
    drop(client);
}

/// The sum of a counter's series in a scrape.
fn counter_sum(body: &str, name: &str) -> Option<f64> {
    let lines: Vec<f64> = body
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!lines.is_empty()).then(|| lines.iter().sum())
}

/// A batch that carries its own Parse (Parse, Bind, Describe, Execute, Sync: what pgbench
/// `-M extended` and `query_typed` send) is not preceded by a second Parse of the same text,
/// which would make the shard parse and plan every query twice; a named statement meeting a
/// shard's connection for the first time is (the counter shows both).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_its_own_parse_is_not_parsed_twice() {
    let (shards, dir) = tokio::task::spawn_blocking(|| common::start_shards(2))
        .await
        .unwrap();
    let guard = common::ShardsGuard { shards, dir };
    let (port, metrics_port) = (free_port().unwrap(), free_port().unwrap());
    let text = format!(
        "{}\n[tables.items]\nshard_key = \"id\"\nkey_type = \"bigint\"\n[pool]\nsize = 2\n",
        common::config_for(port, &guard.shards, "").replace(
            "listen = \"\"",
            &format!("listen = \"127.0.0.1:{metrics_port}\""),
        )
    );
    let log = guard.dir.join("proxy.log");
    let (_proxy, client) = start_binary(&guard.dir.join("proxy"), &text, port, &log).await;
    client
        .batch_execute(
            "create table items (id bigint primary key, qty int);
             insert into items select i, i * 10 from generate_series(1, 40) i",
        )
        .await
        .unwrap();
    let prepares = || async {
        let body = tokio::task::spawn_blocking(move || http_get(metrics_port, "/metrics"))
            .await
            .unwrap();
        counter_sum(&body, "shardgate_statement_prepares_total")
            .unwrap_or_else(|| panic!("no shardgate_statement_prepares_total in:\n{body}"))
    };
    let before = prepares().await;
    let sql = "select qty from items where id = $1";
    for id in 1..=40i64 {
        let rows = client
            .query_typed(sql, &[(&id, tokio_postgres::types::Type::INT8)])
            .await
            .unwrap();
        assert_eq!(rows[0].get::<_, i32>(0) as i64, id * 10);
    }
    assert_eq!(
        prepares().await,
        before,
        "a batch's own Parse was sent twice"
    );

    // Prepared once (on one shard), then bound for keys on both: the other shard's
    // connection is given the statement by the proxy.
    let named = client.prepare(sql).await.unwrap();
    for id in 1..=40i64 {
        let qty: i32 = client.query_one(&named, &[&id]).await.unwrap().get(0);
        assert_eq!(qty as i64, id * 10);
    }
    assert!(prepares().await > before, "the counter never moved");
    client.batch_execute("drop table items").await.unwrap();
}
