//! Reloading the config of a running proxy (SIGHUP, or `shardgate reload`-style signals from an
//! operator) without dropping a client.
//!
//! What a reload may change: table declarations it adds, users (passwords, methods, default
//! consistency), and the startup, shutdown and shard-response timeouts. A session picks up new
//! tables when it is outside a transaction, so one transaction never sees two placements; a
//! login uses the users and timeouts of the moment it starts.
//!
//! What it refuses, keeping the running config whole: an invalid file, a different shard list,
//! and any change to where existing rows live (a declared table's rule changed or removed, the
//! slot table, the home of undeclared tables). Those would place rows somewhere other than
//! where they are, which is a wrong answer; moving data is a separate operation. Keys that are
//! read only at start (listeners, timeouts, transaction settings) keep their running values, and
//! the reload says which of them differ.

use crate::auth::UserDirectory;
use crate::backend::key_columns::KeyColumns;
use crate::backend::own_functions::OwnFunctions;
use crate::config::{Config, ShardTarget};
use crate::placement::Placement;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// `[server]` timeouts a reload changes: for logins, sessions and stops that begin after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Time a client has to log in.
    pub startup: Duration,
    /// How long a graceful stop waits for open transactions.
    pub shutdown: Duration,
    /// How long a session waits on a silent shard (`None`: as long as it takes).
    pub shard_response: Option<Duration>,
}

impl Timeouts {
    fn of(c: &Config) -> Timeouts {
        Timeouts {
            startup: Duration::from_secs(c.server.startup_timeout_secs),
            shutdown: Duration::from_secs(c.server.shutdown_timeout_secs),
            shard_response: (c.server.shard_response_timeout_secs > 0)
                .then(|| Duration::from_secs(c.server.shard_response_timeout_secs)),
        }
    }
}

/// The reloadable part of the running config.
#[derive(Debug)]
pub struct Live {
    placement: RwLock<Arc<Placement>>,
    users: RwLock<Arc<UserDirectory>>,
    timeouts: RwLock<Timeouts>,
    /// The config these came from, to compare the next one with.
    running: Mutex<Config>,
    /// The file a reload reads (None: the proxy was started from a config in memory).
    source: Mutex<Option<std::path::PathBuf>>,
}

/// What a successful reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Tables declared by this reload.
    pub added_tables: Vec<String>,
    pub users_changed: bool,
    /// `startup_timeout_secs`, `shutdown_timeout_secs` or `shard_response_timeout_secs`.
    pub timeouts_changed: bool,
    /// Sections that differ but are read only at start.
    pub need_restart: Vec<&'static str>,
}

impl std::fmt::Display for Reloaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if !self.added_tables.is_empty() {
            parts.push(format!("tables added: {}", self.added_tables.join(", ")));
        }
        if self.users_changed {
            parts.push("users updated".to_string());
        }
        if self.timeouts_changed {
            parts.push("timeouts updated".to_string());
        }
        if parts.is_empty() {
            parts.push("nothing to change".to_string());
        }
        if !self.need_restart.is_empty() {
            parts.push(format!(
                "changes to [{}] take effect at the next start",
                self.need_restart.join("], [")
            ));
        }
        f.write_str(&parts.join("; "))
    }
}

impl Live {
    pub fn new(config: &Config, placement: Placement, users: UserDirectory) -> Live {
        Live {
            placement: RwLock::new(Arc::new(placement)),
            users: RwLock::new(Arc::new(users)),
            timeouts: RwLock::new(Timeouts::of(config)),
            running: Mutex::new(config.clone()),
            source: Mutex::new(None),
        }
    }

    /// The file `reload` reads.
    pub fn set_source(&self, path: std::path::PathBuf) {
        *self.source.lock().unwrap_or_else(|p| p.into_inner()) = Some(path);
    }

