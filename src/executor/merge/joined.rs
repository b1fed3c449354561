//! Partials that concatenate: each shard's string_agg, array_agg or jsonb_agg of a group holds
//! that shard's values, and the group's answer holds them all, shard after shard. Without an
//! ORDER BY in the call (the planner refuses one) PostgreSQL promises no order of the values
//! either, so this is an answer one server could give.
//!
//! Invariant: a partial whose form the concatenation cannot take apart exactly (a
//! multidimensional array, an array with other bounds, an element type whose text form is
//! separated by something else than a comma) is refused, never joined by guess.

use super::rows::unsupported;
use crate::error::{sqlstate, PgError};
use crate::executor::value::oid;
use crate::protocol::inspect::FieldDesc;
use crate::router::aggregate::Concatenation;
use bytes::{BufMut, Bytes, BytesMut};

/// `box[]`: the one built-in array type whose text form separates elements with `;`.
const BOX_ARRAY: u32 = 1020;
const JSONB: u32 = 3802;
/// The version byte that starts jsonb's binary form.
const JSONB_VERSION: u8 = 1;

/// Whether the shards' column can be concatenated as `how` says.
pub(super) fn fits(how: &Concatenation, f: &FieldDesc) -> bool {
    match how {
        // A text's binary form is its bytes, as its text form is; bytea's is not.
        Concatenation::Strings { .. } => f.type_oid == oid::TEXT,
        Concatenation::Arrays => f.format == 1 || f.type_oid != BOX_ARRAY,
        Concatenation::JsonbArrays => f.type_oid == JSONB,
    }
}

/// The group's answer from its shards' partials (NULLs left out), in the column's format.
pub(super) fn finish(
    how: &Concatenation,
    f: &FieldDesc,
    parts: Vec<Bytes>,
) -> Result<Option<Bytes>, PgError> {
    if parts.len() <= 1 {
        return Ok(parts.into_iter().next());
    }
    let joined = match (how, f.format) {
        (Concatenation::Strings { separator }, _) => parts.join(&separator[..]),
        (Concatenation::Arrays, 1) => binary_arrays(&parts)?,
        (Concatenation::Arrays, _) => {
            let mut inner = Vec::with_capacity(parts.len());
            for p in &parts {
                // `{{...}}` is an array of arrays, `[0:1]={...}` one with other bounds.
                match p.strip_prefix(b"{").and_then(|p| p.strip_suffix(b"}")) {
                    Some(i) if !i.starts_with(b"{") => inner.push(i),
                    _ => return Err(cannot(&f.name)),
                }
            }
            [&b"{"[..], &inner.join(&b","[..]), b"}"].concat()
        }
        (Concatenation::JsonbArrays, format) => {
            let version: &[u8] = if format == 1 { &[JSONB_VERSION] } else { &[] };
            let mut inner = Vec::with_capacity(parts.len());
            for p in &parts {
                match p
                    .strip_prefix(version)
                    .and_then(|p| p.strip_prefix(b"["))
                    .and_then(|p| p.strip_suffix(b"]"))
                {
                    Some(i) => inner.push(i),
                    None => return Err(cannot(&f.name)),
                }
            }
            // jsonb writes its arrays' elements apart by a comma and a blank.
            [version, b"[", &inner.join(&b", "[..]), b"]"].concat()
        }
    };
    Ok(Some(Bytes::from(joined)))
}

