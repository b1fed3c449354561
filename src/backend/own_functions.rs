//! The functions the shards define beyond PostgreSQL's own that the planner must know.
//!
//! - Aggregate and window functions (`CREATE AGGREGATE`, extensions): over several shards an
//!   aggregate is combined from each shard's partial result or refused, and a call the
//!   planner did not recognise would reach the client as one partial result per shard. Names
//!   only, lower-cased, whatever the schema or arguments: the planner treats any call by such
//!   a name as an aggregate, which can only make it refuse more, never answer wrongly.
//! - Functions written in a language that can run queries (SQL, PL/pgSQL ...): one that reads
//!   a sharded table reads, on each shard, only that shard's rows, so a call of it in a
//!   statement would answer for one shard's rows. The words of each definition are kept by
//!   name, and the planner refuses a call whose definition names a sharded table (a word it
//!   only resembles, such as a column of that name, refuses too: never a wrong answer). The
//!   tables each definition writes are kept too: a call of one that writes a reference
//!   table would change one copy only.
//!
//! Read from every shard's catalog at start and at each health-check interval (on control
//! connections, here), and by a session after its DDL, in the DDL's own transaction
//! (`executor::own_functions`).

use super::control;
use crate::config::ShardTarget;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio_postgres::Client;

/// What the shards define, as the planner keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnFunctions {
    /// Names (lower case) of aggregate and window functions.
    pub aggregates: BTreeSet<String>,
    /// Names (lower case) of functions that may run queries, with the words (lower case) of
    /// their definitions, every overload's together.
    pub words: BTreeMap<String, BTreeSet<String>>,
    /// Of those, the ones whose definitions write a table, with the tables' names (lower case,
    /// the last part of a qualified name): what follows INSERT INTO, UPDATE, DELETE FROM, MERGE
    /// INTO or TRUNCATE in the code (not in its string literals or comments).
    pub writes: BTreeMap<String, BTreeSet<String>>,
}

impl OwnFunctions {
    /// Reads one row of `SQL`.
    pub fn add_row(&mut self, row: &str) {
        let mut parts = row.splitn(3, SEPARATOR);
        match (parts.next(), parts.next(), parts.next()) {
            (Some("a"), Some(name), _) => {
                self.aggregates.insert(name.to_string());
            }
            (Some("f"), Some(name), Some(body)) => {
                self.words
                    .entry(name.to_string())
                    .or_default()
                    .extend(words_of(body));
                let written: BTreeSet<String> = tables_written(body).collect();
                if !written.is_empty() {
                    self.writes
                        .entry(name.to_string())
                        .or_default()
                        .extend(written);
                }
            }
            _ => {}
        }
    }

    /// Whether every name and word of `other` is already here.
    pub fn covers(&self, other: &OwnFunctions) -> bool {
        let within = |mine: &BTreeMap<String, BTreeSet<String>>,
                      theirs: &BTreeMap<String, BTreeSet<String>>| {
            theirs
                .iter()
                .all(|(name, w)| mine.get(name).is_some_and(|have| w.is_subset(have)))
        };
        other.aggregates.is_subset(&self.aggregates)
            && within(&self.words, &other.words)
            && within(&self.writes, &other.writes)
    }

    pub fn extend(&mut self, other: &OwnFunctions) {
        self.aggregates.extend(other.aggregates.iter().cloned());
        for (mine, theirs) in [
            (&mut self.words, &other.words),
            (&mut self.writes, &other.writes),
        ] {
            for (name, w) in theirs {
                mine.entry(name.clone())
                    .or_default()
                    .extend(w.iter().cloned());
            }
        }
    }
}

/// `body` with its comments blanked, and its '...' literals too unless `literals` (then their
/// text stays, `''` read as the quote it stands for). A definition's own dollar quotes are
/// kept: they hold the code.
fn code_only(body: &str, literals: bool) -> String {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                // To the closing quote; '' inside is a quote, and the scan goes on past it.
                while let Some(q) = chars.next() {
                    if q == '\'' && chars.peek() != Some(&'\'') {
                        break;
                    }
                    if q == '\'' {
                        chars.next();
                    }
                    if literals {
                        out.push(q);
                    }
                }
                out.push(' ');
            }
            '-' if chars.peek() == Some(&'-') => {
                for q in chars.by_ref() {
                    if q == '\n' {
                        break;
                    }
                }
                out.push(' ');
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for q in chars.by_ref() {
                    if last == '*' && q == '/' {
                        break;
                    }
                    last = q;
                }
                out.push(' ');
            }
            c => out.push(c),
        }
    }
    out
}

/// Words that follow UPDATE (or TRUNCATE) without naming a table.
const NOT_TABLES: [&str; 14] = [
    "set",
    "skip",
    "nowait",
    "of",
    "on",
    "or",
    "cascade",
    "restrict",
    "no",
    "for",
    "returning",
    "where",
    "to",
    "is",
];

