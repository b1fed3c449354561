//! Statement names on pooled connections.
//!
//! In transaction mode a server connection serves many clients in turn, and clients pick the
//! same names (`S_1`, `P0_1`, `_pg3_0` ...). So each client's named statement is given a name of
//! its own on the shards, fresh for every Parse: the session's number, a counter, then the
//! client's name. A fresh name per Parse means a statement this session left on a connection
//! earlier can never be mistaken for a newer one of the same client name, and one session's
//! statement never meets another's. The unnamed statement is not renamed: it lasts only until the
//! next Parse on its connection, which the session already tracks.
//!
//! The unique part comes first because PostgreSQL compares statement names on their first 63
//! bytes.

use crate::protocol::message::{ClientMessage, Kind, TargetKind};
use crate::protocol::Frame;
use bytes::{BufMut, BytesMut};
use foldhash::HashMap;
use smol_str::SmolStr;
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// Where a session's shard-side statement names come from.
#[derive(Debug)]
pub struct SessionPrefix {
    prefix: String,
    next: u64,
}

impl Default for SessionPrefix {
    fn default() -> Self {
        SessionPrefix {
            prefix: format!("sg{:x}", NEXT_SESSION.fetch_add(1, Ordering::Relaxed)),
            next: 0,
        }
    }
}

impl SessionPrefix {
    /// A name no statement of any session had before, ending in the client's.
    pub fn fresh(&mut self, client: &str) -> String {
        self.next += 1;
        format!("{}_{:x}:{client}", self.prefix, self.next)
    }
}

/// The client's name in a statement name of the shards (a name the session did not rename
/// comes back as it is).
pub fn client_part(shard: &str) -> &str {
    match shard.split_once(':') {
        Some((prefix, client)) if prefix.starts_with("sg") => client,
        _ => shard,
    }
}

/// `message` of a shard's error with each statement name the proxy gave (`"sg1f_3:S_1"`) put
/// back as the client's (`"S_1"`); None when it quotes none.
pub fn client_message(message: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = message;
    while let Some(at) = rest.find("\"sg") {
        let name = &rest[at + 1..];
        let cut = name.find(':').filter(|&end| {
            let (session, counter) = name[2..end].split_once('_').unwrap_or(("", ""));
            let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
            hex(session) && hex(counter)
        });
        out.push_str(&rest[..at + 1]);
        rest = match cut {
            Some(end) => &name[end + 1..],
            None => name,
        };
    }
    if out.is_empty() {
        return None;
    }
    out.push_str(rest);
    (out != message).then_some(out)
}

/// A shard's ErrorResponse about a prepared statement (42P05, 26000) with the client's names
/// in its message; None when it needs no change.
pub fn error_in_client_names(frame: &[u8]) -> Option<bytes::Bytes> {
    use crate::protocol::inspect::error_field;
    let body = frame.get(5..)?;
    if !matches!(error_field(body, b'C'), Some("42P05" | "26000")) {
        return None;
    }
    let message = client_message(error_field(body, b'M')?)?;
    Some(crate::protocol::inspect::with_error_field(
        frame, b'M', &message,
    ))
}

#[derive(Debug, Default)]
pub struct StatementNames {
    prefix: SessionPrefix,
    /// Client name to the name its current statement has on the shards (inline strings: a
    /// Bind takes a copy of one every time it runs).
    current: HashMap<String, SmolStr>,
    /// Each statement's text and declared parameter types, by its name on the shards: for SQL
    /// EXECUTE on a connection that did not prepare it.
    parsed: HashMap<String, (String, Vec<u32>)>,
    binds: BindFrames,
}

