//! Plans for statements over a placement of three shards (two tables sharded by a bigint key,
//! one by text, one reference table), checked without any server.

use super::*;
use crate::config::Config;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

mod aggregates;
mod reads;
mod routing;
mod session;
mod writes;

pub(crate) fn placement() -> Placement {
    let mut text = String::from("[[users]]\nname=\"a\"\nauth=\"trust\"\n");
    for i in 0..3 {
        text.push_str(&format!(
            "[[shards]]\nname=\"s{i}\"\nurl=\"postgres://u@h/db\"\n"
        ));
    }
    text.push_str(
        "[tables.accounts]\nshard_key=\"id\"\nkey_type=\"bigint\"\n\
         [tables.ledger]\nshard_key=\"account_id\"\nkey_type=\"bigint\"\n\
         [tables.users]\nshard_key=\"name\"\nkey_type=\"text\"\n\
         [tables.countries]\nreference=true\n",
    );
    Config::from_toml(&text).unwrap().placement().unwrap()
}

/// The one query `sql` holds.
pub(crate) fn query(sql: &str) -> Query {
    match Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap().pop() {
        Some(Statement::Query(q)) => *q,
        _ => panic!("{sql} is not a query"),
    }
}

/// The plain SELECT `sql` holds.
pub(crate) fn select(sql: &str) -> Select {
    match *query(sql).body {
        SetExpr::Select(s) => *s,
        _ => panic!("{sql} is not a plain SELECT"),
    }
}

pub(super) fn plan_sql(sql: &str) -> Plan {
    let stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
    plan(&stmts[0], &placement(), &Params::default())
}

pub(super) fn shard_of(id: i64) -> usize {
    placement().shard_of(&KeyValue::Integer(id))
}

pub(super) fn sort_columns(merge: &MergeSpec) -> Vec<SortColumn> {
    merge.order.iter().map(|k| k.column.clone()).collect()
}

pub(super) fn code(p: &Plan) -> &str {
    match p {
        Plan::Reject(e) => e.code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}
