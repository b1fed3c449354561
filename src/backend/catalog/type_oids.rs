//! User-defined types (enums, domains, composites and their arrays) across shards.
//!
//! Built-in types have the same OID on every PostgreSQL server. A type a database creates gets
//! the next OID of that server's counter, so the same enum has a different OID on each shard,
//! as real shards' always do. Clients see only the first shard's OIDs (the shard that answers
//! their catalog queries): a RowDescription or ParameterDescription from another shard is
//! translated into them, and the OIDs a client declares in Parse are translated into each
//! shard's own before that shard sees them.
//!
//! Translation goes by schema-qualified type name, looked up through `Catalog` and cached. An
//! OID keeps naming its type until the type is dropped; a name can come to mean another OID
//! when a type is dropped and created again, which is why the cache is forgotten after DDL.

use super::{Cache, Catalog};
use std::time::Instant;

pub use crate::protocol::embedded_oids::FIRST_USER_OID;

pub fn is_user(oid: u32) -> bool {
    oid >= FIRST_USER_OID
}

/// The translation caches (lookups go through `Catalog`).
#[derive(Default)]
pub struct TypeOids {
    /// (shard, OID) → schema-qualified type name.
    names: Cache<(usize, u32), String>,
    /// (shard, schema-qualified type name) → OID.
    oids: Cache<(usize, String), u32>,
    /// (shard, OID) → whether the type is an enum.
    enums: Cache<(usize, u32), bool>,
    /// (shard, OID of an enum) → its labels in their declared order, and when they were read.
    labels: Cache<(usize, u32), (Vec<String>, Instant)>,
    /// (from, to, column types as `from` numbers them) → the types their binary values name
    /// inside, renumbered for `to` (see `type_graph`).
    pub(super) maps: super::type_graph::Maps,
}

impl TypeOids {
    /// After DDL: names may now mean other OIDs.
    pub fn forget(&self) {
        self.names.clear();
        self.oids.clear();
        self.enums.clear();
        self.labels.clear();
        self.maps.clear();
    }
}

impl Catalog {
    /// `oid` of shard `from` as shard `to` knows the same type. Built-in types are returned as
    /// they are. The error says which type could not be found, or why the lookup failed.
    pub async fn translate_type(&self, from: usize, to: usize, oid: u32) -> Result<u32, String> {
        if from == to || !is_user(oid) {
            return Ok(oid);
        }
        let name = self.type_name(from, oid).await?.ok_or_else(|| {
            format!(
                "type {oid} of shard {} does not exist",
                self.shard_name(from)
            )
        })?;
        self.type_oid(to, &name).await?.ok_or_else(|| {
            format!(
                "type {name} does not exist on shard {}",
                self.shard_name(to)
            )
        })
    }

    /// Whether type `oid` of `shard` is an enum (false for one that does not exist).
    pub async fn is_enum(&self, shard: usize, oid: u32) -> Result<bool, String> {
        if !is_user(oid) {
            return Ok(false);
        }
        if let Some(known) = self.types.enums.get(&(shard, oid)) {
            return Ok(known);
        }
        let kind = self
            .value(
                shard,
                "select t.typtype::text from pg_type t where t.oid = $1::text::oid",
                &oid.to_string(),
            )
            .await?;
        let answer = kind.as_deref() == Some("e");
        self.types.enums.insert((shard, oid), answer);
        Ok(answer)
    }

    /// The labels of enum `oid` of `shard` in their declared order (`None`: not an enum).
    /// Labels are only ever added or renamed, never reordered; one added or renamed on a shard
    /// directly is seen within `FRESH`.
    pub async fn enum_labels(&self, shard: usize, oid: u32) -> Result<Option<Vec<String>>, String> {
        if !self.is_enum(shard, oid).await? {
            return Ok(None);
        }
        if let Some((known, at)) = self.types.labels.get(&(shard, oid)) {
            if at.elapsed() < super::FRESH {
                return Ok(Some(known));
            }
        }
        let labels: Vec<String> = self
            .texts(
                shard,
                "select e.enumlabel::text from pg_enum e \
                 where e.enumtypid = $1::text::oid order by e.enumsortorder",
                &oid.to_string(),
            )
            .await?
            .into_iter()
            .flatten()
            .collect();
        self.types
            .labels
            .insert((shard, oid), (labels.clone(), Instant::now()));
        Ok(Some(labels))
    }

    /// Type `oid` of `shard` as a cast names it on any shard: schema-qualified, quoted where
    /// needed, an array as its element type's name with `[]` (`None`: no such type, or a
    /// pseudo-type such as `record`, whose text no input reads).
    pub async fn cast_name(&self, shard: usize, oid: u32) -> Result<Option<String>, String> {
        self.value(
            shard,
            "select case when t.typcategory = 'A' and e.oid is not null \
                then format('%I.%I[]', en.nspname, e.typname) \
                else format('%I.%I', n.nspname, t.typname) end \
             from pg_type t join pg_namespace n on n.oid = t.typnamespace \
             left join pg_type e on e.oid = t.typelem and e.typarray = t.oid \
             left join pg_namespace en on en.oid = e.typnamespace \
             where t.oid = $1::text::oid and t.typtype <> 'p'",
            &oid.to_string(),
        )
        .await
    }

    async fn type_name(&self, shard: usize, oid: u32) -> Result<Option<String>, String> {
        if let Some(n) = self.types.names.get(&(shard, oid)) {
            return Ok(Some(n));
        }
        let name = self
            .value(
                shard,
                "select format('%I.%I', n.nspname, t.typname) from pg_type t \
                 join pg_namespace n on n.oid = t.typnamespace where t.oid = $1::text::oid",
                &oid.to_string(),
            )
            .await?;
        if let Some(n) = &name {
            self.types.names.insert((shard, oid), n.clone());
        }
        Ok(name)
    }

    pub(super) async fn type_oid(&self, shard: usize, name: &str) -> Result<Option<u32>, String> {
        let key = (shard, name.to_string());
        if let Some(o) = self.types.oids.get(&key) {
            return Ok(Some(o));
        }
        let oid = self
            .value(shard, "select to_regtype($1)::oid::text", name)
            .await?
            .and_then(|o| o.parse::<u32>().ok());
        if let Some(o) = oid {
            self.types.oids.insert(key, o);
        }
        Ok(oid)
    }
}