/// One-dimensional arrays in binary form: ndim, has-nulls flag, element type, then length and
/// lower bound, then each element's length (-1 for NULL) and bytes.
fn binary_arrays(parts: &[Bytes]) -> Result<Vec<u8>, PgError> {
    let int = |b: &[u8], at: usize| -> Option<i32> {
        Some(i32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    let (mut count, mut has_nulls, mut element) = (0i32, 0i32, None);
    let mut elements = Vec::new();
    for p in parts {
        let header = (int(p, 0), int(p, 4), int(p, 8), int(p, 12), int(p, 16));
        let (Some(1), Some(nulls), Some(ty), Some(len), Some(1)) = header else {
            return Err(unsupported(
                "array_agg of arrays, or of arrays with other bounds, across shards is not supported".into(),
            ));
        };
        if *element.get_or_insert(ty) != ty {
            return Err(PgError::error(
                sqlstate::PROTOCOL_VIOLATION,
                "shards returned arrays of different element types for one column",
            ));
        }
        count = count.checked_add(len).ok_or_else(too_long)?;
        has_nulls |= nulls;
        elements.extend_from_slice(&p[20..]);
    }
    let mut out = BytesMut::with_capacity(20 + elements.len());
    for v in [1, has_nulls, element.unwrap_or(0), count, 1] {
        out.put_i32(v);
    }
    out.extend_from_slice(&elements);
    Ok(out.to_vec())
}

fn too_long() -> PgError {
    PgError::error(
        sqlstate::PROGRAM_LIMIT_EXCEEDED,
        "the merged array would hold too many elements",
    )
}

fn cannot(column: &str) -> PgError {
    unsupported(format!(
        "concatenating the shards' values of column {column} is not supported: an array of arrays or with other bounds"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(type_oid: u32, format: i16) -> FieldDesc {
        FieldDesc {
            name: "a".into(),
            table_oid: 0,
            column: 0,
            type_oid,
            typmod: -1,
            format,
        }
    }

    fn parts(p: &[&'static [u8]]) -> Vec<Bytes> {
        p.iter().map(|b| Bytes::from_static(b)).collect()
    }

    #[test]
    fn text_arrays_and_jsonb_join_their_elements() {
        let arrays = finish(
            &Concatenation::Arrays,
            &field(1007, 0),
            parts(&[b"{1,2}", b"{NULL}", b"{\"{x\"}"]),
        );
        assert_eq!(arrays.unwrap().unwrap(), &b"{1,2,NULL,\"{x\"}"[..]);
        let jsonb = finish(
            &Concatenation::JsonbArrays,
            &field(JSONB, 0),
            parts(&[b"[1, {\"a\": [2]}]", b"[\"b\"]"]),
        );
        assert_eq!(jsonb.unwrap().unwrap(), &b"[1, {\"a\": [2]}, \"b\"]"[..]);
        let binary = finish(
            &Concatenation::JsonbArrays,
            &field(JSONB, 1),
            parts(&[b"\x01[1]", b"\x01[2, 3]"]),
        );
        assert_eq!(binary.unwrap().unwrap(), &b"\x01[1, 2, 3]"[..]);
        let one = finish(&Concatenation::Arrays, &field(1007, 0), parts(&[b"{1}"]));
        assert_eq!(one.unwrap().unwrap(), &b"{1}"[..]);
    }

    #[test]
    fn nested_or_bounded_arrays_are_refused() {
        for p in [&b"{{1,2}}"[..], b"[0:1]={1,2}"] {
            let r = finish(
                &Concatenation::Arrays,
                &field(1007, 0),
                vec![Bytes::from_static(b"{3}"), Bytes::copy_from_slice(p)],
            );
            assert_eq!(r.unwrap_err().code, "0A000");
        }
        assert!(!fits(&Concatenation::Arrays, &field(BOX_ARRAY, 0)));
        assert!(fits(&Concatenation::Arrays, &field(BOX_ARRAY, 1)));
    }

    fn binary_array(element: i32, values: &[Option<i32>]) -> Bytes {
        let mut b = BytesMut::new();
        let nulls = values.iter().any(Option::is_none) as i32;
        for v in [1, nulls, element, values.len() as i32, 1] {
            b.put_i32(v);
        }
        for v in values {
            match v {
                Some(v) => {
                    b.put_i32(4);
                    b.put_i32(*v);
                }
                None => b.put_i32(-1),
            }
        }
        b.freeze()
    }

    #[test]
    fn binary_arrays_add_up_lengths_and_nulls() {
        let got = finish(
            &Concatenation::Arrays,
            &field(1007, 1),
            vec![
                binary_array(23, &[Some(1), Some(2)]),
                binary_array(23, &[None, Some(3)]),
            ],
        );
        assert_eq!(
            got.unwrap().unwrap(),
            binary_array(23, &[Some(1), Some(2), None, Some(3)])
        );
        let mixed = finish(
            &Concatenation::Arrays,
            &field(1007, 1),
            vec![binary_array(23, &[Some(1)]), binary_array(20, &[Some(2)])],
        );
        assert!(mixed.is_err());
        let mut two_dims = BytesMut::new();
        for v in [2, 0, 23, 1, 1, 1, 1, 4, 5] {
            two_dims.put_i32(v);
        }
        let nested = finish(
            &Concatenation::Arrays,
            &field(1007, 1),
            vec![binary_array(23, &[Some(1)]), two_dims.freeze()],
        );
        assert_eq!(nested.unwrap_err().code, "0A000");
    }
}
