//! The splitter against rows cut anywhere, in each format.

use super::*;

#[test]
fn appended_fields_go_before_the_line_end_or_raise_the_field_count() {
    let csv = Format::new(Kind::Csv);
    for (row, want) in [
        (&b"a,\"b\nc\"\r\n"[..], &b"a,\"b\nc\",7,9\r\n"[..]),
        (b"a\n", b"a,7,9\n"),
        (b"a", b"a,7,9"),
    ] {
        let mut r = row.to_vec();
        append_fields(&mut r, &csv, &[(7, 8), (9, 4)]);
        assert_eq!(r, want);
    }
    let mut r = vec![0, 1, 0, 0, 0, 1, b'x'];
    append_fields(&mut r, &Format::new(Kind::Binary), &[(5, 4), (-1, 8)]);
    let mut want = vec![0, 3, 0, 0, 0, 1, b'x', 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 8];
    want.extend_from_slice(&(-1i64).to_be_bytes());
    assert_eq!(r, want);
}

fn all(format: Format, key: usize, chunks: &[&[u8]]) -> Vec<Piece> {
    let mut s = Splitter::new(format, Some(key), KeyType::Integer);
    let mut out = Vec::new();
    for c in chunks {
        s.push(c);
        while let Some(p) = s.next(false).unwrap() {
            out.push(p);
        }
    }
    while let Some(p) = s.next(true).unwrap() {
        out.push(p);
    }
    out
}

/// The integer field `given` of each row (the key is field 0).
fn given(format: Format, given: usize, data: &[u8]) -> Vec<Option<i64>> {
    let mut s = Splitter::new(format, Some(0), KeyType::Integer).given_at(Some(given));
    s.push(data);
    let mut out = Vec::new();
    while let Some(p) = s.next(true).unwrap() {
        if let Piece::Row { given, .. } = p {
            out.push(given);
        }
    }
    out
}

#[test]
fn a_given_field_is_read_as_an_integer_in_every_format() {
    assert_eq!(
        given(Format::new(Kind::Text), 1, b"1\t7\n2\t\\N\n3\t 9\n4\tx\n"),
        vec![Some(7), None, Some(9), None]
    );
    assert_eq!(
        given(Format::new(Kind::Csv), 2, b"1,a,\"12\"\n2,b,\n"),
        vec![Some(12), None]
    );
    let mut binary = b"PGCOPY\n\xff\r\n\0".to_vec();
    binary.extend_from_slice(&[0; 8]);
    for (key, value) in [
        (1i64, &5i32.to_be_bytes()[..]),
        (2, &(-6i64).to_be_bytes()[..]),
    ] {
        binary.extend_from_slice(&2i16.to_be_bytes());
        binary.extend_from_slice(&8i32.to_be_bytes());
        binary.extend_from_slice(&key.to_be_bytes());
        binary.extend_from_slice(&(value.len() as i32).to_be_bytes());
        binary.extend_from_slice(value);
    }
    binary.extend_from_slice(&(-1i16).to_be_bytes());
    assert_eq!(
        given(Format::new(Kind::Binary), 1, &binary),
        vec![Some(5), Some(-6)]
    );
}

fn keys(pieces: &[Piece]) -> Vec<Option<i64>> {
    pieces
        .iter()
        .filter_map(|p| match p {
            Piece::Row { key, .. } => Some(key.as_ref().map(|k| match k {
                KeyValue::Integer(i) => *i,
                _ => panic!("integer keys"),
            })),
            Piece::Header(_) => None,
        })
        .collect()
}

#[test]
fn text_rows_split_anywhere_keep_their_bytes() {
    let input: &[u8] = b"1\ta\\tb\n2\tline\\\nbreak\n\\N\tnull key\n3\tlast";
    for cut in 0..input.len() {
        let pieces = all(Format::new(Kind::Text), 0, &[&input[..cut], &input[cut..]]);
        assert_eq!(
            keys(&pieces),
            vec![Some(1), Some(2), None, Some(3)],
            "cut {cut}"
        );
        let joined: Vec<u8> = pieces
            .iter()
            .flat_map(|p| match p {
                Piece::Row { bytes, .. } | Piece::Header(bytes) => bytes.clone(),
            })
            .collect();
        assert_eq!(joined, input);
    }
}

#[test]
fn the_key_may_be_any_column_and_escaped() {
    let pieces = all(Format::new(Kind::Text), 1, &[b"x\t\\061\\x32\n"]);
    assert_eq!(keys(&pieces), vec![Some(12)]);
}

#[test]
fn csv_quotes_hold_newlines_and_delimiters() {
    let mut f = Format::new(Kind::Csv);
    f.header = true;
    let input: &[u8] = b"id,note\n7,\"a,b\nc\"\"d\"\n\"8\",x\n,empty key\n";
    for cut in 0..input.len() {
        let pieces = all(f.clone(), 0, &[&input[..cut], &input[cut..]]);
        assert!(matches!(&pieces[0], Piece::Header(h) if h == b"id,note\n"));
        assert_eq!(keys(&pieces), vec![Some(7), Some(8), None], "cut {cut}");
    }
}

#[test]
fn csv_with_its_own_escape() {
    let mut f = Format::new(Kind::Csv);
    f.escape = b'\\';
    let pieces = all(f, 1, &[b"\"a\\\"\n\",5\n"]);
    assert_eq!(keys(&pieces), vec![Some(5)]);
}

#[test]
fn end_marker_stops_the_stream() {
    let pieces = all(Format::new(Kind::Text), 0, &[b"1\n\\.\n2\n"]);
    assert_eq!(keys(&pieces), vec![Some(1)]);
}

#[test]
fn bad_keys_and_short_rows_are_reported_with_their_line() {
    let mut s = Splitter::new(Format::new(Kind::Text), Some(1), KeyType::Integer);
    s.push(b"a\t1\nb\tnope\n");
    assert!(matches!(s.next(false), Ok(Some(Piece::Row { .. }))));
    let err = s.next(false).unwrap_err();
    assert_eq!(err.line, 2);
    let mut s = Splitter::new(Format::new(Kind::Text), Some(2), KeyType::Integer);
    s.push(b"a\t1\n");
    assert!(s.next(false).is_err());
}

#[test]
fn binary_rows_and_header() {
    let mut input = b"PGCOPY\n\xff\r\n\0".to_vec();
    input.extend_from_slice(&0u32.to_be_bytes());
    input.extend_from_slice(&0u32.to_be_bytes());
    for (k, null_key) in [(5i64, false), (0, true)] {
        input.extend_from_slice(&2i16.to_be_bytes());
        input.extend_from_slice(&3i32.to_be_bytes());
        input.extend_from_slice(b"abc");
        if null_key {
            input.extend_from_slice(&(-1i32).to_be_bytes());
        } else {
            input.extend_from_slice(&8i32.to_be_bytes());
            input.extend_from_slice(&k.to_be_bytes());
        }
    }
    input.extend_from_slice(&(-1i16).to_be_bytes());
    for cut in 0..input.len() {
        let pieces = all(
            Format::new(Kind::Binary),
            1,
            &[&input[..cut], &input[cut..]],
        );
        assert!(matches!(&pieces[0], Piece::Header(h) if h.len() == 19));
        assert_eq!(keys(&pieces), vec![Some(5), None], "cut {cut}");
    }
}
