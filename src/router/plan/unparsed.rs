//! Plans read from a statement's text alone: transaction control, SET and SHOW of the
//! proxy's own settings, the admin commands, and what a statement the parser cannot read may
//! still be. These answer before (or without) a full parse.

use super::*;

/// `SHOW shardgate.*`: answered by the proxy, recognised before parsing (sqlparser would take
/// it for an ordinary SHOW).
pub fn is_admin(sql: &str) -> bool {
    // Every statement's text is asked: most are answered by their first four bytes.
    let text = sql.trim_start();
    if !text
        .get(..4)
        .is_some_and(|w| w.eq_ignore_ascii_case("show"))
    {
        return false;
    }
    let mut words = text.split_whitespace();
    matches!(words.next(), Some(w) if w.eq_ignore_ascii_case("show"))
        && words
            .next()
            .is_some_and(|w| w.to_ascii_lowercase().starts_with("shardgate."))
}

/// Plans SQL text that sqlparser could not parse, by its leading keywords.
pub fn plan_unparsed(sql: &str) -> Plan {
    // Leading keywords describe one statement; a text holding several is split by the caller,
    // and never routed by its first word.
    if crate::sql::split_statements(sql).len() > 1 {
        return Plan::Reject(
            PgError::error(
                "42601",
                "shardgate could not analyse this text of several statements",
            )
            .with_hint("Send the statements one at a time, or as one simple Query that PostgreSQL's syntax allows."),
        );
    }
    let words: Vec<String> = sql
        .split(|c: char| c.is_whitespace() || c == ';')
        .filter(|w| !w.is_empty())
        .take(3)
        .map(|w| w.to_ascii_lowercase())
        .collect();
    let w = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    // The savepoint name as written (quoted names keep their case).
    let raw_last = || {
        sql.trim()
            .trim_end_matches(';')
            .split_whitespace()
            .last()
            .unwrap_or("")
            .to_string()
    };
    if w(0) == "show" && w(1).starts_with("shardgate.") {
        return plan_admin(sql);
    }
    if let Some(set) = plan_set(sql) {
        return set;
    }
    match (w(0), w(1)) {
        ("begin" | "start", _) => {
            Plan::Txn(TxnCmd::Begin(sql.trim().trim_end_matches(';').to_string()))
        }
        ("commit" | "end", "prepared") | ("rollback", "prepared") | ("prepare", "transaction") => {
            refuse(
                "client-issued two-phase commit commands are not supported on several shards",
                "shardgate coordinates commits across shards itself.",
            )
        }
        ("commit" | "end", _) => Plan::Txn(TxnCmd::Commit),
        ("rollback", "to") => Plan::Txn(TxnCmd::RollbackTo(raw_last())),
        ("rollback" | "abort", _) => Plan::Txn(TxnCmd::Rollback),
        ("savepoint", _) => Plan::Txn(TxnCmd::Savepoint(raw_last())),
        ("release", _) => Plan::Txn(TxnCmd::Release(raw_last())),
        ("set", "transaction") if is_set_transaction(sql) => Plan::Txn(TxnCmd::SetTransaction(
            sql.trim().trim_end_matches(';').to_string(),
        )),
        ("fetch" | "move" | "close", _) => {
            crate::router::cursor::plan_words(sql).unwrap_or(Plan::Unrecognised)
        }
        ("declare", _) => refuse(
            "shardgate could not read this cursor's query, so it cannot choose its shards",
            "Declare the cursor for a query without the syntax shardgate cannot read, or run the query without a cursor.",
        ),
        ("set" | "reset" | "discard" | "deallocate" | "lock", _) => Plan::Session,
        // A table-less SELECT sqlparser cannot read is the same on every shard.
        ("select", "") => Plan::Shard {
            shard: HOME,
            write: false,
        },
        (first, _) => crate::router::utility::at_home(first)
            .or_else(|| crate::router::utility::plan_keywords(&[w(0), w(1), w(2)]))
            .unwrap_or(Plan::Unrecognised),
    }
}

/// The refusal of a statement that is valid SQL but that the proxy cannot analyse.
pub fn unrecognised() -> PgError {
    PgError::error(
        sqlstate::FEATURE_NOT_SUPPORTED,
        "shardgate could not analyse this statement, so it cannot choose a shard for it",
    )
    .with_hint("Statements that cannot be routed are refused rather than guessed; run it directly on each shard.")
}

/// `SET TRANSACTION <modes>`; not SET TRANSACTION SNAPSHOT (a shard's own snapshot id, which
/// means nothing on the others) nor SET SESSION CHARACTERISTICS (a plain session setting).
pub(super) fn is_set_transaction(sql: &str) -> bool {
    let words: Vec<String> = sql
        .split_whitespace()
        .take(3)
        .map(|w| w.to_ascii_lowercase())
        .collect();
    words.len() == 3 && words[0] == "set" && words[1] == "transaction" && words[2] != "snapshot"
}

