//! The last description (RowDescription or ParameterDescription) each shard sent that needed
//! translating for the client (see `Exec::for_client`), with what the client was shown for it.
//!
//! A driver describes the same statement batch after batch, and a shard other than the first
//! sends the same bytes each time; translating them asks the shared catalog caches (a lock and a
//! lookup per column) and copies the message. The bytes a shard sent name everything the
//! translation reads (its type and table OIDs, attribute numbers), so equal bytes translate
//! equally as long as the catalog's caches hold: an entry is used only while the catalog's
//! generation (`Catalog::generation`, moved by DDL) is the one it was made under.
//!
//! Kept only for translations that came out whole: one that described something as unknown
//! after a failed lookup is made again next time, and so is any made while the open
//! transaction has created types (their numbers live in the transaction, not the catalog).

use bytes::Bytes;

/// Descriptions longer than this are translated each time rather than kept (a wide result
/// costs more to compare and hold than it is worth).
const MAX_KEPT_BYTES: usize = 4096;

#[derive(Debug, Default)]
pub struct ShownDescriptions {
    per_shard: Vec<Option<Shown>>,
}

#[derive(Debug)]
struct Shown {
    generation: u64,
    /// The shard's message, copied (a slice would hold the link's read buffer).
    sent: Bytes,
    shown: Bytes,
}

impl ShownDescriptions {
    /// What the client was shown for these bytes from `shard`, if they were translated under
    /// this catalog generation.
    pub fn get(&self, shard: usize, generation: u64, sent: &[u8]) -> Option<Bytes> {
        match self.per_shard.get(shard) {
            Some(Some(s)) if s.generation == generation && s.sent[..] == *sent => {
                Some(s.shown.clone())
            }
            _ => None,
        }
    }

    /// Keeps a whole translation of `sent` from `shard`.
    pub fn keep(&mut self, shard: usize, generation: u64, sent: &[u8], shown: Bytes) {
        if sent.len() > MAX_KEPT_BYTES {
            return;
        }
        if self.per_shard.len() <= shard {
            self.per_shard.resize_with(shard + 1, || None);
        }
        self.per_shard[shard] = Some(Shown {
            generation,
            sent: Bytes::copy_from_slice(sent),
            shown,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn found_only_for_the_same_shard_bytes_and_generation() {
        let mut kept = ShownDescriptions::default();
        let shown = Bytes::from_static(b"shown");
        assert_eq!(kept.get(2, 1, b"sent"), None);
        kept.keep(2, 1, b"sent", shown.clone());
        assert_eq!(kept.get(2, 1, b"sent"), Some(shown.clone()));
        assert_eq!(kept.get(1, 1, b"sent"), None);
        assert_eq!(kept.get(3, 1, b"sent"), None);
        assert_eq!(kept.get(2, 1, b"sent!"), None);
        // DDL moved the catalog on.
        assert_eq!(kept.get(2, 2, b"sent"), None);
        // A newer description of the shard replaces the older one.
        kept.keep(2, 2, b"other", Bytes::from_static(b"o"));
        assert_eq!(kept.get(2, 1, b"sent"), None);
        assert_eq!(kept.get(2, 2, b"other"), Some(Bytes::from_static(b"o")));
        // Too long to keep.
        let long = vec![b'x'; MAX_KEPT_BYTES + 1];
        kept.keep(0, 2, &long, shown);
        assert_eq!(kept.get(0, 2, &long), None);
    }
}
