//! The results a shard has yet to send whose binary rows name user-defined types inside their
//! values, in the order the shard will answer them, and the renumbering of those rows into the
//! first shard's OIDs (see `protocol::embedded_oids`).
//!
//! Invariant: the queue holds one entry per result still to come (one per Execute sent, or
//! one pushed on a RowDescription for the result it describes), so the front entry is the
//! one of the rows being read; it is popped when that result ends (CommandComplete,
//! PortalSuspended, EmptyQueryResponse) and emptied by an error (the shard skips the rest up
//! to Sync) or ReadyForQuery. An empty queue costs nothing: rows pass untouched.

use crate::protocol::embedded_oids::{self, Shape, TypeMap};
use crate::protocol::Frame;
use bytes::BytesMut;
use std::collections::VecDeque;
use std::sync::Arc;

/// What the rows of one result need.
#[derive(Debug, Clone)]
pub enum RowTypes {
    /// Nothing: text, or no column whose values name types.
    Plain,
    /// These binary columns (index, shape) name types, renumbered by `map`.
    Renumber {
        columns: Vec<(usize, Shape)>,
        map: Arc<TypeMap>,
    },
    /// Bound with these result formats; the column types come with the next RowDescription.
    Learn { formats: Vec<i16> },
}

#[derive(Default)]
pub struct Pending(VecDeque<RowTypes>);

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn push(&mut self, r: RowTypes) {
        self.0.push_back(r);
    }

    /// The result formats of the first result still waiting for its column types.
    pub fn learning(&self) -> Option<&[i16]> {
        self.0.iter().find_map(|r| match r {
            RowTypes::Learn { formats } => Some(formats.as_slice()),
            _ => None,
        })
    }

    /// Gives the first result waiting for its column types what they need; with none
    /// waiting, and none queued, the result a RowDescription just described (a scatter's
    /// re-bind, a client's Describe of a portal).
    pub fn learned(&mut self, r: RowTypes) {
        if let Some(at) = self
            .0
            .iter()
            .position(|e| matches!(e, RowTypes::Learn { .. }))
        {
            self.0[at] = r;
        } else if self.0.is_empty() && !matches!(r, RowTypes::Plain) {
            self.0.push_back(r);
        }
    }

    /// Follows a message from the shard; a DataRow comes back renumbered when it must be.
    pub fn note(&mut self, f: Frame) -> Frame {
        match f.tag {
            b'D' => match self.0.front() {
                Some(RowTypes::Renumber { columns, map }) => renumbered(f, columns, map),
                _ => f,
            },
            b'C' | b's' | b'I' => {
                self.0.pop_front();
                f
            }
            b'E' | b'Z' => {
                self.0.clear();
                f
            }
            _ => f,
        }
    }
}

/// The DataRow `f` with the OIDs inside its listed columns renumbered. A value that cannot be
/// read as its type is passed as it came, and said so in the log.
fn renumbered(f: Frame, columns: &[(usize, Shape)], map: &TypeMap) -> Frame {
    let mut bytes = BytesMut::from(&f.bytes[..]);
    let mut at = 7; // tag, length, column count
    let count = match bytes.get(5..7) {
        Some(n) => i16::from_be_bytes([n[0], n[1]]).max(0) as usize,
        None => return f,
    };
    for column in 0..count {
        let Some(len) = bytes
            .get(at..at + 4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        else {
            return f;
        };
        at += 4;
        if len < 0 {
            continue;
        }
        let end = (at + len as usize).min(bytes.len());
        if let Some((_, shape)) = columns.iter().find(|(c, _)| *c == column) {
            if let Err(e) = embedded_oids::rewrite(&mut bytes[at..end], *shape, map) {
                tracing::warn!(
                    column,
                    "a binary value passed without renumbering its types: {e:?}"
                );
            }
        }
        at = end;
    }
    Frame {
        tag: f.tag,
        bytes: bytes.freeze(),
    }
}