impl StatementNames {
    /// Makes the message what the shards must see: statement names replaced by this session's.
    pub fn rename(&mut self, m: &mut ClientMessage) {
        match &mut m.kind {
            Kind::Parse(p) if !p.name.is_empty() => {
                // A live name keeps its statement, so that the session refuses the Parse as
                // PostgreSQL would (42P05).
                let shard = match self.current.get(&p.name) {
                    Some(live) => live.to_string(),
                    None => self.prefix.fresh(&p.name),
                };
                self.current.insert(p.name.clone(), SmolStr::new(&shard));
                self.parsed
                    .entry(shard.clone())
                    .or_insert_with(|| (p.sql.to_string(), p.param_types.clone()));
                m.frame = respliced(&m.frame, 0, p.name.len(), &shard);
                p.name = shard;
            }
            Kind::Bind(b) if !b.statement.is_empty() => {
                if let Some(shard) = self.current.get(b.statement.as_str()) {
                    let at = b.portal.len() + 1;
                    m.frame = self.binds.respliced(&m.frame, at, b.statement.len(), shard);
                    b.statement = shard.clone();
                }
            }
            Kind::Describe(t) | Kind::Close(t)
                if t.kind == TargetKind::Statement && !t.name.is_empty() =>
            {
                // A Close is forgotten only once carried out (see `closed`): after an error
                // PostgreSQL skips it, and the statement lives on.
                if let Some(shard) = self.current.get(&t.name).map(SmolStr::to_string) {
                    m.frame = respliced(&m.frame, 1, t.name.len(), &shard);
                    t.name = shard;
                }
            }
            _ => {}
        }
    }

    /// The statement with this shard name was closed: its client name is free again (unless a
    /// later Parse already gave it to a newer statement).
    pub fn closed(&mut self, shard: &str) {
        self.current.retain(|_, s| s != shard);
        self.parsed.remove(shard);
    }

    /// The text and declared parameter types of the statement named `shard` on the shards.
    pub fn parsed(&self, shard: &str) -> Option<(&str, &[u32])> {
        self.parsed
            .get(shard)
            .map(|(t, o)| (t.as_str(), o.as_slice()))
    }

    /// The shard name of a client's statement, for SQL DEALLOCATE; it is forgotten.
    pub fn forget(&mut self, client: &str) -> Option<String> {
        let shard = self.current.remove(client)?.to_string();
        self.parsed.remove(&shard);
        Some(shard)
    }

    /// DEALLOCATE ALL, DISCARD ALL.
    pub fn forget_all(&mut self) {
        self.current.clear();
        self.parsed.clear();
    }

    /// A name no statement of any session had, ending in `client`, for a statement the session
    /// prepares and deallocates at once (see `sql_prepare`).
    pub fn fresh(&mut self, client: &str) -> String {
        self.prefix.fresh(client)
    }

    /// The shard name of a client's statement.
    pub fn shard_name(&self, client: &str) -> Option<&str> {
        self.current.get(client).map(SmolStr::as_str)
    }
}

/// `frame` with the name of `old_len` bytes at body offset `at` replaced by `new`.
fn respliced(frame: &Frame, at: usize, old_len: usize, new: &str) -> Frame {
    // Sized exactly: a buffer with room to spare costs one more allocation when frozen.
    let mut out = BytesMut::with_capacity(frame.bytes.len() - old_len + new.len());
    splice_into(&mut out, frame, at, old_len, new);
    Frame {
        tag: frame.tag,
        bytes: out.freeze(),
    }
}

fn splice_into(out: &mut BytesMut, frame: &Frame, at: usize, old_len: usize, new: &str) {
    let body = frame.body();
    out.put_u8(frame.tag);
    out.put_i32((4 + body.len() - old_len + new.len()) as i32);
    out.put_slice(&body[..at]);
    out.put_slice(new.as_bytes());
    out.put_slice(&body[at + old_len..]);
}

/// Where renamed Binds are written. A named statement's Bind is renamed every time it runs, and
/// a buffer of its own for each cost an allocation per execution; instead they are slices of one
/// small buffer, taken back once no frame of it is left (`BytesMut::reserve` reuses a buffer
/// nothing else refers to), which is when the batch that held them has run. A Bind that outlives
/// its batch (a portal the session keeps) only makes the next ones start a new buffer.
#[derive(Debug, Default)]
struct BindFrames(BytesMut);

/// Bytes of one buffer of renamed Binds: a dozen point-query Binds. Larger Binds get their own.
const BIND_FRAMES_BYTES: usize = 512;

