//! The `slots` and `route` commands: what the cluster's placement is (the version recorded on
//! the shards, or the config's table before the cluster's first start), the moves that would
//! balance it onto an added shard, and recording a table whose rows were moved by hand.

use crate::backend::proxy_registry::{self, Registered};
use crate::backend::{control, placement_store};
use crate::config::Config;
use crate::placement::plan;
use crate::placement::{Placement, SlotTable, TableRule, HOME};
use std::time::Duration;

/// Where the table a command works from came from.
pub enum Source {
    Recorded(i64),
    /// No shard records a placement yet: the cluster never ran with several shards.
    File,
    /// The shards could not be read; the reason.
    FileUnread(String),
}

impl Source {
    pub fn describe(&self) -> String {
        match self {
            Source::Recorded(v) => format!("the cluster's placement, version {v}"),
            Source::File => "the config's table (no shard records a placement yet)".into(),
            Source::FileUnread(e) => {
                format!("the config's table; the shards' could not be read: {e}")
            }
        }
    }
}

/// The config's placement with the slot table the cluster routes by.
pub async fn cluster_placement(config: &Config) -> Result<(Placement, Source), String> {
    let mut placement = config.placement()?;
    if config.shards.len() < 2 {
        return Ok((placement, Source::File));
    }
    let timeout = Duration::from_secs(config.server.connect_timeout_secs);
    let source = match placement_store::current(&config.shard_targets(), timeout).await {
        Ok(Some(recorded)) => {
            placement.slots = recorded.table;
            placement.version = recorded.version;
            Source::Recorded(recorded.version)
        }
        Ok(None) => Source::File,
        Err(e) => Source::FileUnread(e),
    };
    Ok((placement, source))
}

