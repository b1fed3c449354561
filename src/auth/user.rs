//! A user as the config's `[[users]]` gives it: who may log in, how they authenticate, and
//! what they may do. The config reads it; the rest of `auth` turns it into credentials. A
//! password never reaches a log line (`Debug` is written by hand).

use serde::{Deserialize, Serialize};

/// How a user proves who they are to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    /// SCRAM-SHA-256 (the default, as in PostgreSQL 14+).
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// MD5 challenge-response; needs a plain password or an `md5...` hash in `password`.
    Md5,
    /// No password.
    Trust,
}

/// `[[users]]`
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// User name clients log in with.
    pub name: String,
    /// Plain password, a `SCRAM-SHA-256$...` verifier or an `md5...` hash. Not needed for trust.
    #[serde(default, skip_serializing)]
    pub password: Option<String>,
    /// `scram-sha-256` (default), `md5` or `trust`.
    #[serde(default = "default_auth")]
    pub auth: AuthMethod,
    /// This user's sessions start in this consistency (`shard` or `snapshot`) instead of
    /// `transactions.consistency`; a startup option or SET still changes it.
    #[serde(default)]
    pub consistency: Option<String>,
    /// May use the admin console (database `shardgate`), and signal other users' sessions.
    #[serde(default)]
    pub admin: bool,
}

// Hand-written so a password can never reach a log line through `{:?}`.
impl std::fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("auth", &self.auth)
            .field("consistency", &self.consistency)
            .field("admin", &self.admin)
            .finish()
    }
}

fn default_auth() -> AuthMethod {
    AuthMethod::ScramSha256
}
