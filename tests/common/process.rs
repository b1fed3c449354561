//! The proxy as a separate process (the real binary), so a test can kill it with SIGKILL or let
//! a failpoint kill it, and start it again on the same config.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct ProxyProcess {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl ProxyProcess {
    /// Starts `shardgate --config <config>` with `failpoints` armed and waits until it accepts
    /// connections.
    pub fn start(config: &Path, port: u16, failpoints: &str, log: &Path) -> ProxyProcess {
        ProxyProcess::run(
            &["--config".as_ref(), config.as_os_str()],
            port,
            failpoints,
            log,
        )
    }

    /// `shardgate oracle --config <config>`, once it listens on `port`.
    pub fn oracle(config: &Path, port: u16, log: &Path) -> ProxyProcess {
        ProxyProcess::run(
            &["oracle".as_ref(), "--config".as_ref(), config.as_os_str()],
            port,
            "",
            log,
        )
    }

    fn run(args: &[&std::ffi::OsStr], port: u16, failpoints: &str, log: &Path) -> ProxyProcess {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_shardgate"))
            .args(args)
            .env("SHARDGATE_FAILPOINTS", failpoints)
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("the shardgate binary runs");
        let mut p = ProxyProcess {
            child,
            port,
            log: log.to_path_buf(),
        };
        let until = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("proxy exited at start ({status}):\n{}", p.log_tail());
            }
            assert!(
                Instant::now() < until,
                "proxy did not start:\n{}",
                p.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        p
    }

    /// Waits up to `timeout` for the process to end (a failpoint crash); true if it did.
    pub async fn exited(&mut self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until a session of `proxy` on `shard` sits idle in a transaction whose last
/// statement's text holds `text` (the proxy holding at a failpoint between two reads of one
/// snapshot); fails with the proxy's log after 20 s.
pub async fn until_idle_in_transaction(
    shard: &tokio_postgres::Client,
    text: &str,
    proxy: &ProxyProcess,
) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let idle: i64 = shard
            .query_one(
                "select count(*) from pg_stat_activity where state = 'idle in transaction' and strpos(query, $1) > 0",
                &[&text],
            )
            .await
            .unwrap()
            .get(0);
        if idle > 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < until,
            "no session ran {text}:\n{}",
            proxy.log_tail()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
