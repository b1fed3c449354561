//! What a pooled one-shard relay must know of the conversation it relays: which requests are
//! still being answered, whether the session may give its server connection back, and what
//! the client changed that the next connection must be given.
//!
//! The client pump reports each message it sends (`on_client`), the shard pump each answer that
//! matters (`on_parse_complete`, `on_error`, `on_command_complete`, `on_ready`); both hold the
//! same lock, so the shard pump's decision to release the connection never races with a
//! request being sent.
//!
//! Settings follow PostgreSQL's rules: a SET counts once its implicit transaction commits, or,
//! inside a block, once COMMIT does. Where the relay cannot tell what the connection now
//! carries (a SET among other statements in one Query, a SET through the extended protocol,
//! one undone by ROLLBACK TO SAVEPOINT) the session is pinned to its connection instead: never
//! a guess replayed on another connection.

use super::restore::{self, Restored};
use super::statement_text::{
    deallocation, deallocation_of, execution, may_be_read, parse_text, parse_text_bytes,
    preparation, query_text, renamed, without_leading_comments, PlainParse, Stmt,
};
use super::statements::{Expect, RelayStatements, Translated};
use crate::pool::pins;
use crate::pool::sequences;
use crate::pool::settings::{self, Change, Settings};
use crate::sql::builtin_types::oid_of;
use crate::sql::signal_call::SignalKind;
use bytes::BytesMut;
use std::collections::VecDeque;
use std::time::Instant;

/// One request the shard answers with a ReadyForQuery: a Query, a FunctionCall, or the
/// extended-protocol messages up to a Sync.
#[derive(Debug, Default)]
struct Request {
    sent: Option<Instant>,
    expects: VecDeque<Expect>,
    /// Client statements parsed here: refused if no ParseComplete came by the ReadyForQuery.
    parsed: Vec<Box<str>>,
    /// Client statements whose Close the shard skipped after an error: they live on.
    unclosed: Vec<Box<str>>,
    /// Client statements this Query gives its connection with a SQL PREPARE in front of the
    /// client's EXECUTE (see `executes`), with the CommandComplete that answers the PREPARE.
    given: Vec<(Box<str>, u64, u32)>,
    /// The Query's `DEALLOCATE name` statements in order, each with the statement the session
    /// forgets once its CommandComplete says it ran (None: a name the session does not keep).
    deallocating: VecDeque<Option<Box<str>>>,
    /// The Query is the client's SQL PREPARE of the one statement in `parsed`: its
    /// CommandComplete says the statement exists.
    sql_prepare: bool,
    /// The statements of a Query that matter to settings, in order (empty when none does).
    statements: Vec<Stmt>,
    failed: bool,
    committed: bool,
    rolled_back: bool,
    /// DISCARD ALL or DEALLOCATE ALL ran: every statement on the connection is gone,
    /// other sessions' too.
    wiped: bool,
    /// SETs the proxy added to a Query after its RESETs (see `restore`).
    restored: Restored,
    /// DISCARD SEQUENCES went ahead of the client's statement (see `reads_sequences`), and
    /// whether it ran: one skipped after an error goes again with the next such statement.
    discards: bool,
    discarded: bool,
}

/// The most answers a spare `expects` list is kept for: one grown by a long pipeline is let go.
const SPARE_EXPECTS: usize = 64;

/// What the shard pump does at a ReadyForQuery.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Ready {
    pub sent: Option<Instant>,
    /// Give the connection back to the pool.
    pub release: bool,
    /// Statements prepared on the connection are gone (it must count as a new one).
    pub wiped: bool,
}

