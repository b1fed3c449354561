//! `shardgate demo` as a user runs it: it starts its shards and proxy, serves psql, stops
//! everything on Ctrl-C, keeps its data for the next run, and says what to install when
//! PostgreSQL is missing.

use shardgate::localpg::free_port;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_shardgate");

/// A port that is free together with the next two (the demo's shards listen there).
fn free_ports() -> u16 {
    loop {
        let p = free_port().unwrap();
        if p < u16::MAX - 2
            && (1..=2).all(|i| std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok())
        {
            return p;
        }
    }
}

/// Starts the demo and waits for its connection hint; returns the child and the psql URL.
fn start_demo(dir: &std::path::Path, port: u16) -> (Child, String) {
    let log = dir.with_extension("log");
    let mut child = Command::new(BIN)
        .args([
            "demo",
            "--shards",
            "2",
            "--port",
            &port.to_string(),
            "--metrics-port",
            &free_port().unwrap().to_string(),
            "--dir",
        ])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut url = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.trim().strip_prefix("psql \"") {
            url = Some(rest.trim_end_matches('"').to_string());
        }
        if line.contains("press Ctrl-C") {
            break;
        }
    }
    // Keep draining stdout so the demo never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let url = url.unwrap_or_else(|| {
        panic!(
            "demo printed no psql command; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    (child, url)
}

fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn interrupt_and_wait(mut child: Child) {
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(status.success(), "demo exits cleanly on Ctrl-C: {status}");
}

/// Removes the demo's directory when the test ends, passed or not.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_file(self.0.with_extension("log"));
    }
}

#[test]
fn demo_serves_psql_stops_on_ctrl_c_and_keeps_its_data_and_config() {
    let dir = std::env::temp_dir().join(format!("shardgate-demo-test-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(dir.clone());
    let port = free_ports();
    let (child, url) = start_demo(&dir, port);
    // The example tables are declared and created: a newcomer can use them at once.
    assert_eq!(psql(&url, "select count(*) from currencies"), "3");
    psql(
        &url,
        "insert into accounts values (1, 'ann', 100), (2, 'bob', 50), (3, 'cy', 0);
         insert into entries values (1, 100, 'opening'), (2, 50, 'opening')",
    );
    assert_eq!(
        psql(
            &url,
            "select count(*) from accounts a join entries e on e.account_id = a.id"
        ),
        "2"
    );
    let route = psql(&url, "show shardgate.route accounts 42");
    assert!(route.starts_with("accounts|42|"), "{route}");
    // A table declared while it runs, through the file it printed and SIGHUP.
    psql(&url, "create table kept (id bigint primary key, v text)");
    let config = dir.join("shardgate.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[tables.kept]\nshard_key = \"id\"\nkey_type = \"bigint\"\n");
    std::fs::write(&config, &text).unwrap();
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let mut inserted = false;
    for _ in 0..200 {
        let out = Command::new("psql")
            .args([
                &url,
                "-c",
                "insert into kept values (1, 'still here'), (2, 'too')",
            ])
            .output()
            .unwrap();
        if out.status.success() {
            inserted = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(inserted, "the reloaded declaration is used");
    interrupt_and_wait(child);
    let status = Command::new("pg_isready")
        .args(["-h", "127.0.0.1", "-p", &(port + 1).to_string()])
        .output()
        .unwrap();
    assert!(
        !status.status.success(),
        "the shard was stopped with the demo"
    );

    // The next run keeps the data and the edited config.
    let (child, url) = start_demo(&dir, port);
    assert_eq!(psql(&url, "select v from kept where id = 1"), "still here");
    assert_eq!(psql(&url, "select count(*) from accounts"), "3");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), text);
    interrupt_and_wait(child);
}

#[test]
fn demo_without_postgres_says_what_to_install() {
    let out = Command::new(BIN)
        .args(["demo", "--dir", "/nonexistent-shardgate-demo"])
        .env("SHARDGATE_PG_BIN", "/nonexistent-pg-bin")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("apt-get install postgresql"), "{stderr}");
}