/// The tables a definition writes (see `OwnFunctions::writes`), read from its tokens: names
/// with their schema and quotes, so `public."Countries"` is `countries`. String literals and
/// comments are left out first, as for triggers (see `per_shard_constraints`), so that a
/// message such as 'UPDATE may not ...' names no table; but a definition that runs text
/// (`EXECUTE 'INSERT INTO countries ...'`) is read with its literals as well, since what it
/// writes is written there.
fn tables_written(body: &str) -> impl Iterator<Item = String> {
    let code = code_only(body, false);
    let mut found = names_written(&code);
    if words_of(&code).any(|w| w == "execute") {
        found.extend(names_written(&code_only(body, true)));
    }
    found.into_iter()
}

/// The names after INSERT INTO, UPDATE, DELETE FROM, MERGE INTO and TRUNCATE in `code`.
fn names_written(code: &str) -> Vec<String> {
    let tokens: Vec<String> = code
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$' || c == '.' || c == '"'))
        .filter(|t| !t.is_empty())
        .map(|t| t.replace('"', "").to_lowercase())
        .collect();
    let mut found = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let after = match t.as_str() {
            "insert" | "merge" if tokens.get(i + 1).is_some_and(|n| n == "into") => i + 2,
            "delete" if tokens.get(i + 1).is_some_and(|n| n == "from") => i + 2,
            "update" | "truncate" => i + 1,
            _ => continue,
        };
        let name = tokens[after..]
            .iter()
            .find(|n| !matches!(n.as_str(), "only" | "table"))
            // `FOR UPDATE SKIP LOCKED`, `DO UPDATE SET`, `ON UPDATE CASCADE`, `BEFORE UPDATE
            // ON`: a word that follows UPDATE there, not a table.
            .filter(|n| !NOT_TABLES.contains(&n.as_str()));
        if let Some(name) = name {
            let last = name.rsplit('.').next().unwrap_or(name);
            if !last.is_empty() {
                found.push(last.to_string());
            }
        }
    }
    found
}

/// The words of a definition, lower-cased: runs of letters, digits, `_` and `$` (which an
/// identifier may hold), and the parts between their `$`s (a dollar quote's delimiter
/// touches the word it quotes: `$function$select`).
fn words_of(body: &str) -> impl Iterator<Item = String> + '_ {
    body.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
        .flat_map(|w| std::iter::once(w).chain(w.split('$')))
        .filter(|w| !w.is_empty() && w.len() <= 63)
        .map(str::to_lowercase)
}

const SEPARATOR: char = '\u{1f}';

/// One row per aggregate name (`a`, name) and per function of a language other than C and
/// internal (`f`, name, definition), as one text joined by U+001F. Everything named in
/// pg_catalog and information_schema is left out, as PostgreSQL's own, and so are the
/// functions of extensions, which read their own objects, not the application's tables, and
/// the proxy's own in the `shardgate` schema, which its rewrites call.
pub const SQL: &str = "SELECT 'a' OPERATOR(pg_catalog.||) pg_catalog.chr(31) \
    OPERATOR(pg_catalog.||) pg_catalog.lower(p.proname::pg_catalog.text) \
    FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) p.pronamespace \
    WHERE p.prokind OPERATOR(pg_catalog.=) ANY ('{a,w}'::pg_catalog.\"char\"[]) \
    AND n.nspname OPERATOR(pg_catalog.<>) 'pg_catalog' \
    UNION ALL SELECT 'f' OPERATOR(pg_catalog.||) pg_catalog.chr(31) \
    OPERATOR(pg_catalog.||) pg_catalog.lower(p.proname::pg_catalog.text) \
    OPERATOR(pg_catalog.||) pg_catalog.chr(31) OPERATOR(pg_catalog.||) pg_catalog.pg_get_functiondef(p.oid) \
    FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) p.pronamespace \
    JOIN pg_catalog.pg_language l ON l.oid OPERATOR(pg_catalog.=) p.prolang \
    WHERE p.prokind OPERATOR(pg_catalog.=) 'f' \
    AND n.nspname::pg_catalog.text OPERATOR(pg_catalog.<>) ALL ('{pg_catalog,information_schema,shardgate}'::pg_catalog.text[]) \
    AND l.lanname::pg_catalog.text OPERATOR(pg_catalog.<>) ALL ('{c,internal}'::pg_catalog.text[]) \
    AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d \
    WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass \
    AND d.objid OPERATOR(pg_catalog.=) p.oid AND d.deptype OPERATOR(pg_catalog.=) 'e')";

/// What every shard defines, together. Err: a shard could not be asked.
pub async fn read(shards: &[ShardTarget], timeout: Duration) -> Result<OwnFunctions, String> {
    let mut clients: Vec<Option<Client>> = shards.iter().map(|_| None).collect();
    read_on(&mut clients, shards, timeout).await
}