#[derive(Debug)]
pub struct Tracker {
    /// Transaction status from the last ReadyForQuery.
    pub status: u8,
    awaiting: VecDeque<Request>,
    /// Extended-protocol messages sent since the last Sync.
    building: Request,
    unsynced: bool,
    pub settings: Settings,
    pub statements: RelayStatements,
    /// Why the session keeps its connection to the end, once something tied it there.
    pub pinned: Option<&'static str>,
    named_parses: u64,
    /// Parses of the client's statements the proxy added (see `take_injected`).
    injected: u64,
    /// The outcome of the last check (see `statements::Translated::Check`), until taken.
    check: Option<bool>,
    /// A RESET or DISCARD ALL ran on the held connection: it lost the settings the proxy
    /// replayed from the client's startup packet, which PostgreSQL would have kept.
    settings_unknown: bool,
    /// The last Parse text that needed no pin or setting (see `PlainParse`).
    plain_parse: PlainParse,
    /// What the shard will answer to the message being sent; kept so that its room is reused.
    expect: Vec<Expect>,
    /// A statement named `currval` or `lastval` (see `pool::sequences`).
    sequences_read: bool,
    /// A statement of the proxy's own was sent and its request is not over: only then can
    /// an answer be its (checked on every ParseComplete, BindComplete and CommandComplete).
    own_sent: bool,
    /// Signals to other sessions whose statement's ParseComplete came (see `Expect::OwnSignal`),
    /// for the relay to deliver.
    signals_due: Vec<(i32, SignalKind)>,
    /// The answered request's `expects`, emptied, for the next request to fill: most
    /// extended batches expect something, and a new list for each was an allocation per batch.
    spare_expects: VecDeque<Expect>,
}

impl Tracker {
    pub fn new(settings: Settings) -> Tracker {
        // Set at login, it is read as a SET of it is (see `pins`): the session keeps its
        // connection from the first.
        let strings_set = settings.set_at_login(crate::router::plan::string_syntax::NAME);
        let mut tracker = Tracker {
            status: b'I',
            awaiting: VecDeque::new(),
            building: Request::default(),
            spare_expects: VecDeque::new(),
            unsynced: false,
            settings,
            statements: RelayStatements::default(),
            pinned: None,
            named_parses: 0,
            injected: 0,
            check: None,
            settings_unknown: false,
            plain_parse: PlainParse::default(),
            expect: Vec::new(),
            sequences_read: false,
            own_sent: false,
            signals_due: Vec::new(),
        };
        if strings_set {
            tracker.pin("SET standard_conforming_strings");
        }
        tracker
    }

    /// Outside any transaction with nothing sent that is not answered.
    pub fn idle(&self) -> bool {
        self.status == b'I' && self.awaiting.is_empty() && !self.unsynced
    }

    /// Something sent is still being answered.
    pub fn in_flight(&self) -> bool {
        !self.awaiting.is_empty() || self.unsynced
    }

    /// A whole Query, Parse, Bind, Describe or Close about to go to connection `conn`. When
    /// it is not `Translated::Same`, what goes instead is in `out`.
    pub fn on_client(&mut self, frame: &[u8], conn: u64, out: &mut BytesMut) -> Translated {
        if frame[0] == b'Q' {
            let mut request = Request {
                sent: Some(Instant::now()),
                ..Request::default()
            };
            let discard = self.reads_sequences(&frame[5..]);
            let mut rewritten = self.query(frame, conn, out, &mut request);
            if discard {
                let client = (!rewritten).then_some(frame);
                restore::ahead_of_query(sequences::DISCARD, client, out, &mut request.restored);
                request.discards = true;
                rewritten = true;
            }
            self.awaiting.push_back(request);
            return if rewritten {
                Translated::Rewritten
            } else {
                Translated::Same
            };
        }
        let mut expect = std::mem::take(&mut self.expect);
        expect.clear();
        let translated = match frame[0] {
            b'P' => {
                let body = &frame[5..];
                let mut injected = false;
                if !self.plain_parse.is(parse_text_bytes(body)) {
                    if self.reads_sequences(parse_text_bytes(body)) {
                        RelayStatements::own_statement(sequences::DISCARD, out, &mut expect);
                        self.building.discards = true;
                        self.own_sent = true;
                        injected = true;
                    }
                    let text = parse_text(body);
                    if let Some(why) = pins::pins(without_leading_comments(&text)) {
                        self.pin(why);
                    } else if matches!(Stmt::of(&text), Stmt::Change(_)) {
                        self.pin("a SET through the extended protocol");
                    } else {
                        self.plain_parse.remember(parse_text_bytes(body));
                    }
                }
                let mut translated = self.statements.translate(frame, conn, out, &mut expect);
                if injected && translated == Translated::Same {
                    out.extend_from_slice(frame);
                    translated = Translated::Rewritten;
                }
                if self.statements.take_text_edited() {
                    // Which message of the batch an error is about is not known: no error
                    // position of this batch is given rather than one that may point amiss.
                    self.building.restored = Restored::positions_unknown();
                }
                for e in &expect {
                    if let Expect::Parsed(Some(name)) = e {
                        self.building.parsed.push(name.clone());
                    }
                }
                translated
            }
            _ => {
                let translated = match self.statements.translate(frame, conn, out, &mut expect) {
                    Translated::Stale => {
                        RelayStatements::refusal(out, &mut expect);
                        Translated::Rewritten
                    }
                    t => t,
                };
                // A statement translated again on its Bind (see `translated_again`).
                if self.statements.take_text_edited() {
                    self.building.restored = Restored::positions_unknown();
                }
                translated
            }
        };
        self.count_parses(&expect);
        self.unsynced = true;
        if translated == Translated::Check {
            self.check = None;
        }
        self.building.expects.extend(expect.drain(..));
        self.expect = expect;
        translated
    }

