//! Enum columns in a merge.
//!
//! An enum's values are its labels, each written one way (the label's text, in the text and
//! the binary format alike), and two values are equal exactly when their labels are. So where
//! the merge only tells values apart (GROUP BY, DISTINCT, UNION, count(DISTINCT)), an enum
//! column is grouped as text. Its order is the order its labels were declared in, read from
//! the catalog (`EnumOrder`): rows are sorted by it, plain or grouped, once every shard the
//! statement reads has declared the same labels in the same order (the shards sort their own
//! rows by their own declaration), and min/max combine by it. An enum column compared in
//! HAVING (where PostgreSQL would also refuse a label the enum lacks) or bound into a computed
//! item keeps its own type and is refused as before. The client sees the
//! enum's type either way: its RowDescription is the shards' own.

use super::collation::{self, Use};
use crate::error::{sqlstate, PgError};
use crate::executor::session::Exec;
use crate::executor::value::{oid, SortValue};
use crate::protocol::inspect::FieldDesc;
use crate::router::aggregate::{AggColumn, AggSpec};
use crate::router::plan::{SortColumn, SortKey, HOME};
use std::collections::HashMap;
use std::sync::Arc;

/// Enum columns' declared orders, by column.
pub type Enums = HashMap<usize, Arc<EnumOrder>>;

/// An enum's order, as the merge sorts by it.
#[derive(Debug)]
pub struct EnumOrder {
    /// Each label's place in the declaration.
    ranks: HashMap<Vec<u8>, i64>,
}

impl EnumOrder {
    fn new(labels: &[String]) -> EnumOrder {
        EnumOrder {
            ranks: labels
                .iter()
                .enumerate()
                .map(|(i, l)| (l.as_bytes().to_vec(), i as i64))
                .collect(),
        }
    }

    /// A value's sort key: its label's place. A label the proxy did not read (added on a
    /// shard since) is an error, never a guess.
    pub fn value(&self, raw: Option<&[u8]>) -> Result<SortValue, String> {
        let Some(label) = raw else {
            return Ok(SortValue::Null);
        };
        self.ranks
            .get(label)
            .map(|&r| SortValue::Int(r))
            .ok_or_else(|| {
                format!(
                    "enum label {:?} is not among the labels the proxy read for its type; \
                 run the statement again",
                    String::from_utf8_lossy(label)
                )
            })
    }
}

/// The order of type `type_oid` (the first shard's number) if it is an enum that every shard
/// in `shards` declares alike; `Ok(None)` for any other type, or when the catalog cannot say.
pub async fn order_of(
    exec: &Exec<'_>,
    shards: &[usize],
    type_oid: u32,
) -> Result<Option<Arc<EnumOrder>>, PgError> {
    let Some(catalog) = exec.catalog else {
        return Ok(None);
    };
    let Ok(Some(labels)) = catalog.enum_labels(HOME, type_oid).await else {
        return Ok(None);
    };
    for &s in shards.iter().filter(|&&s| s != HOME) {
        let theirs = match catalog.translate_type(HOME, s, type_oid).await {
            Ok(o) => catalog.enum_labels(s, o).await.ok().flatten(),
            Err(_) => None,
        };
        if theirs.as_ref() != Some(&labels) {
            return Err(PgError::error(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!(
                    "an enum type (OID {type_oid}) is declared with other labels or in another \
                     order on shard {} than on shard {}, so their rows cannot be sorted together",
                    catalog.shard_name(s),
                    catalog.shard_name(HOME)
                ),
            )
            .with_hint(
                "Declare the enum alike on every shard: ALTER TYPE ... ADD VALUE through the \
                 proxy reaches them all.",
            ));
        }
    }
    Ok(Some(Arc::new(EnumOrder::new(&labels))))
}

/// What a grouped merge does with its enum columns.
#[derive(Default)]
pub struct Grouped {
    /// The fields, each enum column the merge only groups (and perhaps sorts) typed as text.
    pub fields: Vec<FieldDesc>,
    /// The declared orders of the enum columns ORDER BY sorts or min/max combine, by column.
    pub orders: Enums,
}

/// Decides, for each enum column of a grouped merge, how it is merged: grouped as text where
/// it is a group column compared only for equality, sorted by its declared order where ORDER
/// BY names it, and min/max combined by that order.
pub async fn grouped(
    exec: &Exec<'_>,
    shards: &[usize],
    mut fields: Vec<FieldDesc>,
    spec: &AggSpec,
    order: &[SortKey],
) -> Result<Grouped, PgError> {
    let Some(catalog) = exec.catalog else {
        return Ok(Grouped {
            fields,
            ..Grouped::default()
        });
    };
    let uses = collation::grouped(spec, order);
    let mut orders = HashMap::new();
    for (i, f) in fields.iter_mut().enumerate() {
        let sorted = order
            .iter()
            .any(|k| k.column == SortColumn::Position(i + 1));
        let column = spec.columns.get(i);
        let group = matches!(
            column,
            Some(AggColumn::Group | AggColumn::DistinctValue { .. })
        );
        let best = matches!(column, Some(AggColumn::Min | AggColumn::Max));
        let used: Vec<Use> = uses
            .iter()
            .filter(|(c, _)| *c == i)
            .map(|(_, how)| *how)
            .collect();
        let fits = !used.is_empty()
            && if group {
                // Sorting is by the declared order, below.
                used.iter()
                    .all(|&how| how == Use::Equality || (how == Use::Order && sorted))
            } else {
                // A min or max read by an item computed after the merge is bound in the
                // enum's own type, which it keeps.
                best && used
                    .iter()
                    .all(|&how| how == Use::Order || how == Use::Evaluated)
            };
        // A catalog that cannot be asked leaves the type as it is, which the merge refuses.
        if !fits || catalog.is_enum(HOME, f.type_oid).await != Ok(true) {
            continue;
        }
        if sorted || best {
            match order_of(exec, shards, f.type_oid).await? {
                Some(o) => {
                    orders.insert(i, o);
                }
                None => continue,
            }
        }
        // Grouped by its label; min and max keep the enum's type, compared by `orders`.
        if group {
            f.type_oid = oid::TEXT;
        }
    }
    Ok(Grouped { fields, orders })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_sort_by_their_place_in_the_declaration_and_an_unknown_one_is_an_error() {
        let order = EnumOrder::new(&["sad".into(), "ok".into(), "happy".into()]);
        assert_eq!(order.value(Some(b"happy")), Ok(SortValue::Int(2)));
        assert_eq!(order.value(Some(b"sad")), Ok(SortValue::Int(0)));
        assert_eq!(order.value(None), Ok(SortValue::Null));
        assert!(order.value(Some(b"glad")).is_err());
    }
}
