//! Types created in the open transaction, which no other connection can see yet.
//!
//! Type OIDs are translated between shards by name through the control connection (see
//! `backend::catalog::type_oids`). A type created inside a transaction block is invisible there until it
//! commits, yet the client already sees its OID (the first shard's) and uses it. So after DDL
//! that creates types runs inside a transaction, each shard is asked, in the session's own
//! transaction, for the OIDs of those types and their array types; the answers live in the
//! transaction (`OpenTxn::own_types`) and end with it.

use super::session::{Exec, R};
use crate::txn::state::{OwnType, TxnState};
use sqlparser::ast::{ObjectName, Statement};

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

/// A type's schema (None: the session's current schema) and name, as PostgreSQL stores them.
fn stored_name(name: &ObjectName) -> Option<(Option<String>, String)> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| {
            let ident = p.as_ident()?;
            Some(match ident.quote_style {
                Some(_) => ident.value.clone(),
                None => ident.value.to_lowercase(),
            })
        })
        .collect::<Option<_>>()?;
    match parts.as_slice() {
        [name] => Some((None, name.clone())),
        [schema, name] => Some((Some(schema.clone()), name.clone())),
        _ => None,
    }
}

/// The query that lists, on one shard, the types `names` and their array types as "oid name"
/// lines. Plain comparisons only: it runs inside the client's transaction, where an error
/// would abort it (`to_regtype` fails on a shell type).
fn lookup_sql(names: &[(Option<String>, String)]) -> String {
    let pairs: Vec<String> = names
        .iter()
        .map(|(schema, name)| {
            let schema = match schema {
                Some(s) => crate::sql::string_literal(s),
                None => "pg_catalog.current_schema()".to_string(),
            };
            format!("({schema}, {})", crate::sql::string_literal(name))
        })
        .collect();
    let pairs = pairs.join(", ");
    format!(
        "select pg_catalog.concat(t.oid, ' ', pg_catalog.format('%I.%I', n.nspname, t.typname)) \
         from pg_catalog.pg_type t join pg_catalog.pg_namespace n \
         on n.oid OPERATOR(pg_catalog.=) t.typnamespace \
         where exists (select from (values {pairs}) w(s, t) \
                       where n.nspname OPERATOR(pg_catalog.=) w.s \
                       and t.typname OPERATOR(pg_catalog.=) w.t) \
         or t.oid OPERATOR(pg_catalog.=) any (select e.typarray from pg_catalog.pg_type e \
         join pg_catalog.pg_namespace en on en.oid OPERATOR(pg_catalog.=) e.typnamespace \
         where exists (select from (values {pairs}) w(s, t) \
                       where en.nspname OPERATOR(pg_catalog.=) w.s \
                       and e.typname OPERATOR(pg_catalog.=) w.t))"
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
        let names: Vec<(Option<String>, String)> = parsed
            .iter()
            .filter_map(|s| created_types(s))
            .filter_map(stored_name)
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

    /// Whether the open transaction created types (whose numbers the catalog does not know).
    pub fn has_own_types(&self) -> bool {
        matches!(&self.txn, TxnState::Open(t) | TxnState::Failed(t) if !t.own_types.is_empty())
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

    fn names(sql: &str) -> Vec<(Option<String>, String)> {
        sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, sql)
            .unwrap()
            .iter()
            .filter_map(created_types)
            .filter_map(stored_name)
            .collect()
    }

    #[test]
    fn types_tables_and_domains_create_types_and_other_ddl_does_not() {
        assert_eq!(
            names(
                "create type App.pair as (a int, b text); create domain \"PosInt\" as int check (value > 0);
                 create table t (id int); create index on t (id); alter table t add column x int"
            ),
            vec![
                (Some("app".to_string()), "pair".to_string()),
                (None, "PosInt".to_string()),
                (None, "t".to_string())
            ]
        );
    }

    #[test]
    fn the_lookup_quotes_the_names_it_is_given() {
        let sql = lookup_sql(&[(None, "it's".to_string())]);
        assert!(
            sql.contains("(pg_catalog.current_schema(), 'it''s')"),
            "{sql}"
        );
    }
}
