//! The types a binary value of some column type names inside it, as one shard numbers them,
//! and the same types' OIDs on another shard (see `protocol::embedded_oids`).
//!
//! One query on the sending shard follows the type graph from the column types: an array to
//! its element type, a domain to its base type, a composite to its fields' types. Each
//! user-defined type found is then looked up on the receiving shard by its schema-qualified
//! name (cached with the other names in `type_oids`). An anonymous record names its fields'
//! types only in its values, so for one the map holds every user type of the shard
//! (`all_types_map`). A map is kept until DDL through the proxy clears the caches.

use super::{Cache, Catalog};
use crate::protocol::embedded_oids::{Shape, TypeMap, FIRST_USER_OID};
use std::collections::HashMap;
use std::sync::Arc;

/// (from, to, column types as `from` numbers them, sorted) → their map.
pub(super) type Maps = Cache<(usize, usize, Vec<u32>), Arc<TypeMap>>;

/// Each type reachable from the column types `$1` (an OID array in text): its OID, kind
/// (`typtype`), whether it is an array, its base type (domains) and its qualified name.
const GRAPH: &str = "with recursive g(oid) as ( \
       select unnest($1::text::pg_catalog.oid[]) \
       union \
       select s.x from g join pg_catalog.pg_type t on t.oid = g.oid cross join lateral ( \
         select t.typelem where t.typelem <> 0 and t.typlen = -1 \
         union all select t.typbasetype where t.typtype = 'd' \
         union all select a.atttypid from pg_catalog.pg_attribute a \
           where t.typtype = 'c' and a.attrelid = t.typrelid and a.attnum > 0 \
             and not a.attisdropped) s(x)) \
     select concat_ws(' ', t.oid, t.typtype, \
         case when t.typelem <> 0 and t.typlen = -1 then 'a' else '-' end, t.typbasetype, \
         format('%I.%I', n.nspname, t.typname)) \
     from g join pg_catalog.pg_type t on t.oid = g.oid \
       join pg_catalog.pg_namespace n on n.oid = t.typnamespace";

/// Every user-defined type of a shard, as `GRAPH` lists them: the fields of an anonymous
/// record are known only from its values, so any type may be met there.
const ALL_TYPES: &str = "select concat_ws(' ', t.oid, t.typtype, \
         case when t.typelem <> 0 and t.typlen = -1 then 'a' else '-' end, t.typbasetype, \
         format('%I.%I', n.nspname, t.typname)) \
     from pg_catalog.pg_type t join pg_catalog.pg_namespace n on n.oid = t.typnamespace \
     where t.oid >= $1::text::pg_catalog.oid";

/// The OID of each of the schema-qualified type names `$1` (a text array), as "oid name".
const OIDS_BY_NAME: &str = "select concat_ws(' ', t.oid, format('%I.%I', n.nspname, t.typname)) \
     from pg_catalog.pg_type t join pg_catalog.pg_namespace n on n.oid = t.typnamespace \
     where format('%I.%I', n.nspname, t.typname) = any($1::text::text[])";

/// One row of `GRAPH`.
#[derive(Debug, PartialEq, Eq)]
struct Node {
    oid: u32,
    kind: char,
    array: bool,
    base: u32,
    name: String,
}

fn node(line: &str) -> Option<Node> {
    let mut parts = line.splitn(5, ' ');
    Some(Node {
        oid: parts.next()?.parse().ok()?,
        kind: parts.next()?.chars().next()?,
        array: parts.next()? == "a",
        base: parts.next()?.parse().ok()?,
        name: parts.next()?.to_string(),
    })
}

/// The shapes of the graph's types: a composite's, an array's, and a domain's over either.
fn shapes(nodes: &[Node]) -> HashMap<u32, Shape> {
    let by_oid: HashMap<u32, &Node> = nodes.iter().map(|n| (n.oid, n)).collect();
    let own = |n: &Node| match (n.kind, n.array) {
        ('c', _) => Some(Shape::Record),
        (_, true) => Some(Shape::Array),
        _ => None,
    };
    let mut out = HashMap::new();
    for n in nodes {
        // A domain over a domain: follow the bases (a cycle cannot occur; the bound is a guard).
        let mut at = n;
        for _ in 0..16 {
            if at.kind != 'd' {
                break;
            }
            match by_oid.get(&at.base) {
                Some(base) => at = base,
                None => break,
            }
        }
        if let Some(shape) = own(at).filter(|_| n.oid >= FIRST_USER_OID) {
            out.insert(n.oid, shape);
        }
    }
    out
}

