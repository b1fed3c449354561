//! A Parse whose text is `EXECUTE name(...)`: the relay writes in the name `name` has on the
//! shards, gives a connection that statement first, and translates the Parse again once the
//! client deallocates `name` or prepares it again, since PostgreSQL looks the name up at every
//! execution.

use super::{cstr_bytes, respliced_all, Edit, Expect, OwnedEdit, RelayStatements};
use crate::frontend::pooled_relay::statement_text;
use bytes::{Bytes, BytesMut};

/// The statement a Parse's text executes, as it stood when the Parse was translated.
/// PostgreSQL looks the name up at every execution; the translation wrote in the name the
/// statement then had on the shards, so once the client deallocates it or prepares it again,
/// the Parse is translated again, under a new name (`translated_again`).
#[derive(Debug, Clone)]
pub(super) struct Needs {
    pub(super) client: Box<str>,
    /// Its name on the shards then, written into the text; none when the session had no such
    /// statement (the text went as the client wrote it, and the shard answers for it).
    pub(super) shard: Option<Box<str>>,
    /// The client's own Parse, to translate again.
    parse: Bytes,
}

impl RelayStatements {
    /// The client's named Parse `frame` under the session's name `shard`, with the edit
    /// `executed_in` made of its text, and what its text executes.
    pub(super) fn renamed(
        &self,
        frame: &[u8],
        name_len: usize,
        shard: &str,
        executes: Option<(Option<OwnedEdit>, Box<str>)>,
    ) -> (Bytes, Option<Needs>) {
        let renamed = Edit::new(0, name_len, shard.as_bytes());
        let Some((edit, client)) = executes else {
            return (respliced_all(frame, &[renamed]), None);
        };
        let parse = match &edit {
            Some(edit) => respliced_all(frame, &[renamed, edit.as_ref()]),
            None => respliced_all(frame, &[renamed]),
        };
        let shard = edit.and(self.by_client.get(&client).map(|p| p.shard.clone()));
        let needs = Needs {
            client,
            shard,
            parse: Bytes::copy_from_slice(frame),
        };
        (parse, Some(needs))
    }

    /// Before a Bind or Describe of `client`: when the statement its text executes was
    /// deallocated or prepared again since its Parse was translated, the Parse is translated
    /// again under a new name, and no connection holds it. The old name stays on the
    /// connections that were given it until they close.
    pub(super) fn translated_again(
        &mut self,
        client: &str,
        conn: u64,
        out: &mut BytesMut,
        expect: &mut Vec<Expect>,
    ) {
        let Some(needs) = self.by_client.get(client).and_then(|p| p.needs.clone()) else {
            return;
        };
        let now = self.by_client.get(&needs.client).map(|p| &p.shard);
        if now == needs.shard.as_ref() {
            return;
        }
        let executes = self.executed_in(&needs.parse, client.len(), conn, out, expect);
        let shard = self.prefix.fresh(client).into_boxed_str();
        let (parse, needs) = self.renamed(&needs.parse, client.len(), &shard, executes);
        if let Some(p) = self.by_client.get_mut(client) {
            (p.shard, p.parse, p.needs) = (shard, parse, needs);
            p.on.clear();
        }
    }

    /// A Parse whose text is `EXECUTE name(...)`: `name`, and when it is a statement of the
    /// session's, the name in the text as the shard knows it (an edit of the frame), that
    /// statement given to connection `conn` first if it lacks it.
    pub(super) fn executed_in(
        &mut self,
        frame: &[u8],
        name_len: usize,
        conn: u64,
        out: &mut BytesMut,
        expect: &mut Vec<Expect>,
    ) -> Option<(Option<OwnedEdit>, Box<str>)> {
        let text_at = name_len + 1;
        let rest = frame.get(5 + text_at..)?;
        // Nearly every Parse is no EXECUTE: told by its first byte, before the text is even
        // measured.
        let first = rest.iter().find(|b| !b.is_ascii_whitespace());
        if !matches!(first, Some(b'e' | b'E' | b'-' | b'/')) {
            return None;
        }
        let raw = cstr_bytes(rest)?;
        let text = std::str::from_utf8(raw).ok()?;
        let statement = statement_text::without_leading_comments(text);
        let (target, range) = statement_text::execution(statement)?;
        let Some(p) = self.by_client.get(target.as_str()).filter(|p| !p.stale) else {
            return Some((None, target.into()));
        };
        let quoted = crate::sql::identifier(&p.shard);
        self.inject_if_missing(&target, conn, out, expect);
        let at = text_at + (text.len() - statement.len()) + range.start;
        self.text_edited = true;
        Some((
            Some(OwnedEdit {
                at,
                old_len: range.len(),
                new: quoted.into_bytes(),
            }),
            target.into(),
        ))
    }
}
