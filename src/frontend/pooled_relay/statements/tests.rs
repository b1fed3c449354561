//! Unit tests of statement renaming and re-preparing on pooled connections.

use super::*;

/// A message frame: tag, length, body.
pub(in crate::frontend::pooled_relay) fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut f = vec![tag];
    f.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    f.extend_from_slice(body);
    f
}

fn parse(name: &str) -> Vec<u8> {
    frame(b'P', format!("{name}\0select $1\0\0\0").as_bytes())
}

fn bind(portal: &str, stmt: &str) -> Vec<u8> {
    frame(b'B', format!("{portal}\0{stmt}\0\0\0\0\0\0\0").as_bytes())
}

/// The statement name a translated Parse, Bind, Describe or Close carries.
fn named(out: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = out;
    while rest.len() >= 5 {
        let len = i32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let body = &rest[5..1 + len];
        let at = match rest[0] {
            b'B' => cstr_bytes(body).unwrap().len() + 1,
            b'D' | b'C' => 1,
            _ => 0,
        };
        names.push(String::from_utf8(cstr_bytes(&body[at..]).unwrap().to_vec()).unwrap());
        rest = &rest[1 + len..];
    }
    names
}

#[test]
fn a_bind_on_a_connection_without_the_statement_is_preceded_by_its_parse() {
    let mut s = RelayStatements::default();
    let (mut out, mut expect) = (BytesMut::new(), Vec::new());
    assert_eq!(
        Translated::Rewritten,
        s.translate(&parse("S_1"), 7, &mut out, &mut expect)
    );
    let shard = named(&out)[0].clone();
    assert!(shard.ends_with(":S_1") && shard != "S_1");
    assert_eq!(expect, vec![Expect::Parsed(Some("S_1".into()))]);
    s.confirmed("S_1");

    // Same connection: only the name changes.
    let (mut out, mut expect) = (BytesMut::new(), Vec::new());
    assert_eq!(
        Translated::Rewritten,
        s.translate(&bind("", "S_1"), 7, &mut out, &mut expect)
    );
    assert_eq!(named(&out), vec![shard.clone()]);
    assert!(expect.is_empty());

    // Another connection: the Parse goes first, and its answer is the proxy's.
    let (mut out, mut expect) = (BytesMut::new(), Vec::new());
    assert_eq!(
        Translated::Rewritten,
        s.translate(&bind("p", "S_1"), 8, &mut out, &mut expect)
    );
    assert_eq!(named(&out), vec![shard.clone(), shard.clone()]);
    assert_eq!(out[0], b'P');
    assert_eq!(expect, vec![Expect::Injected(Some(("S_1".into(), 8)))]);
    let (mut out, mut expect) = (BytesMut::new(), Vec::new());
    let describe = frame(b'D', b"SS_1\0");
    assert_eq!(
        Translated::Rewritten,
        s.translate(&describe, 8, &mut out, &mut expect)
    );
    assert_eq!(named(&out), vec![shard.clone()]);

    // Close forgets it: the name is the client's own again.
    let (mut out, mut expect) = (BytesMut::new(), Vec::new());
    assert_eq!(
        Translated::Rewritten,
        s.translate(&frame(b'C', b"SS_1\0"), 9, &mut out, &mut expect)
    );
    assert_eq!(expect, vec![Expect::Closed(Some("S_1".into()))]);
    s.closed("S_1");
    assert_eq!(
        Translated::Same,
        s.translate(&bind("", "S_1"), 9, &mut BytesMut::new(), &mut expect)
    );
}

