//! `SELECT setval(sequence, value [, is_called])` through the proxy, for a sequence that fills a
//! column of a sharded table (see `key_sequence`).
//!
//! The call runs on the first shard, whose copy of the sequence is the cluster's. Two things
//! must follow from it that a single server gets for free:
//!
//! - This proxy's cache of drawn values is dropped: values drawn before the move would
//!   otherwise still be handed out (an application resetting a sequence to 1 after emptying a
//!   table, as Django's `reset_sequences` does, would get the old values, not 1), and once the
//!   sequence reached them again they would be handed out twice.
//! - A sequence filling a reference table's column has a copy on every shard, each drawn from
//!   by that shard's copy of the table (writers take turns, so they stay alike): the call runs
//!   on every shard, or the copies would hand out different values from then on.
//! - A move back to a value at or below one a sharded table already holds is refused. On one
//!   server each later INSERT reaching a held value fails with 23505; here the rows go to the
//!   shard of their key, whose index does not see the other shards' rows, and most would be
//!   written beside the row holding their value.
//!
//! The sequence and the value are read by the first shard itself (the call's own arguments,
//! bound as the client bound them, in the client's transaction), the values in use on the
//! proxy's own connections, as committed.

use super::session::{Exec, Step, R};
use crate::error::{sqlstate, PgError};
use crate::placement::TableRule;
use crate::router::params::Params;
use crate::router::plan::{last_ident, lone_call, HOME};
use sqlparser::ast::{Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, Statement};

/// The arguments of a Query that is `SELECT setval(...)` alone (as pg_dump's restores and ORMs'
/// sequence resets send it), without a FROM.
pub fn setval_call(stmt: &Statement) -> Option<Vec<&Expr>> {
    let Statement::Query(q) = stmt else {
        return None;
    };
    let f = lone_call(q)?;
    if !last_ident(&f.name).eq_ignore_ascii_case("setval") {
        return None;
    }
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    let args: Vec<&Expr> = list
        .args
        .iter()
        .filter_map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
            _ => None,
        })
        .collect();
    (args.len() == list.args.len() && (2..=3).contains(&args.len())).then_some(args)
}

/// A table's name without its schema or quotes, as a reference table's writers lock it.
fn last_ident_of(table: &str) -> String {
    table
        .rsplit('.')
        .next()
        .unwrap_or(table)
        .trim_matches('"')
        .to_lowercase()
}

/// The first shard's reading of a setval call's arguments: the sequence (as `regclass` prints
/// it), the next value it would hand out, and its increment, as one line `seq|next|increment`.
fn reading(args: &[&Expr]) -> String {
    let called = args
        .get(2)
        .map_or("true".to_string(), |c| format!("({c})::pg_catalog.bool"));
    format!(
        "SELECT s::pg_catalog.text OPERATOR(pg_catalog.||) '|' OPERATOR(pg_catalog.||) \
         (CASE WHEN {called} THEN v OPERATOR(pg_catalog.+) q.seqincrement ELSE v END)::pg_catalog.text \
         OPERATOR(pg_catalog.||) '|' OPERATOR(pg_catalog.||) q.seqincrement::pg_catalog.text \
         FROM (SELECT ({})::pg_catalog.regclass AS s, ({})::pg_catalog.int8 AS v) a \
         JOIN pg_catalog.pg_sequence q ON q.seqrelid OPERATOR(pg_catalog.=) a.s",
        args[0], args[1]
    )
}

/// The columns a sequence fills, as `table|column`: those it belongs to (serial, identity) and
/// those whose default calls it.
fn users(sequence: &str) -> String {
    let literal = crate::sql::string_literal(sequence);
    format!(
        "SELECT d.refobjid::pg_catalog.regclass::pg_catalog.text OPERATOR(pg_catalog.||) '|' OPERATOR(pg_catalog.||) a.attname \
         FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_attribute a \
           ON a.attrelid OPERATOR(pg_catalog.=) d.refobjid AND a.attnum OPERATOR(pg_catalog.=) d.refobjsubid \
         WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass \
           AND d.objid OPERATOR(pg_catalog.=) {literal}::pg_catalog.regclass \
           AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass \
           AND d.deptype IN ('a', 'i') \
         UNION \
         SELECT ad.adrelid::pg_catalog.regclass::pg_catalog.text OPERATOR(pg_catalog.||) '|' OPERATOR(pg_catalog.||) a.attname \
         FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_attrdef ad \
           ON d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND d.objid OPERATOR(pg_catalog.=) ad.oid \
         JOIN pg_catalog.pg_attribute a \
           ON a.attrelid OPERATOR(pg_catalog.=) ad.adrelid AND a.attnum OPERATOR(pg_catalog.=) ad.adnum \
         WHERE d.refobjid OPERATOR(pg_catalog.=) {literal}::pg_catalog.regclass \
           AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass"
    )
}