/// `SET client_encoding` / `SET NAMES` to an encoding other than UTF-8: refused. The proxy reads
/// every statement to route it, and reads them as UTF-8; with another encoding a non-ASCII
/// character would be misread or break the session.
pub(super) fn other_client_encoding(sql: &str) -> Option<Plan> {
    // Every statement is asked: nothing is copied unless it is a SET.
    let words: Vec<String> = crate::sql::words_after_set(sql)?
        .map(|w| w.to_ascii_lowercase())
        .collect();
    let mut rest = words.iter().map(String::as_str).peekable();
    if matches!(rest.peek(), Some(&"session" | &"local")) {
        rest.next();
    }
    let value = match rest.next() {
        Some("names") => rest.next(),
        Some("client_encoding") => match rest.next() {
            Some("to") => rest.next(),
            other => other,
        },
        _ => return None,
    }?;
    if is_utf8_name(value) || value.trim_matches('\'') == "default" {
        return None;
    }
    Some(Plan::Reject(
        PgError::error(
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("client encoding {value} is not supported on several shards"),
        )
        .with_hint("shardgate reads statements as UTF-8 to route them: use client_encoding UTF8 and convert in the application."),
    ))
}

/// UTF8 under any of the names PostgreSQL accepts for it (`UTF8`, `'utf-8'`, `unicode`).
pub fn is_utf8_name(value: &str) -> bool {
    let v: String = value
        .trim_matches(|c| c == '\'' || c == '"')
        .chars()
        .filter(|c| *c != '-' && *c != '_')
        .collect::<String>()
        .to_ascii_lowercase();
    v == "utf8" || v == "unicode"
}

/// `SET shardgate.<name> = <value>` / `TO <value>`: the proxy's own settings.
pub(super) fn plan_set(sql: &str) -> Option<Plan> {
    if let Some(refusal) = other_client_encoding(sql) {
        return Some(refusal);
    }
    if let Some(refusal) = super::string_syntax::set_refused(sql) {
        return Some(refusal);
    }
    let text = sql.trim().trim_end_matches(';');
    let rest = text
        .get(..4)
        .filter(|w| w.eq_ignore_ascii_case("set "))
        .map(|_| text[4..].trim_start())?;
    let rest = rest
        .get(..8)
        .filter(|w| w.eq_ignore_ascii_case("session "))
        .map_or(rest, |_| rest[8..].trim_start());
    let (name, value) = rest.split_once(|c: char| c == '=' || c.is_whitespace())?;
    let name = name.trim().to_ascii_lowercase();
    let name = name.strip_prefix("shardgate.")?.to_string();
    let value = value.trim();
    let value = value
        .get(..3)
        .filter(|w| w.eq_ignore_ascii_case("to "))
        .map_or(value, |_| value[3..].trim())
        .trim_start_matches('=')
        .trim()
        .to_string();
    Some(Plan::Admin(AdminCmd::Set { name, value }))
}

pub(super) fn plan_admin(sql: &str) -> Plan {
    let parts: Vec<&str> = sql
        .split_whitespace()
        .map(|p| p.trim_end_matches(';'))
        .collect();
    match parts.get(1).map(|s| s.to_ascii_lowercase()).as_deref() {
        Some("shardgate.route") if parts.len() == 4 => Plan::Admin(AdminCmd::Route {
            table: parts[2].to_string(),
            key: parts[3].trim_matches('\'').to_string(),
        }),
        Some("shardgate.recover") if parts.len() == 2 => Plan::Admin(AdminCmd::Recover),
        Some("shardgate.placement") if parts.len() == 2 => Plan::Admin(AdminCmd::Placement),
        Some(var) if parts.len() == 2 => Plan::Admin(AdminCmd::Show {
            name: var.trim_start_matches("shardgate.").to_string(),
        }),
        _ => refuse(
            "unknown shardgate command",
            "Try: SHOW shardgate.route <table> <key>, SHOW shardgate.placement, or SHOW shardgate.recover",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::is_admin;

    #[test]
    fn only_a_show_of_a_shardgate_setting_is_the_proxys() {
        for sql in [
            "SHOW shardgate.pools",
            "  show\n\tShardGate.clients;",
            "Show SHARDGATE.snapshot_ts",
        ] {
            assert!(is_admin(sql), "{sql}");
        }
        for sql in [
            "SHOW search_path",
            "SHOW",
            "show",
            "showshardgate.pools",
            "SELECT 'show shardgate.pools'",
            "",
            "é",
        ] {
            assert!(!is_admin(sql), "{sql}");
        }
    }
}
