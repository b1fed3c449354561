//! SQL PREPARE and SQL EXECUTE in a Query the relay passes: PostgreSQL keeps them in one
//! namespace with protocol-level statements, which follow the client from connection to
//! connection under names of the session's own (see `statements`).

use super::super::statements::refusal;
use super::*;
use crate::sql::identifier;

impl Tracker {
    /// SQL EXECUTEs of statements the session keeps (prepared with SQL or through the
    /// protocol: PostgreSQL keeps both in one namespace), among the Query's statements `pieces`
    /// (slices of `text`): the shard knows each by the session's name, and the connection may
    /// not have it yet. Each is renamed, behind a SQL PREPARE when the connection lacks it, and
    /// so is a PREPARE of such a name among several statements, and a DEALLOCATE (behind a
    /// stand-in, as alone in a Query: see `query`), whose statement the session forgets once
    /// the shard says it ran. With `restoring`, each RESET of the client's startup parameters
    /// is followed by the SETs that give them back (see `restore`), in the same pass so that
    /// both edits' positions and answers are counted once. True when `out` holds the rewritten
    /// Query.
    pub(super) fn executes(
        &mut self,
        text: &str,
        pieces: &[&str],
        conn: u64,
        out: &mut BytesMut,
        request: &mut Request,
        restoring: bool,
    ) -> bool {
        let chars = |s: &str| s.chars().count() as u64;
        // The text sent, and its length in characters (error positions count characters).
        let (mut sent, mut sent_chars) = (String::new(), 0);
        let mut push = |sent: &mut String, s: &str| {
            sent.push_str(s);
            sent_chars += chars(s);
            sent_chars
        };
        // `text[..copied]` is in `sent`; `completes` counts the CommandCompletes before the
        // statement at hand (every statement answers with one, see `restore`).
        let (mut copied, mut completes) = (0, 0u32);
        let mut hidden = Vec::new();
        let mut inserted = Vec::new();
        // Names this Query deallocates, from the DEALLOCATE on: the shard no longer has them
        // under any name, so statements naming them go as written and fail as PostgreSQL's do.
        let mut dropped: Vec<String> = Vec::new();
        let kept = |name: &str| self.statements.located(name, conn).is_some();
        if let Some(name) = prepared_again(pieces, kept) {
            let message = format!(
                "PREPARE of \"{name}\" after its DEALLOCATE in the same Query is not supported \
                 in transaction pooling mode"
            );
            let hint = "Send the DEALLOCATE and the PREPARE as Queries of their own.";
            crate::protocol::build::query(&refusal("0A000", &message, Some(hint)), out);
            return true;
        }
        for piece in pieces {
            let statement = without_leading_comments(piece);
            if statement.trim_ascii().is_empty() {
                continue; // PostgreSQL answers nothing for a statement of comments alone
            }
            let deallocated = deallocation_of(statement);
            // A PREPARE of a name the session keeps is renamed too, so that the shard refuses
            // it (42P05) as PostgreSQL would, rather than prepare a second statement `name`.
            let named = deallocated
                .clone()
                .or_else(|| execution(statement))
                .or_else(|| preparation(statement).map(|p| (p.name, p.name_range)))
                .filter(|(name, _)| !dropped.contains(name));
            let execute = named.and_then(|(name, range)| {
                let found = match deallocated {
                    // A stand-in cannot fail where the statement's own text might (see `query`).
                    Some(_) => self.statements.located(&name, conn).map(|(shard, held)| {
                        let ahead = format!("PREPARE {} AS SELECT 1;\n", identifier(&shard));
                        (shard, (!held).then_some(ahead))
                    }),
                    None => self.statements.for_execute(&name, conn),
                };
                Some((found?, name, range))
            });
            if let Some((name, _)) = &deallocated {
                let kept = execute.as_ref().map(|_| name.as_str().into());
                request.deallocating.push_back(kept);
                dropped.push(name.clone());
            }
            let Some(((shard, prepare), name, range)) = execute else {
                completes += 1;
                if restoring {
                    if let Some(sets) = self.settings.restoring(statement) {
                        let end = piece.as_ptr() as usize - text.as_ptr() as usize + piece.len();
                        let before = push(&mut sent, &text[copied..end]);
                        copied = end;
                        let insertion = format!("\n;{sets}\n");
                        inserted.push((before, chars(&insertion)));
                        push(&mut sent, &insertion);
                        for _ in sets.split("; ") {
                            completes += 1;
                            hidden.push((completes, &b"SET"[..]));
                        }
                    }
                }
                continue;
            };
            let at = statement.as_ptr() as usize - text.as_ptr() as usize;
            let before = push(&mut sent, &text[copied..at]);
            if let Some(ahead) = prepare {
                inserted.push((before, chars(&ahead)));
                push(&mut sent, &ahead);
                completes += 1;
                hidden.push((completes, &b"PREPARE"[..]));
                // A stand-in the DEALLOCATE removes again leaves nothing to keep.
                if deallocated.is_none() {
                    let client: Box<str> = name.into();
                    self.statements.given(&client, conn);
                    request.given.push((client, conn, completes));
                    self.named_parses += 1;
                }
            }
            let (name_at, name_end) = (at + range.start, at + range.end);
            let before = push(&mut sent, &text[at..name_at]);
            let shard = identifier(&shard);
            // Positions after the name move by what the new name added.
            let grown = chars(&shard).saturating_sub(chars(&text[name_at..name_end]));
            inserted.push((before, grown));
            push(&mut sent, &shard);
            copied = name_end;
            completes += 1;
        }
        if copied == 0 {
            return false;
        }
        sent.push_str(&text[copied..]);
        request.restored = Restored::edited(hidden, inserted);
        crate::protocol::build::query(&sent, out);
        true
    }