#[test]
fn a_close_the_shard_skipped_leaves_the_statement() {
    let mut s = RelayStatements::default();
    s.translate(&parse("q"), 1, &mut BytesMut::new(), &mut Vec::new());
    s.confirmed("q");
    let mut expect = Vec::new();
    s.translate(&frame(b'C', b"Sq\0"), 1, &mut BytesMut::new(), &mut expect);
    // Until the shard answers, the name is free, as it will be once the Close is carried out.
    assert_eq!(
        Translated::Same,
        s.translate(&bind("", "q"), 1, &mut BytesMut::new(), &mut Vec::new())
    );
    s.close_skipped("q");
    assert_eq!(
        Translated::Rewritten,
        s.translate(&bind("", "q"), 1, &mut BytesMut::new(), &mut Vec::new())
    );
    // A Parse of the name after the skipped Close (refused as a duplicate by the shard, or
    // carried out after a Close that was not skipped) keeps the newer entry.
    s.translate(&frame(b'C', b"Sq\0"), 1, &mut BytesMut::new(), &mut expect);
    s.translate(&parse("q"), 1, &mut BytesMut::new(), &mut Vec::new());
    s.close_skipped("q");
    assert!(s.deallocate("q", 1).is_some());
    assert!(s.deallocate("q", 1).is_none());
    // Closes of portals and of names the session never prepared are answered too.
    let mut expect = Vec::new();
    s.translate(&frame(b'C', b"Pp\0"), 1, &mut BytesMut::new(), &mut expect);
    s.translate(
        &frame(b'C', b"Snone\0"),
        1,
        &mut BytesMut::new(),
        &mut expect,
    );
    assert_eq!(expect, vec![Expect::Closed(None), Expect::Closed(None)]);
}

#[test]
fn unnamed_statements_portals_and_unknown_names_pass_untouched() {
    let mut s = RelayStatements::default();
    let mut expect = Vec::new();
    let mut out = BytesMut::new();
    assert_eq!(
        Translated::Same,
        s.translate(&parse(""), 1, &mut out, &mut expect)
    );
    assert_eq!(
        Translated::Same,
        s.translate(&bind("p", ""), 1, &mut out, &mut expect)
    );
    assert_eq!(
        Translated::Same,
        s.translate(&frame(b'D', b"Pp\0"), 1, &mut out, &mut expect)
    );
    assert_eq!(
        Translated::Same,
        s.translate(&bind("", "nobody"), 1, &mut out, &mut expect)
    );
    assert_eq!(
        Translated::Same,
        s.translate(&frame(b'E', b"\0\0\0\0\0"), 1, &mut out, &mut expect)
    );
    assert!(out.is_empty());
    assert_eq!(expect, vec![Expect::Parsed(None), Expect::Described(None)]);
}

#[test]
fn a_refused_parse_leaves_no_statement_and_a_repeated_one_meets_the_first() {
    let mut s = RelayStatements::default();
    let mut expect = Vec::new();
    s.translate(&parse("bad"), 1, &mut BytesMut::new(), &mut expect);
    s.refused("bad");
    assert_eq!(
        Translated::Same,
        s.translate(&bind("", "bad"), 1, &mut BytesMut::new(), &mut expect)
    );

    s.translate(&parse("twice"), 1, &mut BytesMut::new(), &mut expect);
    s.confirmed("twice");
    s.refused("twice");
    let (mut out, mut expect) = (BytesMut::new(), Vec::new());
    assert_eq!(
        Translated::Rewritten,
        s.translate(&parse("twice"), 2, &mut out, &mut expect)
    );
    let names = named(&out);
    assert_eq!(
        names.len(),
        2,
        "the first Parse is given to connection 2 first"
    );
    assert_eq!(names[0], names[1]);
    assert_eq!(
        expect,
        vec![
            Expect::Injected(Some(("twice".into(), 2))),
            Expect::Parsed(None)
        ]
    );
}