    /// A Query or Bind the proxy answers with a statement of its own, `sql`, sent in its place
    /// (see `signals`); a Bind's `due` signal goes once the statement's Parse ran. None, with
    /// nothing written, when the Bind cannot be read: it then goes as any other.
    pub fn on_client_instead(
        &mut self,
        frame: &[u8],
        sql: &str,
        due: Option<(i32, SignalKind)>,
        out: &mut BytesMut,
    ) -> Option<()> {
        if frame[0] == b'Q' {
            crate::protocol::build::query(sql, out);
            self.awaiting.push_back(Request {
                sent: Some(Instant::now()),
                ..Request::default()
            });
            return Some(());
        }
        let mut expect = std::mem::take(&mut self.expect);
        expect.clear();
        let replaced = RelayStatements::instead_of_bind(frame, sql, due, out, &mut expect);
        if replaced.is_some() {
            self.unsynced = true;
            self.own_sent = true;
            self.building.expects.extend(expect.drain(..));
        }
        self.expect = expect;
        replaced
    }

    /// The signals due since the last call (see `Expect::OwnSignal`).
    pub fn take_signals_due(&mut self) -> Option<Vec<(i32, SignalKind)>> {
        (!self.signals_due.is_empty()).then(|| std::mem::take(&mut self.signals_due))
    }

    /// The start of a message the relay passes without reading it.
    pub fn on_client_start(&mut self, tag: u8) {
        match tag {
            b'S' => {
                let mut request = std::mem::take(&mut self.building);
                self.building.expects = std::mem::take(&mut self.spare_expects);
                request.sent = Some(Instant::now());
                self.awaiting.push_back(request);
                self.unsynced = false;
            }
            b'F' => self.awaiting.push_back(Request {
                sent: Some(Instant::now()),
                ..Request::default()
            }),
            b'E' => self.unsynced = true,
            // Flush asks for nothing new; COPY data belongs to a request already counted.
            _ => {}
        }
    }

    /// Each named Parse sent is one more statement the connection keeps (see
    /// `pool::MAX_NAMED_PARSES`).
    fn count_parses(&mut self, expect: &[Expect]) {
        self.named_parses += expect
            .iter()
            .filter(|e| matches!(e, Expect::Injected(_) | Expect::Parsed(Some(_))))
            .count() as u64;
        self.injected += expect
            .iter()
            .filter(|e| matches!(e, Expect::Injected(_)))
            .count() as u64;
    }

    /// Parses the proxy added on its own since the last call.
    pub fn take_injected(&mut self) -> u64 {
        std::mem::take(&mut self.injected)
    }

    /// Named Parses sent since the last call.
    pub fn take_named_parses(&mut self) -> u64 {
        std::mem::take(&mut self.named_parses)
    }

