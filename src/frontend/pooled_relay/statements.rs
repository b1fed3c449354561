//! Named statements of a one-shard session whose server connection changes between
//! transactions.
//!
//! Every named Parse is sent under a name of the session's own (see `pool::names`), and the
//! renamed Parse is kept, so that a Bind or Describe reaching a connection that never saw the
//! statement is preceded by that Parse; its ParseComplete is the proxy's, not the client's, and
//! is dropped on the way back. The relay reads names straight from the frames: only the few
//! bytes of a name are looked at, and a frame that names no statement passes untouched.
//!
//! PostgreSQL fixes a statement's result columns when it prepares it, and refuses the
//! statement once DDL changed them; a driver that described the statement decodes rows by the
//! columns it was shown. Prepared again on another connection after such DDL, the statement
//! would silently take the new columns. So when the client was shown columns, a statement
//! given to a new connection is described there first and compared (`Translated::Check`); if
//! they differ it is stale, and every use of it fails as PostgreSQL's own check does.
//!
//! Invariant: `on` lists only connections that were sent the renamed Parse, and an entry exists
//! for a client name from its Parse until its Close (or until PostgreSQL refused the Parse, see
//! `refused`). Between a Close and its CloseComplete the entry waits in `closing`, and comes
//! back if the shard skipped the Close after an error.

use crate::pool::names::SessionPrefix;
use bytes::{BufMut, Bytes, BytesMut};
use foldhash::HashMap;

/// What the shard's answers to the messages sent will hold, in order, for each Parse and
/// Describe (and the proxy's own messages), so that the shard pump can tell whose each
/// ParseComplete, RowDescription or NoData is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// A ParseComplete for a Parse the proxy added: dropped. It names the client's statement
    /// and the connection it was given to (none for the proxy's own refusal), so that a Parse
    /// the shard skipped after an error is not taken as done (see `not_given`).
    Injected(Option<(Box<str>, u64)>),
    /// A ParseComplete for the client's Parse; it names a statement of the session's.
    Parsed(Option<Box<str>>),
    /// The answer to the client's Describe; of a statement of the session's, it is the
    /// columns the client was shown.
    Described(Option<Box<str>>),
    /// The answer to the proxy's Describe of a statement given to a new connection: dropped,
    /// and compared with the columns the client was shown.
    Checked(Box<str>),
    /// A BindComplete for a Bind the proxy added: dropped.
    InjectedBind,
    /// A CloseComplete; of a statement of the session's, it says the Close was carried out
    /// (PostgreSQL skips a Close after an error, and the statement then lives on).
    Closed(Option<Box<str>>),
    /// The error that stands for PostgreSQL's refusal of a stale statement.
    Refusal,
    /// An answer with this tag to a message the proxy sent for itself, under names of its
    /// own (see `own_statement`): dropped.
    Own(u8),
    /// The ParseComplete of the proxy's statement that answers a signal to session `pid` (see
    /// `instead_of_bind`): dropped, and the signal is due. An error earlier in the batch skips
    /// the Parse, and then, as PostgreSQL would, the signal.
    OwnSignal(i32, crate::sql::signal_call::SignalKind),
}

impl Expect {
    /// Whether it stands for an answer to a Parse (a ParseComplete).
    pub fn is_parse(&self) -> bool {
        matches!(self, Expect::Injected(_) | Expect::Parsed(_))
    }

    /// Whether it stands for an answer to a Describe (RowDescription or NoData).
    pub fn is_describe(&self) -> bool {
        matches!(self, Expect::Described(_) | Expect::Checked(_))
    }
}

/// What `translate` did with a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Translated {
    /// It goes as it came.
    Same,
    /// It was rewritten into `out`, after any Parse it needs first.
    Rewritten,
    /// The connection lacks the statement and the client was shown its columns: `out` holds
    /// a Parse and a Describe for the shard, and the message waits for the comparison; it is
    /// translated again once the answer is in (see `checked`).
    Check,
    /// The statement is stale: instead of the message, the proxy's refusal goes (see
    /// `refusal`).
    Stale,
}

#[derive(Debug)]
struct Prepared {
    shard: Box<str>,
    parse: Bytes,
    on: Vec<u64>,
    confirmed: bool,
    /// RowDescription or NoData, as the client's Describe was answered.
    columns: Option<Bytes>,
    stale: bool,
    /// For a statement the client prepared with SQL PREPARE: that PREPARE under the session's
    /// name, which gives it to a connection for SQL EXECUTE with its declared types as written.
    sql: Option<Box<str>>,
    /// The client statement this one's text EXECUTEs (a Parse of `EXECUTE name(...)`): a
    /// connection given this one must hold that one first.
    needs: Option<Needs>,
}

