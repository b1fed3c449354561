//! What the shard's answers tell the tracker: which of them answer the proxy's own messages
//! (and are dropped), which statements now exist or are gone, what a failed request did not
//! do, and at each ReadyForQuery what the connection now carries and whether the session may
//! give it back.

use super::*;

impl Tracker {
    /// A ParseComplete arrived; true when it answers the proxy's own Parse and must be dropped.
    pub fn on_parse_complete(&mut self) -> bool {
        let request = self.answering();
        if !request.expects.front().is_some_and(Expect::is_parse) {
            return false;
        }
        match request.expects.pop_front() {
            Some(Expect::Injected(_)) => true,
            Some(Expect::Parsed(Some(name))) => {
                self.statements.confirmed(&name);
                false
            }
            _ => false,
        }
    }

    /// A ParameterDescription arrived; true when it answers the proxy's own Describe.
    pub fn on_parameter_description(&mut self) -> bool {
        matches!(self.answering().expects.front(), Some(Expect::Checked(_)))
    }

    /// A RowDescription or NoData arrived (`frame` whole); true when it answers the proxy's
    /// own Describe. A RowDescription of a Query's or an Execute's rows matches no Describe.
    pub fn on_description(&mut self, frame: &[u8]) -> bool {
        let request = self.answering();
        if !request.expects.front().is_some_and(Expect::is_describe) {
            return false;
        }
        match request.expects.pop_front() {
            Some(Expect::Described(Some(name))) => {
                self.statements.described(&name, frame);
                false
            }
            Some(Expect::Checked(name)) => {
                let same = self.statements.checked(&name, frame);
                self.check = Some(same);
                true
            }
            _ => false,
        }
    }

    /// A CloseComplete arrived.
    pub fn on_close_complete(&mut self) {
        let request = self.answering();
        if let Some(Expect::Closed(_)) = request.expects.front() {
            if let Some(Expect::Closed(Some(client))) = request.expects.pop_front() {
                self.statements.closed(&client);
            }
        }
    }

    /// A ParseComplete, BindComplete, CloseComplete or CommandComplete (`tag`) arrived; true
    /// when it answers a statement the proxy ran for itself (see `RelayStatements::own_statement`).
    pub fn on_own_answer(&mut self, tag: u8) -> bool {
        if !self.own_sent {
            return false;
        }
        let request = self.answering();
        match request.expects.front() {
            Some(Expect::Own(t)) if *t == tag => {
                request.expects.pop_front();
                // The proxy's only statement of its own that completes is its DISCARD SEQUENCES.
                request.discarded |= tag == b'C';
                true
            }
            Some(&Expect::OwnSignal(pid, kind)) if tag == b'1' => {
                request.expects.pop_front();
                self.signals_due.push((pid, kind));
                true
            }
            _ => false,
        }
    }

    /// A BindComplete arrived; true when it answers the proxy's own Bind.
    pub fn on_bind_complete(&mut self) -> bool {
        let request = self.answering();
        if request.expects.front() == Some(&Expect::InjectedBind) {
            request.expects.pop_front();
            return true;
        }
        false
    }

    /// An ErrorResponse arrived; true when it is the proxy's refusal of a stale statement,
    /// which the client must get as PostgreSQL words it.
    pub fn on_error(&mut self) -> bool {
        let request = self.answering();
        request.failed = true;
        let refusal = request.expects.front() == Some(&Expect::Refusal);
        // The shard skips the rest up to the Sync: a Describe the proxy is waiting for will
        // not be answered.
        let unanswered_check = request
            .expects
            .iter()
            .any(|e| matches!(e, Expect::Checked(_)));
        let mut skipped = Vec::new();
        for e in request.expects.drain(..) {
            match e {
                Expect::Injected(Some(given)) => skipped.push(given),
                // Put back at the ReadyForQuery, after the batch's refused Parses are gone.
                Expect::Closed(Some(client)) => request.unclosed.push(client),
                _ => {}
            }
        }
        // A SQL PREPARE in front of the client's EXECUTE that did not answer did not run.
        for (client, conn, complete) in request.given.drain(..) {
            if !request.restored.answered_through(complete) {
                skipped.push((client, conn));
            }
        }
        for (client, conn) in skipped {
            self.statements.not_given(&client, conn);
        }
        if unanswered_check {
            self.check = Some(true);
        }
        refusal
    }

    /// The answer to the proxy's Describe for a statement given to a new connection, once it
    /// is in: false when the statement is stale. Taken once.
    pub fn take_check(&mut self) -> Option<bool> {
        self.check.take()
    }

