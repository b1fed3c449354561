//! Statement analysis: what a piece of SQL is and which relations it touches.
//!
//! sqlparser does the parsing. What it cannot parse is classified at the token level by its
//! leading keywords (transaction control, session and utility commands) and never guessed beyond
//! that: an unparsed statement that is not a known utility command is `Unknown`, and callers must
//! treat it as unroutable.

mod shape;
mod split;
pub use shape::{shape_of, Shape};
pub use split::split_statements;

use sqlparser::ast::{ObjectName, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use std::ops::ControlFlow;

/// What a statement is, as far as routing cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatementClass {
    /// A read (SELECT / VALUES / SHOW-like query) touching these relations.
    Read { relations: Vec<String> },
    /// Session state: SET, RESET, SHOW, DISCARD, DEALLOCATE, LISTEN ...
    Session,
    /// BEGIN, COMMIT, ROLLBACK, SAVEPOINT, PREPARE TRANSACTION ...
    Transaction,
    /// Anything that writes or changes schema (INSERT, UPDATE, DDL, COPY ...).
    Write,
    /// Could not be analysed.
    Unknown,
}

/// Classifies every statement in `sql` (a simple-protocol Query may hold several).
pub fn classify(sql: &str) -> Vec<StatementClass> {
    match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(statements) if statements.is_empty() => vec![],
        Ok(statements) => statements.iter().map(classify_parsed).collect(),
        // Keywords classify one statement only: a text of several is split first, so a leading
        // `SET` says nothing about what follows it.
        Err(_) => match split_statements(sql).as_slice() {
            [one] if *one == sql.trim().trim_end_matches(';').trim() => vec![classify_tokens(one)],
            pieces => pieces.iter().flat_map(|p| classify(p)).collect(),
        },
    }
}

fn classify_parsed(stmt: &Statement) -> StatementClass {
    match stmt {
        Statement::Query(_) => StatementClass::Read {
            relations: relations(stmt),
        },
        Statement::Set(_)
        | Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::Discard { .. }
        | Statement::Deallocate { .. }
        | Statement::LISTEN { .. }
        | Statement::UNLISTEN { .. } => StatementClass::Session,
        Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. } => StatementClass::Transaction,
        _ => StatementClass::Write,
    }
}

fn relations(stmt: &Statement) -> Vec<String> {
    let mut out = Vec::new();
    let _ = sqlparser::ast::visit_relations(stmt, |name: &ObjectName| {
        out.push(name.to_string());
        ControlFlow::<()>::Continue(())
    });
    out
}

/// Leading-keyword classification for what sqlparser cannot parse.
fn classify_tokens(sql: &str) -> StatementClass {
    let words: Vec<String> = sql
        .split(|c: char| c.is_whitespace() || c == ';' || c == '(')
        .filter(|w| !w.is_empty())
        .take(2)
        .map(|w| w.to_ascii_uppercase())
        .collect();
    let first = words.first().map(String::as_str).unwrap_or("");
    let second = words.get(1).map(String::as_str).unwrap_or("");
    match (first, second) {
        (
            "BEGIN" | "START" | "COMMIT" | "END" | "ROLLBACK" | "ABORT" | "SAVEPOINT" | "RELEASE",
            _,
        ) => StatementClass::Transaction,
        ("PREPARE", "TRANSACTION") => StatementClass::Transaction,
        ("SET" | "RESET" | "SHOW" | "DISCARD" | "DEALLOCATE" | "LISTEN" | "UNLISTEN", _) => {
            StatementClass::Session
        }
        _ => StatementClass::Unknown,
    }
}

/// `text` as an SQL string literal, as read with standard_conforming_strings on (the default).
pub fn string_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// True for relations that live in the system catalogs (identical on every shard's server).
pub fn is_catalog_relation(name: &str) -> bool {
    let lower = name.to_ascii_lowercase().replace('"', "");
    let (schema, table) = match lower.rsplit_once('.') {
        Some((s, t)) => (
            Some(s.rsplit('.').next().unwrap_or(s).to_string()),
            t.to_string(),
        ),
        None => (None, lower.clone()),
    };
    match schema.as_deref() {
        Some("pg_catalog") | Some("information_schema") => true,
        Some(_) => false,
        // Unqualified, a name is pg_catalog's only if pg_catalog has it: a user's table may
        // be called pg_anything too. The statistics views, whose list grows with every
        // release, are recognised by prefix.
        None => {
            table.starts_with("pg_stat") || CATALOG_RELATIONS.binary_search(&table.as_str()).is_ok()
        }
    }
}