#[test]
fn a_described_statement_is_checked_on_a_new_connection_and_stale_once_it_differs() {
    let mut s = RelayStatements::default();
    let mut expect = Vec::new();
    s.translate(&parse("q"), 1, &mut BytesMut::new(), &mut expect);
    s.confirmed("q");
    let describe = frame(b'D', b"Sq\0");
    let mut expect = Vec::new();
    s.translate(&describe, 1, &mut BytesMut::new(), &mut expect);
    assert_eq!(expect, vec![Expect::Described(Some("q".into()))]);
    let one_int = frame(
        b'T',
        b"\0\x01x\0\0\0\0\0\0\x01\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0",
    );
    let one_text = frame(
        b'T',
        b"\0\x01x\0\0\0\0\0\0\x01\0\0\0\x19\xff\xff\xff\xff\xff\xff\0\0",
    );
    s.described("q", &one_int);

    // A new connection: Parse, Describe and Flush go first, the Bind waits.
    let (mut out, mut expect) = (BytesMut::new(), Vec::new());
    assert_eq!(
        s.translate(&bind("", "q"), 2, &mut out, &mut expect),
        Translated::Check
    );
    assert_eq!(
        expect,
        vec![
            Expect::Injected(Some(("q".into(), 2))),
            Expect::Checked("q".into())
        ]
    );
    assert_eq!(&out[out.len() - 5..], b"H\0\0\0\x04");
    assert!(s.checked("q", &one_int));
    let (mut out, mut expect) = (BytesMut::new(), Vec::new());
    assert_eq!(
        s.translate(&bind("", "q"), 2, &mut out, &mut expect),
        Translated::Rewritten
    );
    assert!(expect.is_empty());

    // Different columns on a third: stale everywhere from then on.
    s.translate(&bind("", "q"), 3, &mut BytesMut::new(), &mut Vec::new());
    assert!(!s.checked("q", &one_text));
    let mut expect = Vec::new();
    assert_eq!(
        s.translate(&bind("", "q"), 2, &mut BytesMut::new(), &mut expect),
        Translated::Stale
    );
    let mut out = BytesMut::new();
    RelayStatements::refusal(&mut out, &mut expect);
    assert_eq!(
        expect,
        vec![
            Expect::Injected(None),
            Expect::InjectedBind,
            Expect::Refusal
        ]
    );
    assert_eq!(out[0], b'P');
}

#[test]
fn deallocate_gives_the_shard_name_once_and_says_where_it_is_held() {
    let mut s = RelayStatements::default();
    let mut expect = Vec::new();
    let mut out = BytesMut::new();
    s.translate(&parse("q"), 1, &mut out, &mut expect);
    s.translate(&parse("r"), 1, &mut BytesMut::new(), &mut expect);
    let shard = named(&out)[0].clone();
    assert_eq!(s.deallocate("q", 2), Some((shard.into(), false)));
    assert!(s.deallocate("q", 1).is_none());
    assert!(s.deallocate("r", 1).is_some_and(|(_, held)| held));
}

#[test]
fn a_parse_not_carried_out_is_sent_again() {
    let mut s = RelayStatements::default();
    s.translate(&parse("q"), 1, &mut BytesMut::new(), &mut Vec::new());
    s.confirmed("q");
    let mut expect = Vec::new();
    s.translate(&bind("", "q"), 2, &mut BytesMut::new(), &mut expect);
    assert_eq!(expect, vec![Expect::Injected(Some(("q".into(), 2)))]);

    // The shard skipped it (an earlier message of the batch failed).
    s.not_given("q", 2);
    let (mut out, mut expect) = (BytesMut::new(), Vec::new());
    s.translate(&bind("", "q"), 2, &mut out, &mut expect);
    assert_eq!(out[0], b'P', "the Parse goes again");
    assert_eq!(expect, vec![Expect::Injected(Some(("q".into(), 2)))]);

    // Connection 1 still has it.
    let mut expect = Vec::new();
    s.translate(&bind("", "q"), 1, &mut BytesMut::new(), &mut expect);
    assert!(expect.is_empty());
}