#[derive(Debug, Default)]
pub struct RelayStatements {
    prefix: SessionPrefix,
    by_client: HashMap<Box<str>, Prepared>,
    /// Statements closed by the client, until the shard confirms it (see `Expect::Closed`).
    closing: Vec<(Box<str>, Prepared)>,
    /// A Parse's text was edited since the last `take_text_edited`.
    text_edited: bool,
}

impl RelayStatements {
    /// `frame` as connection `conn` must receive it. `expect` gets what the answers will
    /// hold, in order.
    pub fn translate(
        &mut self,
        frame: &[u8],
        conn: u64,
        out: &mut BytesMut,
        expect: &mut Vec<Expect>,
    ) -> Translated {
        let body = &frame[5..];
        match frame[0] {
            b'P' => self.parse(frame, conn, out, expect),
            b'B' => {
                let Some(portal) = cstr_bytes(body) else {
                    return Translated::Same;
                };
                self.use_statement(frame, portal.len() + 1, conn, out, expect)
            }
            b'D' if body.first() == Some(&b'S') => {
                let t = self.use_statement(frame, 1, conn, out, expect);
                if t == Translated::Same || t == Translated::Rewritten {
                    let name = cstr_bytes(&body[1..])
                        .map(|n| String::from_utf8_lossy(n).into_owned().into_boxed_str())
                        .filter(|n| self.by_client.contains_key(n));
                    expect.push(Expect::Described(name));
                }
                t
            }
            b'D' => {
                expect.push(Expect::Described(None));
                Translated::Same
            }
            b'C' => {
                let name = cstr_bytes(body.get(1..).unwrap_or(b""));
                let ours = name
                    .filter(|_| body.first() == Some(&b'S'))
                    .and_then(|name| {
                        let client: Box<str> = String::from_utf8_lossy(name).into();
                        let p = self.by_client.remove(&client)?;
                        Some((name, client, p))
                    });
                let Some((name, client, p)) = ours else {
                    expect.push(Expect::Closed(None));
                    return Translated::Same;
                };
                splice(out, frame, 1, name.len(), p.shard.as_bytes());
                self.closing.push((client.clone(), p));
                expect.push(Expect::Closed(Some(client)));
                Translated::Rewritten
            }
            _ => Translated::Same,
        }
    }

    fn parse(
        &mut self,
        frame: &[u8],
        conn: u64,
        out: &mut BytesMut,
        expect: &mut Vec<Expect>,
    ) -> Translated {
        let name = cstr_bytes(&frame[5..]).unwrap_or(b"");
        let executes = self.executed_in(frame, name.len(), conn, out, expect);
        if name.is_empty() {
            expect.push(Expect::Parsed(None));
            let Some((Some(edit), _)) = executes else {
                return Translated::Same;
            };
            splice_all(out, frame, &[edit.as_ref()]);
            return Translated::Rewritten;
        }
        let client: Box<str> = String::from_utf8_lossy(name).into();
        let shard = match self.by_client.get(&client) {
            // A second Parse of a live name: the connection must hold the first, so that
            // PostgreSQL refuses the second (42P05) as it would directly.
            Some(_) => {
                self.inject_if_missing(&client, conn, out, expect);
                expect.push(Expect::Parsed(None));
                self.by_client[&client].shard.clone()
            }
            None => {
                let shard = self.prefix.fresh(&client).into_boxed_str();
                let (parse, needs) = self.renamed(frame, name.len(), &shard, executes);
                out.put_slice(&parse);
                self.by_client.insert(
                    client.clone(),
                    Prepared {
                        parse,
                        needs,
                        ..Prepared::new(shard, conn)
                    },
                );
                expect.push(Expect::Parsed(Some(client)));
                return Translated::Rewritten;
            }
        };
        splice(out, frame, 0, name.len(), shard.as_bytes());
        Translated::Rewritten
    }

