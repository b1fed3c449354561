//! CREATE TABLE of a sharded table, and ALTER TABLE of its key column's type: the columns the
//! proxy depends on must be of a kind it can route by. Also the relations made from a query
//! over sharded tables (CREATE TABLE ... AS, SELECT ... INTO, views), which each shard would
//! make from its own rows.
//!
//! The proxy places a row by hashing its key as the declared `key_type` reads it. A key column
//! of another type would compare otherwise on the shards: `char(n)` ignores trailing blanks
//! (`'ab'` and `'ab '` are one key to PostgreSQL, two hashes to the proxy), `citext` ignores
//! case, a float rounds. Rows would then be stored on one shard and looked for on another, so
//! such a table is refused before any shard creates it. A collation is judged after the
//! statement runs, by the shards' catalogs, which alone tell whether it is deterministic
//! (`executor::key_columns`), as are the forms this module cannot read. Sequence columns are
//! filled by the proxy from one cluster-wide sequence (see `executor::key_sequence`), which
//! GENERATED ALWAYS forbids and a text or uuid key cannot take.

use super::*;
use sqlparser::ast::{
    AlterColumnOperation, AlterTable, AlterTableOperation, ColumnDef, CreateTable, DataType,
};

pub(super) fn plan_create_table(ct: &CreateTable, placement: &Placement) -> Plan {
    if ct
        .query
        .as_ref()
        .is_some_and(|q| !relations(q.as_ref(), placement).sharded.is_empty())
    {
        return made_from_shards("CREATE TABLE ... AS");
    }
    let Some(TableRule::Sharded {
        key_column,
        key_type,
    }) = placement.rule(&ct.name.to_string())
    else {
        return Plan::Broadcast {
            transactional: true,
        };
    };
    let key = ct
        .columns
        .iter()
        .find(|c| c.name.value.eq_ignore_ascii_case(key_column));
    if let Some(col) = key.filter(|c| !routable_as(&c.data_type, *key_type)) {
        return refused_type(&col.name, &ct.name, &col.data_type, *key_type);
    }
    for col in &ct.columns {
        if let Some(refusal) = sequence_refusal(ct, col, key_column, *key_type) {
            return refusal;
        }
    }
    Plan::Broadcast {
        transactional: true,
    }
}

/// ALTER TABLE: refused where it gives a sharded table's key column a type it cannot be routed
/// by; otherwise run on every shard.
pub(super) fn plan_alter_table(at: &AlterTable, placement: &Placement) -> Plan {
    if let Some(TableRule::Sharded {
        key_column,
        key_type,
    }) = placement.rule(&at.name.to_string())
    {
        for op in &at.operations {
            if let AlterTableOperation::AlterColumn {
                column_name,
                op: AlterColumnOperation::SetDataType { data_type, .. },
            } = op
            {
                if column_name.value.eq_ignore_ascii_case(key_column)
                    && !routable_as(data_type, *key_type)
                {
                    return refused_type(column_name, &at.name, data_type, *key_type);
                }
            }
        }
    }
    Plan::Broadcast {
        transactional: true,
    }
}

/// CREATE INDEX: run on every shard, in a transaction where it can be (see
/// `backend::per_shard_constraints`, which judges a unique index once it is made).
/// CONCURRENTLY runs outside any transaction, so nothing could be taken back: a unique one on
/// a sharded table that does not name its shard key among its columns is refused before it is
/// built.
pub(super) fn plan_create_index(ci: &sqlparser::ast::CreateIndex, placement: &Placement) -> Plan {
    if !ci.concurrently {
        return Plan::Broadcast {
            transactional: true,
        };
    }
    if let Some(TableRule::Sharded { key_column, .. }) = placement.rule(&ci.table_name.to_string())
    {
        let names_key = ci.columns.iter().any(|c| {
            matches!(&c.column.expr, sqlparser::ast::Expr::Identifier(id)
                if id.value.eq_ignore_ascii_case(key_column))
        });
        if ci.unique && !names_key {
            return refuse(
                format!(
                    "a unique index on sharded table {} without its shard key {key_column} cannot be built CONCURRENTLY: each shard would enforce it on its own rows only",
                    ci.table_name
                ),
                "Include the shard key among the index's columns. An index over a column filled from a sequence (serial or identity) is accepted without CONCURRENTLY.",
            );
        }
    }
    Plan::Broadcast {
        transactional: false,
    }
}

