//! Reading bound values as keys, constants and arrays, in both formats.

use super::*;

/// One value bound in binary, of the type `ty` the statement declared or the server described.
fn one(bytes: Vec<u8>, ty: u32) -> Params {
    Params {
        values: smallvec::smallvec![Some(Bytes::from(bytes))],
        formats: vec![1],
        types: smallvec::smallvec![ty],
    }
}

/// Binary values of the types the server described, as the text that reads back the same.
#[test]
fn described_binary_constants_are_their_own_text() {
    let float8 = |v: f64| one(v.to_be_bytes().to_vec(), oid::FLOAT8).constant(1);
    assert_eq!(float8(7.3).as_deref(), Some("7.3"));
    assert_eq!(float8(8.0).as_deref(), Some("8"));
    assert_eq!(float8(-1e-7).as_deref(), Some("-0.0000001"));
    assert_eq!(float8(f64::NEG_INFINITY).as_deref(), Some("-Infinity"));
    assert_eq!(float8(f64::NAN).as_deref(), Some("NaN"));
    // A float4's own shortest digits, not its float8 widening's 0.10000000149011612.
    let float4 = one(0.1f32.to_be_bytes().to_vec(), oid::FLOAT4).constant(1);
    assert_eq!(float4.as_deref(), Some("0.1"));
    assert_eq!(one(vec![1], oid::BOOL).constant(1).as_deref(), Some("t"));
    assert_eq!(
        one(b"x8".to_vec(), oid::TEXT).constant(1).as_deref(),
        Some("x8")
    );
    // Undeclared, two bytes are an int2; of a type not read, nothing.
    assert_eq!(one(b"x8".to_vec(), 0).constant(1).as_deref(), Some("30776"));
    assert_eq!(one(vec![0; 8], oid::UUID).constant(1), None);
}

/// numeric's binary form as numeric_out writes it, from the words PostgreSQL sends.
#[test]
fn binary_numerics_read_as_their_text() {
    let numeric = |words: &[u16]| {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
        one(bytes, oid::NUMERIC).constant(1)
    };
    // ndigits, weight, sign, dscale, digits.
    assert_eq!(numeric(&[2, 0, 0, 2, 38, 5000]).as_deref(), Some("38.50"));
    assert_eq!(numeric(&[2, 1, 0x4000, 0, 1, 2]).as_deref(), Some("-10002"));
    assert_eq!(numeric(&[1, 1, 0, 0, 7]).as_deref(), Some("70000"));
    assert_eq!(numeric(&[1, 0xFFFF, 0, 6, 12]).as_deref(), Some("0.001200"));
    assert_eq!(numeric(&[1, 0xFFFE, 0, 5, 5]).as_deref(), Some("0.00000"));
    assert_eq!(numeric(&[0, 0, 0, 0]).as_deref(), Some("0"));
    assert_eq!(numeric(&[0, 0, 0, 3]).as_deref(), Some("0.000"));
    assert_eq!(numeric(&[0, 0, 0xC000, 0]).as_deref(), Some("NaN"));
    assert_eq!(numeric(&[0, 0, 0xF000, 0]).as_deref(), Some("-Infinity"));
    // A digit of 10000 or more, a count the bytes do not hold, or another sign: nothing.
    assert_eq!(numeric(&[1, 0, 0, 0, 10_000]), None);
    assert_eq!(numeric(&[2, 0, 0, 0, 1]), None);
    assert_eq!(numeric(&[1, 0, 0x1234, 0, 1]), None);
    assert_eq!(numeric(&[1, 0]), None);
}

/// Dates and timestamps bound in binary read as ISO text, a timestamptz in UTC.
#[test]
fn binary_dates_and_timestamps_read_as_iso_text() {
    let date = one(8_825i32.to_be_bytes().to_vec(), oid::DATE).constant(1);
    assert_eq!(date.as_deref(), Some("2024-02-29"));
    let at = 8_825i64 * 86_400_000_000 + 5_000_000;
    let stamp = one(at.to_be_bytes().to_vec(), oid::TIMESTAMP).constant(1);
    assert_eq!(stamp.as_deref(), Some("2024-02-29 00:00:05.000000"));
    let stamp = one(at.to_be_bytes().to_vec(), oid::TIMESTAMPTZ).constant(1);
    assert_eq!(stamp.as_deref(), Some("2024-02-29 00:00:05.000000+00"));
    // A date's bytes are four, a timestamp's eight: others are no value of the type.
    assert_eq!(one(vec![0; 8], oid::DATE).constant(1), None);
}