    /// SQL `PREPARE` of `client` (`statement`, read as `p`, its parameter types `oids`) about
    /// to go to connection `conn`: the session's name for it on the shards, under which it is
    /// kept from now, with a Parse that gives it to another connection. None when the name is
    /// live: PostgreSQL refuses it (see `already_exists`).
    pub fn prepare_sql(
        &mut self,
        statement: &str,
        p: &super::statement_text::Preparation,
        oids: &[u32],
        conn: u64,
    ) -> Option<Box<str>> {
        if self.by_client.contains_key(p.name.as_str()) {
            return None;
        }
        let shard = self.prefix.fresh(&p.name).into_boxed_str();
        let body = statement[p.body_at..].trim_ascii_end();
        let mut frame = BytesMut::new();
        crate::protocol::build::parse(&shard, body, oids, &mut frame);
        let sql = format!(
            "PREPARE {}{}",
            crate::sql::identifier(&shard),
            statement[p.name_range.end..].trim_ascii_end()
        );
        self.by_client.insert(
            p.name.as_str().into(),
            Prepared {
                parse: frame.freeze(),
                sql: Some(sql.into()),
                ..Prepared::new(shard.clone(), conn)
            },
        );
        Some(shard)
    }

    /// The Query that stands for PostgreSQL's refusal of a PREPARE of a live name.
    pub fn already_exists(client: &str) -> String {
        let message = format!("prepared statement \"{client}\" already exists");
        refusal("42P05", &message, None)
    }

    /// A Bind or Describe of the statement whose name starts at body offset `at`.
    fn use_statement(
        &mut self,
        frame: &[u8],
        at: usize,
        conn: u64,
        out: &mut BytesMut,
        expect: &mut Vec<Expect>,
    ) -> Translated {
        let Some(name) = frame.get(5 + at..).and_then(cstr_bytes) else {
            return Translated::Same;
        };
        if name.is_empty() {
            return Translated::Same;
        }
        let client = String::from_utf8_lossy(name);
        let Some(p) = self.by_client.get_mut(&*client) else {
            // Not the session's: PostgreSQL answers for it (26000).
            return Translated::Same;
        };
        let p = if p.needs.is_some() {
            self.translated_again(&client, conn, out, expect);
            let Some(p) = self.by_client.get_mut(&*client) else {
                return Translated::Same;
            };
            p
        } else {
            p
        };
        if p.stale {
            return Translated::Stale;
        }
        if !p.on.contains(&conn) {
            p.on.push(conn);
            let needs = p.needs.as_ref().map(|n| n.client.clone());
            if let Some(needs) = needs {
                self.inject_if_missing(&needs, conn, out, expect);
            }
            let p = &self.by_client[&*client];
            out.put_slice(&p.parse);
            expect.push(Expect::Injected(Some((client.as_ref().into(), conn))));
            // An EXECUTE of a statement the session no longer has describes nothing: the
            // shard's 26000 at the Bind is PostgreSQL's answer, not a change of columns.
            let executes_nothing = p.needs.as_ref().is_some_and(|n| n.shard.is_none());
            if p.columns.is_some() && !executes_nothing {
                describe_statement(&p.shard, out);
                out.put_slice(b"H\0\0\0\x04");
                expect.push(Expect::Checked(client.into()));
                return Translated::Check;
            }
        }
        let shard = self.by_client[&*client].shard.as_bytes();
        splice(out, frame, at, name.len(), shard);
        Translated::Rewritten
    }

    /// Gives connection `conn` the statement `client`, and first the one its text executes,
    /// unless it has it. A statement counts as given before the one it needs, so that a
    /// circle of them (possible after names are reused) ends.
    fn inject_if_missing(
        &mut self,
        client: &str,
        conn: u64,
        out: &mut BytesMut,
        expect: &mut Vec<Expect>,
    ) {
        let Some(p) = self.by_client.get_mut(client) else {
            return;
        };
        if p.on.contains(&conn) {
            return;
        }
        p.on.push(conn);
        if let Some(needs) = p.needs.as_ref().map(|n| n.client.clone()) {
            self.inject_if_missing(&needs, conn, out, expect);
        }
        out.put_slice(&self.by_client[client].parse);
        expect.push(Expect::Injected(Some((client.into(), conn))));
    }

    /// Whether a Parse's text was edited since the last call: an error position the shard
    /// gives then counts in the proxy's text, not the client's.
    pub fn take_text_edited(&mut self) -> bool {
        std::mem::take(&mut self.text_edited)
    }

    /// The shard answered the client's Parse of `client` with ParseComplete.
    pub fn confirmed(&mut self, client: &str) {
        if let Some(p) = self.by_client.get_mut(client) {
            p.confirmed = true;
        }
    }

    /// The request holding the client's Parse of `client` ended without its ParseComplete:
    /// PostgreSQL refused the statement, so it does not exist.
    pub fn refused(&mut self, client: &str) {
        if self.by_client.get(client).is_some_and(|p| !p.confirmed) {
            self.by_client.remove(client);
        }
    }

