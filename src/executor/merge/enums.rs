//! Enum columns in a grouped merge.
//!
//! An enum's values are its labels, each written one way (the label's text, in the text and
//! the binary format alike), and two values are equal exactly when their labels are. So where
//! the merge only tells values apart (GROUP BY, DISTINCT, UNION, count(DISTINCT)), an enum
//! column is grouped as text. Its order is the order its labels were declared in, which the
//! merge does not know: an enum column the merge sorts, takes the least or greatest of,
//! compares in HAVING (where PostgreSQL would also refuse a label the enum lacks), or binds
//! into a computed item keeps its own type and is refused as before. The client sees the
//! enum's type either way: its RowDescription is the shards' own.

use super::collation::{self, Use};
use crate::executor::session::Exec;
use crate::executor::value::oid;
use crate::protocol::inspect::FieldDesc;
use crate::router::aggregate::AggSpec;
use crate::router::plan::{SortKey, HOME};

/// `fields` with each enum column the merge only compares for equality typed as text.
pub async fn labels_as_text(
    exec: &Exec<'_>,
    mut fields: Vec<FieldDesc>,
    spec: &AggSpec,
    order: &[SortKey],
) -> Vec<FieldDesc> {
    let Some(catalog) = exec.catalog else {
        return fields;
    };
    let uses = collation::grouped(spec, order);
    for (i, f) in fields.iter_mut().enumerate() {
        let mut used = uses.iter().filter(|(c, _)| *c == i).map(|(_, how)| *how);
        // HAVING's constant would be compared as text, where PostgreSQL refuses a label the
        // enum does not have.
        let in_having = spec.having.iter().any(|h| h.column == i);
        let only_equality =
            !in_having && used.clone().next().is_some() && used.all(|how| how == Use::Equality);
        // A catalog that cannot be asked leaves the type as it is, which the merge refuses.
        if only_equality && catalog.is_enum(HOME, f.type_oid).await == Ok(true) {
            f.type_oid = oid::TEXT;
        }
    }
    fields
}
