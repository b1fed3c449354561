//! Local PostgreSQL servers the proxy starts itself: for `shardgate demo` and for the tests.
//!
//! `initdb` runs once into a template directory; each cluster is a copy of it, which brings a
//! server up in about a second. When running as root, every PostgreSQL program runs as the
//! `postgres` user (PostgreSQL refuses root) and the directories are handed to that user.
//! Servers listen on loopback TCP (and a Unix socket in their own directory) with
//! `max_prepared_transactions` set, as shardgate's two-phase commit needs.

mod install;

pub use install::PgInstall;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Errors from managing local servers.
#[derive(Debug, thiserror::Error)]
pub enum LocalPgError {
    #[error("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found. Install them, e.g. `apt-get install postgresql-15` on Debian/Ubuntu, or set SHARDGATE_PG_BIN to their directory")]
    NotInstalled,
    #[error("{what}: {detail}")]
    Command { what: String, detail: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// How a cluster runs.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Turn off fsync (throwaway test clusters only). Commits stay synchronous: a crash stop of
    /// the server (as the crash tests do) must not lose an acknowledged commit, and without an
    /// OS crash every write still reaches the files.
    pub fast_unsafe: bool,
    pub max_connections: u32,
    pub max_prepared_transactions: u32,
}

impl ClusterOptions {
    pub fn for_tests() -> ClusterOptions {
        ClusterOptions {
            fast_unsafe: true,
            max_connections: 200,
            max_prepared_transactions: 64,
        }
    }

    pub fn durable() -> ClusterOptions {
        ClusterOptions {
            fast_unsafe: false,
            ..ClusterOptions::for_tests()
        }
    }
}

/// One PostgreSQL server in its own data directory.
#[derive(Debug, Clone)]
pub struct LocalCluster {
    pub install: PgInstall,
    pub data_dir: PathBuf,
    pub port: u16,
    pub options: ClusterOptions,
}

impl LocalCluster {
    /// Creates the data directory from the template unless it already holds a cluster.
    pub fn create_or_reuse(
        install: &PgInstall,
        data_dir: &Path,
        port: u16,
        options: ClusterOptions,
    ) -> Result<LocalCluster, LocalPgError> {
        if !data_dir.join("PG_VERSION").exists() {
            let template = install.template()?;
            install.copy_dir(&template, data_dir)?;
        }
        Ok(LocalCluster {
            install: install.clone(),
            data_dir: data_dir.to_path_buf(),
            port,
            options,
        })
    }

    /// Moves the cluster's next OID to `next_oid` (`pg_resetwal -o`; the server must be stopped).
    /// Fresh clusters copied from one template are byte-identical clones; real shards never are,
    /// so tests give each shard its own OID counter to catch code that assumes shard metadata
    /// agrees.
    pub fn set_next_oid(&self, next_oid: u32) -> Result<(), LocalPgError> {
        let out = self.install.run_as_owner(
            Command::new(self.install.bin("pg_resetwal"))
                .arg("-o")
                .arg(next_oid.to_string())
                .arg(&self.data_dir),
        )?;
        if !out.status.success() {
            return Err(LocalPgError::Command {
                what: format!("pg_resetwal -o in {}", self.data_dir.display()),
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(())
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) -> Result<(), LocalPgError> {
        let o = &self.options;
        let mut settings = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_prepared_transactions={} -c max_connections={}",
            self.port,
            self.data_dir.display(),
            o.max_prepared_transactions,
            o.max_connections
        );
        if o.fast_unsafe {
            settings.push_str(" -c fsync=off -c full_page_writes=off");
        }
        let log = self.data_dir.join("server.log");
        let out = self.install.run_as_owner(
            Command::new(self.install.bin("pg_ctl"))
                .arg("-D")
                .arg(&self.data_dir)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "-o", &settings, "start"]),
        )?;
        if !out.status.success() {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: String = tail
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            return Err(LocalPgError::Command {
                what: format!("starting PostgreSQL in {}", self.data_dir.display()),
                detail: format!(
                    "{}{}\n{tail}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        Ok(())
    }

    /// Stops the server: `immediate` is a crash stop (like kill -9 of the postmaster's children),
    /// otherwise a fast, clean shutdown.
    pub fn stop(&self, immediate: bool) -> Result<(), LocalPgError> {
        let mode = if immediate { "immediate" } else { "fast" };
        let out = self.install.run_as_owner(
            Command::new(self.install.bin("pg_ctl"))
                .arg("-D")
                .arg(&self.data_dir)
                .args(["-w", "-m", mode, "stop"]),
        )?;
        if !out.status.success() {
            return Err(LocalPgError::Command {
                what: format!("stopping PostgreSQL in {}", self.data_dir.display()),
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(())
    }

    /// True when a server is running in this data directory.
    pub fn is_running(&self) -> bool {
        self.install
            .run_as_owner(
                Command::new(self.install.bin("pg_ctl"))
                    .arg("-D")
                    .arg(&self.data_dir)
                    .arg("status"),
            )
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Connection URL as the `postgres` superuser over loopback TCP.
    pub fn url(&self, dbname: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{dbname}", self.port)
    }
}

/// A port that was free a moment ago (the kernel's choice, so parallel callers rarely collide).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
