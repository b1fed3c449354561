//! Types created in the open transaction, which no other connection can see yet.
//!
//! Type OIDs are translated between shards by name through the control connection (see
//! `backend::type_oids`). A type created inside a transaction block is invisible there until it
//! commits, yet the client already sees its OID (the first shard's) and uses it. So after DDL
//! that creates types runs inside a transaction, each shard is asked, in the session's own
//! transaction, for the OIDs of those types and their array types; the answers live in the
//! transaction (`OpenTxn::own_types`) and end with it.

use super::session::{Exec, R};
use super::txn::TxnState;
use sqlparser::ast::{ObjectName, Statement};

/// One type the open transaction created, as one shard numbers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnType {
    pub shard: usize,
    pub oid: u32,
    /// Schema-qualified, as `backend::type_oids` names types.
    pub name: String,
}

/// The types a statement creates: its own name for CREATE TYPE and CREATE DOMAIN, and the row
/// type of a table.
fn created_types(stmt: &Statement) -> Option<&ObjectName> {
    match stmt {
        Statement::CreateType { name, .. } => Some(name),
        Statement::CreateDomain(d) => Some(&d.name),
        Statement::CreateTable(t) => Some(&t.name),
        _ => None,
    }
}

/// The query that lists, on one shard, `names` and their array types as "oid name" lines.
fn lookup_sql(names: &[String]) -> String {
    let regtypes: Vec<String> = names
        .iter()
        .map(|n| format!("to_regtype({})", crate::sql::string_literal(n)))
        .collect();
    let list = regtypes.join(", ");
    format!(
        "select t.oid::text || ' ' || format('%I.%I', n.nspname, t.typname) from pg_type t \
         join pg_namespace n on n.oid = t.typnamespace where t.oid = any(array[{list}]::oid[]) \
         or t.typelem = any(array[{list}]::oid[]) and t.typcategory = 'A'"
    )
}

impl Exec<'_> {
    /// After `sql` ran on every shard inside an open transaction: remembers the OIDs of the
    /// types it created on each shard.
    pub async fn note_own_types(&mut self, sql: &str) -> R<()> {
        if !matches!(self.txn, TxnState::Open(_)) {
            return Ok(());
        }
        let Some(parsed) = self.parse(sql) else {
            return Ok(());
        };
        let names: Vec<String> = parsed
            .iter()
            .filter_map(|s| created_types(s))
            .map(|n| n.to_string())
            .collect();
        if names.is_empty() || self.catalog.is_none() {
            return Ok(());
        }
        let query = lookup_sql(&names);
        let mut found = Vec::new();
        for shard in 0..self.links.len() {
            let (lines, error) = self.query_values(shard, &query).await?;
            if error.is_some() {
                // Then the transaction has failed, and nothing more will use these types.
                return Ok(());
            }
            for line in lines {
                if let Some((oid, name)) = line.split_once(' ') {
                    if let Ok(oid) = oid.parse() {
                        found.push(OwnType {
                            shard,
                            oid,
                            name: name.to_string(),
                        });
                    }
                }
            }
        }
        if let TxnState::Open(t) = &mut self.txn {
            t.own_types.extend(found);
        }
        Ok(())
    }

    /// `oid` of shard `from` as shard `to` numbers it, when the open transaction created it.
    pub fn own_type(&self, from: usize, to: usize, oid: u32) -> Option<u32> {
        let (TxnState::Open(t) | TxnState::Failed(t)) = &self.txn else {
            return None;
        };
        let name = &t
            .own_types
            .iter()
            .find(|o| o.shard == from && o.oid == oid)?
            .name;
        t.own_types
            .iter()
            .find(|o| o.shard == to && &o.name == name)
            .map(|o| o.oid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(sql: &str) -> Vec<String> {
        sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, sql)
            .unwrap()
            .iter()
            .filter_map(created_types)
            .map(|n| n.to_string())
            .collect()
    }

    #[test]
    fn types_tables_and_domains_create_types_and_other_ddl_does_not() {
        assert_eq!(
            names(
                "create type app.pair as (a int, b text); create domain posint as int check (value > 0);
                 create table t (id int); create index on t (id); alter table t add column x int"
            ),
            vec!["app.pair", "posint", "t"]
        );
    }

    #[test]
    fn the_lookup_quotes_the_names_it_is_given() {
        let sql = lookup_sql(&["it's".to_string()]);
        assert!(sql.contains("to_regtype('it''s')"), "{sql}");
    }
}
