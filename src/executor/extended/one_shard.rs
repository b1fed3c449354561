//! The fast path: a whole batch to one shard in one write and one round trip, preceded by the
//! Parse of any statement that shard has not prepared yet (whose ParseComplete the client must
//! not see).

use super::routing::OneShard;
use super::{binds, snapshot_without, Extended, Portal};
use crate::executor::link::unnamed_parses;
use crate::executor::session::{Exec, Step, R};
use crate::protocol::message::{ClientMessage, Kind, TargetKind};
use crate::protocol::Frame;
use crate::router::plan::{Plan, HOME};

impl Extended {
    /// Fast path: the whole batch to one shard, one round trip.
    pub(super) async fn run_on_one_shard(
        &mut self,
        exec: &mut Exec<'_>,
        one: OneShard,
        batch: &[ClientMessage],
    ) -> R<()> {
        let shard = one.shard;
        for _ in 0..one.binds {
            exec.routes.note(&Plan::Shard {
                shard,
                write: one.writes,
            });
        }
        // Writes and transactions: check and enlist before anything is sent.
        if one.writes {
            exec.txn.note_write(shard);
        }
        let any_bind = binds(batch).next().is_some();
        let skip = !any_bind
            && batch.last().is_some_and(|m| m.tag() == b'S')
            && snapshot_without(exec, shard);
        if !skip && exec.enlist(shard).await? == Step::Failed {
            exec.txn.fail();
            return self.fail_rest(exec, batch).await;
        }
        // Whether the shard holds a statement is a question about the connection that will
        // run the batch: take it now.
        exec.links[shard].ensure().await?;
        if self.prepare_described(exec, shard, batch).await? == Step::Failed {
            exec.txn.fail();
            return self.fail_rest(exec, batch).await;
        }
        // Sized for the batch and a Parse or two in front: grown by doubling it would be copied
        // several times. The last batch's buffer is reused.
        let size: usize = batch.iter().map(|m| m.frame.bytes.len()).sum();
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        out.reserve(size + 256);
        let mut swallow = 0usize;
        let mut ends_with_sync = false;
        // Binds (by position in the batch) sent behind a Parse of their statement.
        let mut parsed_before = Vec::new();
        for (i, m) in batch.iter().enumerate() {
            match &m.kind {
                Kind::Parse(p) => {
                    let conn = exec.links[shard].conn_id();
                    // Held from this message on, which the batch's later Binds rely on.
                    let after = exec.links[shard].unnamed_parses + unnamed_parses(&out) + 1;
                    let st = self.parsed(exec, m, p);
                    st.on.insert(conn);
                    st.parsed_at.insert(shard, after);
                }
                Kind::Bind(b) => {
                    if let Some(st) = self.statements.get_mut(b.statement.as_str()) {
                        // A Parse earlier in this batch is not sent yet, but counts.
                        if !st.held_after(exec, shard, unnamed_parses(&out)) {
                            exec.links[shard].prepares.increment(1);
                            out.extend_from_slice(&st.parse);
                            st.on.insert(exec.links[shard].conn_id());
                            let after = exec.links[shard].unnamed_parses + unnamed_parses(&out);
                            st.parsed_at.insert(shard, after);
                            swallow += 1;
                            parsed_before.push(i);
                        }
                    }
                    self.portals.insert(&b.portal, Portal::Shard(shard, None));
                }
                Kind::Sync => ends_with_sync = true,
                _ => {}
            }
            out.extend_from_slice(&m.frame.bytes);
        }
        // A batch run because the client went quiet before its Sync ends with neither: the
        // shard must still send what the messages produce.
        if !ends_with_sync && batch.last().is_some_and(|m| m.tag() != b'H') {
            out.extend_from_slice(b"H\0\0\0\x04");
        }
        self.expect_rows(exec, shard, batch).await;
        exec.links[shard].send(&out).await?;
        self.keep_out(out);
        // The batch ends with the client's own unnamed statement on the shard, if it has one.
        if let Some(st) = self.statements.get_mut("") {
            if st.on.contains(&exec.links[shard].conn_id()) {
                st.sent_to(exec, shard);
            }
        }
        // Statements prepared and described alone, outside the session's transaction, leave
        // the shard in an implicit transaction of its own that no Sync has ended, with the
        // snapshot a Parse took: it must end before a transaction opens there (see
        // `Exec::settle`), or BEGIN would adopt it and a REPEATABLE READ opening fail with
        // 25001. Not when an earlier batch left a portal there, which a Sync would close.
        if !ends_with_sync
            && !self.touched.contains(&shard)
            && statements_only(batch)
            && !exec.txn.has_enlisted(shard)
        {
            exec.unsynced.insert(shard);
        }
        self.touched.insert(shard);
        let mut errored = false;
        if ends_with_sync {
            // The statements the batch describes, in order, and the one whose columns come next.
            let mut describes = described_statements(batch);
            let mut describing: Option<&str> = None;
            loop {
                // What needs no looking at goes to the client as it is, many messages at once.
                let passing = |t| matches!(t, b'2' | b'D' | b'C' | b's' | b'I' | b'3' | b'N');
                // The home shard's columns of a portal need no translating, nor keeping.
                let own_columns = shard == HOME && describing.is_none();
                exec.pass_plain(shard, |t| {
                    passing(t) || (t == b'1' && swallow == 0) || (t == b'T' && own_columns)
                })
                .await?;
                let Some(f) = exec.relay_recv(shard).await? else {
                    continue; // a large row, already passed on
                };
                match f.tag {
                    b'Z' => break,
                    b'1' if swallow > 0 => swallow -= 1,
                    b'E' => {
                        errored = true;
                        swallow = 0;
                        exec.out.extend_from_slice(&f.bytes);
                    }
                    b't' => {
                        describing = describes.next();
                        let f = exec.for_client(shard, f).await;
                        if let Some(st) = describing.and_then(|n| self.statements.get_mut(n)) {
                            st.keep_described_types(&f);
                        }
                        exec.pass(&f).await?;
                    }
                    b'T' | b'n' => {
                        if describing.is_none() {
                            exec.learn_row_types(shard, &f).await;
                        }
                        let f = exec.for_client(shard, f).await;
                        self.keep_columns(describing.take(), &f);
                        exec.pass(&f).await?;
                    }
                    _ => exec.pass(&f).await?,
                }
                exec.maybe_flush().await?;
            }
            if errored {
                exec.txn.fail();
            }
            self.end_of_sync(exec);
            exec.ready_for_query();
        } else {
            // Flush: read what the batch's messages produce.
            for (i, m) in batch.iter().enumerate() {
                if errored {
                    break;
                }
                if m.tag() == b'H' {
                    // Flush has no answer of its own.
                    continue;
                }
                if parsed_before.contains(&i) {
                    // The injected Parse answers first.
                    if self.relay_one(exec, shard, b'P', true).await? == Step::Failed {
                        errored = true;
                        break;
                    }
                }
                self.described = None;
                self.described_params = None;
                if self.relay_one(exec, shard, m.tag(), false).await? == Step::Failed {
                    errored = true;
                }
                let name = described_statements(std::slice::from_ref(m)).next();
                if let Some(columns) = self.described.take() {
                    self.keep_columns(name, &columns);
                }
                if let Some(params) = self.described_params.take() {
                    if let Some(st) = name.and_then(|n| self.statements.get_mut(n)) {
                        st.keep_described_types(&params);
                    }
                }
            }
            if errored {
                self.failed = true;
                exec.txn.fail();
            }
        }
        Ok(())
    }