/// A text array literal of `items`, each quoted.
fn text_array(items: &[&str]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|i| format!("\"{}\"", i.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", quoted.join(","))
}

impl Catalog {
    /// Every user-defined type of shard `from` whose values may name types, and every user
    /// type's OID on shard `to` (those `to` lacks are left out, so a value naming one is
    /// passed as it is): for anonymous records, whose fields can be of any type. Two catalog
    /// queries, cached as `type_map`'s answers are.
    pub async fn all_types_map(&self, from: usize, to: usize) -> Result<Arc<TypeMap>, String> {
        let key = (from, to, Vec::new());
        if let Some(known) = self.types.maps.get(&key) {
            return Ok(known);
        }
        let nodes: Vec<Node> = self
            .texts(from, ALL_TYPES, &FIRST_USER_OID.to_string())
            .await?
            .into_iter()
            .flatten()
            .filter_map(|line| node(&line))
            .collect();
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        let theirs: HashMap<String, u32> = self
            .texts(to, OIDS_BY_NAME, &text_array(&names))
            .await?
            .into_iter()
            .flatten()
            .filter_map(|line| {
                let (oid, name) = line.split_once(' ')?;
                Some((name.to_string(), oid.parse().ok()?))
            })
            .collect();
        let map = Arc::new(TypeMap {
            shapes: shapes(&nodes),
            oids: nodes
                .iter()
                .filter_map(|n| Some((n.oid, *theirs.get(&n.name)?)))
                .collect(),
        });
        self.types.maps.insert(key, map.clone());
        Ok(map)
    }

    /// What values of the column types `columns` (as shard `from` numbers them) name inside
    /// them, renumbered for shard `to`. The error says what could not be looked up.
    pub async fn type_map(
        &self,
        from: usize,
        to: usize,
        columns: &[u32],
    ) -> Result<Arc<TypeMap>, String> {
        let mut roots: Vec<u32> = columns.to_vec();
        roots.sort_unstable();
        roots.dedup();
        let key = (from, to, roots);
        if let Some(known) = self.types.maps.get(&key) {
            return Ok(known);
        }
        let list = format!(
            "{{{}}}",
            key.2
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        );
        let nodes: Vec<Node> = self
            .texts(from, GRAPH, &list)
            .await?
            .into_iter()
            .flatten()
            .filter_map(|line| node(&line))
            .collect();
        let mut map = TypeMap {
            shapes: shapes(&nodes),
            oids: HashMap::new(),
        };
        for n in nodes.iter().filter(|n| n.oid >= FIRST_USER_OID) {
            let to_oid = self.type_oid(to, &n.name).await?.ok_or_else(|| {
                format!(
                    "type {} does not exist on shard {}",
                    n.name,
                    self.shard_name(to)
                )
            })?;
            map.oids.insert(n.oid, to_oid);
        }
        let map = Arc::new(map);
        self.types.maps.insert(key, map.clone());
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_take_their_base_types_shape_and_built_in_types_need_none() {
        let nodes: Vec<Node> = [
            "16500 c - 0 public.pair",
            "16499 b a 0 public._pair",
            "16510 d - 16500 public.pair_d",
            "16511 d - 16510 public.pair_dd",
            "16520 e - 0 public.\"odd name\"",
            "23 b - 0 pg_catalog.int4",
            "1007 b a 0 pg_catalog._int4",
        ]
        .iter()
        .map(|l| node(l).unwrap())
        .collect();
        assert_eq!(nodes[4].name, "public.\"odd name\"");
        let s = shapes(&nodes);
        assert_eq!(s.get(&16500), Some(&Shape::Record));
        assert_eq!(s.get(&16499), Some(&Shape::Array));
        assert_eq!(s.get(&16510), Some(&Shape::Record));
        assert_eq!(s.get(&16511), Some(&Shape::Record));
        assert_eq!(s.get(&16520), None);
        assert_eq!(s.get(&1007), None);
        assert!(node("x c - 0 a.b").is_none() && node("1 c").is_none());
    }

    #[test]
    fn names_are_quoted_in_the_array_literal() {
        assert_eq!(
            text_array(&["public.mood", "public.\"a \\\"b\""]),
            r#"{"public.mood","public.\"a \\\"b\""}"#
        );
    }
}
