//! Test harness: throwaway PostgreSQL shards (real servers, via `shardgate::localpg`) with a
//! shardgate proxy in front, plus a raw protocol client for the bad-input tests.
//!
//! Every `TestCluster` has its own directory and ports, so test binaries and tests run in
//! parallel. Dropping it stops the servers and removes the directory.
#![allow(dead_code)]

pub mod bank;
pub mod beside;
pub mod certs;
pub mod process;
pub mod raw;
pub mod rig;

use shardgate::config::Config;
use shardgate::localpg::{free_port, ClusterOptions, LocalCluster, PgInstall};
use shardgate::server::Proxy;
use std::path::PathBuf;
use tokio_postgres::{Client, NoTls};

/// Users every test proxy accepts.
pub const USERS: &str = r#"
[[users]]
name = "app"
password = "secret"
[[users]]
name = "md5user"
password = "md5secret"
auth = "md5"
[[users]]
name = "trustuser"
auth = "trust"
"#;

/// A trust user whose sessions start in snapshot consistency (its `[[users]]` table, for a
/// config whose `[transactions]` turn the gate on).
pub const SNAPSHOT_READER: &str =
    "[[users]]\nname = \"reader\"\nauth = \"trust\"\nconsistency = \"snapshot\"\n";

pub struct TestCluster {
    pub shards: Vec<LocalCluster>,
    pub dir: PathBuf,
    pub proxy: Option<Proxy>,
    pub port: u16,
    pub config: Config,
}

/// Starts `n` shards (no proxy yet). Two or more are unlike each other, as real shards are
/// (see `start_unlike_shards`): no several-shard test runs on clones.
pub fn start_shards(n: usize) -> (Vec<LocalCluster>, PathBuf) {
    start_shards_like(n, n > 1)
}

/// Starts `n` shards that differ the way real ones do: each has its own OID counter, so the same
/// tables get different OIDs on each.
pub fn start_unlike_shards(n: usize) -> (Vec<LocalCluster>, PathBuf) {
    start_shards_like(n, true)
}

