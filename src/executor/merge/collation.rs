//! Whether the merge may compare the text it compares by its bytes, as it does.
//!
//! PostgreSQL compares text under a collation. The merge sorts text by code point and tells
//! values apart by their bytes, which agrees with PostgreSQL only when the collation orders
//! by code point (for sorting and min/max), when it is deterministic (for grouping and
//! DISTINCT: a deterministic collation calls two strings equal only when their bytes are), and
//! when it is the database's default (for text a computed item's template reads again, which
//! is evaluated under the default). Otherwise, the merge would keep 'A' and 'a' apart under a
//! case-insensitive collation, or put 'Z' before 'a' under a linguistic one, so the query is
//! refused.
//!
//! A RowDescription names the table column a result column comes straight from, whose own
//! collation the catalog gives. Text computed from columns takes the collation of one of the
//! columns it reads, of a domain it is cast to, or one it names with COLLATE; the statement's
//! tables (`TextScope`) bound which, and any of them that would not do refuses it. A set
//! operation's columns combine its branches', so they are judged the same way.

use super::Exec;
use crate::backend::catalog::collations::Collation;
use crate::error::{sqlstate, PgError};
use crate::executor::value;
use crate::protocol::inspect::FieldDesc;
use crate::router::aggregate::{AggColumn, AggSpec};
use crate::router::plan::{SortColumn, SortKey, TextScope, HOME};

/// What the merge does with a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Sorts by it, or keeps its least or greatest value.
    Order,
    /// Groups by it or keeps its distinct values.
    Equality,
    /// Binds it into a computed item's template, evaluated under the default collation.
    Evaluated,
}

impl Use {
    fn allows(self, c: &Collation, database_c: bool) -> bool {
        match self {
            Use::Order => c.by_code_point(database_c),
            Use::Equality => c.deterministic,
            Use::Evaluated => c.like_default(database_c),
        }
    }

    fn what(self) -> &'static str {
        match self {
            Use::Order => "ordering or min/max of",
            Use::Equality => "grouping or DISTINCT of",
            Use::Evaluated => "computing an item from",
        }
    }

    fn why(self) -> &'static str {
        match self {
            Use::Order => "which does not order by code point as the merge does",
            Use::Equality => {
                "which is nondeterministic: it calls strings equal whose bytes the merge tells apart"
            }
            Use::Evaluated => {
                "while the item is computed under the database's default collation"
            }
        }
    }
}

/// The columns a grouped merge compares, and how: its group columns and distinct values
/// (equality), min/max and sort keys (order), and the parts computed items (HAVING's among
/// them) read again.
pub fn grouped(spec: &AggSpec, order: &[SortKey]) -> Vec<(usize, Use)> {
    let mut compared = vec![];
    for (i, col) in spec.columns.iter().enumerate() {
        match col {
            AggColumn::Group | AggColumn::DistinctValue { .. } => compared.push((i, Use::Equality)),
            AggColumn::Min | AggColumn::Max => compared.push((i, Use::Order)),
            AggColumn::Computed { parts, .. } => {
                compared.extend(parts.iter().map(|&p| (p, Use::Evaluated)))
            }
            _ => {}
        }
    }
    for k in order.iter().filter(|k| !k.bytewise) {
        if let SortColumn::Position(p) = k.column {
            compared.push((p - 1, Use::Order));
        }
    }
    compared
}

/// The refusal, if any of the columns `compared` (index into `fields`, and its use) holds
/// text the merge cannot compare as PostgreSQL does.
pub async fn problem(
    exec: &Exec<'_>,
    fields: &[FieldDesc],
    compared: &[(usize, Use)],
    scope: &TextScope,
) -> Option<PgError> {
    // What `COLLATE "C"` on a select item pins its column to.
    let pinned = Collation {
        name: "C".into(),
        deterministic: true,
    };
    for &(i, how) in compared {
        let Some(f) = fields.get(i) else { continue };
        // Arrays of text compare their elements under the column's collation: sorted and
        // grouped by the merge, or ordered and deduplicated by an evaluation of text gathered
        // into them (see `router::gathered`).
        let text = value::is_text(f.type_oid) || value::is_text_array(f.type_oid);
        if !text {
            continue;
        }
        if scope.code_point.contains(&i) && how.allows(&pinned, exec.text_order_c) {
            continue;
        }
        if let Err(e) = judge(exec, f, how, scope).await {
            return Some(e);
        }
    }
    None
}

async fn judge(exec: &Exec<'_>, f: &FieldDesc, how: Use, scope: &TextScope) -> Result<(), PgError> {
    let database_c = exec.text_order_c;
    let Some(catalog) = exec.catalog else {
        return Ok(());
    };
    let lookup_failed = |e: String| lookup_failed(&f.name, e);
    if f.table_oid != 0 && f.column > 0 && !scope.set_operation {
        let c = catalog
            .column_collation(HOME, f.table_oid, f.column)
            .await
            .map_err(lookup_failed)?
            .unwrap_or_else(Collation::default_collation);
        // The evaluation gives a column's value its column's collation.
        return match how == Use::Evaluated || how.allows(&c, database_c) {
            true => Ok(()),
            false => Err(refusal(how, &f.name, &format!("collation {}", c.name))),
        };
    }
    if scope.named_collation {
        return Err(refusal(how, &f.name, "a collation the statement names"));
    }
    for table in &scope.tables {
        let Some(used) = catalog
            .table_collations(HOME, table)
            .await
            .map_err(lookup_failed)?
        else {
            return Err(refusal(
                how,
                &f.name,
                &format!("the collations of table {table}, which the first shard's catalog does not show"),
            ));
        };
        if let Some(c) = used.iter().find(|c| !how.allows(c, database_c)) {
            return Err(refusal(
                how,
                &f.name,
                &format!(
                    "collation {} (of a column of {table} or of a domain)",
                    c.name
                ),
            ));
        }
    }
    Ok(())
}

/// The COLLATE clause a value of column `column` of table `table_oid` needs to compare as the
/// column's own values do, read from the first shard's catalog (None: its type's own
/// collation). `name` is the column as the client sees it, for the error.
pub async fn column_clause(
    catalog: &crate::backend::catalog::Catalog,
    (table_oid, column): (u32, i16),
    name: &str,
) -> Result<Option<String>, PgError> {
    catalog
        .column_collation_clause(HOME, table_oid, column)
        .await
        .map_err(|e| lookup_failed(name, e))
}

fn lookup_failed(column: &str, e: String) -> PgError {
    PgError::error(
        sqlstate::FEATURE_NOT_SUPPORTED,
        format!("cannot tell the collation of column {column}: {e}"),
    )
}

fn refusal(how: Use, column: &str, under: &str) -> PgError {
    // The proxy's own hidden columns mean nothing to the client.
    let column = match column.starts_with("__shardgate") {
        true => "(a value the merge compares)".to_string(),
        false => format!("\"{column}\""),
    };
    PgError::error(
        sqlstate::FEATURE_NOT_SUPPORTED,
        format!(
            "{} text column {column} over several shards: it may be under {under}, {}",
            how.what(),
            how.why()
        ),
    )
    .with_hint(
        "Add a shard-key condition so the query runs on one shard, or compare under COLLATE \"C\" (on a plain column, select the column itself).",
    )
}