fn refused_type(column: &Ident, table: &ObjectName, t: &DataType, key_type: KeyType) -> Plan {
    refuse(
        format!(
            "the shard key {column} of {table} would be of type {t}, which does not compare as its key_type {} does",
            key_type.name()
        ),
        "Give the key column the declared type (bigint, integer or smallint for an integer key; text or varchar for a text key; uuid), or declare the key_type it has.",
    )
}

/// Whether a column of type `t` holds keys that compare and hash as `key_type` reads them.
fn routable_as(t: &DataType, key_type: KeyType) -> bool {
    match key_type {
        KeyType::Integer => {
            super::super::keys::is_integer_type(t)
                || matches!(t, DataType::Custom(name, _) if is_serial(&last_ident(name)))
        }
        KeyType::Text => matches!(
            t,
            DataType::Text | DataType::Varchar(_) | DataType::CharacterVarying(_)
        ),
        KeyType::Uuid => matches!(t, DataType::Uuid),
    }
}

pub(super) fn is_serial(name: &str) -> bool {
    [
        "serial",
        "bigserial",
        "smallserial",
        "serial2",
        "serial4",
        "serial8",
    ]
    .iter()
    .any(|s| name.eq_ignore_ascii_case(s))
}

/// A sequence column the proxy cannot fill: GENERATED ALWAYS, or a key that is not an integer.
fn sequence_refusal(
    ct: &CreateTable,
    col: &ColumnDef,
    key_column: &str,
    key_type: KeyType,
) -> Option<Plan> {
    let text = col.to_string().to_ascii_uppercase();
    if !(text.contains("SERIAL") || text.contains("AS IDENTITY") || text.contains("NEXTVAL(")) {
        return None;
    }
    let is_key = col.name.value.eq_ignore_ascii_case(key_column);
    // The proxy fills such a column from one sequence on the first shard; a key must be an
    // integer key to be routed by it.
    let integer_key = !is_key || key_type == KeyType::Integer;
    if integer_key && !text.contains("GENERATED ALWAYS") {
        return None;
    }
    let (message, hint) = if integer_key {
        (
            format!("column {} of sharded table {} is GENERATED ALWAYS, which forbids the value shardgate gives it from the cluster's one sequence", col.name, ct.name),
            "Use serial, bigserial or GENERATED BY DEFAULT AS IDENTITY.",
        )
    } else {
        (
            format!("the shard key {} of {} takes values from a sequence, but its key_type is not an integer type", col.name, ct.name),
            "Declare an integer key_type, or give text and uuid keys in the INSERT.",
        )
    };
    Some(refuse(message, hint))
}

/// The refusal of a table made from a query over sharded tables (`CREATE TABLE ... AS`,
/// `SELECT ... INTO`): each shard would make its copy from its own rows, neither a reference
/// table's full copies nor rows placed by a key.
pub(super) fn made_from_shards(what: &str) -> Plan {
    refuse(
        format!("{what} over sharded tables is not supported: each shard would fill its table from its own rows only"),
        "Create the table, declare it, then fill it with INSERT ... SELECT, which places each row by its key.",
    )
}

/// A view over sharded tables is read where its name says: declared sharded, it is read on
/// every shard like a table (its key is the declarer's promise); read as a reference table or
/// on one named shard, it would show one shard's rows only, so it is refused when made.
pub(super) fn plan_create_view(cv: &sqlparser::ast::CreateView, placement: &Placement) -> Plan {
    let over_shards = !relations(cv.query.as_ref(), placement).sharded.is_empty();
    match placement.rule(&cv.name.to_string()) {
        Some(TableRule::Reference | TableRule::Pinned { .. }) if over_shards => refuse(
            format!(
                "a view over sharded tables named {} would be read on one shard, as an undeclared table",
                cv.name
            ),
            "Declare the view in the config as sharded by the key of the table it shows, or query the sharded tables themselves.",
        ),
        _ => Plan::Broadcast {
            transactional: true,
        },
    }
}
