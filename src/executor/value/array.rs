//! Arrays of the merge's sort types read back from either output form and ordered as
//! PostgreSQL's `array_cmp` orders them, so that the merge can sort and group array columns
//! (Django's `ArrayField`, SQLAlchemy's `ARRAY`).
//!
//! PostgreSQL compares two arrays element by element in storage order (row-major), a NULL
//! element above any value, as far as the shorter goes; then by the number of elements, the
//! number of dimensions, each dimension's length, and each lower bound. Equal arrays are equal
//! element by element, numeric `1.0` = `1.00` among them, so groups key by the elements'
//! equality keys and the shape.
//!
//! Text elements compare bytewise here, PostgreSQL's order only under the C collation (the
//! caller checks the column's collation, as for text).

use super::{compare as compare_values, decode, SortValue};
use std::cmp::Ordering;

/// An array's shape and its elements in storage order (None: NULL).
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// Per dimension, its lower bound and length.
    pub dims: Vec<(i32, usize)>,
    pub elems: Vec<Option<SortValue>>,
}

/// The element type of the array types the merge reads: those of its sort types but char(n)
/// (whose trailing blanks compare as none), name and jsonb.
pub fn element_of(array_oid: u32) -> Option<u32> {
    Some(match array_oid {
        1000 => 16,
        1001 => 17,
        1005 => 21,
        1007 => 23,
        1016 => 20,
        1009 => 25,
        1015 => 1043,
        1028 => 26,
        1021 => 700,
        1022 => 701,
        1182 => 1082,
        1183 => 1083,
        1115 => 1114,
        1185 => 1184,
        1187 => 1186,
        1270 => 1266,
        1231 => 1700,
        2951 => 2950,
        _ => return None,
    })
}

