//! Statement text helpers shared by the planner, the executor and the relay: splitting a Query
//! into its statements, the shape of a statement (its text with literals taken out), the calls
//! that signal a session (`signal_call`), SQL string literals, and the names of PostgreSQL's
//! catalog relations, built-in types and functions of their arguments alone, which every shard
//! has alike; `catalog_operators` writes `OPERATOR(pg_catalog.=)` plainly for the parser,
//! `lock_strength` the row locks it does not know, `interval_precision` the interval literals
//! whose precision it drops, and `copy_options` COPY's boolean options; `unary_operands` keeps
//! what the parser writes back from running two operators together.

pub mod builtin_types;
pub mod calendar;
mod catalog_operators;
pub mod clock;
mod copy_options;
mod interval_precision;
mod isnull_operator;
mod lock_strength;
mod number_junk;
mod operator_runs;
pub mod pure_functions;
pub mod row_order;
mod shape;
pub mod signal_call;
mod splice;
mod split;
mod string_aliases;
mod string_continuation;
mod tokens;
mod unary_operands;
pub mod window_rows;
pub use catalog_operators::catalog_operators_plain;
pub use copy_options::copy_options_plain;
pub use interval_precision::interval_precision_plain;
pub use isnull_operator::isnull_operators_plain;
pub use lock_strength::lock_strengths_plain;
pub use number_junk::number_runs_into_word;
pub use operator_runs::operator_split_by_parser;
pub use shape::{shape_into, shape_of, Shape};
pub use split::{
    first_word_is, several_statements, single_statement, split_statements, without_comments,
    without_leading_comments,
};
pub use string_aliases::typed_constants_from_aliases;
pub use string_continuation::string_continuations_joined;
pub use tokens::is_ident;
pub use unary_operands::keep_operands_apart;

/// The SELECT of `q` and the one table its FROM reads, without joins, when that is a table
/// (or view) by name, not a function: `SELECT ... FROM accounts a WHERE ...`.
pub fn lone_table(
    q: &sqlparser::ast::Query,
) -> Option<(
    &sqlparser::ast::Select,
    &sqlparser::ast::TableFactor,
    &sqlparser::ast::ObjectName,
)> {
    let sqlparser::ast::SetExpr::Select(s) = q.body.as_ref() else {
        return None;
    };
    let [from] = s.from.as_slice() else {
        return None;
    };
    match &from.relation {
        sqlparser::ast::TableFactor::Table {
            name, args: None, ..
        } if from.joins.is_empty() => Some((s, &from.relation, name)),
        _ => None,
    }
}

/// An expression held in text (one the proxy wrote, or a test's), read in PostgreSQL's dialect.
pub fn expression(text: &str) -> Result<sqlparser::ast::Expr, sqlparser::parser::ParserError> {
    sqlparser::parser::Parser::new(&sqlparser::dialect::PostgreSqlDialect {})
        .try_with_sql(text)
        .and_then(|mut p| p.parse_expr())
}

/// The first expression in `node` (outermost first) that `f` maps to something.
pub fn first_expression<V, T>(
    node: &V,
    mut f: impl FnMut(&sqlparser::ast::Expr) -> Option<T>,
) -> Option<T>
where
    V: sqlparser::ast::Visit,
{
    let mut found = None;
    let _ = sqlparser::ast::visit_expressions(node, |e| match f(e) {
        Some(t) => {
            found = Some(t);
            std::ops::ControlFlow::Break(())
        }
        None => std::ops::ControlFlow::Continue(()),
    });
    found
}

/// The words of a SET after `SET` (split at blanks, `=` and `;`), None for another statement.
pub fn words_after_set(sql: &str) -> Option<impl Iterator<Item = &str>> {
    let mut words = sql
        .split(|c: char| c.is_whitespace() || c == '=' || c == ';')
        .filter(|w| !w.is_empty());
    words
        .next()
        .is_some_and(|w| w.eq_ignore_ascii_case("set"))
        .then_some(words)
}

/// `text` as an SQL string literal, as read with standard_conforming_strings on (the default).
pub fn string_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `name` as a quoted SQL identifier (a statement, cursor or table name taken as written).
pub fn identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The name of a function as PostgreSQL's own (lowercase): unqualified or qualified by
/// pg_catalog, and unquoted (a quoted name keeps its case, and may be a user's). None otherwise.
pub fn catalog_function_name(name: &sqlparser::ast::ObjectName) -> Option<String> {
    use sqlparser::ast::ObjectNamePart;
    let n = match name.0.as_slice() {
        [ObjectNamePart::Identifier(n)] => n,
        [ObjectNamePart::Identifier(schema), ObjectNamePart::Identifier(n)]
            if schema.quote_style.is_none() && schema.value.eq_ignore_ascii_case("pg_catalog") =>
        {
            n
        }
        _ => return None,
    };
    n.quote_style
        .is_none()
        .then(|| n.value.to_ascii_lowercase())
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

    #[test]
    fn function_names_of_the_catalog_are_unquoted_and_unqualified_or_pg_catalog() {
        let name = |sql: &str| match expression(sql).unwrap() {
            sqlparser::ast::Expr::Function(f) => catalog_function_name(&f.name),
            other => panic!("{other:?}"),
        };
        assert_eq!(name("Sum(x)").as_deref(), Some("sum"));
        assert_eq!(name("PG_CATALOG.corr(x, y)").as_deref(), Some("corr"));
        assert_eq!(name("\"sum\"(x)"), None);
        assert_eq!(name("public.sum(x)"), None);
        assert_eq!(name("\"pg_catalog\".sum(x)"), None);
    }
}