    /// The Parse of `client` the proxy added for connection `conn` was not carried out (the
    /// shard refused it, or skipped it after an earlier error up to the Sync): the connection
    /// lacks the statement, and a later use there must send the Parse again.
    pub fn not_given(&mut self, client: &str, conn: u64) {
        if let Some(p) = self.by_client.get_mut(client) {
            p.on.retain(|c| *c != conn);
        }
    }

    /// The shard answered the Close of `client` with CloseComplete: it is gone.
    pub fn closed(&mut self, client: &str) {
        if let Some(at) = self.closing.iter().position(|(c, _)| &**c == client) {
            self.closing.remove(at);
        }
    }

    /// The Close of `client` was skipped after an error: the statement lives on, unless the
    /// client has prepared the name again since.
    pub fn close_skipped(&mut self, client: &str) {
        if let Some(at) = self.closing.iter().position(|(c, _)| &**c == client) {
            let (c, p) = self.closing.remove(at);
            self.by_client.entry(c).or_insert(p);
        }
    }

    /// The client's Describe of `client` was answered with `answer` (RowDescription or
    /// NoData, whole): the columns it decodes rows by.
    pub fn described(&mut self, client: &str, answer: &[u8]) {
        if let Some(p) = self.by_client.get_mut(client) {
            if p.columns.is_none() {
                p.columns = Some(Bytes::copy_from_slice(answer));
            }
        }
    }

    /// The proxy's Describe of `client` on a new connection was answered with `answer`;
    /// false when the columns differ from the client's, and the statement is stale from now.
    pub fn checked(&mut self, client: &str, answer: &[u8]) -> bool {
        let Some(p) = self.by_client.get_mut(client) else {
            return true;
        };
        let same = match &p.columns {
            Some(shown) => crate::protocol::inspect::same_description(shown, answer),
            None => true,
        };
        p.stale |= !same;
        same
    }

    /// The session's name on the shards for SQL DEALLOCATE of `client`, and whether
    /// connection `conn` holds it; the statement is forgotten.
    /// The SQL text of the client's live statement `client`, as its Parse gave it.
    pub fn text_of(&self, client: &str) -> Option<&[u8]> {
        let parse = &self.by_client.get(client)?.parse;
        Some(super::statement_text::parse_text_bytes(parse.get(5..)?))
    }

    /// The client's statement `client`: its name on the shards, and whether connection `conn`
    /// holds it.
    pub fn located(&self, client: &str, conn: u64) -> Option<(Box<str>, bool)> {
        self.by_client
            .get(client)
            .map(|p| (p.shard.clone(), p.on.contains(&conn)))
    }

    /// The client's statement `client` is gone (its DEALLOCATE ran).
    pub fn forget(&mut self, client: &str) {
        self.by_client.remove(client);
    }

    pub fn deallocate(&mut self, client: &str, conn: u64) -> Option<(Box<str>, bool)> {
        self.by_client
            .remove(client)
            .map(|p| (p.shard, p.on.contains(&conn)))
    }

