//! Placement: which shard owns a row. Key → PostgreSQL's partition hash of the typed key value
//! → slot = hash mod 1024 → shard by the slot table. Stable across restarts and proxy instances
//! (nothing depends on process state), computable in SQL (`KeyType::slot_sql`), and pinnable.

pub mod hash;
pub mod key;
pub mod plan;
pub mod record;
pub mod slots;

pub use key::{KeyType, KeyValue};
pub use slots::{SlotTable, SLOT_COUNT};

/// The shard that answers statements every shard would answer alike.
pub const HOME: usize = 0;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// How one table is placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableRule {
    Sharded {
        key_column: String,
        key_type: KeyType,
    },
    /// A full copy on every shard.
    Reference,
    /// Lives on this one shard (tables not declared, with `undeclared_tables = "<shard>"`).
    Pinned { shard: usize },
}

/// The cluster's placement: table rules and the slot table.
#[derive(Debug, Clone)]
pub struct Placement {
    pub tables: HashMap<String, TableRule>,
    pub slots: SlotTable,
    pub shard_names: Vec<String>,
    /// The rule of a table the config does not declare (`[routing] undeclared_tables`); None
    /// refuses statements that use one.
    pub undeclared: Option<TableRule>,
    /// The recorded version `slots` is (see `record`); 0 before one is read, and on one shard.
    pub version: i64,
    /// Declared sharded tables whose key column on some shard was found, while the proxy ran,
    /// to be one it cannot route by, each with why (see `backend::key_columns`). Statements
    /// that read or write their rows are refused until the column is put right. Empty at start:
    /// the start refuses such a table outright.
    pub unroutable: Arc<BTreeMap<String, String>>,
    /// Names (lower case) of the aggregate and window functions the shards define outside
    /// pg_catalog, read from their catalogs (see `backend::own_functions`). The planner knows
    /// PostgreSQL's own by name; a call of any of these over several shards must be combined,
    /// never handed back as one partial result per shard.
    pub aggregates: Arc<BTreeSet<String>>,
    /// Names (lower case) of the functions the shards define in a language that can run
    /// queries, with the words of their definitions (see `backend::own_functions`): a call of
    /// one whose definition names a sharded table is refused.
    pub function_words: Arc<BTreeMap<String, BTreeSet<String>>>,
    /// Of those, the ones whose definitions write tables, with the tables written (see
    /// `backend::own_functions`): a call of one that writes a reference table is refused.
    pub function_writes: Arc<BTreeMap<String, BTreeSet<String>>>,
}

impl Placement {
    /// The declared sharded tables: name, key column as declared, key type.
    pub fn sharded_tables(&self) -> impl Iterator<Item = (&str, &str, KeyType)> {
        self.tables.iter().filter_map(|(name, rule)| match rule {
            TableRule::Sharded {
                key_column,
                key_type,
            } => Some((name.as_str(), key_column.as_str(), *key_type)),
            _ => None,
        })
    }

    /// Whether some table may be a reference table, or live on one shard other than the
    /// first: declared so, or placed so by the undeclared-tables rule.
    pub fn has_copies_or_pins(&self) -> bool {
        let apart = |r: &TableRule| match r {
            TableRule::Reference => true,
            TableRule::Pinned { shard } => *shard != HOME,
            TableRule::Sharded { .. } => false,
        };
        self.tables.values().any(apart) || self.undeclared.as_ref().is_some_and(apart)
    }

    pub fn slot_of(key: &KeyValue) -> u32 {
        (key.partition_hash() % SLOT_COUNT as u64) as u32
    }

    pub fn shard_of(&self, key: &KeyValue) -> usize {
        self.slots.shard_of_slot(Placement::slot_of(key))
    }

    /// The declared table a name as written in SQL names (schema-qualified or not, quoted or
    /// not), with its rule.
    fn declared(&self, name: &str) -> Option<(&String, &TableRule)> {
        let unquoted = name.replace('"', "");
        let bare = unquoted.rsplit('.').next().unwrap_or(&unquoted);
        self.tables
            .get_key_value(bare)
            .or_else(|| self.tables.get_key_value(&bare.to_ascii_lowercase()))
    }

    /// Whether the config declares the table a name as written in SQL names (a name that only
    /// the `undeclared_tables` rule places is not declared).
    pub fn is_declared(&self, name: &str) -> bool {
        self.declared(name).is_some()
    }

    /// Why the rows of the table a name as written in SQL names cannot be routed now, if they
    /// cannot (see `unroutable`).
    pub fn unroutable(&self, name: &str) -> Option<&str> {
        if self.unroutable.is_empty() {
            return None;
        }
        let (table, _) = self.declared(name)?;
        self.unroutable.get(table).map(String::as_str)
    }

    /// The rule for a table name as written in SQL (schema-qualified or not, quoted or not).
    pub fn rule(&self, name: &str) -> Option<&TableRule> {
        self.declared(name).map(|(_, rule)| rule).or_else(|| {
            // Catalogs are never a user table, whatever undeclared tables default to.
            if crate::sql::is_catalog_relation(name) {
                None
            } else {
                self.undeclared.as_ref()
            }
        })
    }

    /// `(slot, shard name)` for a key given as text, for `shardgate route` and `SHOW`.
    pub fn route_text(&self, table: &str, key: &str) -> Result<(u32, String), String> {
        match self.rule(table) {
            None => Err(format!("table {table:?} is not declared in the config")),
            Some(TableRule::Reference) => Err(format!(
                "table {table:?} is a reference table: every shard holds all of it"
            )),
            Some(TableRule::Pinned { shard }) => Err(format!(
                "table {table:?} is not declared and lives on shard {} (undeclared_tables)",
                self.shard_names[*shard]
            )),
            Some(TableRule::Sharded { key_type, .. }) => {
                let value = KeyValue::from_text(*key_type, key)?;
                let slot = Placement::slot_of(&value);
                Ok((
                    slot,
                    self.shard_names[self.slots.shard_of_slot(slot)].clone(),
                ))
            }
        }
    }
}
