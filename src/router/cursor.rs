//! Planning cursors: DECLARE, FETCH, MOVE and CLOSE.
//!
//! A cursor whose query runs on one shard is declared there, and its FETCH, MOVE and CLOSE go to
//! that shard (the session remembers where; see `executor::cursor`). A cursor over several shards
//! is declared on each of them and read forward only: one shard after another, or, under ORDER
//! BY, merged in its order as each FETCH reads the shards' cursors (`executor::cursor_order`).
//! LIMIT and OFFSET are applied by that merge too (each shard's cursor limited to offset +
//! limit rows). Its query must need no other merging (no DISTINCT or aggregate), since each
//! shard's cursor can only hand out its own rows.

use super::params::Params;
use super::plan::{plan, Plan};
use crate::error::{sqlstate, PgError};
use crate::placement::Placement;
use sqlparser::ast::{Ident, Statement};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CursorCmd {
    /// `DECLARE name ... CURSOR FOR query`: on `shards`; with several, each runs `per_shard`,
    /// whose rows `merge` orders (no order: one shard's rows after another's).
    Declare {
        name: String,
        shards: Vec<usize>,
        per_shard: String,
        merge: Box<crate::router::plan::MergeSpec>,
    },
    /// FETCH or MOVE.
    Fetch(Fetch),
    /// `CLOSE name`, or `CLOSE ALL` (None).
    Close(Option<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    pub name: String,
    /// MOVE: the rows are counted, not returned.
    pub is_move: bool,
    /// How many rows forward (None: ALL); None for any other direction, which only a cursor
    /// on one shard can take.
    pub forward: Option<Option<u64>>,
}

fn refuse(message: impl Into<String>, hint: impl Into<String>) -> Plan {
    Plan::Reject(PgError::error(sqlstate::FEATURE_NOT_SUPPORTED, message).with_hint(hint))
}

/// An identifier as PostgreSQL names it.
fn folded(i: &Ident) -> String {
    match i.quote_style {
        None => i.value.to_lowercase(),
        Some(_) => i.value.clone(),
    }
}

/// `params`: the values bound to the DECLARE (extended protocol), which may route it by key.
pub fn plan_declare(stmt: &Statement, placement: &Placement, params: &Params) -> Plan {
    let Statement::Declare { stmts } = stmt else {
        return refuse("not a DECLARE", "");
    };
    let [d] = stmts.as_slice() else {
        return refuse(
            "DECLARE of several cursors at once",
            "Declare one cursor per statement.",
        );
    };
    let (Some(query), [name]) = (&d.for_query, d.names.as_slice()) else {
        return refuse("DECLARE without a query", "");
    };
    let name = folded(name);
    match plan(&Statement::Query(query.clone()), placement, params) {
        Plan::Shard { shard, .. } => Plan::Cursor(CursorCmd::Declare {
            name,
            shards: vec![shard],
            per_shard: String::new(),
            merge: Box::default(),
        }),
        Plan::Scatter { shards, sql, merge } => {
            // Each FETCH can merge the shards' rows by their order, skip and stop, and do
            // nothing else. (A bound LIMIT leaves the shards' text: `picks` tells.)
            let ordered_only = crate::router::plan::MergeSpec {
                order: merge.order.clone(),
                hidden: merge.hidden,
                text: merge.text.clone(),
                limit: merge.limit,
                offset: merge.offset,
                ..Default::default()
            };
            if merge != ordered_only {
                return refuse(
                    "a cursor over several shards cannot DISTINCT, aggregate or take a bound LIMIT",
                    "Its rows are read from each shard's cursor, merged in their ORDER BY. Add a shard-key condition, or run the query without a cursor (shardgate merges it).",
                );
            }
            if d.scroll == Some(true) {
                return refuse(
                    "a SCROLL cursor over several shards is not supported",
                    "A cursor over several shards reads forward only: declare it NO SCROLL.",
                );
            }
            let mut per_shard = d.clone();
            match sqlparser::parser::Parser::parse_sql(
                &sqlparser::dialect::PostgreSqlDialect {},
                &sql,
            )
            .ok()
            .and_then(|v| v.into_iter().next())
            {
                Some(Statement::Query(q)) => per_shard.for_query = Some(q),
                _ => return refuse("this cursor's query could not be split over the shards", ""),
            }
            Plan::Cursor(CursorCmd::Declare {
                name,
                shards,
                per_shard: Statement::Declare {
                    stmts: vec![per_shard],
                }
                .to_string(),
                merge: Box::new(merge),
            })
        }
        other => other,
    }
}

/// The cursor name as written at the end of FETCH, MOVE or CLOSE.
fn name_of(word: &str) -> String {
    match word.strip_prefix('"').and_then(|w| w.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => word.to_lowercase(),
    }
}

/// FETCH / MOVE / CLOSE from their words (sqlparser reads only some forms of them).
pub fn plan_words(sql: &str) -> Option<Plan> {
    let text = sql.trim().trim_end_matches(';').trim_end();
    let words: Vec<&str> = text.split_whitespace().collect();
    let verb = words.first()?.to_ascii_lowercase();
    if verb == "close" {
        return match words.as_slice() {
            [_, all] if all.eq_ignore_ascii_case("all") => {
                Some(Plan::Cursor(CursorCmd::Close(None)))
            }
            [_, name] => Some(Plan::Cursor(CursorCmd::Close(Some(name_of(name))))),
            _ => None,
        };
    }
    if verb != "fetch" && verb != "move" {
        return None;
    }
    let (name, mut middle) = words[1..].split_last()?;
    if let Some((last, rest)) = middle.split_last() {
        if last.eq_ignore_ascii_case("from") || last.eq_ignore_ascii_case("in") {
            middle = rest;
        }
    }
    let lower: Vec<String> = middle.iter().map(|w| w.to_ascii_lowercase()).collect();
    let count = |w: &str| w.parse::<i64>().ok().filter(|n| *n > 0).map(|n| n as u64);
    let forward = match lower
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] | ["next"] | ["forward"] => Some(Some(1)),
        ["all"] | ["forward", "all"] => Some(None),
        [n] | ["forward", n] => count(n).map(Some),
        _ => None,
    };
    Some(Plan::Cursor(CursorCmd::Fetch(Fetch {
        name: name_of(name),
        is_move: verb == "move",
        forward,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetch(sql: &str) -> Fetch {
        match plan_words(sql) {
            Some(Plan::Cursor(CursorCmd::Fetch(f))) => f,
            other => panic!("{sql}: {other:?}"),
        }
    }

    #[test]
    fn fetch_and_move_in_every_spelling() {
        assert_eq!(fetch("FETCH c").forward, Some(Some(1)));
        assert_eq!(fetch("FETCH 5 c").forward, Some(Some(5)));
        assert_eq!(
            fetch("fetch forward 100 from \"My\"\"Cur\"").name,
            "My\"Cur"
        );
        assert_eq!(fetch("FETCH ALL IN C;").forward, Some(None));
        assert_eq!(fetch("FETCH ALL IN C").name, "c");
        assert!(fetch("MOVE FORWARD 3 FROM c").is_move);
        for other in [
            "FETCH PRIOR c",
            "FETCH BACKWARD 2 c",
            "FETCH -1 c",
            "FETCH ABSOLUTE 3 c",
            "FETCH 0 c",
        ] {
            assert_eq!(fetch(other).forward, None, "{other}");
        }
        assert_eq!(
            plan_words("CLOSE ALL"),
            Some(Plan::Cursor(CursorCmd::Close(None)))
        );
        assert_eq!(plan_words("SELECT 1"), None);
    }
}
