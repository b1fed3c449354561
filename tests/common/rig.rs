//! Three shards with the bank workload's tables and proxies run as processes (the real binary),
//! for the crash and snapshot tests.
#![allow(dead_code)]

use super::bank;
use super::process::ProxyProcess;
use shardgate::config::Config;
use shardgate::localpg::{free_port, LocalCluster};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TXN: &str = r#"
[transactions]
recovery_min_age_secs = 1
recovery_interval_secs = 1
commit_wait_ms = 300
"#;

pub struct Rig {
    pub shards: Vec<LocalCluster>,
    pub dir: PathBuf,
    pub config: Config,
}

impl Rig {
    /// Three shards with the bank's tables, and a config for proxies in front of them
    /// (`transactions` keys in `txn_extra`).
    pub async fn new(txn_extra: &str) -> Rig {
        let (shards, dir) = tokio::task::spawn_blocking(|| super::start_shards(3))
            .await
            .unwrap();
        let port = free_port().unwrap();
        let text = format!(
            "{}\n{TXN}{txn_extra}\n{}",
            super::config_for(port, &shards, ""),
            bank::TABLES
        );
        let config = Config::from_toml(&text).unwrap();
        std::fs::write(dir.join("proxy.toml"), &text).unwrap();
        let rig = Rig {
            shards,
            dir,
            config,
        };
        bank::create_direct(&rig.direct().await, &rig.config.placement().unwrap()).await;
        rig
    }

    pub fn port(&self) -> u16 {
        self.config
            .server
            .listen
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    pub fn url(&self, port: u16) -> String {
        format!("postgres://app:secret@127.0.0.1:{port}/postgres")
    }

    /// A proxy process on `port` (its own config file when it is not the main port).
    pub fn proxy(&self, port: u16, failpoints: &str) -> ProxyProcess {
        let path = if port == self.port() {
            self.dir.join("proxy.toml")
        } else {
            let text = std::fs::read_to_string(self.dir.join("proxy.toml"))
                .unwrap()
                .replace(
                    &format!("127.0.0.1:{}\"", self.port()),
                    &format!("127.0.0.1:{port}\""),
                );
            let p = self.dir.join(format!("proxy-{port}.toml"));
            std::fs::write(&p, text).unwrap();
            p
        };
        ProxyProcess::start(
            &path,
            port,
            failpoints,
            &self.dir.join(format!("proxy-{port}.log")),
        )
    }

    pub async fn direct(&self) -> Vec<tokio_postgres::Client> {
        let mut out = Vec::new();
        for s in &self.shards {
            out.push(super::connect(&s.url("postgres")).await.unwrap());
        }
        out
    }

    /// Runs the bank workload; `run` keeps transfer ids of separate runs apart.
    pub fn workload(
        &self,
        port: u16,
        secs: u64,
        stop: Arc<AtomicBool>,
        run: i64,
    ) -> tokio::task::JoinHandle<Vec<bank::Transfer>> {
        let url = self.url(port);
        let placement = self.config.placement().unwrap();
        let seed = seed();
        tokio::spawn(async move {
            bank::run(
                &url,
                &placement,
                4,
                Duration::from_secs(secs),
                stop,
                seed,
                run,
            )
            .await
        })
    }

    /// Waits until recovery has left no prepared transaction (or 60 s), then checks the bank.
    pub async fn settle_and_check(&self, transfers: &[bank::Transfer]) -> usize {
        let shards = self.settled().await;
        bank::check(&shards, transfers).await
    }

    /// Direct connections to the shards, once recovery has left no prepared transaction (or
    /// after 60 s).
    pub async fn settled(&self) -> Vec<tokio_postgres::Client> {
        let shards = self.direct().await;
        let until = Instant::now() + Duration::from_secs(60);
        while !bank::prepared(&shards).await.is_empty() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        shards
    }

    /// The first account that lives on `shard`.
    pub fn account_on(&self, shard: usize) -> i64 {
        let p = self.config.placement().unwrap();
        (1..=bank::ACCOUNTS)
            .find(|&i| p.shard_of(&shardgate::placement::KeyValue::Integer(i)) == shard)
            .unwrap()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for s in &self.shards {
            let _ = s.stop(true);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn seed() -> u64 {
    let s = std::env::var("SHARDGATE_BANK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("bank seed {s} (replay with SHARDGATE_BANK_SEED={s})");
    s
}