/// As `read`, on control connections kept in `clients` (one per shard, opened where missing
/// and dropped after an error).
async fn read_on(
    clients: &mut [Option<Client>],
    shards: &[ShardTarget],
    timeout: Duration,
) -> Result<OwnFunctions, String> {
    let mut found = OwnFunctions::default();
    for (shard, client) in shards.iter().zip(clients.iter_mut()) {
        if client.is_none() {
            *client = Some(control::connect(shard, timeout).await?);
        }
        let Some(asking) = client.as_ref() else {
            continue;
        };
        match tokio::time::timeout(timeout, asking.simple_query(SQL)).await {
            Ok(Ok(rows)) => {
                for m in &rows {
                    if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
                        found.add_row(r.get(0).unwrap_or_default());
                    }
                }
            }
            failed => {
                let why = match failed {
                    Ok(Err(e)) => control::describe(&e),
                    _ => "no answer within the connect timeout".to_string(),
                };
                *client = None;
                return Err(format!(
                    "shard {}: could not read its own functions: {why}",
                    shard.name
                ));
            }
        }
    }
    Ok(found)
}

/// Reads them again every `interval`, for as long as the proxy runs, and hands them to
/// `publish`: functions created on a shard directly, behind the proxy, are seen here. A shard
/// that cannot be asked leaves the last ones standing (the health probes report it).
pub async fn watch(
    shards: Vec<ShardTarget>,
    interval: Duration,
    timeout: Duration,
    publish: impl Fn(OwnFunctions),
) {
    let mut clients: Vec<Option<Client>> = shards.iter().map(|_| None).collect();
    loop {
        tokio::time::sleep(interval).await;
        match read_on(&mut clients, &shards, timeout).await {
            Ok(found) => publish(found),
            Err(e) => tracing::debug!("the shards' own functions not read: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_names_and_words() {
        let mut f = OwnFunctions::default();
        f.add_row("a\u{1f}my_sum");
        f.add_row("f\u{1f}acc_count\u{1f}CREATE FUNCTION public.acc_count() ... select count(*) from Accounts");
        f.add_row("f\u{1f}acc_count\u{1f}AS $function$select 1 from public.\"ledger\"$function$");
        assert!(f.aggregates.contains("my_sum"));
        let words = &f.words["acc_count"];
        for w in ["accounts", "ledger", "count", "public"] {
            assert!(words.contains(w), "{w}");
        }
        let mut more = OwnFunctions::default();
        more.add_row("f\u{1f}acc_count\u{1f}select 1 from accounts");
        assert!(f.covers(&more));
        more.add_row("f\u{1f}other\u{1f}select 1");
        assert!(!f.covers(&more));
        f.extend(&more);
        assert!(f.covers(&more));
    }

    #[test]
    fn the_tables_a_definition_writes_are_kept() {
        let mut f = OwnFunctions::default();
        f.add_row("f\u{1f}add\u{1f}begin insert into public.\"Countries\" values (1); update only ledger set n = 1; delete from app.log; end");
        f.add_row("f\u{1f}add\u{1f}truncate table notes; merge into Totals t using x on true");
        f.add_row("f\u{1f}reader\u{1f}select * from countries for update");
        f.add_row("f\u{1f}locker\u{1f}select 1 from t for update skip locked; insert into x values (1) on conflict do update set n = 1");
        let written: Vec<&str> = f.writes["add"].iter().map(String::as_str).collect();
        assert_eq!(written, ["countries", "ledger", "log", "notes", "totals"]);
        // A row lock reads as an UPDATE of the word after it: never a reference table's name.
        assert!(!f
            .writes
            .get("reader")
            .is_some_and(|w| w.contains("countries")));
        f.add_row("f\u{1f}guard\u{1f}begin raise exception 'UPDATE may not; it''s INSERT INTO x'; -- update y\n /* delete from z */ return 1; end");
        assert!(
            !f.writes.contains_key("guard"),
            "{:?}",
            f.writes.get("guard")
        );
        let locker: Vec<&str> = f.writes["locker"].iter().map(String::as_str).collect();
        assert_eq!(locker, ["x"], "the words after UPDATE there name no table");
        // Text a function runs is read with the rest; a message of one that runs none is not.
        f.add_row("f\u{1f}dynamic\u{1f}begin execute 'insert into Countries values ($1)' using c; raise notice 'delete from notes'; end");
        let dynamic: Vec<&str> = f.writes["dynamic"].iter().map(String::as_str).collect();
        assert_eq!(dynamic, ["countries", "notes"]);
        let mut more = OwnFunctions::default();
        more.add_row("f\u{1f}add\u{1f}insert into other values (1)");
        assert!(!f.covers(&more), "a table written that was not known");
        f.extend(&more);
        assert!(f.covers(&more));
    }
}