impl Exec<'_> {
    /// Before a `SELECT setval(...)` runs (see the module comment): Err when it was refused,
    /// its error written for the client; Some(table) when the sequence fills a column of
    /// reference table `table`, whose every copy has its own sequence: the call must then run
    /// on every shard, as a write of that table (its writers take turns).
    pub async fn setval_checked(
        &mut self,
        stmt: &Statement,
        params: &Params,
        types: &[u32],
    ) -> R<Result<Option<String>, ()>> {
        let Some(args) = setval_call(stmt) else {
            return Ok(Ok(None));
        };
        if let Some(blocks) = self.key_blocks {
            blocks.forget();
        }
        // The first shard reads the call's own arguments, bound as the client bound them, in
        // the client's transaction; an error there is the one the call itself would get.
        let Some(request) = super::given_lookup::request(&reading(&args), params, types) else {
            return Ok(Ok(None));
        };
        if self.enlist(HOME).await? == Step::Failed {
            return Ok(Err(()));
        }
        self.links[HOME].send(&request).await?;
        let (read, error) = self.values_until_ready(HOME).await?;
        if let Some(e) = error {
            self.own_error(&e);
            return Ok(Err(()));
        }
        let Some(line) = read.first() else {
            // Not a sequence: the call fails on the first shard as it would anyway.
            return Ok(Ok(None));
        };
        let mut parts = line.split('|');
        let (Some(sequence), Some(Ok(next)), Some(Ok(increment))) = (
            parts.next(),
            parts.next().map(str::parse::<i64>),
            parts.next().map(str::parse::<i64>),
        ) else {
            return Ok(Ok(None));
        };
        let (columns, error) = self.query_values(HOME, &users(sequence)).await?;
        if let Some(e) = error {
            self.own_error(&e);
            return Ok(Err(()));
        }
        let mut copies = None;
        for user in &columns {
            let Some((table, column)) = user.rsplit_once('|') else {
                continue;
            };
            match self.placement.rule(table) {
                Some(TableRule::Reference) => {
                    copies.get_or_insert_with(|| last_ident_of(table));
                    continue;
                }
                // A sequence counting down is not drawn from by the proxy.
                Some(TableRule::Sharded { .. }) if increment > 0 => {}
                _ => continue,
            }
            let most = match self.most_in_use(table, column).await {
                Ok(m) => m,
                Err(e) => {
                    self.error(&e);
                    return Ok(Err(()));
                }
            };
            if let Some(most) = most.filter(|&m| m >= next) {
                let e = PgError::error(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    format!("setval would move sequence {sequence} back to {next}, at or below {column} {most} that sharded table {table} holds"),
                )
                .with_detail("The proxy gives the sequence's values to rows on every shard, and no shard's index sees the other shards' rows: values handed out again would be written beside the rows that hold them, where PostgreSQL raises 23505 at each.")
                .with_hint(format!(
                    "Move it past the values in use: SELECT setval({}, {most});",
                    crate::sql::string_literal(sequence)
                ));
                self.error(&e);
                return Ok(Err(()));
            }
        }
        Ok(Ok(copies))
    }

    /// The largest value of `column` in `table` over every shard, as committed.
    async fn most_in_use(&self, table: &str, column: &str) -> Result<Option<i64>, PgError> {
        let Some(catalog) = self.catalog else {
            return Ok(None);
        };
        let sql = format!(
            "SELECT pg_catalog.max({})::pg_catalog.text FROM {table}",
            Ident::with_quote('"', column)
        );
        let mut most = None;
        for s in 0..self.links.len() {
            let found = catalog.texts_of(s, &sql).await.map_err(|e| {
                PgError::error(
                    "58000",
                    format!("cannot read the values {table} holds: {e}"),
                )
            })?;
            let here = found
                .into_iter()
                .flatten()
                .next()
                .and_then(|v| v.parse().ok());
            most = most.max(here);
        }
        Ok(most)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(sql: &str) -> Option<Vec<String>> {
        let stmt =
            sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, sql)
                .unwrap()
                .pop()
                .unwrap();
        setval_call(&stmt).map(|a| a.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn only_a_setval_alone_is_read() {
        assert_eq!(
            args("SELECT setval('lines_id_seq', 5)"),
            Some(vec!["'lines_id_seq'".into(), "5".into()])
        );
        assert_eq!(
            args("SELECT pg_catalog.setval(pg_get_serial_sequence('\"lines\"', 'id'), 1, false)"),
            Some(vec![
                "pg_get_serial_sequence('\"lines\"', 'id')".into(),
                "1".into(),
                "false".into()
            ])
        );
        assert_eq!(
            args("select setval($1, $2) as v"),
            Some(vec!["$1".into(), "$2".into()])
        );
        assert_eq!(args("SELECT nextval('lines_id_seq')"), None);
        assert_eq!(args("SELECT setval('s', 5), 1"), None);
        assert_eq!(args("SELECT setval('s', max(id)) FROM lines"), None);
        assert_eq!(args("SELECT setval('s')"), None);
    }

    #[test]
    fn the_reading_asks_for_the_next_value_after_the_call() {
        let stmt = sqlparser::parser::Parser::parse_sql(
            &sqlparser::dialect::PostgreSqlDialect {},
            "SELECT setval('s', 5, false)",
        )
        .unwrap()
        .pop()
        .unwrap();
        let sql = reading(&setval_call(&stmt).unwrap());
        assert!(sql.contains("CASE WHEN (false)::pg_catalog.bool"), "{sql}");
        assert!(
            sql.contains("('s')::pg_catalog.regclass AS s, (5)::pg_catalog.int8 AS v"),
            "{sql}"
        );
    }
}
