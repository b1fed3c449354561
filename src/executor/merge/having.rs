//! HAVING over merged groups. The planner makes the whole condition one boolean column (an
//! aggregate such as bool_or, a group column, or the condition computed after the merge by one
//! shard, see `merge::computed`), so PostgreSQL itself reads the constants and picks the
//! operators; the merge only keeps the groups where that column is true. False and NULL drop a
//! group, as in PostgreSQL.

use super::aggregate::Row;
use crate::error::PgError;
use crate::executor::value::oid;
use crate::protocol::inspect::FieldDesc;

/// PostgreSQL's error for a HAVING that is not a condition (`HAVING count(*)`), which the
/// shards never see: they are sent the query without its HAVING.
pub fn check(fields: &[FieldDesc], column: usize) -> Result<(), PgError> {
    match fields.get(column) {
        Some(f) if f.type_oid == oid::BOOL => Ok(()),
        Some(f) => Err(PgError::error(
            "42804",
            format!(
                "argument of HAVING must be type boolean, not type {}",
                crate::sql::builtin_types::formatted(f.type_oid)
                    .unwrap_or_else(|| crate::sql::builtin_types::described(f.type_oid))
            ),
        )),
        None => Err(PgError::error(
            crate::error::sqlstate::INTERNAL_ERROR,
            "HAVING reads a column the shards did not return",
        )),
    }
}

/// The groups whose HAVING column is true, in text ('t') or binary (1).
pub fn keep(rows: Vec<Row>, column: usize) -> Vec<Row> {
    rows.into_iter()
        .filter(|row| {
            matches!(
                row.get(column).and_then(|v| v.as_deref()),
                Some(b"t") | Some([1])
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn field(type_oid: u32) -> FieldDesc {
        FieldDesc {
            name: "h".into(),
            table_oid: 0,
            column: 0,
            type_oid,
            typmod: -1,
            format: 0,
        }
    }

    #[test]
    fn only_true_keeps_a_group() {
        let row = |v: Option<&'static [u8]>| {
            vec![Some(Bytes::from_static(b"k")), v.map(Bytes::from_static)]
        };
        let rows = vec![
            row(Some(b"t")),
            row(Some(b"f")),
            row(None),
            row(Some(&[1])),
            row(Some(&[0])),
        ];
        let kept = keep(rows, 1);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0][1].as_deref(), Some(&b"t"[..]));
        assert_eq!(kept[1][1].as_deref(), Some(&[1u8][..]));
    }

    #[test]
    fn a_having_that_is_no_condition_is_postgresqls_error() {
        assert!(check(&[field(oid::INT4), field(oid::BOOL)], 1).is_ok());
        let e = check(&[field(oid::INT8)], 0).unwrap_err();
        assert_eq!(e.code, "42804");
        assert_eq!(
            e.message,
            "argument of HAVING must be type boolean, not type bigint"
        );
        assert_eq!(check(&[], 0).unwrap_err().code, "XX000");
    }
}
