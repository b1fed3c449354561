//! The `slots` and `route` commands: what the cluster's placement is (the version recorded on
//! the shards, or the config's table before the cluster's first start), the moves that would
//! balance it onto an added shard, and recording a table whose rows were moved by hand.

use crate::backend::placement_store;
use crate::config::Config;
use crate::placement::plan;
use crate::placement::{Placement, SlotTable};
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
            Source::Recorded(recorded.version)
        }
        Ok(None) => Source::File,
        Err(e) => Source::FileUnread(e),
    };
    Ok((placement, source))
}

/// `slots --plan --add NAME`: the moves that give NAME its share, and the table afterwards.
pub async fn plan_text(config: &Config, added: &str) -> Result<String, String> {
    let (placement, source) = cluster_placement(config).await?;
    if let Source::FileUnread(e) = source {
        return Err(format!("cannot read the cluster's placement: {e}"));
    }
    let names = &placement.shard_names;
    let to = names.iter().position(|n| n == added).ok_or_else(|| {
        format!("shard {added:?} is not in the config: add it under [[shards]] first")
    })?;
    let moves = plan::balance_onto(&placement.slots, names.len(), to);
    let mut out = format!("# from {}\n", source.describe());
    if moves.is_empty() {
        out.push_str(&format!(
            "# {added} already has its share: nothing to move\n"
        ));
        return Ok(out);
    }
    let mut table: SlotTable = placement.slots.clone();
    for m in &moves {
        out.push_str(&format!(
            "move {} slots from {} to {added}: {}\n",
            m.slot_count(),
            names[m.from],
            m.ranges_text()
        ));
        table = table.moved(&m.ranges, to);
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
    let table = config.placement()?.slots;
    placement_store::record_new(
        &config.shard_targets(),
        &table,
        Duration::from_secs(config.server.connect_timeout_secs),
    )
    .await
}