/// PostgreSQL's array order.
pub fn compare(a: &Array, b: &Array) -> Ordering {
    for (x, y) in a.elems.iter().zip(&b.elems) {
        let o = match (x, y) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(x), Some(y)) => compare_values(x, y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    let lens = |a: &Array| a.dims.iter().map(|d| d.1).collect::<Vec<_>>();
    let lower = |a: &Array| a.dims.iter().map(|d| d.0).collect::<Vec<_>>();
    a.elems
        .len()
        .cmp(&b.elems.len())
        .then(a.dims.len().cmp(&b.dims.len()))
        .then_with(|| lens(a).cmp(&lens(b)))
        .then_with(|| lower(a).cmp(&lower(b)))
}

/// An array in binary form: dimensions, a NULL flag, the element type, each dimension's length
/// and lower bound, then each element's length (-1: NULL) and bytes.
pub fn from_binary(elem_oid: u32, raw: &[u8]) -> Option<Array> {
    let mut rest = raw;
    let ndim = usize::try_from(take_int(&mut rest)?)
        .ok()
        .filter(|&n| n <= 6)?;
    let _has_null = take_int(&mut rest)?;
    if take_int(&mut rest)? as u32 != elem_oid {
        return None;
    }
    let mut dims = Vec::with_capacity(ndim);
    let mut items = usize::from(ndim > 0);
    for _ in 0..ndim {
        let len = usize::try_from(take_int(&mut rest)?).ok()?;
        let lower = take_int(&mut rest)?;
        items = items.checked_mul(len)?;
        dims.push((lower, len));
    }
    let mut elems = Vec::with_capacity(items.min(rest.len() / 4));
    for _ in 0..items {
        let Ok(len) = usize::try_from(take_int(&mut rest)?) else {
            elems.push(None);
            continue;
        };
        let bytes = rest.get(..len)?;
        rest = &rest[len..];
        elems.push(Some(decode(elem_oid, 1, Some(bytes)).ok()?));
    }
    rest.is_empty().then_some(Array { dims, elems })
}

fn take_int(rest: &mut &[u8]) -> Option<i32> {
    let v = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    *rest = &rest[4..];
    Some(v)
}

/// An array as `array_out` writes it: `{1,2,NULL}`, `{{"a b","c"},{d,e}}`, with
/// `[0:1]={...}` in front when a lower bound is not 1.
pub fn from_text(elem_oid: u32, s: &str) -> Option<Array> {
    let b = s.as_bytes();
    let mut at = 0;
    let mut declared = Vec::new();
    while b.get(at) == Some(&b'[') {
        let close = at + b[at..].iter().position(|&c| c == b']')?;
        let (lo, hi) = s[at + 1..close].split_once(':')?;
        let (lo, hi): (i32, i32) = (lo.parse().ok()?, hi.parse().ok()?);
        declared.push((lo, usize::try_from(i64::from(hi) - i64::from(lo) + 1).ok()?));
        at = close + 1;
    }
    if !declared.is_empty() {
        if b.get(at) != Some(&b'=') {
            return None;
        }
        at += 1;
    }
    // Per open brace, the number of items (elements or sub-arrays) in it; per depth, the
    // length found first, which every other brace at that depth must have too.
    let mut counts: Vec<usize> = Vec::new();
    let mut lens: Vec<Option<usize>> = Vec::new();
    let mut elems = Vec::new();
    let mut leaf_depth = None;
    loop {
        let c = *b.get(at)?;
        at += 1;
        match c {
            b'{' => {
                if leaf_depth.is_some_and(|d| counts.len() >= d) {
                    return None;
                }
                if let Some(parent) = counts.last_mut() {
                    *parent += 1;
                }
                counts.push(0);
                if lens.len() < counts.len() {
                    lens.push(None);
                }
                if matches!(b.get(at), Some(b'{' | b'}')) {
                    continue;
                }
            }
            b',' if !counts.is_empty() => {
                if b.get(at) == Some(&b'{') {
                    continue;
                }
            }
            b'}' => {
                let n = counts.pop()?;
                let depth = counts.len();
                match lens[depth] {
                    None => lens[depth] = Some(n),
                    Some(l) if l != n => return None,
                    _ => {}
                }
                if counts.is_empty() {
                    break;
                }
                continue;
            }
            _ => return None,
        }
        // An element is due: only at the innermost depth, the same everywhere.
        if *leaf_depth.get_or_insert(counts.len()) != counts.len() {
            return None;
        }
        let (value, next) = element(elem_oid, s, at)?;
        elems.push(value);
        *counts.last_mut()? += 1;
        at = next;
    }
    if at != b.len() {
        return None;
    }
    let lens: Vec<usize> = lens.into_iter().collect::<Option<_>>()?;
    let dims: Vec<(i32, usize)> = if elems.is_empty() {
        Vec::new()
    } else if declared.is_empty() {
        lens.iter().map(|&l| (1, l)).collect()
    } else if declared.iter().map(|d| d.1).eq(lens.iter().copied()) {
        declared
    } else {
        return None;
    };
    Some(Array { dims, elems })
}

/// One element at `at`: quoted (backslash escapes), or bare up to a comma or brace (`NULL`
/// bare is NULL); with where it ends.
fn element(elem_oid: u32, s: &str, mut at: usize) -> Option<(Option<SortValue>, usize)> {
    let b = s.as_bytes();
    let text = if b.get(at) == Some(&b'"') {
        at += 1;
        let mut out = Vec::new();
        loop {
            match *b.get(at)? {
                b'"' => {
                    at += 1;
                    break;
                }
                b'\\' => {
                    out.push(*b.get(at + 1)?);
                    at += 2;
                }
                c => {
                    out.push(c);
                    at += 1;
                }
            }
        }
        String::from_utf8(out).ok()?
    } else {
        let end = at + b[at..].iter().position(|&c| c == b',' || c == b'}')?;
        let bare = &s[at..end];
        at = end;
        if bare.eq_ignore_ascii_case("null") {
            return Some((None, at));
        }
        if bare.is_empty() {
            return None;
        }
        bare.to_string()
    };
    let value = decode(elem_oid, 0, Some(text.as_bytes())).ok()?;
    Some((Some(value), at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(s: &str) -> Array {
        from_text(23, s).unwrap_or_else(|| panic!("{s}"))
    }

    #[test]
    fn orders_as_postgresql_does() {
        // Ascending, as `ORDER BY` gives them on PostgreSQL 15.
        let ascending = [
            "{}",
            "{1}",
            "{1,2}",
            "{1,2,3}",
            "[0:3]={1,2,3,4}",
            "{1,2,3,4}",
            "{{1,2},{3,4}}",
            "{1,NULL}",
            "{2}",
            "{NULL}",
            "{NULL,1}",
        ];
        for w in ascending.windows(2) {
            assert_eq!(
                compare(&int(w[0]), &int(w[1])),
                Ordering::Less,
                "{} < {}",
                w[0],
                w[1]
            );
        }
    }

    #[test]
    fn reads_quoted_elements_and_shapes() {
        let a = from_text(25, r#"{"a b","c\"d",NULL,"NULL",e}"#).unwrap();
        assert_eq!(a.dims, vec![(1, 5)]);
        assert_eq!(a.elems[1], Some(SortValue::Bytes(b"c\"d".to_vec())));
        assert_eq!(a.elems[2], None);
        assert_eq!(a.elems[3], Some(SortValue::Bytes(b"NULL".to_vec())));
        let m = int("[2:3][0:1]={{1,2},{3,4}}");
        assert_eq!(m.dims, vec![(2, 2), (0, 2)]);
        for bad in [
            "{1,2",
            "{{1,2},{3}}",
            "{1,{2}}",
            "{{1},2}",
            "[1:3]={1,2}",
            "{1,,2}",
            "{x}",
            "{1}}",
        ] {
            assert!(from_text(23, bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn binary_form() {
        let mut raw = Vec::new();
        for v in [1i32, 1, 23, 2, 1] {
            raw.extend_from_slice(&v.to_be_bytes());
        }
        raw.extend_from_slice(&4i32.to_be_bytes());
        raw.extend_from_slice(&7i32.to_be_bytes());
        raw.extend_from_slice(&(-1i32).to_be_bytes());
        let a = from_binary(23, &raw).unwrap();
        assert_eq!(a, int("{7,NULL}"));
        assert!(from_binary(20, &raw).is_none());
        assert!(from_binary(23, &raw[..raw.len() - 1]).is_none());
    }
}
