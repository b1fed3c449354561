//! `FROM entries AS e (x, account_id)`: a column list on a table's alias renames the table's
//! columns by position, so `account_id` there is the table's second column, not its shard key.
//! The planner reads key conditions and join conditions by column name: it would route by a
//! column that is not the key (and answer from one shard) or take a join for co-located. A
//! sharded table under such an alias is refused; functions (`generate_series(1, 3) AS g(n)`),
//! VALUES lists, CTEs and reference tables keep their column lists.

use super::query::cte_names;
use super::{last_ident, refuse, Plan};
use crate::placement::{Placement, TableRule};
use sqlparser::ast::{ObjectName, Statement, TableFactor};
use std::ops::ControlFlow;

/// The refusal of `stmt` if it renames a sharded table's columns with its alias.
pub(super) fn refusal(stmt: &Statement, placement: &Placement) -> Option<Plan> {
    struct Renamed<'a> {
        placement: &'a Placement,
        ctes: Vec<String>,
    }
    impl sqlparser::ast::Visitor for Renamed<'_> {
        type Break = ObjectName;
        fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<ObjectName> {
            if let TableFactor::Table {
                name,
                alias: Some(alias),
                args: None,
                ..
            } = t
            {
                let sharded = matches!(
                    self.placement.rule(&name.to_string()),
                    Some(TableRule::Sharded { .. })
                );
                let cte = self.ctes.contains(&last_ident(name).to_ascii_lowercase());
                if !alias.columns.is_empty() && sharded && !cte {
                    return ControlFlow::Break(name.clone());
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut renamed = Renamed {
        placement,
        ctes: cte_names(stmt),
    };
    let ControlFlow::Break(name) = sqlparser::ast::Visit::visit(stmt, &mut renamed) else {
        return None;
    };
    Some(refuse(
        format!("a column list on the alias of sharded table {name} is not supported"),
        "The proxy places rows by the shard key's own column name: rename columns in the \
         select list (SELECT account_id AS x ...) or in a derived table instead.",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::plan::tests::placement;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn refused(sql: &str) -> bool {
        let stmt = &Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap()[0];
        refusal(stmt, &placement()).is_some()
    }

    #[test]
    fn a_sharded_tables_columns_renamed_by_its_alias_are_refused() {
        for sql in [
            "select count(*) from ledger as l (x, account_id) where account_id = 7",
            "select * from countries c join accounts a (k) on a.k = 1",
            "select * from accounts where id in (select k from accounts a (k))",
        ] {
            assert!(refused(sql), "{sql}");
        }
    }

    #[test]
    fn other_column_lists_and_plain_aliases_are_not() {
        for sql in [
            "select * from accounts a where a.id = 1",
            "select * from generate_series(1, 3) as g (n)",
            "select * from (values (1, 2)) v (a, b)",
            "select * from countries c (code2)",
            "with accounts (x) as (select 1) select * from accounts a (y)",
        ] {
            assert!(!refused(sql), "{sql}");
        }
    }
}
