//! A derived table that picks some of the rows of every shard (`FROM (SELECT ... ORDER BY x
//! LIMIT 10) s`, as a top-N is read before it is joined or aggregated) or combines them
//! (`FROM (SELECT owner, count(*) FROM accounts GROUP BY owner) s`), answered first: it
//! becomes a VALUES list of its rows under the same alias and column names, each value a
//! literal of its column's type. The statement then reads it as it reads a reference table's
//! rows: whole on whichever shard runs it.

use super::{folded, refusal, Answer};
use crate::error::PgError;
use crate::placement::Placement;
use crate::router::plan::has_own_aggregate_or_window;
use crate::router::subquery::{grouped_by_key, output_exprs};
use sqlparser::ast::{
    CastKind, DataType, Expr, GroupByExpr, ObjectName, Parens, Query, SetExpr, TableFactor, Value,
};

/// The query of a derived table (not LATERAL) whose rows are not each shard's own: one that
/// limits its rows, or groups, aggregates, windows or removes duplicates other than by the
/// shard key (those the merge makes of every shard's rows).
pub(super) fn merged<'t>(t: &'t TableFactor, placement: &Placement) -> Option<&'t Query> {
    let subquery = crate::sql::row_order::derived_query(t)?;
    if subquery.limit_clause.is_some() || subquery.fetch.is_some() {
        return Some(subquery);
    }
    let SetExpr::Select(s) = subquery.body.as_ref() else {
        return None;
    };
    let combines = s.distinct.is_some()
        || !matches!(&s.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty())
        || s.having.is_some()
        || output_exprs(subquery, s).any(|e| has_own_aggregate_or_window(e, s, placement));
    (combines && !grouped_by_key(subquery, placement)).then_some(subquery)
}

/// The derived table `t` as VALUES of `answer`'s rows.
pub(super) fn replacement(t: &TableFactor, answer: &Answer) -> Result<TableFactor, PgError> {
    // A table whose rows a window needs read first goes by its own name when it has no alias.
    let (alias, own_name) = match t {
        TableFactor::Derived { alias, .. } => (alias, None),
        TableFactor::Table { name, alias, .. } => (alias, name.0.last().map(|n| n.to_string())),
        _ => return Err(refusal("only a derived table is answered as rows")),
    };
    if answer.columns.is_empty() {
        return Err(refusal(
            "a derived table over several shards without columns is not supported",
        ));
    }
    // The alias's column names stand for the first columns; the rest keep their own.
    let mut names = Vec::new();
    let mut compared = Vec::new();
    let mut types = Vec::new();
    for (i, (name, oid, _)) in answer.columns.iter().enumerate() {
        match alias.as_ref().and_then(|a| a.columns.get(i)) {
            Some(c) => {
                names.push(c.name.to_string());
                compared.push(folded(&c.name));
            }
            None => {
                names.push(format!("\"{}\"", name.replace('"', "\"\"")));
                compared.push(name.clone());
            }
        }
        let Some(ty) = answer.column_type(i) else {
            return Err(refusal(format!(
                "a derived table over several shards whose column {name} is of a type the proxy cannot name on every shard (OID {oid}) is not supported"
            )));
        };
        types.push(ty);
    }
    if let Some(twice) = compared
        .iter()
        .enumerate()
        .find_map(|(i, n)| compared[..i].contains(n).then_some(n))
    {
        return Err(refusal(format!(
            "a derived table over several shards with two columns named {twice} is not supported"
        )));
    }
    // A column's own collation, where it differs from its type's, goes with its values: the
    // statement compares them as it would compare the column's.
    let nulls: Vec<String> = types
        .iter()
        .enumerate()
        .map(
            |(i, t)| match answer.collations.iter().find(|(c, _)| *c == i) {
                Some((_, collation)) => format!("CAST(NULL AS {t}) COLLATE {collation}"),
                None => format!("CAST(NULL AS {t})"),
            },
        )
        .collect();
    let body = if answer.rows.is_empty() {
        format!("(SELECT {} WHERE false)", nulls.join(", "))
    } else {
        // One row of NULLs to parse the types once; the rows are put in below.
        format!("(VALUES ({}))", nulls.join(", "))
    };
    let alias_name = alias
        .as_ref()
        .map(|a| a.name.to_string())
        .or(own_name)
        .unwrap_or_else(|| "shardgate_rows".to_string());
    let text = format!(
        "SELECT * FROM {body} AS {alias_name} ({})",
        names.join(", ")
    );
    let Some(q) = super::parse_query(&text) else {
        return Err(refusal(
            "a derived table's rows could not be written back into the statement",
        ));
    };
    let SetExpr::Select(s) = *q.body else {
        unreachable!("written as a SELECT above")
    };
    let mut table = s
        .from
        .into_iter()
        .next()
        .map(|f| f.relation)
        .ok_or_else(|| {
            refusal("a derived table's rows could not be written back into the statement")
        })?;
    if let TableFactor::Derived { subquery, .. } = &mut table {
        if let SetExpr::Values(values) = subquery.body.as_mut() {
            // Each column's type, and its collation if one is named.
            let written: Vec<(DataType, Option<ObjectName>)> = values.rows[0]
                .iter()
                .filter_map(|e| match e {
                    Expr::Cast { data_type, .. } => Some((data_type.clone(), None)),
                    Expr::Collate { expr, collation } => match expr.as_ref() {
                        Expr::Cast { data_type, .. } => {
                            Some((data_type.clone(), Some(collation.clone())))
                        }
                        _ => None,
                    },
                    _ => None,
                })
                .collect();
            if written.len() != answer.columns.len() {
                return Err(refusal(
                    "a derived table's rows could not be written back into the statement",
                ));
            }
            values.rows = answer
                .rows
                .iter()
                .map(|row| {
                    Parens::with_empty_span(
                        row.iter()
                            .zip(&written)
                            .map(|(v, (t, collation))| {
                                let value = cast(v.as_deref(), t);
                                match collation {
                                    Some(c) => Expr::Collate {
                                        expr: Box::new(value),
                                        collation: c.clone(),
                                    },
                                    None => value,
                                }
                            })
                            .collect(),
                    )
                })
                .collect();
        }
    }
    Ok(table)
}

