//! Type OIDs written inside binary values.
//!
//! A value in binary format names types inside itself: an array its element type
//! (`array_send`), a composite each field's type (`record_send`), and each element or field
//! may again be an array or a composite. Types a database created have a different OID on
//! each shard, and drivers that read binary check those OIDs against the ones the catalog
//! they query gave them (asyncpg refuses a composite whose field OID differs, Rust's derived
//! composites too), or pick a decoder by them. So a value from another shard than the first
//! has its OIDs rewritten into the first shard's before the client sees it.
//!
//! `rewrite` walks one value in place; `TypeMap` says what shape each OID's values have and
//! what it becomes. Invariant: only the four bytes of an OID are ever written, so a value
//! keeps its length and the message its framing; a value that does not parse as its type's
//! layout is left as it is.

use std::collections::HashMap;

/// How a type's binary value is laid out, where that layout names other types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `array_send`: dimensions, the element type, then each element.
    Array,
    /// `record_send`: the field count, then each field's type and value.
    Record,
}

/// The first OID PostgreSQL gives to objects a database creates (`FirstNormalObjectId`); every
/// OID below it is built in and the same everywhere.
pub const FIRST_USER_OID: u32 = 16384;

/// `record`, PostgreSQL's anonymous row type (`SELECT row(a, b)`).
pub const RECORD: u32 = 2249;
/// `record[]`.
pub const RECORD_ARRAY: u32 = 2287;

/// Types whose values may name user-defined types inside them, as one shard numbers them,
/// and each one's OID on the shard the value goes to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TypeMap {
    /// The shape of each type whose values name types (domains: their base type's).
    pub shapes: HashMap<u32, Shape>,
    /// User-defined OIDs and what they become.
    pub oids: HashMap<u32, u32>,
}

impl TypeMap {
    /// The layout of type `oid`'s values, None for one that names no type inside. Built-in
    /// arrays of built-in elements name only OIDs every server shares, so only `record`
    /// and `record[]` count among the built-in types.
    pub fn shape(&self, oid: u32) -> Option<Shape> {
        match oid {
            RECORD => Some(Shape::Record),
            RECORD_ARRAY => Some(Shape::Array),
            _ => self.shapes.get(&oid).copied(),
        }
    }

    /// Whether any value could need rewriting.
    pub fn is_empty(&self) -> bool {
        self.oids.is_empty()
    }
}

/// Why a value was left as it is.
#[derive(Debug, PartialEq, Eq)]
pub enum Unchanged {
    /// It does not parse as its layout.
    Malformed,
    /// It names a user-defined type the map does not hold (a field of an anonymous record).
    Unknown(u32),
}

/// Whether a column of type `oid` (as the sending shard numbers it) may carry user OIDs.
pub fn may_name_types(oid: u32) -> bool {
    oid >= FIRST_USER_OID || oid == RECORD || oid == RECORD_ARRAY
}

/// Rewrites the OIDs inside `value`, a binary value of a type of shape `shape`. Checks the
/// whole value before writing anything: on an error it is left unchanged.
pub fn rewrite(value: &mut [u8], shape: Shape, map: &TypeMap) -> Result<(), Unchanged> {
    let mut at = Vec::new();
    found(value, shape, map, &mut at)?;
    for (pos, oid) in at {
        value[pos..pos + 4].copy_from_slice(&oid.to_be_bytes());
    }
    Ok(())
}

fn int(v: &[u8], at: usize) -> Result<i32, Unchanged> {
    v.get(at..at + 4)
        .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(Unchanged::Malformed)
}

/// The new OID for one found at `at` of `v`, pushed onto `out` (a built-in one stays).
fn note_oid(
    v: &[u8],
    at: usize,
    map: &TypeMap,
    out: &mut Vec<(usize, u32)>,
) -> Result<u32, Unchanged> {
    let oid = int(v, at)? as u32;
    if oid >= FIRST_USER_OID {
        let to = *map.oids.get(&oid).ok_or(Unchanged::Unknown(oid))?;
        out.push((at, to));
    }
    Ok(oid)
}

