//! A client's session settings, kept by the proxy so that whichever pooled server connection
//! serves it next can be given them.
//!
//! The settings are the client's startup parameters (application_name, DateStyle, `-c` options
//! ...) and the SET statements that took effect. A SET in a transaction takes effect only if the
//! transaction commits, as in PostgreSQL; until then it is pending. A connection remembers the
//! fingerprint of the settings it carries, so a checkout replays them (one round trip, starting
//! from RESET) only when they differ, which for clients of one application is rarely.
//!
//! A RESET on a pooled connection goes back to that connection's own login values, where
//! PostgreSQL would go back to the client's startup parameters; `restoring` gives the SETs
//! that must follow it on the same connection.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// The fingerprint of a connection fresh from login, carrying no client's settings.
pub const DEFAULTS: u64 = 0;
/// The fingerprint of a connection whose settings are not known (a SET failed half-way).
pub const UNKNOWN: u64 = 1;

/// What every replay starts from: the login's identity and defaults.
pub const REPLAY_BASE: &str = "SET SESSION AUTHORIZATION DEFAULT; RESET ROLE; RESET ALL";

/// What a session statement does to the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `SET name ...`: the statement text, replayed as written.
    Set {
        name: String,
        text: String,
    },
    Reset(String),
    ResetAll,
    /// DISCARD ALL: back to the startup settings.
    DiscardAll,
    /// Not a lasting change (SET LOCAL, DEALLOCATE, LOCK ...).
    None,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// Each startup parameter's name (lower case) and the SET that gives it.
    startup: Vec<(String, String)>,
    set: BTreeMap<String, String>,
    /// Changes made in the open transaction, in order.
    pending: Vec<Change>,
    replay: Arc<str>,
    fingerprint: u64,
}

impl Settings {
    /// `startup`: name and value pairs from the startup packet, in order.
    pub fn new(startup: &[(String, String)]) -> Settings {
        let startup = startup
            .iter()
            .filter(|(name, _)| is_plain_name(name))
            .map(|(name, value)| {
                let set = super::list_setting::set_statement(name, value);
                (name.to_ascii_lowercase(), set)
            })
            .collect();
        let mut s = Settings {
            startup,
            set: BTreeMap::new(),
            pending: Vec::new(),
            replay: Arc::from(""),
            fingerprint: DEFAULTS,
        };
        s.refresh();
        s
    }

    /// Whether the startup packet set `name` (lower case).
    pub fn set_at_login(&self, name: &str) -> bool {
        self.startup.iter().any(|(n, _)| n == name)
    }

    /// The statements that give a connection these settings (empty for none).
    pub fn replay(&self) -> Arc<str> {
        self.replay.clone()
    }

    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// A session statement that succeeded. In a transaction it waits for the commit.
    pub fn ran(&mut self, sql: &str, in_transaction: bool) {
        let change = classify(sql);
        if change == Change::None {
            return;
        }
        if in_transaction {
            self.pending.push(change);
        } else {
            self.apply(change);
            self.refresh();
        }
    }

    /// The SETs (separated by `;`) that give back what `sql`, a RESET, took from the client's
    /// startup parameters; None when it takes none of them.
    pub fn restoring(&self, sql: &str) -> Option<String> {
        let sets: Vec<&str> = match classify(sql) {
            Change::ResetAll => self.startup.iter().map(|(_, set)| &**set).collect(),
            Change::Reset(name) => self
                .startup
                .iter()
                .filter(|(n, _)| *n == name)
                .map(|(_, set)| &**set)
                .collect(),
            _ => return None,
        };
        (!sets.is_empty()).then(|| sets.join("; "))
    }

    /// Whether the open transaction changed settings.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    pub fn committed(&mut self) {
        for change in std::mem::take(&mut self.pending) {
            self.apply(change);
        }
        self.refresh();
    }

    pub fn rolled_back(&mut self) {
        self.pending.clear();
    }

    fn apply(&mut self, change: Change) {
        match change {
            Change::Set { name, text } => {
                self.set.insert(name, text);
            }
            Change::Reset(name) => {
                self.set.remove(&name);
            }
            Change::ResetAll | Change::DiscardAll => self.set.clear(),
            Change::None => {}
        }
    }

    fn refresh(&mut self) {
        if self.startup.is_empty() && self.set.is_empty() {
            self.replay = Arc::from("");
            self.fingerprint = DEFAULTS;
            return;
        }
        // RESET ALL leaves the session user and the role alone, so they are reset first: a
        // connection must never carry one client's identity to another.
        let mut text = String::from(REPLAY_BASE);
        let startup = self.startup.iter().map(|(_, set)| set);
        for s in startup.chain(self.set.values()) {
            text.push_str("; ");
            text.push_str(s);
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        text.hash(&mut h);
        // Clear of the two reserved fingerprints.
        self.fingerprint = h.finish().max(UNKNOWN + 1);
        self.replay = Arc::from(text);
    }
}

