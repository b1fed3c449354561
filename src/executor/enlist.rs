//! A shard enlisted in the session's transaction by the session: the opening itself and how
//! its answers are read are `txn::enlist`; this adds what the session must do first (the
//! snapshot cut, an extended-protocol implicit transaction settled) and records the shard.

use super::session::{Exec, Step, R};
use crate::protocol::build;
use crate::txn::enlist::Opening;
use crate::txn::state::TxnState;
use bytes::BytesMut;

impl Exec<'_> {
    /// What `shard` must run to join the open transaction (see `Opening::for_shard`).
    pub fn opening(&self, shard: usize) -> Option<Opening> {
        Opening::for_shard(&self.txn, shard)
    }

    /// Opens the client's transaction on `shard` if it has not been yet, in its own round trip.
    pub async fn enlist(&mut self, shard: usize) -> R<Step> {
        if self.ensure_cut().await? == Step::Failed {
            return Ok(Step::Failed);
        }
        let Some(o) = self.opening(shard) else {
            return Ok(Step::Done);
        };
        self.settle(shard).await?;
        let mut q = BytesMut::new();
        build::query(&o.sql, &mut q);
        self.links[shard].send(&q).await?;
        let step = self.read_opening(shard, &o).await?;
        if step == Step::Done {
            // The opening's own ReadyForQuery.
            self.quiet_until_ready(shard).await?;
        }
        Ok(step)
    }

    /// Reads the answers to an opening sent at the head of a Query (see `Opening::read`), and
    /// records the shard as enlisted when it joined.
    pub async fn read_opening(&mut self, shard: usize, o: &Opening) -> R<Step> {
        if !o.read(self, shard).await? {
            return Ok(Step::Failed);
        }
        if let TxnState::Open(t) = &mut self.txn {
            t.enlisted.insert(shard);
            if o.timed {
                t.timed.insert(shard);
            }
        }
        Ok(Step::Done)
    }
}
