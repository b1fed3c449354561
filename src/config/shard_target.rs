//! Where a shard lives and how to log in to it, parsed from its `postgres://` URL.
//!
//! URL parsing is delegated to tokio-postgres's libpq-compatible parser; this module only keeps
//! the parts the proxy uses and makes sure the password never reaches a log line.

use std::path::PathBuf;
use std::str::FromStr;

/// The longest shard name a transaction identifier can carry (PostgreSQL's 200 bytes minus the
/// prefix, the proxy instance, the sequence number and the `_`s between them).
pub const MAX_SHARD_NAME: usize = 150;

/// Transport to a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardHost {
    Tcp(String),
    /// Directory holding the server's Unix socket.
    Unix(PathBuf),
}

/// A shard's connection parameters.
#[derive(Clone)]
pub struct ShardTarget {
    /// Shard name from config (empty until the caller sets it).
    pub name: String,
    pub host: ShardHost,
    pub port: u16,
    pub user: String,
    pub password: Option<Vec<u8>>,
    pub dbname: String,
    /// TLS as the URL's sslmode and sslrootcert ask (None: plaintext).
    pub tls: Option<crate::config::shard_tls::ShardTls>,
}

impl std::fmt::Debug for ShardTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShardTarget({} {})", self.name, self.describe())
    }
}

impl ShardTarget {
    /// Parses a `postgres://` / `postgresql://` URL or a libpq key=value string.
    pub fn parse(url: &str) -> Result<ShardTarget, String> {
        let (rest, sslmode, sslrootcert) = crate::config::shard_tls::split_params(url);
        let cfg =
            tokio_postgres::Config::from_str(&rest).map_err(|e| redact(&e.to_string(), url))?;
        let host = match cfg.get_hosts() {
            [] => ShardHost::Tcp("127.0.0.1".into()),
            [tokio_postgres::config::Host::Tcp(h)] => ShardHost::Tcp(h.clone()),
            [tokio_postgres::config::Host::Unix(p)] => ShardHost::Unix(p.clone()),
            _ => return Err("exactly one host per shard is supported".into()),
        };
        let port = match cfg.get_ports() {
            [] => 5432,
            [p] => *p,
            _ => return Err("exactly one port per shard is supported".into()),
        };
        let user = cfg
            .get_user()
            .ok_or_else(|| "the URL names no user".to_string())?
            .to_string();
        let dbname = cfg.get_dbname().unwrap_or(&user).to_string();
        let tls = match host {
            ShardHost::Unix(_) => None,
            ShardHost::Tcp(_) => {
                crate::config::shard_tls::ShardTls::new(sslmode.as_deref(), sslrootcert.as_deref())?
            }
        };
        Ok(ShardTarget {
            name: String::new(),
            host,
            port,
            user,
            password: cfg.get_password().map(|p| p.to_vec()),
            dbname,
            tls,
        })
    }

    /// `host:port db=... user=...`, without the password.
    pub fn describe(&self) -> String {
        let host = match &self.host {
            ShardHost::Tcp(h) => format!("{h}:{}", self.port),
            ShardHost::Unix(dir) => format!("{}/.s.PGSQL.{}", dir.display(), self.port),
        };
        let tls = match &self.tls {
            Some(t) if t.mode != crate::config::shard_tls::Mode::Prefer => {
                format!(" sslmode={}", t.mode_name())
            }
            _ => String::new(),
        };
        format!("{host} db={} user={}{tls}", self.dbname, self.user)
    }
}

fn redact(message: &str, url: &str) -> String {
    match ShardTarget::password_of(url) {
        Some(pw) if !pw.is_empty() => message.replace(&pw, "<redacted>"),
        _ => message.to_string(),
    }
}

impl ShardTarget {
    fn password_of(url: &str) -> Option<String> {
        let rest = url.split_once("://")?.1;
        let userinfo = rest.split_once('@')?.0;
        Some(userinfo.split_once(':')?.1.to_string())
    }
}

/// The URL with its password replaced, for Debug output.
pub(crate) fn redact_url(url: &str) -> String {
    match ShardTarget::password_of(url) {
        Some(pw) if !pw.is_empty() => url.replacen(&format!(":{pw}@"), ":<redacted>@", 1),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_url() {
        let t = ShardTarget::parse("postgres://u:p@db.local:5433/app").unwrap();
        assert_eq!(t.host, ShardHost::Tcp("db.local".into()));
        assert_eq!(
            (t.port, t.user.as_str(), t.dbname.as_str()),
            (5433, "u", "app")
        );
        assert_eq!(t.password.as_deref(), Some(&b"p"[..]));
    }

    #[test]
    fn unix_socket_url() {
        let t = ShardTarget::parse("postgresql://postgres@%2Fvar%2Frun%2Fpg/app").unwrap();
        assert_eq!(t.host, ShardHost::Unix("/var/run/pg".into()));
        assert_eq!(t.port, 5432);
    }

    #[test]
    fn redaction() {
        assert_eq!(
            redact_url("postgres://u:hunter2@h/db"),
            "postgres://u:<redacted>@h/db"
        );
    }
}
