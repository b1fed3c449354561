//! The decoder fuzzer: random well-formed frontend messages, then mutations of them, fed to
//! every decoder that reads client bytes.
//!
//! It is structure-aware and property-checked rather than coverage-guided (no nightly toolchain
//! or sanitizer runtime is needed, so it runs everywhere `cargo test` does):
//! - every generated message must decode back to exactly what was encoded (round trip);
//! - every mutated message (bit flips, truncations, counts and lengths replaced by the values that
//!   break naive decoders: -1, -2, 0x7fff, i32::MAX, spliced bytes) must decode or be rejected
//!   with an error, never panic, and never allocate from a declared size (the decoders check
//!   sizes against the bytes present, which the unit tests pin down).
//!
//! What the proxy reads of statement text without sqlparser is fuzzed alongside (`texts`).
//!
//! `cargo test` runs a short pass; `cargo bench --bench fuzz` runs millions of inputs and prints
//! the figures docs/security.md reports.

use crate::placement::KeyType;
use crate::protocol::inspect;
use crate::protocol::message::{
    Bind, ClientMessage, Execute, Kind, Parse, Query, Target, TargetKind,
};
use crate::protocol::Frame;
use crate::router::params::Params;
use bytes::{Bytes, BytesMut};

mod texts;
pub use texts::clock_texts;

/// xorshift64*: small, fast, and reproducible from a seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

const SQL: &[&str] = &[
    "select 1",
    "select * from accounts where id = $1",
    "select * from accounts where id = any($1)",
    "insert into accounts (id, owner) values ($1, $2)",
    "update accounts set owner = $2 where id = $1",
    "select owner, count(*) from accounts group by owner order by 1",
    "begin",
    "commit",
    "set application_name = 'fuzz'",
    "",
];

fn name(rng: &mut Rng) -> String {
    ["", "s1", "p", "_pg3_0", "__asyncpg_stmt_1__"][rng.below(5)].to_string()
}

/// A random well-formed extended-protocol message (or Query), as a frame.
pub fn message(rng: &mut Rng) -> Frame {
    let mut out = BytesMut::new();
    match rng.below(8) {
        0 => Parse {
            name: name(rng),
            sql: SQL[rng.below(SQL.len())].into(),
            param_types: (0..rng.below(4))
                .map(|_| [0, 20, 23, 25, 1016][rng.below(5)])
                .collect(),
        }
        .encode(&mut out),
        1 | 2 => {
            let n = rng.below(4);
            let values = (0..n)
                .map(|_| match rng.below(4) {
                    0 => None,
                    1 => Some(Bytes::from(rng.below(1_000_000).to_string())),
                    2 => Some(Bytes::from((rng.next_u64() as i64).to_be_bytes().to_vec())),
                    _ => Some(Bytes::from(array_value(rng))),
                })
                .collect();
            let param_formats = match rng.below(3) {
                0 => vec![],
                1 => vec![rng.below(2) as i16],
                _ => (0..n).map(|_| rng.below(2) as i16).collect(),
            };
            Bind {
                portal: name(rng).into(),
                statement: name(rng).into(),
                params: Params {
                    values,
                    formats: param_formats,
                    types: Default::default(),
                },
                result_formats: (0..rng.below(3)).map(|_| rng.below(2) as i16).collect(),
            }
            .encode(&mut out)
        }
        3 => Target {
            kind: if rng.chance(2) {
                TargetKind::Statement
            } else {
                TargetKind::Portal
            },
            name: name(rng),
        }
        .encode(if rng.chance(2) { b'D' } else { b'C' }, &mut out),
        4 => Execute {
            portal: name(rng),
            max_rows: [0, 1, 10, -1][rng.below(4)],
        }
        .encode(&mut out),
        5 => Query {
            sql: SQL[rng.below(SQL.len())].to_string(),
        }
        .encode(&mut out),
        6 => out.extend_from_slice(b"S\0\0\0\x04"),
        _ => out.extend_from_slice(b"H\0\0\0\x04"),
    }
    Frame {
        tag: out[0],
        bytes: out.freeze(),
    }
}

/// A binary int8[] (array_send layout), sometimes with a lying header.
fn array_value(rng: &mut Rng) -> Vec<u8> {
    let n = rng.below(4) as i32;
    let mut b = Vec::new();
    let claimed = if rng.chance(4) {
        [i32::MAX, -1, 1 << 20][rng.below(3)]
    } else {
        n
    };
    for v in [1, 0, 20, claimed, 1] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    for _ in 0..n {
        b.extend_from_slice(&8i32.to_be_bytes());
        b.extend_from_slice(&(rng.next_u64() as i64).to_be_bytes());
    }
    b
}

/// Values that break decoders that trust what they are told.
const POISON: &[&[u8]] = &[
    &[0xff, 0xff],
    &[0xff, 0xfe],
    &[0x7f, 0xff],
    &[0x80, 0x00],
    &[0xff, 0xff, 0xff, 0xff],
    &[0x7f, 0xff, 0xff, 0xff],
    &[0x80, 0, 0, 0],
    &[0],
];

