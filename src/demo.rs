//! `shardgate demo`: a local cluster of real PostgreSQL shards and a proxy in front of them.
//!
//! Data lives under `--dir` (default `./.shardgate-demo`) and is reused on the next run. Shard i
//! listens on loopback port `--port + 1 + i`; the config the demo runs from is written to
//! `<dir>/shardgate.toml` so it can be read, edited and run with `shardgate --config`.

use crate::config::Config;
use crate::localpg::{ClusterOptions, LocalCluster, PgInstall};
use crate::server::Proxy;
use std::path::{Path, PathBuf};
use tracing::info;

/// Demo settings (from the command line).
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub shards: usize,
    pub port: u16,
    pub metrics_port: u16,
    pub dir: PathBuf,
}

/// Demo user and password, printed in the connection hint.
pub const DEMO_USER: &str = "app";
pub const DEMO_PASSWORD: &str = "app";

/// Starts the shards and the proxy, waits for Ctrl-C or SIGTERM, then stops everything.
pub async fn run(opts: DemoOptions) -> Result<(), String> {
    if opts.shards == 0 {
        return Err("--shards must be at least 1".into());
    }
    let install = PgInstall::find().map_err(|e| e.to_string())?;
    let dir = absolute(&opts.dir)?;
    install.make_owned_dir(&dir).map_err(|e| e.to_string())?;
    info!(version = %install.version().unwrap_or_default(), dir = %dir.display(), "starting demo shards");

    let mut clusters = Vec::new();
    for i in 0..opts.shards {
        let port = opts
            .port
            .checked_add(1 + i as u16)
            .ok_or("--port too high for that many shards")?;
        let cluster = LocalCluster::create_or_reuse(
            &install,
            &dir.join(format!("s{i}")),
            port,
            ClusterOptions::durable(),
        )
        .map_err(|e| e.to_string())?;
        if cluster.is_running() {
            // Left over from a run that was killed: restart it with our settings.
            let _ = cluster.stop(false);
        }
        if let Err(e) = cluster.start() {
            stop_all(&clusters);
            return Err(e.to_string());
        }
        info!(shard = i, port, "shard started");
        clusters.push(cluster);
    }

    let config_text = demo_config(&opts, &clusters);
    let config_path = dir.join("shardgate.toml");
    std::fs::write(&config_path, &config_text)
        .map_err(|e| format!("writing {}: {e}", config_path.display()))?;
    let config = Config::from_toml(&config_text).map_err(|e| e.to_string())?;

    let result = serve(&config, &opts, &config_path).await;
    info!("stopping demo shards");
    stop_all(&clusters);
    result
}

async fn serve(config: &Config, opts: &DemoOptions, config_path: &Path) -> Result<(), String> {
    if let Ok(addr) = config.metrics.listen.parse() {
        crate::metrics::install_exporter(addr)?;
    }
    let proxy = Proxy::start(config).await.map_err(|e| e.to_string())?;
    println!();
    println!(
        "shardgate demo is running: {} shard(s), config in {}",
        opts.shards,
        config_path.display()
    );
    println!("connect with:");
    println!(
        "    psql \"postgres://{DEMO_USER}:{DEMO_PASSWORD}@127.0.0.1:{}/postgres\"",
        proxy.local_addr.port()
    );
    println!("metrics: http://{}/metrics", config.metrics.listen);
    println!("press Ctrl-C to stop");
    wait_for_signal().await;
    proxy.shutdown().await;
    Ok(())
}

fn demo_config(opts: &DemoOptions, clusters: &[LocalCluster]) -> String {
    let mut text = format!(
        "# Written by `shardgate demo`; see config/shardgate.example.toml for every key.\n\
         [server]\nlisten = \"127.0.0.1:{}\"\n\n[metrics]\nlisten = \"127.0.0.1:{}\"\n\n\
         [[users]]\nname = \"{DEMO_USER}\"\npassword = \"{DEMO_PASSWORD}\"\n",
        opts.port, opts.metrics_port
    );
    for (i, c) in clusters.iter().enumerate() {
        text.push_str(&format!(
            "\n[[shards]]\nname = \"s{i}\"\nurl = \"{}\"\n",
            c.url("postgres")
        ));
    }
    text
}

fn stop_all(clusters: &[LocalCluster]) {
    for c in clusters {
        if let Err(e) = c.stop(false) {
            tracing::warn!("{e}");
        }
    }
}

fn absolute(dir: &Path) -> Result<PathBuf, String> {
    if dir.is_absolute() {
        return Ok(dir.to_path_buf());
    }
    std::env::current_dir()
        .map(|cwd| cwd.join(dir))
        .map_err(|e| format!("cannot resolve {}: {e}", dir.display()))
}

/// Ctrl-C or SIGTERM.
pub async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