    /// SQL EXECUTE of the client's statement `client` on connection `conn`: its name on the
    /// shards, and the SQL PREPARE that gives it to a connection that lacks it. None when the
    /// session has no such statement (PostgreSQL answers for it), it is stale, or the
    /// connection lacks it and its Parse declared a parameter type SQL cannot name here (one
    /// that is not built in, or one left open before a declared one).
    pub fn for_execute(&mut self, client: &str, conn: u64) -> Option<(Box<str>, Option<String>)> {
        let p = self.by_client.get_mut(client)?;
        if p.stale {
            return None;
        }
        if p.on.contains(&conn) {
            return Some((p.shard.clone(), None));
        }
        if let Some(sql) = &p.sql {
            return Some((p.shard.clone(), Some(format!("{sql}\n;\n"))));
        }
        // Parse body: name, text, then the parameter type count and OIDs.
        let body = &p.parse[5..];
        let name_end = memchr::memchr(0, body)?;
        let text_at = name_end + 1;
        let text_end = text_at + memchr::memchr(0, &body[text_at..])?;
        let oids: Vec<u32> = body
            .get(text_end + 3..)?
            .chunks_exact(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        // Types left open at the end are left out; one open before a declared one cannot be.
        let declared = oids
            .iter()
            .rposition(|&o| o != 0)
            .map_or(0, |last| last + 1);
        let names: Option<Vec<String>> = oids[..declared]
            .iter()
            .map(|&o| crate::sql::builtin_types::name_of(o))
            .collect();
        let names = names?;
        let list = if names.is_empty() {
            String::new()
        } else {
            format!(" ({})", names.join(", "))
        };
        let text = std::str::from_utf8(&body[text_at..text_end]).ok()?;
        let prepare = format!(
            "PREPARE {}{list} AS {text}\n;\n",
            crate::sql::identifier(&p.shard)
        );
        Some((p.shard.clone(), Some(prepare)))
    }

    /// The SQL PREPARE from `for_execute` went to connection `conn`.
    pub fn given(&mut self, client: &str, conn: u64) {
        if let Some(p) = self.by_client.get_mut(client) {
            if !p.on.contains(&conn) {
                p.on.push(conn);
            }
        }
    }

    /// DEALLOCATE ALL or DISCARD ALL.
    pub fn forget_all(&mut self) {
        self.by_client.clear();
        self.closing.clear();
    }
}

impl Prepared {
    fn new(shard: Box<str>, conn: u64) -> Prepared {
        Prepared {
            shard,
            parse: Bytes::new(),
            on: vec![conn],
            confirmed: false,
            columns: None,
            stale: false,
            sql: None,
            needs: None,
        }
    }
}

/// A Query that fails with `code` and `message` (and `hint`) when the shard runs it: raised
/// there, so that it aborts an open transaction block as the refused statement would have.
pub fn refusal(code: &str, message: &str, hint: Option<&str>) -> String {
    // Dollar signs cannot end the body early: they go in as chr(36).
    let literal = |s: &str| crate::sql::string_literal(s).replace('$', "' || chr(36) || '");
    let hint = hint.map_or(String::new(), |h| format!(", HINT = {}", literal(h)));
    format!(
        "DO $shardgate$BEGIN RAISE EXCEPTION USING ERRCODE = '{code}', MESSAGE = {}{hint}; \
         END$shardgate$",
        literal(message)
    )
}

fn describe_statement(shard: &str, out: &mut BytesMut) {
    let mut body = BytesMut::with_capacity(shard.len() + 2);
    body.put_u8(b'S');
    body.put_slice(shard.as_bytes());
    body.put_u8(0);
    put_frame(b'D', &body, out);
}

fn put_frame(tag: u8, body: &[u8], out: &mut BytesMut) {
    out.put_u8(tag);
    out.put_i32((body.len() + 4) as i32);
    out.put_slice(body);
}

/// The bytes of a NUL-terminated string at the start of `buf`.
fn cstr_bytes(buf: &[u8]) -> Option<&[u8]> {
    Some(&buf[..memchr::memchr(0, buf)?])
}

/// `frame` with the name of `old_len` bytes at body offset `at` replaced by `new`, written to
/// `out` (a Bind is renamed this way at every execution: nothing is allocated for it).
fn splice(out: &mut BytesMut, frame: &[u8], at: usize, old_len: usize, new: &[u8]) {
    splice_all(out, frame, &[Edit::new(at, old_len, new)]);
}

/// A replacement of `old_len` bytes at body offset `at` of a frame.
struct Edit<'a> {
    at: usize,
    old_len: usize,
    new: &'a [u8],
}

impl<'a> Edit<'a> {
    fn new(at: usize, old_len: usize, new: &'a [u8]) -> Edit<'a> {
        Edit { at, old_len, new }
    }
}

struct OwnedEdit {
    at: usize,
    old_len: usize,
    new: Vec<u8>,
}

impl OwnedEdit {
    fn as_ref(&self) -> Edit<'_> {
        Edit::new(self.at, self.old_len, &self.new)
    }
}

/// `frame` with `edits` (in body order, not overlapping) made, as a message of its own (one
/// the session keeps).
fn respliced_all(frame: &[u8], edits: &[Edit<'_>]) -> Bytes {
    // `splice_all` reserves what the message needs.
    let mut out = BytesMut::new();
    splice_all(&mut out, frame, edits);
    out.freeze()
}

/// `frame` with `edits` (in body order, not overlapping) made, written to `out`.
fn splice_all(out: &mut BytesMut, frame: &[u8], edits: &[Edit<'_>]) {
    let body = &frame[5..];
    let grown: usize = edits.iter().map(|e| e.new.len()).sum();
    let shrunk: usize = edits.iter().map(|e| e.old_len).sum();
    out.reserve(frame.len() + grown);
    out.put_u8(frame[0]);
    out.put_i32((4 + body.len() - shrunk + grown) as i32);
    let mut from = 0;
    for e in edits {
        out.put_slice(&body[from..e.at]);
        out.put_slice(e.new);
        from = e.at + e.old_len;
    }
    out.put_slice(&body[from..]);
}

mod executes;
use executes::Needs;
mod injected;
#[cfg(test)]
pub(super) mod tests;
