//! Planning COPY on several shards.
//!
//! - `COPY table TO STDOUT` of a sharded table, and `COPY (SELECT ...) TO STDOUT` whose rows are
//!   every shard's rows concatenated (no ORDER BY, LIMIT or aggregate to merge), stream from the
//!   shards one after another (`CopyPlan::Out`). A reference table's or one shard's COPY is a
//!   plain one-shard statement.
//! - `COPY table FROM STDIN` streams through the proxy: a sharded table's rows are split by key,
//!   a reference table's go to every copy, in one distributed transaction (`CopyPlan::In`).
//! - Files and programs on the server are refused: each shard would read or write its own.

use super::params::Params;
use super::plan::{plan, Plan, HOME};
use crate::error::{sqlstate, PgError};
use crate::placement::{KeyType, Placement, TableRule};
use sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Ident, Statement,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Csv,
    Binary,
}

/// The options of a COPY that decide where its rows and fields end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub kind: Kind,
    pub delimiter: u8,
    pub null: Vec<u8>,
    pub quote: u8,
    pub escape: u8,
    pub header: bool,
}

impl Format {
    pub fn new(kind: Kind) -> Format {
        let csv = kind == Kind::Csv;
        Format {
            kind,
            delimiter: if csv { b',' } else { b'\t' },
            null: if csv { Vec::new() } else { b"\\N".to_vec() },
            quote: b'"',
            escape: b'"',
            header: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyPlan {
    /// Run `sql` (a COPY ... TO STDOUT) on each shard in turn; one stream for the client.
    Out {
        shards: Vec<usize>,
        sql: String,
        format: Format,
    },
    /// `COPY table FROM STDIN`.
    In(CopyIn),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyIn {
    pub table: String,
    /// The column list as written (empty: every column of the table, in order).
    pub columns: Vec<String>,
    /// The shard key's column and type; None for a reference table (every row to every shard).
    pub key: Option<(String, KeyType)>,
    /// The one shard that holds the table (an undeclared table, see `TableRule::Pinned`).
    pub only: Option<usize>,
    pub format: Format,
}

fn refuse(message: impl Into<String>, hint: impl Into<String>) -> Plan {
    Plan::Reject(PgError::error(sqlstate::FEATURE_NOT_SUPPORTED, message).with_hint(hint))
}

/// Where a COPY's rows end and what its fields look like.
fn format_of(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> Result<Format, String> {
    let mut kind = Kind::Text;
    for o in options {
        if let CopyOption::Format(name) = o {
            kind = match name.value.to_ascii_lowercase().as_str() {
                "text" => Kind::Text,
                "csv" => Kind::Csv,
                "binary" => Kind::Binary,
                other => return Err(format!("COPY format \"{other}\" not recognized")),
            };
        }
    }
    for o in legacy {
        match o {
            CopyLegacyOption::Binary => kind = Kind::Binary,
            CopyLegacyOption::Csv(_) => kind = Kind::Csv,
            _ => {}
        }
    }
    let mut f = Format::new(kind);
    let byte = |c: &char| -> Result<u8, String> {
        u8::try_from(u32::from(*c))
            .ok()
            .filter(u8::is_ascii)
            .ok_or_else(|| {
                format!("COPY option character {c:?} must be a single one-byte character")
            })
    };
    let mut escape_given = false;
    for o in options {
        match o {
            CopyOption::Delimiter(c) => f.delimiter = byte(c)?,
            CopyOption::Null(s) => f.null = s.as_bytes().to_vec(),
            CopyOption::Header(h) => f.header = *h,
            CopyOption::Quote(c) => f.quote = byte(c)?,
            CopyOption::Escape(c) => {
                f.escape = byte(c)?;
                escape_given = true;
            }
            _ => {}
        }
    }
    for o in legacy {
        match o {
            CopyLegacyOption::Delimiter(c) => f.delimiter = byte(c)?,
            CopyLegacyOption::Null(s) => f.null = s.as_bytes().to_vec(),
            CopyLegacyOption::Header => f.header = true,
            CopyLegacyOption::Csv(csv) => {
                for c in csv {
                    match c {
                        CopyLegacyCsvOption::Header => f.header = true,
                        CopyLegacyCsvOption::Quote(q) => f.quote = byte(q)?,
                        CopyLegacyCsvOption::Escape(e) => {
                            f.escape = byte(e)?;
                            escape_given = true;
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    // CSV's escape defaults to its quote.
    if !escape_given {
        f.escape = f.quote;
    }
    Ok(f)
}

/// Plans a parsed COPY statement.
pub fn plan_copy(stmt: &Statement, placement: &Placement) -> Plan {
    let Statement::Copy {
        source,
        to,
        target,
        options,
        legacy_options,
        ..
    } = stmt
    else {
        return refuse("not a COPY", "");
    };
    if !matches!(target, CopyTarget::Stdin | CopyTarget::Stdout) {
        return refuse(
            "COPY to or from a file or program on the server is not supported on several shards",
            "Each shard would read or write its own file. Use COPY ... FROM STDIN / TO STDOUT (psql's \\copy).",
        );
    }
    let format = match format_of(options, legacy_options) {
        Ok(f) => f,
        Err(e) => return Plan::Reject(PgError::error(sqlstate::FEATURE_NOT_SUPPORTED, e)),
    };
    match (source, *to) {
        (CopySource::Table { table_name, .. }, true) => {
            match placement.rule(&table_name.to_string()) {
                Some(TableRule::Sharded { .. }) => Plan::Copy(CopyPlan::Out {
                    shards: (0..placement.shard_names.len()).collect(),
                    sql: stmt.to_string(),
                    format,
                }),
                Some(TableRule::Reference) => Plan::Shard {
                    shard: HOME,
                    write: false,
                },
                Some(TableRule::Pinned { shard }) => Plan::Shard {
                    shard: *shard,
                    write: false,
                },
                None => plan(
                    &Statement::Query(Box::new(select_star(&table_name.to_string()))),
                    placement,
                    &Params::default(),
                ),
            }
        }
        (CopySource::Query(q), true) => {
            match plan(&Statement::Query(q.clone()), placement, &Params::default()) {
                Plan::Scatter { shards, sql, merge } => {
                    if merge != Default::default() {
                        return refuse(
                            "COPY (SELECT ...) TO STDOUT over several shards cannot ORDER BY, LIMIT, DISTINCT or aggregate",
                            "COPY streams each shard's rows in turn. Run the SELECT itself (shardgate merges it), or drop the ordering.",
                        );
                    }
                    let mut per_shard = stmt.clone();
                    if let (
                        Statement::Copy {
                            source: CopySource::Query(inner),
                            ..
                        },
                        Some(Statement::Query(rewritten)),
                    ) = (&mut per_shard, parse_one(&sql))
                    {
                        *inner = rewritten;
                    }
                    Plan::Copy(CopyPlan::Out {
                        shards,
                        sql: per_shard.to_string(),
                        format,
                    })
                }
                // A query writing a table living on one shard is a write there.
                Plan::Shard { shard, write } => Plan::Shard { shard, write },
                // A query writing a reference table: each copy would run the COPY, and the
                // client gets one copy's rows, which `executor::write` does not stream as COPY.
                Plan::Write { .. } => refuse(
                    "COPY of a query that writes a reference table is not supported on several shards",
                    "Run the query itself: shardgate writes every copy and returns one copy's rows.",
                ),
                other => other,
            }
        }
        (
            CopySource::Table {
                table_name,
                columns,
            },
            false,
        ) => {
            let table = table_name.to_string();
            let columns: Vec<String> = columns.iter().map(|c| c.value.clone()).collect();
            let key = match placement.rule(&table) {
                None => return super::plan::undeclared(&table),
                Some(TableRule::Reference) => None,
                Some(TableRule::Pinned { shard }) => {
                    return Plan::Copy(CopyPlan::In(CopyIn {
                        table,
                        columns,
                        key: None,
                        only: Some(*shard),
                        format,
                    }))
                }
                // A column list without the key is for the executor to judge: a key from a
                // sequence is filled in by the proxy.
                Some(TableRule::Sharded {
                    key_column,
                    key_type,
                }) => Some((key_column.clone(), *key_type)),
            };
            Plan::Copy(CopyPlan::In(CopyIn {
                table,
                columns,
                key,
                only: None,
                format,
            }))
        }
        (CopySource::Query(_), false) => refuse("COPY FROM cannot read into a query", ""),
    }
}

/// A `COPY table (columns) FROM STDIN ...` statement with `extra` columns (names as the catalog
/// has them) added to its column list.
pub fn with_columns(sql: &str, extra: &[String]) -> Option<String> {
    let mut stmt = parse_one(sql)?;
    let Statement::Copy {
        source: CopySource::Table { columns: list, .. },
        ..
    } = &mut stmt
    else {
        return None;
    };
    list.extend(extra.iter().map(|c| Ident::with_quote('"', c.as_str())));
    Some(stmt.to_string())
}

fn parse_one(sql: &str) -> Option<Statement> {
    let parsed = |text: &str| {
        sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, text)
            .ok()?
            .into_iter()
            .next()
    };
    parsed(sql).or_else(|| crate::sql::copy_options_plain(sql).and_then(|t| parsed(&t)))
}

fn select_star(table: &str) -> sqlparser::ast::Query {
    match parse_one(&format!("SELECT * FROM {table}")) {
        Some(Statement::Query(q)) => *q,
        _ => unreachable!("a table name that sqlparser read re-parses"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn placement() -> Placement {
        let mut tables = HashMap::new();
        tables.insert(
            "accounts".to_string(),
            TableRule::Sharded {
                key_column: "id".into(),
                key_type: KeyType::Integer,
            },
        );
        tables.insert("countries".to_string(), TableRule::Reference);
        let names = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        Placement {
            tables,
            slots: crate::placement::SlotTable::derive(&names),
            shard_names: names,
            undeclared: None,
            version: 0,
            unroutable: Default::default(),
            aggregates: Default::default(),
            function_words: Default::default(),
            function_writes: Default::default(),
        }
    }

    fn planned(sql: &str) -> Plan {
        plan_copy(&parse_one(sql).unwrap(), &placement())
    }

    #[test]
    fn copy_out_of_a_sharded_table_streams_from_every_shard() {
        match planned("COPY accounts TO STDOUT (FORMAT csv, HEADER)") {
            Plan::Copy(CopyPlan::Out { shards, format, .. }) => {
                assert_eq!(shards, vec![0, 1, 2]);
                assert_eq!(format.kind, Kind::Csv);
                assert!(format.header);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            planned("COPY countries TO STDOUT"),
            Plan::Shard {
                shard: HOME,
                write: false
            }
        );
        assert!(matches!(
            planned("COPY (SELECT id FROM accounts WHERE id = 5) TO STDOUT"),
            Plan::Shard { write: false, .. }
        ));
        assert!(matches!(
            planned("COPY (SELECT id FROM accounts ORDER BY id) TO STDOUT"),
            Plan::Reject(_)
        ));
        // A query writing a reference table would write every copy: not streamed as COPY.
        assert!(matches!(
            planned("COPY (WITH w AS (INSERT INTO countries (code) VALUES ('x') RETURNING code) SELECT * FROM w) TO STDOUT"),
            Plan::Reject(_)
        ));
    }

    #[test]
    fn copy_in_reads_the_key_and_the_options() {
        match planned("COPY accounts (name, id) FROM STDIN WITH CSV HEADER QUOTE '''' ") {
            Plan::Copy(CopyPlan::In(c)) => {
                assert_eq!(c.columns, vec!["name", "id"]);
                assert_eq!(c.format.quote, b'\'');
                assert_eq!(c.format.escape, b'\'');
                assert!(c.format.header);
            }
            other => panic!("{other:?}"),
        }
        // Without the key: the executor fills it from a sequence or refuses.
        assert!(matches!(
            planned("COPY accounts (name) FROM STDIN"),
            Plan::Copy(CopyPlan::In(CopyIn { key: Some(_), .. }))
        ));
        assert_eq!(
            with_columns(
                "COPY accounts (name) FROM STDIN (FORMAT csv)",
                &["Id".into()]
            )
            .as_deref(),
            Some("COPY accounts (name, \"Id\") FROM STDIN (FORMAT csv)")
        );
        assert!(matches!(
            planned("COPY accounts FROM '/tmp/file'"),
            Plan::Reject(_)
        ));
        assert!(matches!(planned("COPY nosuch FROM STDIN"), Plan::Reject(_)));
    }
}