/// Whatever it reads, the general reading (`str::parse` of the trimmed text) reads the same.
#[test]
fn plain_integers_read_as_parse_reads_them() {
    let texts = [
        "0",
        "7",
        "-7",
        "+7",
        "007",
        "-0",
        "42abc",
        "",
        "-",
        "+",
        " 5",
        "5 ",
        "1_000",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775808",
        "-9223372036854775809",
        "99999999999999999999",
        "１２",
        "--1",
        "+-1",
    ];
    for t in texts {
        let fast = plain_integer(t.as_bytes());
        let general = t.trim().parse::<i64>().ok();
        if fast.is_some() {
            assert_eq!(fast, general, "{t:?}");
        }
        assert_eq!(
            Params {
                values: smallvec::smallvec![Some(Bytes::copy_from_slice(t.as_bytes()))],
                formats: vec![],
                types: Default::default(),
            }
            .key(1, KeyType::Integer)
            .ok()
            .flatten(),
            general.map(KeyValue::Integer),
            "{t:?}"
        );
    }
    assert_eq!(plain_integer(b"-9223372036854775808"), Some(i64::MIN));
    assert_eq!(plain_integer(b"9223372036854775807"), Some(i64::MAX));
    assert_eq!(plain_integer(b" 5"), None);
}

#[test]
fn recording_notes_the_values_read_and_only_while_it_lasts() {
    let p = Params {
        values: smallvec::smallvec![
            Some(Bytes::from_static(b"7")),
            Some(Bytes::from_static(b"{1}")),
        ],
        formats: vec![],
        types: Default::default(),
    };
    let (key, reads) = recording(|| p.key(1, KeyType::Integer));
    assert_eq!(key, Ok(Some(KeyValue::Integer(7))));
    assert_eq!(reads, vec![Read::Key(1, KeyType::Integer)]);
    let (_, reads) = recording(|| {
        let _ = p.key_array(2, KeyType::Integer);
        p.constant(1)
    });
    assert_eq!(reads, vec![Read::Other, Read::Other]);
    let (_, reads) = recording(|| ());
    assert!(reads.is_empty());
    // Outside a recording nothing is kept.
    let _ = p.key(1, KeyType::Integer);
    assert!(recording(|| ()).1.is_empty());
}