/// What `slots --plan` plans for.
pub enum Goal<'a> {
    /// Give an added shard its share.
    Add(&'a str),
    /// Move every slot off a shard.
    Drain(&'a str),
}

/// `slots --plan --add NAME` or `--drain NAME`: the moves, and the table afterwards.
pub async fn plan_text(config: &Config, goal: Goal<'_>) -> Result<String, String> {
    let (placement, source) = cluster_placement(config).await?;
    if let Source::FileUnread(e) = source {
        return Err(format!("cannot read the cluster's placement: {e}"));
    }
    let names = &placement.shard_names;
    let (name, verb) = match goal {
        Goal::Add(n) => (n, "added"),
        Goal::Drain(n) => (n, "drained"),
    };
    let shard = names.iter().position(|n| n == name).ok_or_else(|| {
        format!("shard {name:?} is not in the config: list it under [[shards]] to have it {verb}")
    })?;
    let moves = match goal {
        Goal::Add(_) => plan::balance_onto(&placement.slots, names.len(), shard),
        Goal::Drain(_) => plan::drain(&placement.slots, names.len(), shard)?,
    };
    let mut out = format!("# from {}\n", source.describe());
    if moves.is_empty() {
        let nothing = match goal {
            Goal::Add(_) => "already has its share",
            Goal::Drain(_) => "owns no slot",
        };
        out.push_str(&format!("# {name} {nothing}: nothing to move\n"));
        return Ok(out);
    }
    let mut table: SlotTable = placement.slots.clone();
    for m in &moves {
        out.push_str(&format!(
            "move {} slots from {} to {}: {}\n",
            m.slot_count(),
            names[m.from],
            names[m.to],
            m.ranges_text()
        ));
        table = table.moved(&m.ranges, m.to);
    }
    out.push_str("# the slot table afterwards:\n");
    out.push_str(&table.to_config(names));
    Ok(out)
}

/// `slots --record`: the config's pinned table becomes the cluster's next version.
pub async fn record(config: &Config) -> Result<i64, String> {
    if config.placement.slots.is_none() {
        return Err(
            "--record records the table pinned in [placement.slots]; the config pins none".into(),
        );
    }
    if config.shards.len() < 2 {
        return Err("a single shard keeps no placement record".into());
    }
    let placement = config.placement()?;
    let (current, _) = cluster_placement(config).await?;
    let gaining: Vec<usize> = (0..placement.shard_names.len())
        .filter(|&s| {
            (0..crate::placement::SLOT_COUNT).any(|slot| {
                placement.slots.shard_of_slot(slot) == s && current.slots.shard_of_slot(slot) != s
            })
        })
        .collect();
    check_ready(config, &placement, &gaining).await?;
    let mut sharded: Vec<String> = placement
        .tables
        .iter()
        .filter(|(_, rule)| matches!(rule, TableRule::Sharded { .. }))
        .map(|(name, _)| name.clone())
        .collect();
    sharded.sort();
    placement_store::record_new(
        &config.shard_targets(),
        &placement.slots,
        &sharded,
        Duration::from_secs(config.server.connect_timeout_secs),
    )
    .await
}

/// The running proxies (`proxy_registry`), once every one routes by `version` or after `wait`,
/// whichever comes first; the caller says which are still behind.
pub async fn wait_for_proxies(
    config: &Config,
    version: i64,
    wait: Duration,
) -> Result<Vec<Registered>, String> {
    let timeout = Duration::from_secs(config.server.connect_timeout_secs);
    let until = std::time::Instant::now() + wait;
    loop {
        let live: Vec<Registered> = proxy_registry::list(&config.shard_targets(), timeout)
            .await?
            .into_iter()
            .filter(|p| p.live)
            .collect();
        if live.iter().all(|p| p.version >= version) || std::time::Instant::now() >= until {
            return Ok(live);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What `wait_for_proxies` found, a line per proxy.
pub fn proxies_text(proxies: &[Registered], version: i64) -> String {
    if proxies.is_empty() {
        return "no proxy is running\n".into();
    }
    proxies
        .iter()
        .map(|p| {
            if p.version >= version {
                format!("{}: routes by version {}\n", p.listen, p.version)
            } else {
                format!(
                    "{}: still on version {} (seen {:.1} s ago); its writes are refused until it takes version {version} up\n",
                    p.listen, p.version, p.seen_secs_ago
                )
            }
        })
        .collect()
}

/// A shard about to own slots must hold every declared table, and every reference table with
/// as many rows as the first shard's: co-located joins there read its copy.
async fn check_ready(
    config: &Config,
    placement: &Placement,
    gaining: &[usize],
) -> Result<(), String> {
    let timeout = Duration::from_secs(config.server.connect_timeout_secs);
    let targets = config.shard_targets();
    let mut tables: Vec<(&String, bool)> = placement
        .tables
        .iter()
        .map(|(name, rule)| (name, matches!(rule, TableRule::Reference)))
        .collect();
    tables.sort();
    let home = control::connect(&targets[HOME], timeout).await?;
    let mut problems = Vec::new();
    for &s in gaining.iter().filter(|&&s| s != HOME) {
        let there = control::connect(&targets[s], timeout).await?;
        for &(table, reference) in &tables {
            let quoted = crate::sql::identifier(table);
            let exists = control::relation_exists(&there, table)
                .await
                .map_err(|e| control::describe(&e))?;
            if !exists {
                problems.push(format!(
                    "table {table} is missing on {} (create it first)",
                    targets[s].name
                ));
                continue;
            }
            if reference {
                let count = format!("SELECT count(*) FROM {quoted}");
                let (mine, theirs): (i64, i64) = (
                    home.query_one(&count, &[])
                        .await
                        .map_err(|e| control::describe(&e))?
                        .get(0),
                    there
                        .query_one(&count, &[])
                        .await
                        .map_err(|e| control::describe(&e))?
                        .get(0),
                );
                if mine != theirs {
                    problems.push(format!(
                        "reference table {table} has {theirs} rows on {} and {mine} on {} (copy it first)",
                        targets[s].name, targets[HOME].name
                    ));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "a shard that gains slots is not ready, so nothing was recorded: {}",
            problems.join("; ")
        ))
    }
}