/// Applies one to three mutations to a message body (the frame header is rebuilt after, so the
/// decoders see the mutated body; the frame scanner is fuzzed separately by the live fuzzer).
pub fn mutate(rng: &mut Rng, body: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(3) {
        match rng.below(6) {
            0 if !body.is_empty() => {
                let i = rng.below(body.len());
                body[i] ^= 1 << rng.below(8);
            }
            1 => body.truncate(rng.below(body.len() + 1)),
            2 => {
                let p = POISON[rng.below(POISON.len())];
                let i = rng.below(body.len() + 1);
                let end = (i + p.len()).min(body.len());
                body.splice(i..end, p.iter().copied());
            }
            3 => {
                let i = rng.below(body.len() + 1);
                let n = rng.below(8) + 1;
                let extra = rng.bytes(n);
                body.splice(i..i, extra);
            }
            4 if !body.is_empty() => {
                let i = rng.below(body.len());
                body.remove(i);
            }
            _ => {
                let n = rng.below(4);
                body.extend_from_slice(&rng.bytes(n));
            }
        }
    }
}

fn with_body(tag: u8, body: &[u8]) -> Frame {
    let mut out = BytesMut::with_capacity(body.len() + 5);
    crate::protocol::message::frame(&mut out, tag, |b| b.extend_from_slice(body));
    Frame {
        tag,
        bytes: out.freeze(),
    }
}

/// Counts of one fuzzing run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub inputs: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub round_trip_failures: u64,
    /// Statement texts given to the call recogniser, those it took for a call, and those of
    /// them that sqlparser does not read as the same call.
    pub texts: u64,
    pub calls: u64,
    pub calls_misread: u64,
    /// Query texts of several statements that sqlparser read, and among them those the
    /// splitter cut elsewhere than sqlparser, or whose LISTEN did not pin the session.
    pub queries: u64,
    pub splits_misread: u64,
    pub listens_unpinned: u64,
    /// Texts whose clock calls were rewritten, and those that a second rewrite would change
    /// again.
    pub clock_texts: u64,
    pub clock_misread: u64,
}

/// Feeds one frame to every decoder that could see it.
fn decode_all(frame: &Frame, report: &mut Report) {
    report.inputs += 1;
    let ok = match frame.tag {
        b'Q' => Query::decode(&frame.bytes.slice(5..)).is_ok(),
        _ => match ClientMessage::decode(frame.clone()) {
            Ok(m) => {
                if let Kind::Bind(b) = &m.kind {
                    let params = &b.params;
                    for n in 1..=params.values.len() {
                        let _ = params.key(n, KeyType::Integer);
                        let _ = params.key(n, KeyType::Uuid);
                        let _ = params.key_array(n, KeyType::Integer);
                        let _ = params.key_array(n, KeyType::Text);
                    }
                }
                true
            }
            Err(_) => false,
        },
    };
    // The same bytes read as a shard's RowDescription and DataRow (the proxy decodes those for
    // merges) must not panic either.
    let body = &frame.bytes[5..];
    let _ = inspect::row_description(body);
    let _ = inspect::data_row_column(body, 1);
    let _ = inspect::error_field(body, b'C');
    if ok {
        report.accepted += 1;
    } else {
        report.rejected += 1;
    }
}

/// Runs `n` generated messages, each followed by `mutations` mutants of it.
pub fn run(seed: u64, n: u64, mutations: u32) -> Report {
    let mut rng = Rng::new(seed);
    let mut report = Report::default();
    for _ in 0..n {
        let frame = message(&mut rng);
        if !round_trips(&frame) {
            report.round_trip_failures += 1;
        }
        decode_all(&frame, &mut report);
        for _ in 0..mutations {
            let mut body = frame.bytes[5..].to_vec();
            mutate(&mut rng, &mut body);
            decode_all(&with_body(frame.tag, &body), &mut report);
        }
        texts::round(&mut rng, mutations, &mut report);
    }
    report
}

/// A well-formed message decodes, and encodes back to the same bytes.
fn round_trips(frame: &Frame) -> bool {
    let mut again = BytesMut::new();
    if frame.tag == b'Q' {
        match Query::decode(&frame.bytes.slice(5..)) {
            Ok(q) => q.encode(&mut again),
            Err(_) => return false,
        }
        return again == frame.bytes;
    }
    let Ok(m) = ClientMessage::decode(frame.clone()) else {
        return false;
    };
    match &m.kind {
        Kind::Parse(p) => p.encode(&mut again),
        Kind::Bind(b) => b.encode(&mut again),
        Kind::Describe(t) => t.encode(b'D', &mut again),
        Kind::Close(t) => t.encode(b'C', &mut again),
        Kind::Execute(e) => e.encode(&mut again),
        Kind::Flush | Kind::Sync => again.extend_from_slice(&frame.bytes),
    }
    again == frame.bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoders_survive_a_short_fuzzing_run() {
        let report = run(0x5eed, 20_000, 8);
        assert_eq!(report.inputs, 20_000 * 9);
        assert_eq!(report.round_trip_failures, 0, "{report:?}");
        // Both outcomes must occur, or the mutations are not reaching the decoders.
        assert!(report.accepted > 20_000, "{report:?}");
        assert!(report.rejected > 50_000, "{report:?}");
        assert_eq!(report.calls_misread, 0, "{report:?}");
        // The mutants must make both calls and near misses.
        assert!(report.calls > 20_000, "{report:?}");
        assert!(report.texts - report.calls > 50_000, "{report:?}");
        assert_eq!(report.splits_misread, 0, "{report:?}");
        assert_eq!(report.listens_unpinned, 0, "{report:?}");
        assert!(report.queries > 20_000, "{report:?}");
        assert_eq!(report.clock_misread, 0, "{report:?}");
        assert!(report.clock_texts > 20_000, "{report:?}");
    }
}
