//! `[routing]`, `[tables.*]` and `[placement]`: how tables are placed on shards (sharded by
//! a key, or reference tables copied on every shard) and what happens to undeclared ones.

use super::*;

/// `[routing]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Tables not declared under `[tables]`: `refuse` (default: statements that use one are
    /// refused), `reference` (a copy on every shard) or the name of the shard that holds them.
    #[serde(default = "default_undeclared")]
    pub undeclared_tables: String,
}

pub(super) fn default_undeclared() -> String {
    "refuse".into()
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            undeclared_tables: default_undeclared(),
        }
    }
}

/// `[tables.<name>]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// Column whose value decides the shard. Required unless `reference = true`.
    #[serde(default)]
    pub shard_key: Option<String>,
    /// `bigint`, `integer`, `smallint`, `text` or `uuid`. Required with `shard_key`.
    #[serde(default)]
    pub key_type: Option<String>,
    /// A full copy on every shard. Default false.
    #[serde(default)]
    pub reference: bool,
}

/// `[placement]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementConfig {
    /// Shard name → slot ranges (`"0-340,512-600"`), covering slots 0..1023 exactly once.
    /// `shardgate slots --config FILE` prints the derived table in this form, to pin it.
    #[serde(default)]
    pub slots: Option<BTreeMap<String, String>>,
    /// How often a proxy of several shards looks for a newer recorded placement.
    #[serde(default = "default_refresh_interval")]
    pub refresh_interval_secs: f64,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        PlacementConfig {
            slots: None,
            refresh_interval_secs: default_refresh_interval(),
        }
    }
}

fn default_refresh_interval() -> f64 {
    1.0
}