fn start_shards_like(n: usize, unlike: bool) -> (Vec<LocalCluster>, PathBuf) {
    let install = PgInstall::find().expect("PostgreSQL server binaries are needed for the tests");
    let dir = std::env::temp_dir().join(format!(
        "shardgate-test-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    install.make_owned_dir(&dir).unwrap();
    let mut shards = Vec::new();
    for i in 0..n {
        let mut last_err = None;
        // A port can be taken between choosing and binding it; try a few.
        for _ in 0..5 {
            let port = free_port().unwrap();
            let c = LocalCluster::create_or_reuse(
                &install,
                &dir.join(format!("s{i}")),
                port,
                ClusterOptions::for_tests(),
            )
            .unwrap();
            if unlike {
                c.set_next_oid(20_000 + 7_919 * i as u32).unwrap();
            }
            match c.start() {
                Ok(()) => {
                    shards.push(c);
                    last_err = None;
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        if let Some(e) = last_err {
            panic!("could not start shard {i}: {e}");
        }
    }
    (shards, dir)
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Config text for a proxy on `port` in front of `shards`, with `extra` appended.
pub fn config_for(port: u16, shards: &[LocalCluster], extra: &str) -> String {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n{extra}\n[metrics]\nlisten = \"\"\n{USERS}"
    );
    for (i, s) in shards.iter().enumerate() {
        text.push_str(&format!(
            "\n[[shards]]\nname = \"s{i}\"\nurl = \"{}\"\n",
            s.url("postgres")
        ));
    }
    text
}

impl TestCluster {
    /// `n` shards and a proxy in front of them.
    pub async fn start(n: usize) -> TestCluster {
        TestCluster::start_with(n, "").await
    }

    /// As `start`, with extra `[server]` keys.
    pub async fn start_with(n: usize, server_extra: &str) -> TestCluster {
        TestCluster::start_configured(n, server_extra, "").await
    }

    /// As `start`, with extra `[server]` keys and extra top-level config (tables ...). Two or
    /// more shards are unlike each other.
    pub async fn start_configured(n: usize, server_extra: &str, tail: &str) -> TestCluster {
        TestCluster::start_shaped(n, n > 1, server_extra, tail).await
    }

    /// As `start_configured`, on shards unlike each other (see `start_unlike_shards`).
    pub async fn start_unlike(n: usize, server_extra: &str, tail: &str) -> TestCluster {
        TestCluster::start_shaped(n, true, server_extra, tail).await
    }

    async fn start_shaped(n: usize, unlike: bool, server_extra: &str, tail: &str) -> TestCluster {
        let (shards, dir) = tokio::task::spawn_blocking(move || start_shards_like(n, unlike))
            .await
            .unwrap();
        TestCluster::start_on(shards, dir, server_extra, tail).await
    }

    /// A proxy in front of shards already started (and perhaps given settings or objects of
    /// their own), with extra `[server]` keys and extra top-level config.
    pub async fn start_on(
        shards: Vec<LocalCluster>,
        dir: PathBuf,
        server_extra: &str,
        tail: &str,
    ) -> TestCluster {
        // Port 0: the proxy binds a port the kernel picks and reports it. A port chosen ahead
        // can be taken meanwhile (by a parallel test's shard or an outgoing connection).
        let text = format!("{}\n{tail}", config_for(0, &shards, server_extra));
        let config = Config::from_toml(&text).unwrap();
        // The cluster exists before its proxy starts, so that a proxy that fails to start
        // still has its shards stopped and their directory removed when the test unwinds.
        let mut tc = TestCluster {
            port: 0,
            shards,
            dir,
            proxy: None,
            config,
        };
        let proxy = Proxy::start(&tc.config).await.expect("proxy starts");
        tc.port = proxy.local_addr.port();
        tc.proxy = Some(proxy);
        tc
    }

    pub fn url(&self, user: &str, password: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/postgres",
            self.port
        )
    }

    /// A tokio-postgres client through the proxy as `app`.
    pub async fn client(&self) -> Client {
        connect(&self.url("app", "secret"))
            .await
            .expect("client connects through the proxy")
    }

    /// Connections to the shards held by client sessions (the proxy's own control connections,
    /// such as its health probes, left out).
    pub async fn session_backends(&self) -> i64 {
        self.count_on_each_shard(
            "select count(*) from pg_stat_activity where backend_type = 'client backend' \
             and application_name not in ('shardgate-control', 'shardgate-test-count')",
        )
        .await
        .into_iter()
        .sum()
    }

    /// `session_backends`, once it has come down to `baseline` (or after `within`).
    pub async fn session_backends_settled(
        &self,
        baseline: i64,
        within: std::time::Duration,
    ) -> i64 {
        let until = std::time::Instant::now() + within;
        let mut now = self.session_backends().await;
        while now > baseline && std::time::Instant::now() < until {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            now = self.session_backends().await;
        }
        now
    }

    /// Server connections sessions hold checked out of the pools, summed over the shards, once
    /// it has come down to 0 (or after `within`).
    pub async fn checked_out_settled(&self, within: std::time::Duration) -> usize {
        let until = std::time::Instant::now() + within;
        loop {
            let n: usize = self
                .proxy
                .as_ref()
                .map(|p| p.pool_stats().iter().map(|s| s.active).sum())
                .unwrap_or(0);
            if n == 0 || std::time::Instant::now() >= until {
                return n;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// A client through the proxy as `app`, retrying the login for up to `within` (a slot or a
    /// shard may take a moment to come back); `None` if every attempt failed.
    pub async fn client_eventually(&self, within: std::time::Duration) -> Option<Client> {
        let until = std::time::Instant::now() + within;
        loop {
            if let Ok(c) = connect(&self.url("app", "secret")).await {
                return Some(c);
            }
            if std::time::Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// `sql`'s single count on each shard, queried directly by a session named
    /// `shardgate-test-count`: the backend of the previous count may still be exiting, so a
    /// count of sessions should leave out that name.
    pub async fn count_on_each_shard(&self, sql: &str) -> Vec<i64> {
        let mut out = Vec::new();
        for i in 0..self.shards.len() {
            let url = format!(
                "{}?application_name=shardgate-test-count",
                self.shards[i].url("postgres")
            );
            out.push(
                connect(&url)
                    .await
                    .expect("direct connection to shard")
                    .query_one(sql, &[])
                    .await
                    .unwrap()
                    .get::<_, i64>(0),
            );
        }
        out
    }

    /// The shard that owns the integer key `id`.
    pub fn owner(&self, id: i64) -> usize {
        self.config
            .placement()
            .unwrap()
            .shard_of(&shardgate::placement::KeyValue::Integer(id))
    }

    /// The first `n` integer keys within `among` that shard `shard` owns.
    pub fn keys_on(&self, shard: usize, among: std::ops::Range<i64>, n: usize) -> Vec<i64> {
        among.filter(|&i| self.owner(i) == shard).take(n).collect()
    }

    /// A tokio-postgres client straight to shard `i`.
    pub async fn direct(&self, i: usize) -> Client {
        connect(&self.shards[i].url("postgres"))
            .await
            .expect("direct connection to shard")
    }

    /// One PostgreSQL database holding all the rows, to compare the proxy's answers with:
    /// `name` on the first shard's server, made by `statements` (each run on its own, so that
    /// one may use what an earlier one made, as an enum label). Removed by `drop_one_server`,
    /// or with the cluster.
    pub async fn one_server(&self, name: &str, statements: &[&str]) -> Client {
        self.direct(0)
            .await
            .batch_execute(&format!("create database {name}"))
            .await
            .unwrap();
        let one = connect(&self.shards[0].url(name)).await.unwrap();
        for sql in statements {
            one.batch_execute(sql).await.unwrap();
        }
        one
    }

    /// Runs `schema` through the proxy with `client`, checks that every shard holds some but
    /// not all of `table`'s rows (so an answer made of one shard's rows would show), and makes
    /// one PostgreSQL database `name` holding the same, to compare answers with.
    pub async fn spread_beside_one(
        &self,
        client: &Client,
        schema: &str,
        table: &str,
        name: &str,
    ) -> Client {
        client.batch_execute(schema).await.unwrap();
        let total: i64 = client
            .query_one(&format!("select count(*) from {table}"), &[])
            .await
            .unwrap()
            .get(0);
        let per_shard = self
            .count_on_each_shard(&format!("select count(*) from {table}"))
            .await;
        assert!(
            per_shard.iter().all(|&n| n > 0 && n < total),
            "{per_shard:?} of {total}"
        );
        self.one_server(name, &[schema]).await
    }

    pub async fn drop_one_server(&self, one: Client, name: &str) {
        drop(one);
        self.direct(0)
            .await
            .batch_execute(&format!("drop database {name} with (force)"))
            .await
            .unwrap();
    }
}

pub async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// A directory of the test's own under the system temp dir, removed when dropped (also when
/// the test panics).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "shardgate-{name}-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Shards started without a `TestCluster` (see `start_shards`): stopped and their directory
/// removed when this is dropped, also when the test panics.
pub struct ShardsGuard {
    pub shards: Vec<LocalCluster>,
    pub dir: PathBuf,
}

impl Drop for ShardsGuard {
    fn drop(&mut self) {
        for s in &self.shards {
            let _ = s.stop(true);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for s in &self.shards {
            let _ = s.stop(true);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The rows of a simple-protocol answer, as text.
pub fn rows(messages: &[tokio_postgres::SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(String::from)).collect())
            }
            _ => None,
        })
        .collect()
}

/// What one statement did: its rows (sorted, since a write's RETURNING has no order) and the
/// counts of its command tags, or the SQLSTATE it failed with.
pub type Outcome = Result<(Vec<Vec<Option<String>>>, Vec<u64>), String>;

/// `sql`'s outcome in the simple protocol.
pub async fn outcome(client: &Client, sql: &str) -> Outcome {
    let messages = client.simple_query(sql).await.map_err(|e| code(&e))?;
    let mut returned = rows(&messages);
    returned.sort();
    let counts = messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect();
    Ok((returned, counts))
}

/// The rows `sql` answers in the simple protocol, as text; panics with the error otherwise.
pub async fn answer(c: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    rows(
        &c.simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}")),
    )
}

/// Runs `sql` (a COPY FROM STDIN) with `data` as its input; the rows it copied.
pub async fn copy_in(c: &Client, sql: &str, data: &[u8]) -> Result<u64, tokio_postgres::Error> {
    use futures_util::SinkExt;
    let sink = c.copy_in(sql).await?;
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::copy_from_slice(data)).await?;
    sink.finish().await
}

/// The SQLSTATE of a tokio-postgres error, if the server sent one.
pub fn code(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("<no sqlstate: {e}>"))
}

pub fn db_error(e: &tokio_postgres::Error) -> &tokio_postgres::error::DbError {
    e.as_db_error()
        .unwrap_or_else(|| panic!("expected a server error, got {e}"))
}

/// A value's bytes as the server sent them, whatever its type (NULL as None).
pub struct RawValue(pub Option<Vec<u8>>);

impl<'a> tokio_postgres::types::FromSql<'a> for RawValue {
    fn from_sql(
        _: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawValue(Some(raw.to_vec())))
    }
    fn from_sql_null(
        _: &tokio_postgres::types::Type,
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawValue(None))
    }
    fn accepts(_: &tokio_postgres::types::Type) -> bool {
        true
    }
}