/// pg_catalog's tables and views (PostgreSQL 15, plus later releases' additions), sorted,
/// without the pg_stat* views.
const CATALOG_RELATIONS: &[&str] = &[
    "pg_aggregate",
    "pg_aios",
    "pg_am",
    "pg_amop",
    "pg_amproc",
    "pg_attrdef",
    "pg_attribute",
    "pg_auth_members",
    "pg_authid",
    "pg_available_extension_versions",
    "pg_available_extensions",
    "pg_backend_memory_contexts",
    "pg_cast",
    "pg_class",
    "pg_collation",
    "pg_config",
    "pg_constraint",
    "pg_conversion",
    "pg_cursors",
    "pg_database",
    "pg_db_role_setting",
    "pg_default_acl",
    "pg_depend",
    "pg_description",
    "pg_enum",
    "pg_event_trigger",
    "pg_extension",
    "pg_file_settings",
    "pg_foreign_data_wrapper",
    "pg_foreign_server",
    "pg_foreign_table",
    "pg_group",
    "pg_hba_file_rules",
    "pg_ident_file_mappings",
    "pg_index",
    "pg_indexes",
    "pg_inherits",
    "pg_init_privs",
    "pg_language",
    "pg_largeobject",
    "pg_largeobject_metadata",
    "pg_locks",
    "pg_matviews",
    "pg_namespace",
    "pg_opclass",
    "pg_operator",
    "pg_opfamily",
    "pg_parameter_acl",
    "pg_partitioned_table",
    "pg_policies",
    "pg_policy",
    "pg_prepared_statements",
    "pg_prepared_xacts",
    "pg_proc",
    "pg_publication",
    "pg_publication_namespace",
    "pg_publication_rel",
    "pg_publication_tables",
    "pg_range",
    "pg_replication_origin",
    "pg_replication_origin_status",
    "pg_replication_slots",
    "pg_rewrite",
    "pg_roles",
    "pg_rules",
    "pg_seclabel",
    "pg_seclabels",
    "pg_sequence",
    "pg_sequences",
    "pg_settings",
    "pg_shadow",
    "pg_shdepend",
    "pg_shdescription",
    "pg_shmem_allocations",
    "pg_shmem_allocations_numa",
    "pg_shseclabel",
    "pg_subscription",
    "pg_subscription_rel",
    "pg_tables",
    "pg_tablespace",
    "pg_timezone_abbrevs",
    "pg_timezone_names",
    "pg_transform",
    "pg_trigger",
    "pg_ts_config",
    "pg_ts_config_map",
    "pg_ts_dict",
    "pg_ts_parser",
    "pg_ts_template",
    "pg_type",
    "pg_user",
    "pg_user_mapping",
    "pg_user_mappings",
    "pg_views",
    "pg_wait_events",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_list_their_relations() {
        assert_eq!(
            classify("select * from accounts a join pg_catalog.pg_class c on true"),
            vec![StatementClass::Read {
                relations: vec!["accounts".into(), "pg_catalog.pg_class".into()]
            }]
        );
        assert_eq!(
            classify("select 1"),
            vec![StatementClass::Read { relations: vec![] }]
        );
    }

    #[test]
    fn several_statements_and_classes() {
        let c = classify("begin; set search_path = x; insert into t values (1); commit");
        assert_eq!(
            c,
            vec![
                StatementClass::Transaction,
                StatementClass::Session,
                StatementClass::Write,
                StatementClass::Transaction
            ]
        );
    }

    #[test]
    fn unparsable_utility_is_classified_by_keyword() {
        assert_eq!(
            classify("PREPARE TRANSACTION 'x'"),
            vec![StatementClass::Transaction]
        );
        assert_eq!(
            classify("DO $$ begin end $$"),
            vec![StatementClass::Unknown]
        );
        assert_eq!(
            classify("set application_name='a'; insert into t values (1); checkpoint"),
            vec![
                StatementClass::Session,
                StatementClass::Write,
                StatementClass::Unknown
            ]
        );
    }

    #[test]
    fn catalog_names() {
        assert!(is_catalog_relation("pg_catalog.pg_class"));
        assert!(is_catalog_relation("pg_class"));
        assert!(is_catalog_relation("information_schema.tables"));
        assert!(!is_catalog_relation("public.pg_mine"));
        assert!(!is_catalog_relation("pg_pipeline"));
        assert!(is_catalog_relation("pg_stat_activity"));
        assert!(is_catalog_relation("pg_wait_events"));
        let mut sorted = CATALOG_RELATIONS.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, CATALOG_RELATIONS);
        assert!(!is_catalog_relation("accounts"));
    }
}