    /// A connection fresh from the pool, given the session's settings, is held from now.
    pub fn new_connection(&mut self) {
        self.settings_unknown = false;
    }

    /// The settings fingerprint the held connection carries, as the pool must record it.
    pub fn connection_settings(&self) -> u64 {
        if self.settings_unknown {
            settings::UNKNOWN
        } else {
            self.settings.fingerprint()
        }
    }

    fn query(
        &mut self,
        frame: &[u8],
        conn: u64,
        out: &mut BytesMut,
        request: &mut Request,
    ) -> bool {
        let text = query_text(&frame[5..]);
        // Nearly every Query is one plain statement: no list allocated for it.
        let (one, many);
        let pieces: &[&str] = match crate::sql::single_statement(&text) {
            Some("") => &[],
            Some(piece) => {
                one = [piece];
                &one
            }
            None => {
                many = crate::sql::split_statements(&text);
                &many
            }
        };
        if let [piece] = pieces {
            // Nearly every Query is one statement none of the readers below takes: only what
            // pins the session is looked for in it.
            let statement = without_leading_comments(piece);
            if !may_be_read(statement) {
                if let Some(why) = pins::pins(statement) {
                    self.pin(why);
                }
                return false;
            }
        }
        if pieces.len() == 1 && self.prepare(&text, pieces[0], conn, out, request) {
            return true;
        }
        for piece in pieces {
            if let Some(why) = pins::pins(without_leading_comments(piece)) {
                self.pin(why);
            }
        }
        // Most Queries hold no statement read here: nothing is allocated for them.
        if pieces.iter().any(|p| Stmt::of(p) != Stmt::Other) {
            request.statements = pieces.iter().map(|p| Stmt::of(p)).collect();
        }
        // Only a SET or RESET can reset a startup parameter.
        let changes = request
            .statements
            .iter()
            .any(|s| matches!(s, Stmt::Change(_)));
        if changes || pieces.len() != 1 {
            return self.executes(&text, pieces, conn, out, request, changes);
        }
        match deallocation(without_leading_comments(pieces[0])) {
            Some(None) => self.statements.forget_all(),
            // In a failed transaction PostgreSQL refuses it whatever the name.
            Some(Some(name)) if self.status != b'E' => {
                if let Some((shard, held)) = self.statements.deallocate(&name, conn) {
                    let shard = crate::sql::identifier(&shard);
                    let mut sql = String::new();
                    if !held {
                        // PostgreSQL deallocates only what the connection holds. Its Parse
                        // sent ahead would fail if DDL since made the statement invalid, and
                        // PostgreSQL would then skip the DEALLOCATE too, waiting for a Sync
                        // that never comes; a stand-in cannot fail.
                        let stand_in = format!("PREPARE {shard} AS SELECT 1;\n");
                        request.restored = restore::Restored::ahead(&stand_in, b"PREPARE");
                        sql.push_str(&stand_in);
                    }
                    sql.push_str(&format!("DEALLOCATE {shard}"));
                    crate::protocol::build::query(&sql, out);
                    return true;
                }
            }
            _ => {}
        }
        self.executes(&text, pieces, conn, out, request, false)
    }

    /// Whether the statement text `sql` must go behind DISCARD SEQUENCES: the first one that
    /// calls `currval` or `lastval` does, and pins the session (see `pool::sequences`).
    fn reads_sequences(&mut self, sql: &[u8]) -> bool {
        if self.sequences_read || !sequences::named_in(sql) {
            return false;
        }
        self.sequences_read = true;
        self.pin("currval() or lastval()");
        true
    }

    fn pin(&mut self, why: &'static str) {
        if self.pinned.is_none() {
            tracing::debug!("session pinned to its server connection: {why}");
            metrics::counter!(crate::metrics::POOL_PINS, "reason" => why).increment(1);
            self.pinned = Some(why);
        }
    }

    /// The request the shard is answering now.
    fn answering(&mut self) -> &mut Request {
        match self.awaiting.front_mut() {
            Some(r) => r,
            None => &mut self.building,
        }
    }
}

mod answers;
mod sql_prepare;
#[cfg(test)]
mod tests;
