//! User-defined types (enums, domains, composites and their arrays) across shards.
//!
//! Built-in types have the same OID on every PostgreSQL server. A type a database creates gets
//! the next OID of that server's counter, so the same enum has a different OID on each shard,
//! as real shards' always do. Clients see only the first shard's OIDs (the shard that answers
//! their catalog queries): a RowDescription or ParameterDescription from another shard is
//! translated into them, and the OIDs a client declares in Parse are translated into each
//! shard's own before that shard sees them.
//!
//! Translation goes by schema-qualified type name, looked up on the proxy's own control
//! connections (never on a session's shard connections, which may be in the middle of an
//! answer), and is cached for the proxy. An OID keeps naming its type until the type is dropped;
//! a name can come to mean another OID when a type is dropped and created again, so the cache is
//! forgotten whenever this proxy runs DDL.

use crate::config::ShardTarget;
use std::collections::HashMap;
use std::time::Duration;

/// The first OID PostgreSQL gives to objects a database creates (`FirstNormalObjectId`); every
/// OID below it is built in and the same everywhere.
pub const FIRST_USER_OID: u32 = 16384;

pub fn is_user(oid: u32) -> bool {
    oid >= FIRST_USER_OID
}

pub struct TypeOids {
    targets: Vec<ShardTarget>,
    timeout: Duration,
    clients: Vec<tokio::sync::Mutex<Option<tokio_postgres::Client>>>,
    cache: std::sync::Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    names: HashMap<(usize, u32), String>,
    oids: HashMap<(usize, String), u32>,
}

impl std::fmt::Debug for TypeOids {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypeOids")
            .field("shards", &self.targets.len())
            .finish_non_exhaustive()
    }
}

impl TypeOids {
    pub fn new(targets: Vec<ShardTarget>, timeout: Duration) -> TypeOids {
        TypeOids {
            clients: targets
                .iter()
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            targets,
            timeout,
            cache: std::sync::Mutex::new(Cache::default()),
        }
    }

    /// After DDL: names may now mean other OIDs.
    pub fn forget(&self) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.names.clear();
        cache.oids.clear();
    }

    /// `oid` of shard `from` as shard `to` knows the same type. Built-in types are returned as
    /// they are. The error says which type could not be found, or why the lookup failed.
    pub async fn translate(&self, from: usize, to: usize, oid: u32) -> Result<u32, String> {
        if from == to || !is_user(oid) {
            return Ok(oid);
        }
        let name = self.name_of(from, oid).await?.ok_or_else(|| {
            format!(
                "type {oid} of shard {} does not exist",
                self.targets[from].name
            )
        })?;
        self.oid_of(to, &name).await?.ok_or_else(|| {
            format!(
                "type {name} does not exist on shard {}",
                self.targets[to].name
            )
        })
    }

    async fn name_of(&self, shard: usize, oid: u32) -> Result<Option<String>, String> {
        if let Some(n) = self.cached(|c| c.names.get(&(shard, oid)).cloned()) {
            return Ok(Some(n));
        }
        let name = self
            .lookup(
                shard,
                "select format('%I.%I', n.nspname, t.typname) from pg_type t \
                 join pg_namespace n on n.oid = t.typnamespace where t.oid = $1::text::oid",
                &oid.to_string(),
            )
            .await?;
        if let Some(n) = &name {
            self.cached(|c| c.names.insert((shard, oid), n.clone()));
        }
        Ok(name)
    }

    async fn oid_of(&self, shard: usize, name: &str) -> Result<Option<u32>, String> {
        let key = (shard, name.to_string());
        if let Some(o) = self.cached(|c| c.oids.get(&key).copied()) {
            return Ok(Some(o));
        }
        let oid = self
            .lookup(shard, "select to_regtype($1)::oid::text", name)
            .await?
            .and_then(|o| o.parse::<u32>().ok());
        if let Some(o) = oid {
            self.cached(|c| c.oids.insert(key, o));
        }
        Ok(oid)
    }

    fn cached<T>(&self, f: impl FnOnce(&mut Cache) -> T) -> T {
        f(&mut self.cache.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The one text value `sql` returns on `shard` (None: no row, or NULL), on the proxy's
    /// control connection to it, opened on first use and again after it broke.
    async fn lookup(&self, shard: usize, sql: &str, arg: &str) -> Result<Option<String>, String> {
        let mut slot = self.clients[shard].lock().await;
        for attempt in 0..2 {
            if slot.as_ref().is_none_or(|c| c.is_closed()) {
                *slot = Some(super::control::connect(&self.targets[shard], self.timeout).await?);
            }
            let client = slot.as_ref().expect("connected above");
            match client.query_opt(sql, &[&arg]).await {
                Ok(row) => return Ok(row.and_then(|r| r.get::<_, Option<String>>(0))),
                Err(e) if attempt == 0 && client.is_closed() => {
                    tracing::debug!(shard = %self.targets[shard].name, "type lookup connection lost: {e}");
                    *slot = None;
                }
                Err(e) => {
                    return Err(format!(
                        "type lookup on shard {} failed: {e}",
                        self.targets[shard].name
                    ))
                }
            }
        }
        Err(format!(
            "type lookup on shard {} failed",
            self.targets[shard].name
        ))
    }
}
