//! What the proxy added to a client's Query, so that its answers and error positions can be
//! given back as if it had added nothing.
//!
//! A pooled connection's RESET goes back to that connection's login values, not to the
//! client's startup parameters as PostgreSQL's would. The relay passes a Query whole, so the
//! SETs that give the client's values back go into its text (the tracker's rewrite of SQL
//! statements, `executes`), right after each statement that resets them, each on a line of
//! its own (a `--` comment ending the RESET cannot swallow them); statements of the session's
//! are renamed in the same pass. `Restored` remembers which of the shard's answers are the
//! proxy's, to drop them, and where its text sits, to move error positions back into the
//! client's text.
//!
//! Invariant: every statement of the text before an added SET produces exactly one
//! CommandComplete when it runs, so the added SETs' answers are known by their order.

use super::statement_text::query_text;
use bytes::BytesMut;

/// The statements the proxy added to one Query: the SETs that give startup parameters back,
/// or the PREPARE that gives a connection a statement for DEALLOCATE to remove.
#[derive(Debug, Default)]
pub(super) struct Restored {
    /// Which CommandCompletes answer them, counted from 1, and the tag each answers with.
    hidden: Vec<(u32, &'static [u8])>,
    completes: u32,
    /// Statements put in front after the edits were made (`put_ahead`): the CommandCompletes
    /// numbered before then come this many later.
    put_ahead: u32,
    /// Characters of the sent text before each insertion, and the insertion's length.
    inserted: Vec<(u64, u64)>,
}

impl Restored {
    /// `statement` (with its terminator) put in front of the client's text; its answer's tag
    /// is `tag`.
    pub fn ahead(statement: &str, tag: &'static [u8]) -> Restored {
        Restored::edited(vec![(1, tag)], vec![(0, statement.chars().count() as u64)])
    }

    /// The client's text with the proxy's edits: `hidden` answers (by position and tag), and
    /// where text was added (characters of the sent text before it, and its length).
    pub fn edited(hidden: Vec<(u32, &'static [u8])>, inserted: Vec<(u64, u64)>) -> Restored {
        Restored {
            hidden,
            completes: 0,
            put_ahead: 0,
            inserted,
        }
    }

    /// A statement of `chars` characters (with its terminator) put in front of the text these
    /// edits describe; its answer's tag is `tag`.
    fn put_ahead(&mut self, chars: u64, tag: &'static [u8]) {
        self.put_ahead += 1;
        for (n, _) in &mut self.hidden {
            *n += 1;
        }
        self.hidden.insert(0, (1, tag));
        for (at, _) in &mut self.inserted {
            *at += chars;
        }
        self.inserted.insert(0, (0, chars));
    }

    /// Text was edited where error positions cannot be mapped back: none is given.
    pub fn positions_unknown() -> Restored {
        Restored::edited(Vec::new(), vec![(0, u64::MAX / 2)])
    }

    /// Whether the Query's `n`th CommandComplete (from 1, as numbered when the edits were made)
    /// has arrived.
    pub fn answered_through(&self, n: u32) -> bool {
        n + self.put_ahead <= self.completes
    }

    /// A CommandComplete of the Query arrived, with this tag: true when it answers an added
    /// statement.
    pub fn answer_is_ours(&mut self, tag: &[u8]) -> bool {
        if self.hidden.is_empty() {
            return false;
        }
        self.completes += 1;
        self.hidden.contains(&(self.completes, tag))
    }

    /// A position (in characters, from 1) in the text the shard ran as a position in the
    /// client's text (None: no position to give); None when nothing was added.
    pub fn client_position(&self) -> Option<impl Fn(u64) -> Option<u64>> {
        let inserted = self.inserted.clone();
        (!inserted.is_empty()).then_some(move |p: u64| {
            let mut client = p;
            for &(at, len) in &inserted {
                if p > at + len {
                    client -= len;
                } else if p > at {
                    // In the proxy's own text: point at the end of the client's text before
                    // it (nowhere, when the proxy's text came first).
                    client -= p - at;
                }
            }
            (client > 0).then_some(client)
        })
    }
}

/// The Query `client` (a whole frame), or the proxy's rewrite of it in `out` when `client` is
/// None, sent behind `statement` instead, into `out`; `restored` learns that the statement's
/// answer (tagged as the statement reads) is the proxy's, and where its text sits.
pub(super) fn ahead_of_query(
    statement: &'static str,
    client: Option<&[u8]>,
    out: &mut BytesMut,
    restored: &mut Restored,
) {
    let text = match client {
        Some(frame) => query_text(&frame[5..]),
        None => query_text(&out[5..]),
    };
    let sent = format!("{statement};\n{text}");
    out.clear();
    crate::protocol::build::query(&sent, out);
    restored.put_ahead(statement.chars().count() as u64 + 2, statement.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_put_in_front_keeps_positions_after_it_and_has_none_of_its_own() {
        let ahead = "PREPARE \"sg1_1:q\" AS select x\n;\n";
        let sent = format!("{ahead}EXECUTE q(1)");
        let restored = Restored::ahead(ahead, b"PREPARE");
        let to_client = restored.client_position().unwrap();
        let execute = sent.find("EXECUTE").unwrap() as u64 + 1;
        assert_eq!(to_client(execute), Some(1));
        // An error in the proxy's PREPARE (the statement cannot be prepared again) points
        // nowhere in the client's text.
        let inside = sent.find("select x").unwrap() as u64 + 8;
        assert_eq!(to_client(inside), None);
    }
}