#[test]
fn a_parse_of_execute_names_the_statement_as_the_shard_knows_it_and_gives_it_first() {
    let mut s = RelayStatements::default();
    let (mut out, mut expect) = (BytesMut::new(), Vec::new());
    s.translate(&parse("q"), 1, &mut out, &mut expect);
    let q = named(&out)[0].clone();
    s.confirmed("q");

    // Unnamed, on a connection that lacks `q`: q's Parse goes first, then the rewritten text.
    let (mut out, mut expect) = (BytesMut::new(), Vec::new());
    let execute = frame(b'P', b"\0 /* c */ EXECUTE q(1)\0\0\0");
    assert_eq!(
        s.translate(&execute, 2, &mut out, &mut expect),
        Translated::Rewritten
    );
    assert_eq!(
        expect,
        vec![
            Expect::Injected(Some(("q".into(), 2))),
            Expect::Parsed(None)
        ]
    );
    let text = String::from_utf8_lossy(&out).to_string();
    assert!(
        text.contains(&format!(" /* c */ EXECUTE \"{q}\"(1)")),
        "{text}"
    );

    // Named: a connection given it is given `q` first.
    let (mut out, mut expect) = (BytesMut::new(), Vec::new());
    let named_execute = frame(b'P', b"e\0execute q(2)\0\0\0");
    s.translate(&named_execute, 2, &mut out, &mut expect);
    s.confirmed("e");
    let (mut out, mut expect) = (BytesMut::new(), Vec::new());
    s.translate(&bind("", "e"), 3, &mut out, &mut expect);
    let names = named(&out);
    assert_eq!(names[0], q, "q's Parse first");
    assert!(
        names[1].ends_with(":e") && names[2] == names[1],
        "{names:?}"
    );
}

#[test]
fn a_sql_prepared_statement_is_given_to_a_bind_as_a_parse_with_its_types() {
    let mut s = RelayStatements::default();
    let text = "PREPARE q (bigint, text[]) AS select $1, $2;";
    let p = crate::frontend::pooled_relay::statement_text::preparation(text).unwrap();
    let shard = s.prepare_sql(text, &p, &[20, 1009], 1).unwrap();
    s.confirmed("q");
    assert!(s.prepare_sql(text, &p, &[20, 1009], 1).is_none(), "42P05");
    let (mut out, mut expect) = (BytesMut::new(), Vec::new());
    s.translate(&bind("", "q"), 2, &mut out, &mut expect);
    let mut wanted = format!("{shard}\0select $1, $2;\0").into_bytes();
    wanted.extend_from_slice(&[0, 2, 0, 0, 0, 20, 0, 0, 3, 241]);
    assert_eq!(&out[..1 + 4 + wanted.len()], &frame(b'P', &wanted)[..]);
}

#[test]
fn sql_execute_prepares_a_parse_with_declared_built_in_types_as_sql() {
    let typed = |name: &str, oids: &[u32]| {
        let mut body = format!("{name}\0select $1, $2\0").into_bytes();
        body.extend_from_slice(&(oids.len() as i16).to_be_bytes());
        for o in oids {
            body.extend_from_slice(&o.to_be_bytes());
        }
        frame(b'P', &body)
    };
    let mut s = RelayStatements::default();
    for (name, oids) in [("a", &[20, 0][..]), ("b", &[0, 20]), ("c", &[16384])] {
        s.translate(&typed(name, oids), 1, &mut BytesMut::new(), &mut Vec::new());
        s.confirmed(name);
    }
    let (shard, prepare) = s.for_execute("a", 2).unwrap();
    assert_eq!(
        prepare.unwrap(),
        format!("PREPARE \"{shard}\" (int8) AS select $1, $2\n;\n")
    );
    assert!(
        s.for_execute("b", 2).is_none(),
        "an open type before a declared one"
    );
    assert!(s.for_execute("c", 2).is_none(), "not a built-in type");
    assert_eq!(s.for_execute("c", 1).unwrap().1, None, "held: no PREPARE");
}