/// One element or field at `at`: its length, then (unless NULL) its bytes, walked when its
/// type names types. Returns where the next one starts.
fn item(
    v: &[u8],
    at: usize,
    oid: u32,
    map: &TypeMap,
    out: &mut Vec<(usize, u32)>,
) -> Result<usize, Unchanged> {
    let len = int(v, at)?;
    let start = at + 4;
    if len < 0 {
        return if len == -1 {
            Ok(start)
        } else {
            Err(Unchanged::Malformed)
        };
    }
    let end = start
        .checked_add(len as usize)
        .filter(|&e| e <= v.len())
        .ok_or(Unchanged::Malformed)?;
    if let Some(shape) = map.shape(oid) {
        let mut inner = Vec::new();
        found(&v[start..end], shape, map, &mut inner)?;
        out.extend(inner.into_iter().map(|(p, o)| (start + p, o)));
    }
    Ok(end)
}

/// Collects where OIDs to rewrite sit in `v` and what they become.
fn found(
    v: &[u8],
    shape: Shape,
    map: &TypeMap,
    out: &mut Vec<(usize, u32)>,
) -> Result<(), Unchanged> {
    let mut at;
    match shape {
        Shape::Array => {
            let dims = int(v, 0)?;
            // PostgreSQL's MAXDIM.
            if !(0..=6).contains(&dims) {
                return Err(Unchanged::Malformed);
            }
            let element = note_oid(v, 8, map, out)?;
            at = 12;
            let mut count: u64 = if dims == 0 { 0 } else { 1 };
            for _ in 0..dims {
                let n = int(v, at)?;
                count = count
                    .checked_mul(u64::try_from(n).map_err(|_| Unchanged::Malformed)?)
                    .ok_or(Unchanged::Malformed)?;
                at += 8;
            }
            // Each element takes four bytes at least: a count beyond that is no array.
            if count > (v.len() as u64) / 4 {
                return Err(Unchanged::Malformed);
            }
            for _ in 0..count {
                at = item(v, at, element, map, out)?;
            }
        }
        Shape::Record => {
            let fields = int(v, 0)?;
            if fields < 0 || fields as usize > v.len() / 8 {
                return Err(Unchanged::Malformed);
            }
            at = 4;
            for _ in 0..fields {
                let field = note_oid(v, at, map, out)?;
                at = item(v, at + 4, field, map, out)?;
            }
        }
    }
    if at == v.len() {
        Ok(())
    } else {
        Err(Unchanged::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOOD: u32 = 16500; // an enum, on the sending shard
    const PAIR: u32 = 16510; // (m mood, n int4)
    const PAIR_ARRAY: u32 = 16509;

    fn map() -> TypeMap {
        TypeMap {
            shapes: HashMap::from([(PAIR, Shape::Record), (PAIR_ARRAY, Shape::Array)]),
            oids: HashMap::from([(MOOD, 17000), (PAIR, 17010), (PAIR_ARRAY, 17009)]),
        }
    }

    fn pair(mood: &str, n: i32) -> Vec<u8> {
        let mut v = 2i32.to_be_bytes().to_vec();
        v.extend(MOOD.to_be_bytes());
        v.extend((mood.len() as i32).to_be_bytes());
        v.extend(mood.as_bytes());
        v.extend(23u32.to_be_bytes());
        v.extend(4i32.to_be_bytes());
        v.extend(n.to_be_bytes());
        v
    }

    fn array(element: u32, items: &[Option<Vec<u8>>]) -> Vec<u8> {
        let mut v = 1i32.to_be_bytes().to_vec();
        v.extend((items.iter().any(|i| i.is_none()) as i32).to_be_bytes());
        v.extend(element.to_be_bytes());
        v.extend((items.len() as i32).to_be_bytes());
        v.extend(1i32.to_be_bytes());
        for i in items {
            match i {
                Some(b) => {
                    v.extend((b.len() as i32).to_be_bytes());
                    v.extend(b);
                }
                None => v.extend((-1i32).to_be_bytes()),
            }
        }
        v
    }

    fn oid_at(v: &[u8], at: usize) -> u32 {
        u32::from_be_bytes(v[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn a_composite_names_its_fields_types_as_the_receiving_shard_does() {
        let mut v = pair("ok", 7);
        rewrite(&mut v, Shape::Record, &map()).unwrap();
        assert_eq!(oid_at(&v, 4), 17000);
        // A built-in field type is the same everywhere.
        assert_eq!(oid_at(&v, 14), 23);
        assert_eq!(&v[12..14], b"ok");
    }

    #[test]
    fn arrays_of_composites_are_walked_element_by_element_nulls_included() {
        let mut v = array(PAIR, &[Some(pair("sad", 1)), None, Some(pair("ok", 2))]);
        let before = v.clone();
        rewrite(&mut v, Shape::Array, &map()).unwrap();
        assert_eq!(oid_at(&v, 8), 17010);
        assert_eq!(v.len(), before.len());
        let changed: Vec<usize> = (0..v.len()).filter(|&i| v[i] != before[i]).collect();
        // The element type and one field type in each of the two composites.
        assert!(changed.len() <= 3 * 4, "{changed:?}");
        let first = 20 + 4;
        assert_eq!(oid_at(&v, first + 4), 17000);
    }

    #[test]
    fn an_anonymous_record_is_read_by_the_oids_it_carries() {
        let mut inner = pair("ok", 1);
        let mut v = 1i32.to_be_bytes().to_vec();
        v.extend(PAIR.to_be_bytes());
        v.extend((inner.len() as i32).to_be_bytes());
        v.append(&mut inner);
        rewrite(&mut v, Shape::Record, &map()).unwrap();
        assert_eq!(oid_at(&v, 4), 17010);
        assert_eq!(oid_at(&v, 12 + 4), 17000);
    }

    #[test]
    fn values_it_cannot_read_are_left_as_they_are() {
        let m = map();
        let whole = pair("ok", 7);
        for cut in [0, 3, 9, whole.len() - 1] {
            let mut v = whole[..cut].to_vec();
            assert_eq!(
                rewrite(&mut v, Shape::Record, &m),
                Err(Unchanged::Malformed),
                "{cut}"
            );
            assert_eq!(v, whole[..cut]);
        }
        let mut longer = whole.clone();
        longer.push(0);
        assert_eq!(
            rewrite(&mut longer, Shape::Record, &m),
            Err(Unchanged::Malformed)
        );
        // A user type the map does not know: nothing is written, not even the known ones.
        let mut v = array(PAIR, &[Some(pair("ok", 1))]);
        v[24 + 4..24 + 8].copy_from_slice(&16999u32.to_be_bytes());
        let before = v.clone();
        assert_eq!(
            rewrite(&mut v, Shape::Array, &m),
            Err(Unchanged::Unknown(16999))
        );
        assert_eq!(v, before);
        // Counts that no value of that length can hold.
        let mut huge = array(PAIR, &[]);
        huge[12..16].copy_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(
            rewrite(&mut huge, Shape::Array, &m),
            Err(Unchanged::Malformed)
        );
        let mut negative = (-1i32).to_be_bytes().to_vec();
        assert_eq!(
            rewrite(&mut negative, Shape::Record, &m),
            Err(Unchanged::Malformed)
        );
    }

    #[test]
    fn only_user_types_and_records_are_looked_into() {
        assert!(may_name_types(MOOD) && may_name_types(RECORD) && may_name_types(RECORD_ARRAY));
        assert!(!may_name_types(1007) && !may_name_types(23));
        assert_eq!(map().shape(RECORD_ARRAY), Some(Shape::Array));
        assert_eq!(map().shape(MOOD), None);
    }
}