    /// A CommandComplete body (its tag); true when it answers a SET the proxy added.
    pub fn on_command_complete(&mut self, body: &[u8]) -> bool {
        let tag = body.split(|b| *b == 0).next().unwrap_or(b"");
        let request = self.answering();
        if request.restored.answer_is_ours(tag) {
            request.discarded |= tag == sequences::DISCARD.as_bytes();
            return true;
        }
        match tag {
            b"PREPARE" if request.sql_prepare => {
                if let Some(name) = request.parsed.first().cloned() {
                    self.statements.confirmed(&name);
                }
            }
            b"COMMIT" => request.committed = true,
            b"ROLLBACK" => request.rolled_back = true,
            b"DISCARD ALL" | b"DEALLOCATE ALL" => request.wiped = true,
            b"DEALLOCATE" => {
                if let Some(Some(name)) = request.deallocating.pop_front() {
                    self.statements.forget(&name);
                }
            }
            _ => {}
        }
        false
    }

    /// An error's position in the text the shard ran as a position in the client's text,
    /// when the proxy added to it; None when it added nothing.
    pub fn client_position(&mut self) -> Option<impl Fn(u64) -> Option<u64>> {
        self.answering().restored.client_position()
    }

    /// A ReadyForQuery with transaction status `status`.
    pub fn on_ready(&mut self, status: u8) -> Ready {
        let mut request = self.awaiting.pop_front().unwrap_or_default();
        if request.expects.capacity() <= SPARE_EXPECTS && request.expects.capacity() > 0 {
            let mut spare = std::mem::take(&mut request.expects);
            spare.clear();
            self.spare_expects = spare;
        }
        let before = std::mem::replace(&mut self.status, status);
        if request.discards && !request.discarded {
            self.sequences_read = false;
        }
        self.own_sent &= !self.awaiting.is_empty() || self.unsynced;
        for name in &request.parsed {
            self.statements.refused(name);
        }
        for name in &request.unclosed {
            self.statements.close_skipped(name);
        }
        if request.statements.is_empty() {
            self.follow_tags(&request, before, status);
        } else if request.failed {
            // Which statements ran before the error is not known. Without transaction control
            // among them, they all belong to a transaction that is now rolled back (or will
            // be), and their SETs with it.
            let changes = request
                .statements
                .iter()
                .any(|s| matches!(s, Stmt::Change(_)));
            let control = request.statements.iter().any(Stmt::controls_transaction);
            if control && (changes || self.settings.has_pending()) {
                self.pin("a SET in a query whose transaction failed part-way");
            }
        } else {
            self.follow_statements(&request.statements, before);
        }
        Ready {
            sent: request.sent,
            release: self.pinned.is_none() && self.idle(),
            wiped: request.wiped,
        }
    }

    /// Settings after a Query that ran whole, statement by statement from the status it
    /// started in.
    fn follow_statements(&mut self, statements: &[Stmt], before: u8) {
        let mut in_block = before != b'I';
        // COMMIT of a failed block is a ROLLBACK.
        let mut aborted = before == b'E';
        for stmt in statements {
            match stmt {
                Stmt::Begin => in_block = true,
                Stmt::Commit { chain } | Stmt::Rollback { chain } => {
                    if matches!(stmt, Stmt::Commit { .. }) && !aborted {
                        self.settings.committed();
                    } else {
                        self.settings.rolled_back();
                    }
                    in_block = *chain;
                    aborted = false;
                }
                Stmt::RollbackTo => {
                    aborted = false;
                    if self.settings.has_pending() {
                        self.pin("a SET undone by ROLLBACK TO SAVEPOINT");
                    }
                }
                Stmt::Change(text) => {
                    match settings::classify(text) {
                        Change::DiscardAll => {
                            self.statements.forget_all();
                            self.settings_unknown = true;
                        }
                        Change::Reset(_) | Change::ResetAll => self.settings_unknown = true,
                        _ => {}
                    }
                    self.settings.ran(text, in_block);
                }
                Stmt::Other => {}
            }
        }
    }

    /// Settings after a request whose statements the relay did not read (the extended
    /// protocol), from the command tags it saw.
    fn follow_tags(&mut self, request: &Request, before: u8, status: u8) {
        if !self.settings.has_pending() {
            return;
        }
        if request.committed && !request.rolled_back {
            self.settings.committed();
        } else if request.rolled_back && status == b'I' && !request.committed {
            self.settings.rolled_back();
        } else if request.rolled_back || request.committed || (status == b'I' && before != b'I') {
            self.pin("a SET whose transaction ended in a way the proxy cannot follow");
        }
    }
}
