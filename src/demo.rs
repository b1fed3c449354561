//! `shardgate demo`: a local cluster of real PostgreSQL shards and a proxy in front of them.
//!
//! Data lives under `--dir` (default `./.shardgate-demo`) and is reused on the next run. Shard i
//! listens on loopback port `--port + 1 + i`. The first run writes the config to
//! `<dir>/shardgate.toml`, with three example tables declared, and creates those tables; later
//! runs use that file as the user left it (SIGHUP reloads it), as long as it names the shards
//! the demo starts.

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

    let config_path = dir.join("shardgate.toml");
    let (config, fresh) = match config_for(&opts, &clusters, &config_path) {
        Ok(c) => c,
        Err(e) => {
            stop_all(&clusters);
            return Err(e);
        }
    };

    let result = serve(&config, &opts, &config_path, fresh).await;
    info!("stopping demo shards");
    stop_all(&clusters);
    result
}

async fn serve(
    config: &Config,
    opts: &DemoOptions,
    config_path: &Path,
    fresh: bool,
) -> Result<(), String> {
    let proxy = Proxy::start_with_endpoint(config).await?;
    let port = proxy.local_addr.port();
    let url = format!("postgres://{DEMO_USER}:{DEMO_PASSWORD}@127.0.0.1:{port}/postgres");
    if fresh {
        if let Err(e) = create_example_tables(&url).await {
            tracing::warn!("could not create the example tables: {e}");
        }
    }
    let path = config_path.display();
    println!();
    println!(
        "shardgate demo is running: {} shard(s), config in {path}",
        opts.shards
    );
    println!("example tables: accounts (sharded by id), entries (sharded by account_id, so an");
    println!("account's entries live on its shard), currencies (a copy on every shard)");
    println!("connect with:");
    println!("    psql \"{url}\"");
    println!("where a key lives:  SHOW shardgate.route accounts 42;");
    println!("declare another table: add to {path}");
    println!("    [tables.orders]");
    println!("    shard_key = \"account_id\"");
    println!("    key_type = \"bigint\"");
    println!("  then reload it with:  kill -HUP {}", std::process::id());
    println!("metrics: http://{}/metrics", config.metrics.listen);
    println!("press Ctrl-C to stop");
    crate::signals::serve(proxy, Some(config_path.to_path_buf())).await;
    Ok(())
}

/// The example schema the demo's config declares, created through the proxy on the first run.
const EXAMPLE_TABLES: &str = "
    CREATE TABLE IF NOT EXISTS accounts (
        id bigint PRIMARY KEY, owner text NOT NULL, balance numeric NOT NULL DEFAULT 0);
    CREATE TABLE IF NOT EXISTS entries (
        account_id bigint NOT NULL, amount numeric NOT NULL, note text,
        created_at timestamptz NOT NULL DEFAULT now());
    CREATE TABLE IF NOT EXISTS currencies (code text PRIMARY KEY, name text NOT NULL);
    INSERT INTO currencies VALUES ('EUR', 'Euro'), ('USD', 'US dollar'), ('JPY', 'Japanese yen')
        ON CONFLICT DO NOTHING;";

async fn create_example_tables(url: &str) -> Result<(), String> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let result = client
        .batch_execute(EXAMPLE_TABLES)
        .await
        .map_err(|e| e.to_string());
    drop(client);
    let _ = conn.await;
    result
}

/// The config to run: the one in `path` when there is one (the user may have edited it) and it
/// names the shards this demo started; otherwise a new one with the example tables, written
/// there. Returns whether it is new.
fn config_for(
    opts: &DemoOptions,
    clusters: &[LocalCluster],
    path: &Path,
) -> Result<(Config, bool), String> {
    let generated = demo_config(opts, clusters);
    if path.exists() {
        let kept = Config::load(path)
            .map_err(|e| format!("{e} (fix {}, or remove it to start over)", path.display()))?;
        let wanted = Config::from_toml(&generated).map_err(|e| e.to_string())?;
        let urls = |c: &Config| c.shards.iter().map(|s| s.url.clone()).collect::<Vec<_>>();
        if urls(&kept) != urls(&wanted) {
            return Err(format!(
                "{} names other shards than this demo starts ({} at port {}); remove it, or \
                 start the demo with the --shards and --port it was written for",
                path.display(),
                opts.shards,
                opts.port + 1
            ));
        }
        return Ok((kept, false));
    }
    std::fs::write(path, &generated).map_err(|e| format!("writing {}: {e}", path.display()))?;
    let config = Config::from_toml(&generated).map_err(|e| e.to_string())?;
    Ok((config, true))
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
    text.push_str(EXAMPLE_DECLARATIONS);
    text
}

/// How the example tables are placed. Tables with the same key type and values are co-located:
/// an account's entries are on the account's shard, so joins and transactions by account stay
/// on one shard.
const EXAMPLE_DECLARATIONS: &str = r#"
# Declare each table here: sharded (rows placed by shard_key) or reference (a copy on every
# shard). Then reload: kill -HUP <pid of shardgate>. A reload adds tables; changing or removing
# one that holds rows is refused, since its rows would have to move.
[tables.accounts]
shard_key = "id"
key_type = "bigint"

[tables.entries]
shard_key = "account_id"
key_type = "bigint"

[tables.currencies]
reference = true
"#;

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