    /// SQL PREPARE: kept under a name of the session's, as a Parse is, so that EXECUTE,
    /// DEALLOCATE and the protocol find it on whichever connection serves them. False when
    /// the relay cannot carry it (several statements, a parameter type that is not built in,
    /// a shape it does not read): the session is then pinned as before.
    pub(super) fn prepare(
        &mut self,
        text: &str,
        piece: &str,
        conn: u64,
        out: &mut BytesMut,
        request: &mut Request,
    ) -> bool {
        let statement = without_leading_comments(piece);
        let Some(p) = preparation(statement) else {
            return false;
        };
        let oids: Option<Vec<u32>> = p.types.iter().map(|t| oid_of(t)).collect();
        let Some(oids) = oids else {
            return false;
        };
        let Some(shard) = self.statements.prepare_sql(statement, &p, &oids, conn) else {
            // PostgreSQL's refusal, raised on the shard so that it aborts an open block.
            crate::protocol::build::query(&RelayStatements::already_exists(&p.name), out);
            return true;
        };
        let (sent, before, grown) = renamed(text, statement, p.name_range, &shard);
        request.restored = Restored::edited(Vec::new(), vec![(before, grown)]);
        request.parsed.push(p.name.into());
        request.sql_prepare = true;
        self.named_parses += 1;
        crate::protocol::build::query(&sent, out);
        true
    }
}

/// The name a PREPARE among `pieces` defines after a DEALLOCATE of it earlier in the same
/// Query, of a statement the session keeps (`kept`): the shard would hold a statement of the
/// session's under a name the session no longer keeps.
fn prepared_again(pieces: &[&str], kept: impl Fn(&str) -> bool) -> Option<String> {
    // Most Queries the relay reads here are one statement.
    if pieces.len() < 2 {
        return None;
    }
    let mut dropped: Vec<String> = Vec::new();
    for piece in pieces {
        let statement = without_leading_comments(piece);
        if let Some((name, _)) = deallocation_of(statement).filter(|(n, _)| kept(n)) {
            dropped.push(name);
        } else if let Some(p) = preparation(statement) {
            if dropped.contains(&p.name) {
                return Some(p.name);
            }
        }
    }
    None
}
