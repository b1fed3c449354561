//! The settings that decide how a server computes and writes values (TimeZone, DateStyle,
//! IntervalStyle, extra_float_digits, bytea_output, the XML ones) and reads them
//! (transform_null_equals, array_nulls), and which objects and isolation a statement gets
//! (search_path, default_transaction_isolation, default_text_search_config),
//! read from every shard at start, and those to pin for several-shard sessions.
//!
//! A session on several shards shows its client the first shard's settings (the greeting
//! forwards its ParameterStatus), and merges the other shards' rows as if they were written
//! alike. Real shards need not be alike: `initdb` takes the host's time zone, and a database
//! or role may carry settings of its own. A shard in another time zone writes the same
//! instant as `11:00:00+01` where the first writes `10:00:00+00`, and groups `date(ts)` by
//! another day; the merge would keep them as different values. So every setting in which a
//! shard differs from the first is pinned to the first shard's value: several-shard sessions
//! start with it on every shard unless the client set it itself. Where the shards agree,
//! nothing is pinned and nothing is sent. A pinned value a shard refuses (a time zone its
//! server does not know) stops the start, since every session would fail on that shard.
//! Locale settings are left alone: a locale need not exist on every host.

use super::control;
use crate::config::ShardTarget;
use std::time::Duration;

/// The settings, as `current_setting` names them.
const NAMES: [&str; 12] = [
    "TimeZone",
    "DateStyle",
    "IntervalStyle",
    "extra_float_digits",
    "bytea_output",
    "xmlbinary",
    "xmloption",
    "search_path",
    "default_transaction_isolation",
    "default_text_search_config",
    "transform_null_equals",
    "array_nulls",
];

/// Why the settings to pin could not be settled.
#[derive(Debug)]
pub enum Unsettled {
    /// A shard could not be asked.
    Unreachable(String),
    /// A shard refuses a value it would have to take.
    Refused(String),
}

/// Each setting in which some shard differs from the first, with the first shard's value.
pub async fn pinned(
    shards: &[ShardTarget],
    timeout: Duration,
) -> Result<Vec<(String, String)>, Unsettled> {
    let Some(first) = shards.first() else {
        return Ok(vec![]);
    };
    let home = read(first, timeout).await?;
    let mut pinned: Vec<(String, String)> = vec![];
    for shard in &shards[1..] {
        let theirs = read(shard, timeout).await?;
        for (i, name) in NAMES.iter().enumerate() {
            if theirs.get(i) != home.get(i) && !pinned.iter().any(|(n, _)| n == name) {
                pinned.push((name.to_string(), home[i].clone()));
            }
        }
    }
    for shard in &shards[1..] {
        accepts(shard, timeout, &pinned).await?;
    }
    Ok(pinned)
}

/// Whether `shard` takes every pinned value (tried on a connection of its own, then closed).
async fn accepts(
    shard: &ShardTarget,
    timeout: Duration,
    pinned: &[(String, String)],
) -> Result<(), Unsettled> {
    if pinned.is_empty() {
        return Ok(());
    }
    let client = control::connect(shard, timeout)
        .await
        .map_err(Unsettled::Unreachable)?;
    for (name, value) in pinned {
        client
            .query_one("select set_config($1, $2, false)", &[name, value])
            .await
            .map_err(|e| {
                Unsettled::Refused(format!(
                    "shard {} refuses the first shard's {name} = '{value}', which sessions on \
                     several shards must share: {}",
                    shard.name,
                    control::describe(&e)
                ))
            })?;
    }
    Ok(())
}

async fn read(shard: &ShardTarget, timeout: Duration) -> Result<Vec<String>, Unsettled> {
    values(shard, timeout).await.map_err(|e| {
        Unsettled::Unreachable(format!("reading shard {}'s settings: {e}", shard.name))
    })
}

/// The shard's value of each of `NAMES`, in order.
async fn values(shard: &ShardTarget, timeout: Duration) -> Result<Vec<String>, String> {
    let client = control::connect(shard, timeout).await?;
    let sql = NAMES
        .iter()
        .map(|n| format!("current_setting('{n}')"))
        .collect::<Vec<_>>()
        .join(", ");
    let row = client
        .query_one(&format!("select {sql}"), &[])
        .await
        .map_err(|e| control::describe(&e))?;
    (0..NAMES.len())
        .map(|i| row.try_get::<_, String>(i).map_err(|e| e.to_string()))
        .collect()
}

/// `startup` (a client's startup settings) with each pinned setting the client did not give
/// itself added.
pub fn with_pinned(
    mut startup: Vec<(String, String)>,
    pinned: &[(String, String)],
) -> Vec<(String, String)> {
    for (name, value) in pinned {
        if !startup.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            startup.push((name.clone(), value.clone()));
        }
    }
    startup
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_own_settings_win() {
        let pinned = vec![
            ("TimeZone".to_string(), "UTC".to_string()),
            ("DateStyle".to_string(), "ISO, MDY".to_string()),
        ];
        let startup = vec![
            ("application_name".to_string(), "psql".to_string()),
            ("timezone".to_string(), "Europe/Paris".to_string()),
        ];
        assert_eq!(
            with_pinned(startup, &pinned),
            [
                ("application_name".to_string(), "psql".to_string()),
                ("timezone".to_string(), "Europe/Paris".to_string()),
                ("DateStyle".to_string(), "ISO, MDY".to_string()),
            ]
        );
    }
}