#[test]
fn a_parse_of_execute_is_translated_again_once_its_statement_changes() {
    let mut s = RelayStatements::default();
    let prepare = |s: &mut RelayStatements, conn| {
        let text = "PREPARE q AS select 1";
        let p = crate::frontend::pooled_relay::statement_text::preparation(text).unwrap();
        let shard = s.prepare_sql(text, &p, &[], conn).unwrap();
        s.confirmed("q");
        shard
    };
    let first = prepare(&mut s, 1);
    let (mut out, mut expect) = (BytesMut::new(), Vec::new());
    s.translate(
        &frame(b'P', b"e\0EXECUTE q\0\0\0"),
        1,
        &mut out,
        &mut expect,
    );
    s.confirmed("e");
    let e1 = named(&out)[0].clone();
    assert!(String::from_utf8_lossy(&out).contains(&format!("EXECUTE \"{first}\"")));

    // Unchanged: the Bind goes as it is on the connection that has both.
    let mut out = BytesMut::new();
    s.translate(&bind("", "e"), 1, &mut out, &mut Vec::new());
    assert_eq!(named(&out), std::slice::from_ref(&e1));

    // `q` prepared again: `e` gets a new name and a text naming the new `q`.
    assert!(s.deallocate("q", 1).is_some());
    let second = prepare(&mut s, 1);
    let (mut out, mut expect) = (BytesMut::new(), Vec::new());
    s.translate(&bind("", "e"), 1, &mut out, &mut expect);
    let names = named(&out);
    assert_eq!(names.len(), 2, "a Parse, then the Bind: {names:?}");
    assert!(names[0] != e1 && names[0].ends_with(":e") && names[1] == names[0]);
    let text = String::from_utf8_lossy(&out).to_string();
    assert!(text.contains(&format!("EXECUTE \"{second}\"")), "{text}");
    assert_eq!(expect, vec![Expect::Injected(Some(("e".into(), 1)))]);

    // `q` gone: the text goes as the client wrote it, for the shard to refuse (26000).
    assert!(s.deallocate("q", 1).is_some());
    let mut out = BytesMut::new();
    s.translate(&bind("", "e"), 1, &mut out, &mut Vec::new());
    assert!(String::from_utf8_lossy(&out).contains("EXECUTE q\0"));
}

#[test]
fn a_signal_bind_becomes_the_same_portal_of_the_proxys_statement() {
    // Portal "p" of statement "s", one text parameter, binary results.
    let mut body = b"p\0s\0\0\0\0\x01\0\0\0\x07".to_vec();
    body.extend_from_slice(b"5000000\0\x01\0\x01");
    let bind = frame(b'B', &body);
    let (mut out, mut expect) = (BytesMut::new(), Vec::new());
    let cancel = crate::sql::signal_call::SignalKind::Cancel;
    let due = Some((5_000_000, cancel));
    RelayStatements::instead_of_bind(&bind, "SELECT true AS x", due, &mut out, &mut expect)
        .unwrap();
    assert_eq!(
        named(&out),
        ["shardgate_signal", "shardgate_signal", "shardgate_signal"]
    );
    assert_eq!(
        expect,
        [Expect::OwnSignal(5_000_000, cancel), Expect::Own(b'3')]
    );
    let tags: Vec<u8> = {
        let (mut tags, mut rest) = (Vec::new(), &out[..]);
        while !rest.is_empty() {
            let len = i32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            tags.push(rest[0]);
            rest = &rest[1 + len..];
        }
        tags
    };
    assert_eq!(tags, b"PBC");
    let bind_out = &out[out.iter().position(|b| *b == b'B').unwrap()..];
    assert!(
        bind_out[5..].starts_with(b"p\0shardgate_signal\0\0\0\0\0\0\x01\0\x01"),
        "the client's portal, no parameters, its result formats: {bind_out:?}"
    );
    // A Bind cut short is left as it came.
    let (mut out, mut expect) = (BytesMut::new(), Vec::new());
    let short = frame(b'B', b"p\0s\0\0\x01");
    assert!(
        RelayStatements::instead_of_bind(&short, "SELECT 1", None, &mut out, &mut expect).is_none()
    );
    assert!(out.is_empty() && expect.is_empty());
}