    /// Reads the config file again and applies it (see `apply`), once the sharded tables it
    /// adds are found routable on `shards` where they already exist (see
    /// `backend::key_columns`); constraints the shards check alone are warned of, as at start.
    pub async fn reload(
        &self,
        shards: &[ShardTarget],
        timeout: Duration,
    ) -> Result<Reloaded, String> {
        let path = self
            .source
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or("this proxy was not started from a config file")?;
        let config = Config::load(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if shards.len() > 1 {
            let current = self.placement();
            let new = config.placement()?;
            let added = |name: &str| !current.tables.contains_key(name);
            crate::backend::key_columns::check(shards, timeout, &new, added)
                .await
                .map_err(|e| match e {
                    KeyColumns::Unreachable(e) | KeyColumns::Refused(e) => e,
                })?;
            crate::backend::per_shard_constraints::warn_of_existing(shards, timeout, &new).await?;
        }
        self.apply(config)
    }

    /// The running config, key by key, without passwords.
    pub fn running_settings(&self) -> Vec<(String, String)> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .settings()
    }

    /// The slot table the cluster records replaces the one routed by until now (the file's at
    /// start, an older version later). Sessions take it up between transactions.
    pub fn adopt_slots(&self, recorded: crate::placement::record::Recorded) {
        self.change_placement(|placement| {
            placement.slots = recorded.table;
            placement.version = recorded.version;
        });
    }

    /// The declared tables whose key column the proxy cannot route by now, each with why (see
    /// `Placement::unroutable`); sessions take them up between transactions. The same set
    /// again changes nothing, so that routes learned under the placement stay.
    pub fn set_unroutable(&self, tables: std::collections::BTreeMap<String, String>) {
        if *self.placement().unroutable == tables {
            return;
        }
        self.change_placement(|placement| placement.unroutable = Arc::new(tables));
    }

    /// The functions the shards define (see `Placement::aggregates` and
    /// `Placement::function_words`), as the shards' catalogs list them now; sessions take them
    /// up between transactions.
    pub fn set_functions(&self, found: OwnFunctions) {
        let current = self.placement();
        if *current.aggregates == found.aggregates
            && *current.function_words == found.words
            && *current.function_writes == found.writes
        {
            return;
        }
        self.change_placement(|placement| {
            placement.aggregates = Arc::new(found.aggregates);
            placement.function_words = Arc::new(found.words);
            placement.function_writes = Arc::new(found.writes);
        });
    }

    /// Adds what a session's DDL defined (in a transaction that may not commit yet: an extra
    /// name only makes the planner more careful until the next look replaces them).
    pub fn add_functions(&self, found: &OwnFunctions) {
        let known = |p: &Placement| OwnFunctions {
            aggregates: (*p.aggregates).clone(),
            words: (*p.function_words).clone(),
            writes: (*p.function_writes).clone(),
        };
        if known(&self.placement()).covers(found) {
            return;
        }
        self.change_placement(|placement| {
            let mut all = known(placement);
            all.extend(found);
            placement.aggregates = Arc::new(all.aggregates);
            placement.function_words = Arc::new(all.words);
            placement.function_writes = Arc::new(all.writes);
        });
    }

    /// A copy of the placement, changed, replaces it; under the lock throughout, so that two
    /// changes at once do not undo each other.
    fn change_placement(&self, change: impl FnOnce(&mut Placement)) {
        let mut current = self.placement.write().unwrap_or_else(|p| p.into_inner());
        let mut placement = (**current).clone();
        change(&mut placement);
        *current = Arc::new(placement);
    }