impl BindFrames {
    fn respliced(&mut self, frame: &Frame, at: usize, old_len: usize, new: &str) -> Frame {
        let len = frame.bytes.len() - old_len + new.len();
        if len > BIND_FRAMES_BYTES {
            return respliced(frame, at, old_len, new);
        }
        if self.0.capacity() < len {
            self.0.reserve(BIND_FRAMES_BYTES);
        }
        splice_into(&mut self.0, frame, at, old_len, new);
        Frame {
            tag: frame.tag,
            bytes: self.0.split().freeze(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::message::{Bind, Parse, Target};

    #[test]
    fn an_error_names_statements_as_the_client_does() {
        assert_eq!(
            client_message("prepared statement \"sg35c_1:foobar\" already exists").as_deref(),
            Some("prepared statement \"foobar\" already exists")
        );
        assert_eq!(
            client_message("\"sg1_a:x\" and \"sg2_b:y:z\"").as_deref(),
            Some("\"x\" and \"y:z\"")
        );
        assert_eq!(
            client_message("prepared statement \"S_1\" does not exist"),
            None
        );
        assert_eq!(client_message("relation \"sgx_1:t\" does not exist"), None);
        assert_eq!(client_message("\"sg"), None);
        assert_eq!(client_message("\"sg1_:x\""), None);
    }

    #[test]
    fn only_errors_about_prepared_statements_are_rewritten() {
        use crate::error::PgError;
        use crate::protocol::inspect::error_field;
        let frame = |code: &'static str| {
            let mut b = BytesMut::new();
            let e = PgError::error(code, "prepared statement \"sg7_2:q\" already exists")
                .with_hint("h");
            crate::protocol::build::error(&e, &mut b);
            b
        };
        let out = error_in_client_names(&frame("42P05")).expect("rewritten");
        let body = &out[5..];
        assert_eq!(
            error_field(body, b'M'),
            Some("prepared statement \"q\" already exists")
        );
        assert_eq!(error_field(body, b'C'), Some("42P05"));
        assert_eq!(error_field(body, b'H'), Some("h"));
        assert_eq!(
            u32::from_be_bytes(out[1..5].try_into().unwrap()) as usize,
            out.len() - 1
        );
        assert!(error_in_client_names(&frame("42601")).is_none());
    }

    fn message(build: impl FnOnce(&mut BytesMut)) -> ClientMessage {
        let mut b = BytesMut::new();
        build(&mut b);
        let bytes = b.freeze();
        ClientMessage::decode(Frame {
            tag: bytes[0],
            bytes,
        })
        .unwrap()
    }

    fn parse(name: &str) -> ClientMessage {
        message(|b| {
            Parse {
                name: name.into(),
                sql: "select $1".into(),
                param_types: vec![23],
            }
            .encode(b)
        })
    }

    fn renamed(names: &mut StatementNames, mut m: ClientMessage) -> ClientMessage {
        names.rename(&mut m);
        m
    }

    #[test]
    fn renamed_binds_share_a_buffer_that_is_taken_back_once_they_are_gone() {
        let mut names = StatementNames::default();
        let Kind::Parse(p) = renamed(&mut names, parse("P0_1")).kind else {
            panic!()
        };
        let bind = |value: &'static [u8]| {
            message(|b| {
                Bind {
                    portal: SmolStr::default(),
                    statement: "P0_1".into(),
                    params: crate::protocol::message::Params {
                        values: smallvec::smallvec![Some(bytes::Bytes::from_static(value))],
                        formats: vec![],
                        types: Default::default(),
                    },
                    result_formats: Default::default(),
                }
                .encode(b)
            })
        };
        let value_of = |m: &ClientMessage| {
            let Kind::Bind(b) = ClientMessage::decode(m.frame.clone()).unwrap().kind else {
                panic!()
            };
            assert_eq!(b.statement, p.name);
            b.params.values[0].clone()
        };
        // Two Binds of one batch are apart, each whole.
        let (one, two) = (
            renamed(&mut names, bind(b"1")),
            renamed(&mut names, bind(b"22")),
        );
        assert_eq!(value_of(&one).as_deref(), Some(&b"1"[..]));
        assert_eq!(value_of(&two).as_deref(), Some(&b"22"[..]));
        let start = one.frame.bytes.as_ptr() as usize;
        let within = |m: &ClientMessage| {
            let at = m.frame.bytes.as_ptr() as usize;
            at >= start && at < start + BIND_FRAMES_BYTES
        };
        assert!(within(&two));
        // Batch after batch, the Binds are written in that one buffer.
        drop((one, two));
        for _ in 0..100 {
            let m = renamed(&mut names, bind(b"333"));
            assert!(within(&m));
            assert_eq!(value_of(&m).as_deref(), Some(&b"333"[..]));
        }
        // A Bind still held is never written over: the Binds after it move to a new buffer.
        let held = renamed(&mut names, bind(b"4"));
        let moved = (0..100).any(|_| !within(&renamed(&mut names, bind(b"55"))));
        assert!(moved);
        assert_eq!(value_of(&held).as_deref(), Some(&b"4"[..]));
    }

    #[test]
    fn every_parse_gets_a_fresh_name_that_binds_describes_and_closes_follow() {
        let mut names = StatementNames::default();
        let p = renamed(&mut names, parse("S_1"));
        let Kind::Parse(first) = &p.kind else {
            panic!()
        };
        assert!(first.name.ends_with(":S_1") && first.name.starts_with("sg"));
        // The re-encoded frame decodes to the same thing.
        let again = ClientMessage::decode(p.frame.clone()).unwrap();
        assert!(matches!(&again.kind, Kind::Parse(x) if x == first));

        let bind_s1 = || {
            message(|b| {
                Bind {
                    portal: "p".into(),
                    statement: "S_1".into(),
                    params: crate::protocol::message::Params {
                        values: smallvec::smallvec![Some(bytes::Bytes::from_static(b"7"))],
                        formats: vec![],
                        types: Default::default(),
                    },
                    result_formats: [1].as_slice().into(),
                }
                .encode(b)
            })
        };
        let bind = renamed(&mut names, bind_s1());
        let decoded = ClientMessage::decode(bind.frame.clone()).unwrap();
        let Kind::Bind(b) = decoded.kind else {
            panic!()
        };
        assert_eq!(b.statement, first.name);
        assert_eq!(b.portal, "p");
        assert_eq!(
            b.params.values.as_slice(),
            [Some(bytes::Bytes::from_static(b"7"))]
        );

        let close = renamed(
            &mut names,
            message(|b| {
                Target {
                    kind: TargetKind::Statement,
                    name: "S_1".into(),
                }
                .encode(b'C', b)
            }),
        );
        assert!(matches!(&close.kind, Kind::Close(t) if t.name == first.name));
        // A Parse of the live name names the live statement, which the session refuses.
        let again = renamed(&mut names, parse("S_1"));
        assert!(matches!(&again.kind, Kind::Parse(x) if x.name == first.name));
        assert_eq!(client_part(&first.name), "S_1");
        assert_eq!(client_part("S_1"), "S_1");
        // Until the Close is carried out, the name is still the statement's.
        let bind = renamed(&mut names, bind_s1());
        assert!(matches!(&bind.kind, Kind::Bind(b) if b.statement == first.name));
        names.closed(&first.name);
        // After the Close, the same client name is a different statement.
        let p2 = renamed(&mut names, parse("S_1"));
        let Kind::Parse(second) = &p2.kind else {
            panic!()
        };
        assert_ne!(second.name, first.name);
        // Another session never shares a name.
        let mut other = StatementNames::default();
        let Kind::Parse(theirs) = renamed(&mut other, parse("S_1")).kind else {
            panic!()
        };
        assert_ne!(theirs.name, second.name);
    }

    #[test]
    fn the_unnamed_statement_and_portals_keep_their_names() {
        let mut names = StatementNames::default();
        let p = renamed(&mut names, parse(""));
        assert!(matches!(&p.kind, Kind::Parse(x) if x.name.is_empty()));
        let d = renamed(
            &mut names,
            message(|b| {
                Target {
                    kind: TargetKind::Portal,
                    name: "S_1".into(),
                }
                .encode(b'D', b)
            }),
        );
        assert!(matches!(&d.kind, Kind::Describe(t) if t.name == "S_1"));
    }
}
