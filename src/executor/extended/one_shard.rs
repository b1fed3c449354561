//! The fast path: a whole batch to one shard in one write and one round trip, preceded by the
//! Parse of any statement that shard has not prepared yet (whose ParseComplete the client must
//! not see).

use super::{binds, snapshot_without, Extended, Portal, Statement};
use crate::executor::link::unnamed_parses;
use crate::executor::session::{Exec, Step, R};
use crate::protocol::message::{ClientMessage, Kind};
use crate::router::params::Params;
use crate::router::plan::Plan;
use bytes::BytesMut;
use std::collections::BTreeSet;

impl Extended {
    /// Fast path: the whole batch to one shard, one round trip.
    pub(super) async fn run_on_one_shard(
        &mut self,
        exec: &mut Exec<'_>,
        shard: usize,
        batch: Vec<ClientMessage>,
    ) -> R<()> {
        // Writes and transactions: check and enlist before anything is sent.
        let mut writes = false;
        for b in binds(&batch) {
            if let Some(plan) = self.plan_for(exec, &b.statement, &Params::of(b), &batch) {
                exec.routes.note(&plan);
                writes |= matches!(plan, Plan::Shard { write: true, .. });
            }
        }
        if writes {
            exec.txn.note_write(shard);
        }
        let any_bind = binds(&batch).next().is_some();
        let skip = !any_bind
            && batch.last().is_some_and(|m| m.tag() == b'S')
            && snapshot_without(exec, shard);
        if !skip && exec.enlist(shard).await? == Step::Failed {
            exec.txn.fail();
            return self.fail_rest(exec, batch).await;
        }
        let mut out = BytesMut::new();
        let mut swallow = 0usize;
        let mut ends_with_sync = false;
        // Binds (by position in the batch) sent behind a Parse of their statement.
        let mut parsed_before = Vec::new();
        for (i, m) in batch.iter().enumerate() {
            match &m.kind {
                Kind::Parse(p) => {
                    let mut st = Statement::new(exec, m, p, BTreeSet::from([shard]));
                    // Held from this message on, which the batch's later Binds rely on.
                    let after = exec.links[shard].unnamed_parses + unnamed_parses(&out) + 1;
                    st.parsed_at.insert(shard, after);
                    self.statements.insert(p.name.clone(), st);
                }
                Kind::Bind(b) => {
                    if let Some(st) = self.statements.get_mut(&b.statement) {
                        if !st.held_on(exec, shard) {
                            out.extend_from_slice(&st.parse);
                            st.on.insert(shard);
                            let after = exec.links[shard].unnamed_parses + unnamed_parses(&out);
                            st.parsed_at.insert(shard, after);
                            swallow += 1;
                            parsed_before.push(i);
                        }
                    }
                    self.portals.insert(b.portal.clone(), Portal::Shard(shard));
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
        exec.links[shard].send(&out).await?;
        // The batch ends with the client's own unnamed statement on the shard, if it has one.
        if let Some(st) = self.statements.get_mut("") {
            if st.on.contains(&shard) {
                st.sent_to(exec, shard);
            }
        }
        self.touched.insert(shard);
        let mut errored = false;
        if ends_with_sync {
            loop {
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
                    b'T' | b't' => {
                        let f = exec.for_client(shard, f).await;
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
                if self.relay_one(exec, shard, m.tag(), false).await? == Step::Failed {
                    errored = true;
                }
            }
            if errored {
                self.failed = true;
                exec.txn.fail();
            }
        }
        Ok(())
    }
}