/// A setting name that can be written unquoted in SET.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// What a session statement does to the settings, read from its words (a comment separates
/// words as a blank does, so the text is read without them).
pub fn classify(sql: &str) -> Change {
    let sql = crate::sql::without_comments(sql);
    let text = sql.trim_ascii().trim_end_matches(';').trim_ascii_end();
    let lower = text.to_ascii_lowercase();
    let mut words = lower.split_ascii_whitespace();
    match words.next() {
        Some("set") => {}
        Some("reset") => {
            return match words.next() {
                Some("all") => Change::ResetAll,
                Some("time") => Change::Reset("timezone".into()),
                Some("session") => Change::Reset("authorization".into()),
                Some(name) => Change::Reset(unquote(name)),
                None => Change::None,
            };
        }
        Some("discard") if words.next() == Some("all") => return Change::DiscardAll,
        _ => return Change::None,
    }
    let mut next = words.next();
    if next == Some("session") {
        next = words.next();
    }
    let (name, value) = match next {
        None | Some("local") | Some("transaction") => return Change::None,
        Some("time") => {
            words.next(); // ZONE
            ("timezone".to_string(), words.collect::<Vec<_>>().join(" "))
        }
        Some("characteristics") => ("session characteristics".to_string(), String::new()),
        Some(w) => {
            let (name, after) = w.split_once('=').unwrap_or((w, ""));
            let rest: Vec<&str> = std::iter::once(after).chain(words).collect();
            (unquote(name), rest.join(" "))
        }
    };
    // SET ... TO DEFAULT (and SET TIME ZONE LOCAL) is a RESET.
    let value = value.trim_ascii();
    let value = value
        .strip_prefix("to ")
        .or_else(|| value.strip_prefix('='))
        .unwrap_or(value)
        .trim_ascii();
    if value == "default" || (name == "timezone" && value == "local") {
        return Change::Reset(name);
    }
    Change::Set {
        name,
        text: text.to_string(),
    }
}

fn unquote(name: &str) -> String {
    name.trim_matches('"').to_string()
}

/// A statement to follow a replay with at login: the current value of each of `reported`
/// (the parameters a connection reported at its own login), one row each, which
/// `current_value` turns into the ParameterStatus the greeting needs. Empty for none.
pub fn current_values_query(reported: &[(String, String)]) -> String {
    if reported.is_empty() {
        return String::new();
    }
    let names: Vec<String> = reported
        .iter()
        .map(|(name, _)| crate::sql::string_literal(name))
        .collect();
    format!(
        ";\nSELECT name, pg_catalog.current_setting(name, true) \
         FROM pg_catalog.unnest(ARRAY[{}]::pg_catalog.text[]) AS name",
        names.join(", ")
    )
}

