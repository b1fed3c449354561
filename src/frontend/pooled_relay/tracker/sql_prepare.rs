//! SQL PREPARE and SQL EXECUTE in a Query the relay passes: PostgreSQL keeps them in one
//! namespace with protocol-level statements, which follow the client from connection to
//! connection under names of the session's own (see `statements`).

use super::*;

impl Tracker {
    /// SQL EXECUTE of a statement the client prepared through the protocol: PostgreSQL keeps
    /// both in one namespace, but the shard knows the statement by the session's name, and
    /// the connection may not have it yet. Rewritten to that name, behind a SQL PREPARE when
    /// the connection lacks it; true when `out` holds the rewritten Query.
    pub(super) fn execute(
        &mut self,
        text: &str,
        piece: &str,
        conn: u64,
        out: &mut BytesMut,
        request: &mut Request,
    ) -> bool {
        let statement = without_leading_comments(piece);
        let Some((name, range)) = execution(statement) else {
            return false;
        };
        let Some((shard, prepare)) = self.statements.for_execute(&name, conn) else {
            return false;
        };
        let ahead = prepare.unwrap_or_default();
        let (renamed, before, grown) = renamed(text, statement, range, &shard);
        let sent = format!("{ahead}{renamed}");
        let chars = |s: &str| s.chars().count() as u64;
        // Positions after the name move by what the rewrite added in front of them.
        let mut inserted = Vec::new();
        let mut hidden = Vec::new();
        if !ahead.is_empty() {
            inserted.push((0, chars(&ahead)));
            hidden.push((1, &b"PREPARE"[..]));
            let client: Box<str> = name.into();
            self.statements.given(&client, conn);
            request.given = Some((client, conn));
            self.named_parses += 1;
        }
        inserted.push((chars(&ahead) + before, grown));
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