    pub fn placement(&self) -> Arc<Placement> {
        self.placement
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn users(&self) -> Arc<UserDirectory> {
        self.users.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn timeouts(&self) -> Timeouts {
        *self.timeouts.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `new` if it changes nothing a reload must refuse; otherwise keeps everything as
    /// it is and says why.
    pub fn apply(&self, new: Config) -> Result<Reloaded, String> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let mut placement = new.placement()?;
        let current = self.placement();
        let derived_slots = new.placement.slots.is_none();
        carry_over(&current, &mut placement, derived_slots);
        check_shards(&running, &new)?;
        let added_tables = check_placement(&current, &placement)?;
        let users = self.users().reloaded(&new.users)?;
        let users_changed = format!("{:?}", running.users) != format!("{:?}", new.users)
            || running
                .users
                .iter()
                .zip(&new.users)
                .any(|(a, b)| a.password != b.password);
        let timeouts = Timeouts::of(&new);
        let reloaded = Reloaded {
            added_tables,
            users_changed,
            timeouts_changed: timeouts != self.timeouts(),
            need_restart: need_restart(&running, &new),
        };
        {
            // What a slot move or a watch changed since `current` was read carries over too.
            let mut now = self.placement.write().unwrap_or_else(|p| p.into_inner());
            carry_over(&now, &mut placement, derived_slots);
            *now = Arc::new(placement);
        }
        *self.users.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(users);
        *self.timeouts.write().unwrap_or_else(|p| p.into_inner()) = timeouts;
        *running = new;
        Ok(reloaded)
    }
}

/// What a reloaded placement keeps of the running one: what the cluster and the watches
/// decided rather than the file.
fn carry_over(current: &Placement, placement: &mut Placement, derived_slots: bool) {
    if derived_slots {
        // A derived table gives way to the one the cluster records (see `placement::record`);
        // a pinned one must still match it.
        placement.slots = current.slots.clone();
    }
    placement.version = current.version;
    // Until the watch looks again: a reload does not put a key column right.
    let mut unroutable = (*current.unroutable).clone();
    unroutable.retain(|table, _| placement.tables.contains_key(table));
    placement.unroutable = Arc::new(unroutable);
    placement.aggregates = current.aggregates.clone();
    placement.function_words = current.function_words.clone();
    placement.function_writes = current.function_writes.clone();
}

fn check_shards(running: &Config, new: &Config) -> Result<(), String> {
    let list = |c: &Config| -> Vec<(String, String)> {
        c.shards
            .iter()
            .map(|s| (s.name.clone(), s.url.clone()))
            .collect()
    };
    if list(running) != list(new) {
        return Err(
            "the shard list changed; a reload cannot add, remove or repoint shards (their rows \
             would have to move): restart with the new list once the data is in place"
                .into(),
        );
    }
    Ok(())
}

/// Tables `new` declares that `current` did not; an error when a change would move rows.
fn check_placement(current: &Placement, new: &Placement) -> Result<Vec<String>, String> {
    if current.slots != new.slots {
        return Err(
            "the slot table changed; that moves rows between shards, which a reload cannot do"
                .into(),
        );
    }
    if current.undeclared != new.undeclared {
        return Err(
            "routing.undeclared_tables changed; the tables it places would be looked for \
             somewhere other than where their rows are"
                .into(),
        );
    }
    let mut changed: Vec<&String> = current
        .tables
        .iter()
        .filter(|(name, rule)| new.tables.get(*name) != Some(rule))
        .map(|(name, _)| name)
        .collect();
    if !changed.is_empty() {
        changed.sort();
        return Err(format!(
            "the declaration of {} changed or was removed; its rows are placed by the old one \
             (move them first, then restart)",
            changed
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let mut added: Vec<String> = new
        .tables
        .keys()
        .filter(|name| !current.tables.contains_key(*name))
        .cloned()
        .collect();
    added.sort();
    Ok(added)
}

/// Sections read only at start that `new` changes.
fn need_restart(running: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    let differ =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    // The timeouts a reload applies do not count.
    let without_timeouts = |c: &Config| {
        let mut s = c.server.clone();
        s.startup_timeout_secs = 0;
        s.shutdown_timeout_secs = 0;
        s.shard_response_timeout_secs = 0;
        s
    };
    if differ(&without_timeouts(running), &without_timeouts(new)) {
        out.push("server");
    }
    if differ(&running.metrics, &new.metrics) {
        out.push("metrics");
    }
    if differ(&running.transactions, &new.transactions) {
        out.push("transactions");
    }
    if differ(&running.oracle, &new.oracle) {
        out.push("oracle");
    }
    if differ(&running.pool, &new.pool) {
        out.push("pool");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[[users]]\nname = \"app\"\npassword = \"app\"\n\
        [[shards]]\nname = \"s0\"\nurl = \"postgres://u@h/db\"\n\
        [[shards]]\nname = \"s1\"\nurl = \"postgres://u@h2/db\"\n\
        [tables.accounts]\nshard_key = \"id\"\nkey_type = \"bigint\"\n";

    fn live(text: &str) -> Live {
        let c = Config::from_toml(text).unwrap();
        Live::new(
            &c,
            c.placement().unwrap(),
            UserDirectory::from_config(&c.users).unwrap(),
        )
    }

    fn config(text: &str) -> Config {
        Config::from_toml(text).unwrap()
    }

    #[test]
    fn new_tables_and_users_take_effect() {
        let l = live(BASE);
        let text = format!(
            "{BASE}[tables.orders]\nshard_key = \"account_id\"\nkey_type = \"bigint\"\n\
             [[users]]\nname = \"ops\"\npassword = \"x\"\n"
        );
        let r = l.apply(config(&text)).unwrap();
        assert_eq!(r.added_tables, vec!["orders"]);
        assert!(r.users_changed);
        assert!(r.need_restart.is_empty());
        assert!(l.placement().rule("orders").is_some());
        assert!(l.users().get("ops").is_some());
    }

    #[test]
    fn a_new_password_counts_as_a_change() {
        let l = live(BASE);
        let r = l
            .apply(config(
                &BASE.replace("password = \"app\"", "password = \"new\""),
            ))
            .unwrap();
        assert!(r.users_changed);
    }

    #[test]
    fn moving_rows_is_refused_and_the_running_config_stays() {
        let l = live(BASE);
        for (text, why) in [
            (
                BASE.replace("key_type = \"bigint\"", "key_type = \"text\""),
                "accounts",
            ),
            (
                BASE.replace(
                    "[tables.accounts]\nshard_key = \"id\"\nkey_type = \"bigint\"\n",
                    "",
                ),
                "accounts",
            ),
            (
                format!("{BASE}[routing]\nundeclared_tables = \"reference\"\n"),
                "undeclared",
            ),
            (
                BASE.replace("postgres://u@h2/db", "postgres://u@h3/db"),
                "shard list",
            ),
            (
                format!("{BASE}[[shards]]\nname = \"s2\"\nurl = \"postgres://u@h3/db\"\n"),
                "shard list",
            ),
        ] {
            let err = l.apply(config(&text)).unwrap_err();
            assert!(err.contains(why), "{err}");
            assert!(l.placement().rule("accounts").is_some());
        }
    }

    #[test]
    fn timeouts_take_effect_and_are_not_a_restart() {
        let l = live(BASE);
        let r = l
            .apply(config(&format!(
                "[server]\nstartup_timeout_secs = 7\nshard_response_timeout_secs = 9\n{BASE}"
            )))
            .unwrap();
        assert!(r.timeouts_changed && r.need_restart.is_empty(), "{r:?}");
        assert_eq!(l.timeouts().startup, Duration::from_secs(7));
        assert_eq!(l.timeouts().shard_response, Some(Duration::from_secs(9)));
    }

    #[test]
    fn start_only_settings_are_reported_not_applied() {
        let l = live(BASE);
        let r = l
            .apply(config(&format!(
                "[server]\nlisten = \"127.0.0.1:7000\"\n{BASE}"
            )))
            .unwrap();
        assert_eq!(r.need_restart, vec!["server"]);
        assert!(r.to_string().contains("next start"), "{r}");
    }
}