#[test]
fn text_arrays_with_quoted_elements() {
    let keys = |s: &str| text_array(s, KeyType::Integer);
    assert_eq!(
        keys(r#"{"1","22", 3 ,NULL}"#).unwrap(),
        vec![
            KeyValue::Integer(1),
            KeyValue::Integer(22),
            KeyValue::Integer(3)
        ]
    );
    assert_eq!(keys("{}").unwrap(), vec![]);
    assert_eq!(
        text_array(r#"{"a\"b","c,d"}"#, KeyType::Text).unwrap(),
        vec![KeyValue::Text("a\"b".into()), KeyValue::Text("c,d".into())]
    );
    for bad in ["{{1,2}}", r#"{"1}"#, "{1,}", "{1 2"] {
        assert!(keys(bad).is_err(), "{bad}");
    }
}

#[test]
fn constants_in_text_and_binary() {
    let p = Params {
        values: smallvec::smallvec![
            Some(Bytes::from_static(b" 10")),
            Some(Bytes::copy_from_slice(&7i64.to_be_bytes())),
            None,
        ],
        formats: vec![0, 1, 0],
        types: Default::default(),
    };
    assert_eq!(p.constant(1).as_deref(), Some("10"));
    assert_eq!(p.constant(2).as_deref(), Some("7"));
    assert_eq!(p.constant(3), None);
    assert_eq!(p.constant(4), None);
}

#[test]
fn text_and_binary_params() {
    let p = Params {
        values: smallvec::smallvec![
            Some(Bytes::from_static(b"42")),
            Some(Bytes::from(7i64.to_be_bytes().to_vec())),
            None,
        ],
        formats: vec![0, 1, 0],
        types: Default::default(),
    };
    assert_eq!(
        p.key(1, KeyType::Integer).unwrap(),
        Some(KeyValue::Integer(42))
    );
    assert_eq!(
        p.key(2, KeyType::Integer).unwrap(),
        Some(KeyValue::Integer(7))
    );
    assert_eq!(p.key(3, KeyType::Integer).unwrap(), None);
    assert!(p.key(4, KeyType::Integer).is_err());
}

#[test]
fn arrays() {
    assert_eq!(
        text_array("{1, 2,NULL}", KeyType::Integer).unwrap().len(),
        2
    );
    // int8[] {5, 6} in binary: ndim 1, flags 0, elemtype 20, dim 2, lbound 1, then elements.
    let mut b = Vec::new();
    for v in [1i32, 0, 20, 2, 1] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    for v in [5i64, 6] {
        b.extend_from_slice(&8i32.to_be_bytes());
        b.extend_from_slice(&v.to_be_bytes());
    }
    let b = Bytes::from(b);
    assert_eq!(
        binary_array(&b, KeyType::Integer).unwrap(),
        Some(vec![KeyValue::Integer(5), KeyValue::Integer(6)])
    );
    // The same bytes as float8[]: not keys, whatever they would read as.
    let mut f = b.to_vec();
    f[8..12].copy_from_slice(&701u32.to_be_bytes());
    assert_eq!(
        binary_array(&Bytes::from(f), KeyType::Integer).unwrap(),
        None
    );
}

/// A value of another type than the key's is no key: its bytes are not a key's, and
/// PostgreSQL compares it after converting one side.
#[test]
fn parameters_declared_of_another_type_are_not_keys() {
    let five = 5.0f64.to_be_bytes();
    let typed = |types: &[u32], format: i16, value: &[u8]| Params {
        values: smallvec::smallvec![Some(Bytes::copy_from_slice(value))],
        formats: vec![format],
        types: types.iter().copied().collect(),
    };
    // float8, numeric, float4, bpchar and name beside each key type.
    for (ty, other) in [
        (KeyType::Integer, 701),
        (KeyType::Integer, 1700),
        (KeyType::Integer, 700),
        (KeyType::Text, 1042),
        (KeyType::Text, 19),
        (KeyType::Uuid, 1700),
    ] {
        assert!(
            !typed(&[other], 1, &five).typed_as_key(1, ty),
            "{ty:?} {other}"
        );
    }
    for (ty, same) in [
        (KeyType::Integer, 20),
        (KeyType::Integer, 23),
        (KeyType::Integer, 0),
        (KeyType::Integer, 705),
        (KeyType::Text, 25),
        (KeyType::Text, 1043),
        (KeyType::Uuid, 2950),
    ] {
        assert!(typed(&[same], 0, b"5").typed_as_key(1, ty), "{ty:?} {same}");
    }
    // A binary float is its own digits, never its bytes read as an integer: a count
    // (LIMIT) only when they are an integer's.
    assert_eq!(typed(&[701], 1, &five).constant(1), Some("5".into()));
    assert_eq!(
        typed(&[701], 1, &2.5f64.to_be_bytes()).constant(1),
        Some("2.5".into())
    );
    assert_eq!(
        typed(&[20], 1, &5i64.to_be_bytes()).constant(1),
        Some("5".into())
    );
    // Undeclared (a Bind the session found no Parse for, SQL EXECUTE): read as before.
    assert!(typed(&[], 1, &five).typed_as_key(1, KeyType::Integer));
    assert!(!typed(&[1022], 0, b"{5}").typed_as_key_array(1, KeyType::Integer));
    assert_eq!(
        typed(&[1022], 0, b"{5}").key_array(1, KeyType::Integer),
        Ok(None)
    );
    assert_eq!(
        typed(&[1016], 0, b"{5}").key_array(1, KeyType::Integer),
        Ok(Some(vec![KeyValue::Integer(5)]))
    );
}

#[test]
fn malformed_binary_arrays_are_errors_not_allocations() {
    let header = |ndim: i32, len: i32| {
        let mut b = Vec::new();
        for v in [ndim, 0, 20, len, 1] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        Bytes::from(b)
    };
    // 2^31-1 elements claimed in a 20-byte body; a negative length; negative dimensions.
    assert!(binary_array(&header(1, i32::MAX), KeyType::Integer).is_err());
    assert!(binary_array(&header(1, -5), KeyType::Integer).is_err());
    assert!(binary_array(&header(-1, 1), KeyType::Integer).is_err());
    assert!(binary_array(&Bytes::from_static(&[0, 0, 0, 1]), KeyType::Integer).is_err());
}