    /// Before a batch is sent: its Binds of statements whose columns the client was shown and
    /// that `shard`'s connection does not hold are prepared there apart, their columns checked
    /// (see `fixed_result`). A statement the batch itself parses or closes first is left alone.
    async fn prepare_described(
        &mut self,
        exec: &mut Exec<'_>,
        shard: usize,
        batch: &[ClientMessage],
    ) -> R<Step> {
        // Inline: a driver's batch parses one statement, and this runs for every batch.
        let mut fresh: smallvec::SmallVec<[&str; 4]> = smallvec::SmallVec::new();
        for m in batch {
            match &m.kind {
                Kind::Parse(p) => fresh.push(&p.name),
                Kind::Close(t) if t.kind == TargetKind::Statement => fresh.push(&t.name),
                Kind::Bind(b) if !fresh.contains(&b.statement.as_str()) => {
                    let due = self
                        .statements
                        .get(b.statement.as_str())
                        .is_some_and(|st| st.columns.is_some() && !st.held_on(exec, shard));
                    if due
                        && self
                            .prepare_checked(exec, shard, &b.statement, b'B')
                            .await?
                            == Step::Failed
                    {
                        return Ok(Step::Failed);
                    }
                }
                _ => {}
            }
        }
        Ok(Step::Done)
    }

    /// The client was shown these columns for statement `name` (see `fixed_result`).
    fn keep_columns(&mut self, name: Option<&str>, columns: &Frame) {
        if let Some(st) = name.and_then(|n| self.statements.get_mut(n)) {
            // A copy, not a slice of the shard link's read buffer (see `Statement::new`).
            st.columns = Some(Frame {
                tag: columns.tag,
                bytes: bytes::Bytes::copy_from_slice(&columns.bytes),
            });
        }
    }
}

/// The statements the batch's Describes ask about, in order: each is answered with a
/// ParameterDescription and then its columns.
fn described_statements(batch: &[ClientMessage]) -> impl Iterator<Item = &str> {
    batch.iter().filter_map(|m| match &m.kind {
        Kind::Describe(t) if t.kind == TargetKind::Statement => Some(t.name.as_str()),
        _ => None,
    })
}

/// Whether a batch only prepares, describes and closes statements: it binds no portal and
/// reads or writes no rows, so ending its implicit transaction early changes nothing the
/// client sees.
fn statements_only(batch: &[ClientMessage]) -> bool {
    batch.iter().all(|m| match &m.kind {
        Kind::Parse(_) | Kind::Flush => true,
        Kind::Describe(t) | Kind::Close(t) => t.kind == TargetKind::Statement,
        _ => false,
    })
}