/// A row of `current_values_query` as the ParameterStatus the server would have sent; None
/// for a parameter the server does not know.
pub fn current_value(row: &[u8]) -> Option<crate::protocol::Frame> {
    use crate::protocol::inspect::data_row_column;
    let name = std::str::from_utf8(data_row_column(row, 0)??).ok()?;
    let value = std::str::from_utf8(data_row_column(row, 1)??).ok()?;
    let mut b = bytes::BytesMut::new();
    crate::protocol::build::parameter_status(name, value, &mut b);
    Some(crate::protocol::Frame {
        tag: b'S',
        bytes: b.freeze(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_greetings_values_come_back_as_parameter_statuses() {
        let reported = vec![
            ("DateStyle".to_string(), "ISO, MDY".to_string()),
            ("odd'name".to_string(), String::new()),
        ];
        let sql = current_values_query(&reported);
        assert!(sql.contains("ARRAY['DateStyle', 'odd''name']"), "{sql}");
        assert_eq!(current_values_query(&[]), "");
        let mut row = bytes::BytesMut::new();
        crate::protocol::build::data_row_text(&[Some("DateStyle"), Some("ISO, DMY")], &mut row);
        let status = current_value(&row[5..]).expect("a known parameter");
        let mut expected = bytes::BytesMut::new();
        crate::protocol::build::parameter_status("DateStyle", "ISO, DMY", &mut expected);
        assert_eq!((status.tag, &status.bytes[..]), (b'S', &expected[..]));
        row.clear();
        crate::protocol::build::data_row_text(&[Some("odd'name"), None], &mut row);
        assert!(current_value(&row[5..]).is_none());
    }

    #[test]
    fn set_statements_are_read_by_name() {
        assert!(matches!(
            classify("set/* c */application_name -- c\n= 'x'"),
            Change::Set { name, .. } if name == "application_name"
        ));
        // A no-break space is part of a word to PostgreSQL, which refuses this statement.
        assert!(!matches!(
            classify("SET\u{a0}work_mem = '8MB'"),
            Change::Set { .. }
        ));
        assert_eq!(
            classify("SET search_path TO app, public;"),
            Change::Set {
                name: "search_path".into(),
                text: "SET search_path TO app, public".into()
            }
        );
        assert!(
            matches!(classify("set work_mem='8MB'"), Change::Set { name, .. } if name == "work_mem")
        );
        assert!(
            matches!(classify("SET SESSION TIME ZONE 'UTC'"), Change::Set { name, .. } if name == "timezone")
        );
        assert!(
            matches!(classify("SET \"DateStyle\" = 'ISO'"), Change::Set { name, .. } if name == "datestyle")
        );
        assert_eq!(classify("SET LOCAL work_mem = '1MB'"), Change::None);
        assert_eq!(classify("SET TRANSACTION READ ONLY"), Change::None);
        assert_eq!(classify("RESET ALL"), Change::ResetAll);
        assert_eq!(classify("reset work_mem"), Change::Reset("work_mem".into()));
        assert_eq!(classify("DISCARD ALL"), Change::DiscardAll);
        // SET ... TO DEFAULT, and the other spellings of a RESET.
        for (sql, name) in [
            ("set application_name to default", "application_name"),
            ("SET SESSION \"DateStyle\"=DEFAULT;", "datestyle"),
            ("set time zone default", "timezone"),
            ("SET TIME ZONE LOCAL", "timezone"),
            ("set work_mem =  default", "work_mem"),
            ("RESET SESSION AUTHORIZATION", "authorization"),
            ("set session authorization default", "authorization"),
        ] {
            assert_eq!(classify(sql), Change::Reset(name.into()), "{sql}");
        }
        assert!(matches!(
            classify("SET search_path = default_schema"),
            Change::Set { .. }
        ));
        assert_eq!(classify("DEALLOCATE x"), Change::None);
    }

    #[test]
    fn a_set_in_a_transaction_counts_only_once_it_commits() {
        let mut s = Settings::new(&[]);
        assert_eq!(s.fingerprint(), DEFAULTS);
        assert_eq!(&*s.replay(), "");
        s.ran("SET work_mem = '8MB'", true);
        assert!(s.has_pending());
        s.rolled_back();
        assert_eq!(s.fingerprint(), DEFAULTS);
        s.ran("SET work_mem = '8MB'", true);
        s.committed();
        assert_eq!(
            &*s.replay(),
            "SET SESSION AUTHORIZATION DEFAULT; RESET ROLE; RESET ALL; SET work_mem = '8MB'"
        );
        let with = s.fingerprint();
        s.ran("RESET work_mem", false);
        assert_eq!(s.fingerprint(), DEFAULTS);
        assert_ne!(with, DEFAULTS);
    }

    #[test]
    fn startup_parameters_come_first_and_equal_settings_share_a_fingerprint() {
        let start = [("application_name".to_string(), "o'k".to_string())];
        let mut a = Settings::new(&start);
        let mut b = Settings::new(&start);
        assert_eq!(
            &*a.replay(),
            "SET SESSION AUTHORIZATION DEFAULT; RESET ROLE; RESET ALL; SET application_name = 'o''k'"
        );
        assert_eq!(a.fingerprint(), b.fingerprint());
        a.ran("SET x.y = 1", false);
        assert_ne!(a.fingerprint(), b.fingerprint());
        b.ran("set x.y = 1", false);
        // Written differently, replayed differently: a needless replay, never a wrong one.
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(
            a.restoring("RESET Application_Name").as_deref(),
            Some("SET application_name = 'o''k'")
        );
        assert_eq!(
            a.restoring("reset all").as_deref(),
            Some("SET application_name = 'o''k'")
        );
        assert_eq!(
            a.restoring("SET application_name TO DEFAULT").as_deref(),
            Some("SET application_name = 'o''k'")
        );
        assert_eq!(a.restoring("reset work_mem"), None);
        assert_eq!(a.restoring("set application_name = 'x'"), None);
        a.ran("DISCARD ALL", false);
        assert_eq!(
            &*a.replay(),
            "SET SESSION AUTHORIZATION DEFAULT; RESET ROLE; RESET ALL; SET application_name = 'o''k'"
        );
    }
}
