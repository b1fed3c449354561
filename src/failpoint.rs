//! Failpoints: named places in the commit, recovery and slot-move protocols (and between a
//! statement's parts read first and the statement) where a test can crash the proxy, delay it,
//! or make the step fail.
//!
//! Compiled in only with the `failpoints` cargo feature; without it `hit` is an empty inline
//! function. They are armed at start-up from `SHARDGATE_FAILPOINTS`, a `;`-separated list of
//! `name=action`, where action is `crash` (SIGKILL this process, as `kill -9` would),
//! `crash(N)` (crash at the Nth hit), `sleep(MS)` (delay this task, not the runtime) or `error`.
//!
//! The `fail` crate was not used: its actions are synchronous (a sleep blocks a runtime thread,
//! serializing every session behind it) and it has no way to die like `kill -9`.

/// What a failpoint tells the step it guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Continue,
    /// The step should fail as if its shard had refused it.
    Fail,
}

/// Every failpoint name, so tests and docs can enumerate them.
pub const COMMIT_BEFORE_PREPARE: &str = "commit.before_prepare";
pub const COMMIT_AFTER_PREPARE: &str = "commit.after_prepare";
pub const COMMIT_AFTER_DECIDER_INSERT: &str = "commit.after_decider_insert";
pub const COMMIT_AFTER_DECISION: &str = "commit.after_decision";
pub const COMMIT_BETWEEN_COMMIT_PREPARED: &str = "commit.between_commit_prepared";
pub const COMMIT_BEFORE_COMMIT_PREPARED: &str = "commit.before_commit_prepared";
pub const RECOVERY_BEFORE_FENCE: &str = "recovery.before_fence";
pub const RECOVERY_INSIDE_FENCE: &str = "recovery.inside_fence";
pub const RECOVERY_BETWEEN_RESOLUTIONS: &str = "recovery.between_resolutions";
pub const MOVE_AFTER_COPY: &str = "move.after_copy";
pub const MOVE_AFTER_PREPARE: &str = "move.after_prepare";
pub const MOVE_AFTER_DECISION: &str = "move.after_decision";
pub const MOVE_BEFORE_DONE: &str = "move.before_done";
/// After a statement's subqueries were answered first, before the statement runs.
pub const SUBQUERY_BEFORE_STATEMENT: &str = "subquery.before_statement";
/// After the reference rows an outer join's sharded side matches were read, before the
/// statement runs.
pub const KEPT_ROWS_BEFORE_STATEMENT: &str = "kept_rows.before_statement";
/// Test-only switch: armed with any action, the embedded gate grants every request at once, so
/// tests can show that snapshot reads go wrong without it.
pub const GATE_OFF: &str = "snapshot.gate_off";

pub const ALL: &[&str] = &[
    COMMIT_BEFORE_PREPARE,
    COMMIT_AFTER_PREPARE,
    COMMIT_AFTER_DECIDER_INSERT,
    COMMIT_AFTER_DECISION,
    COMMIT_BETWEEN_COMMIT_PREPARED,
    COMMIT_BEFORE_COMMIT_PREPARED,
    RECOVERY_BEFORE_FENCE,
    RECOVERY_INSIDE_FENCE,
    RECOVERY_BETWEEN_RESOLUTIONS,
    MOVE_AFTER_COPY,
    MOVE_AFTER_PREPARE,
    MOVE_AFTER_DECISION,
    MOVE_BEFORE_DONE,
    SUBQUERY_BEFORE_STATEMENT,
    KEPT_ROWS_BEFORE_STATEMENT,
    GATE_OFF,
];

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub async fn hit(_name: &'static str) -> Outcome {
    Outcome::Continue
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn armed(_name: &str) -> bool {
    false
}

/// Whether `SHARDGATE_FAILPOINTS` is well-formed (checked at start-up).
#[cfg(not(feature = "failpoints"))]
pub fn validate() -> Result<(), String> {
    Ok(())
}

#[cfg(feature = "failpoints")]
pub use armed_impl::{armed, hit, validate};

#[cfg(feature = "failpoints")]
mod armed_impl {
    use super::Outcome;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    #[derive(Debug)]
    enum Action {
        Crash { at: u64, hits: AtomicU64 },
        Sleep(u64),
        Error,
    }

    fn parsed() -> &'static Result<HashMap<String, Action>, String> {
        static TABLE: OnceLock<Result<HashMap<String, Action>, String>> = OnceLock::new();
        TABLE.get_or_init(|| {
            let spec = std::env::var("SHARDGATE_FAILPOINTS").unwrap_or_default();
            let mut t = HashMap::new();
            for item in spec.split(';').filter(|s| !s.trim().is_empty()) {
                let Some((name, action)) = item.split_once('=') else {
                    return Err(format!("SHARDGATE_FAILPOINTS: {item:?} is not name=action"));
                };
                let name = name.trim();
                if !super::ALL.contains(&name) {
                    return Err(format!("SHARDGATE_FAILPOINTS: unknown failpoint {name:?}"));
                }
                let action = action.trim();
                let arg = |prefix: &str| -> Option<u64> {
                    action
                        .strip_prefix(prefix)?
                        .strip_prefix('(')?
                        .strip_suffix(')')?
                        .parse()
                        .ok()
                };
                let a = match action {
                    "crash" => Action::Crash {
                        at: 1,
                        hits: AtomicU64::new(0),
                    },
                    "error" => Action::Error,
                    _ => match (arg("crash"), arg("sleep")) {
                        (Some(n), _) => Action::Crash {
                            at: n.max(1),
                            hits: AtomicU64::new(0),
                        },
                        (_, Some(ms)) => Action::Sleep(ms),
                        _ => {
                            return Err(format!("SHARDGATE_FAILPOINTS: unknown action {action:?}"))
                        }
                    },
                };
                t.insert(name.to_string(), a);
            }
            Ok(t)
        })
    }

    fn table() -> Option<&'static HashMap<String, Action>> {
        parsed().as_ref().ok()
    }

    pub fn validate() -> Result<(), String> {
        parsed().as_ref().map(|_| ()).map_err(Clone::clone)
    }

    pub fn armed(name: &str) -> bool {
        table().is_some_and(|t| t.contains_key(name))
    }

    pub async fn hit(name: &'static str) -> Outcome {
        match table().and_then(|t| t.get(name)) {
            None => Outcome::Continue,
            Some(Action::Crash { at, hits }) => {
                if hits.fetch_add(1, Ordering::SeqCst) + 1 >= *at {
                    eprintln!("failpoint {name}: crashing");
                    // SAFETY: kill(2) on our own pid with a constant signal has no memory effects.
                    unsafe {
                        libc::kill(libc::getpid(), libc::SIGKILL);
                    }
                }
                Outcome::Continue
            }
            Some(Action::Sleep(ms)) => {
                tokio::time::sleep(std::time::Duration::from_millis(*ms)).await;
                Outcome::Continue
            }
            Some(Action::Error) => Outcome::Fail,
        }
    }
}