/// `CAST(<value> AS t)`, the value a string literal that reads the same whatever
/// `standard_conforming_strings` is.
fn cast(value: Option<&str>, t: &DataType) -> Expr {
    let v = match value {
        None => Value::Null,
        Some(s) if s.contains('\\') => Value::EscapedStringLiteral(s.to_string()),
        Some(s) => Value::SingleQuotedString(s.to_string()),
    };
    Expr::Cast {
        kind: CastKind::Cast,
        expr: Box::new(Expr::value(v)),
        data_type: t.clone(),
        format: None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::Answer;
    use super::*;

    fn derived(sql: &str) -> TableFactor {
        crate::router::plan::tests::select(sql).from[0]
            .relation
            .clone()
    }

    fn answer(rows: &[[Option<&str>; 2]]) -> Answer {
        Answer {
            columns: vec![("id".into(), 20, -1), ("Owner".into(), 25, -1)],
            rows: rows
                .iter()
                .map(|r| r.iter().map(|v| v.map(str::to_string)).collect())
                .collect(),
            ..Answer::default()
        }
    }

    #[test]
    fn only_a_derived_table_that_combines_every_shards_rows_is_answered_first() {
        let p = crate::router::plan::tests::placement();
        let merged = |sql: &str| merged(&derived(sql), &p).is_some();
        assert!(merged(
            "select * from (select id from accounts order by id limit 3) a"
        ));
        assert!(merged(
            "select * from (select owner, count(*) from accounts group by owner) a"
        ));
        assert!(merged(
            "select * from (select distinct owner from accounts) a"
        ));
        assert!(merged("select * from (select max(id) from accounts) a"));
        // Each shard's own rows, or whole groups of one key: not combined.
        assert!(!merged("select * from (select id from accounts) a"));
        assert!(!merged(
            "select * from (select id, count(*) from accounts group by id) a"
        ));
        assert!(!merged(
            "select * from (select distinct id, owner from accounts) a"
        ));
        // An aggregate in WHERE is a subquery's own.
        assert!(!merged(
            "select * from (select id from accounts where id < (select max(account_id) from ledger)) a"
        ));
        assert!(!merged(
            "select * from lateral (select id from accounts limit 3) a"
        ));
    }

    #[test]
    fn rows_become_values_under_the_same_names() {
        let t = derived("select * from (select id, owner as \"Owner\" from accounts limit 2) a");
        let r = replacement(&t, &answer(&[[Some("1"), Some("it's")], [Some("2"), None]])).unwrap();
        assert_eq!(
            r.to_string(),
            "(VALUES (CAST('1' AS BIGINT), CAST('it''s' AS pg_catalog.text)), (CAST('2' AS BIGINT), CAST(NULL AS pg_catalog.text))) AS a (\"id\", \"Owner\")"
        );
        // The alias's own names stand for the first columns; no rows is a SELECT of none.
        let t = derived("select * from (select id, owner from accounts limit 2) AS b (k)");
        let r = replacement(&t, &answer(&[])).unwrap();
        assert_eq!(
            r.to_string(),
            "(SELECT CAST(NULL AS BIGINT), CAST(NULL AS pg_catalog.text) WHERE false) AS b (k, \"Owner\")"
        );
        let backslash = replacement(&t, &answer(&[[Some("3"), Some("a\\b")]])).unwrap();
        assert!(backslash.to_string().contains("E'a\\\\b'"), "{backslash}");
    }

    #[test]
    fn two_columns_of_one_name_are_refused() {
        let t = derived("select * from (select id, owner from accounts limit 2) AS b (\"Owner\")");
        assert!(replacement(&t, &answer(&[])).is_err());
    }
}
