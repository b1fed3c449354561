//! The `[transactions]` and `[transactions.oracle]` sections: consistency, commit wait, the
//! recovery of in-doubt transactions, and the timestamp oracle of snapshot consistency.

use super::*;

/// `[oracle]`: where `shardgate oracle` listens.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OracleConfig {
    /// Default `127.0.0.1:6440`.
    #[serde(default = "default_oracle_listen")]
    pub listen: String,
}

pub(super) fn default_oracle_listen() -> String {
    "127.0.0.1:6440".into()
}

impl Default for OracleConfig {
    fn default() -> Self {
        OracleConfig {
            listen: default_oracle_listen(),
        }
    }
}

/// `[transactions]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TransactionsConfig {
    /// After the commit decision, how long COMMIT waits for an unreachable participant before
    /// answering success with a WARNING naming what recovery will finish. Default 5000.
    #[serde(default = "default_commit_wait_ms")]
    pub commit_wait_ms: u64,
    /// Seconds between recovery passes; 0 runs recovery only at start and on demand. Default 30.
    #[serde(default = "default_recovery_interval")]
    pub recovery_interval_secs: u64,
    /// Prepared transactions younger than this are left to their coordinator. Default 10.
    #[serde(default = "default_recovery_min_age")]
    pub recovery_min_age_secs: u64,
    /// Decision rows older than this, with no branch still prepared, are deleted. It must exceed
    /// the longest a coordinator can stall between PREPARE and its decision. Default 3600.
    #[serde(default = "default_decision_retention")]
    pub decision_retention_secs: u64,
    /// Default consistency of sessions: `shard` (default) or `snapshot`.
    #[serde(default = "default_consistency")]
    pub consistency: String,
    /// Gate every multi-shard commit through the oracle, so `snapshot` reads are possible.
    /// Default false (no oracle, no gate).
    #[serde(default)]
    pub snapshot: bool,
    /// `embedded` (default: the oracle runs in this proxy) or `HOST:PORT` of `shardgate oracle`.
    #[serde(default = "default_oracle")]
    pub oracle: String,
}

pub(super) fn default_consistency() -> String {
    "shard".into()
}

pub(super) fn default_oracle() -> String {
    "embedded".into()
}

pub(super) fn default_commit_wait_ms() -> u64 {
    5000
}

pub(super) fn default_recovery_interval() -> u64 {
    30
}

pub(super) fn default_recovery_min_age() -> u64 {
    10
}

pub(super) fn default_decision_retention() -> u64 {
    3600
}

impl Default for TransactionsConfig {
    fn default() -> Self {
        TransactionsConfig {
            commit_wait_ms: default_commit_wait_ms(),
            recovery_interval_secs: default_recovery_interval(),
            recovery_min_age_secs: default_recovery_min_age(),
            decision_retention_secs: default_decision_retention(),
            consistency: default_consistency(),
            snapshot: false,
            oracle: default_oracle(),
        }
    }
}

/// A session's consistency mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Atomic commit; a reader may briefly see a distributed commit on some shards only.
    Shard,
    /// Reads of several shards see one consistent cut.
    Snapshot,
}

impl Consistency {
    pub fn parse(s: &str) -> Option<Consistency> {
        match s.to_ascii_lowercase().as_str() {
            "shard" => Some(Consistency::Shard),
            "snapshot" => Some(Consistency::Snapshot),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Consistency::Shard => "shard",
            Consistency::Snapshot => "snapshot",
        }
    }
}
