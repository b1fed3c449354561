//! What the rows of each Execute in a batch sent to one shard need before the client sees them
//! (see `executor::binary_oids`): told to the shard's link just before the batch goes, and kept
//! with each portal for its Executes in later batches (a cursor read in parts).

use super::{binds, Extended, Portal};
use crate::executor::link::row_types::RowTypes;
use crate::executor::session::Exec;
use crate::protocol::message::{ClientMessage, Kind, TargetKind};
use crate::router::plan::HOME;

impl Extended {
    /// One entry per Execute of `batch`, queued on `shard`'s link when any of them has rows to
    /// renumber. A portal whose columns are known only from a Describe that this batch does not
    /// send passes its rows as they come.
    pub(super) async fn expect_rows(
        &mut self,
        exec: &mut Exec<'_>,
        shard: usize,
        batch: &[ClientMessage],
    ) {
        // Drivers that read binary bind every statement so: this is the only test most
        // batches pay, and a batch of Executes alone looks its portals up.
        let binary = binds(batch).any(|b| b.result_formats.contains(&1));
        let bare = !binary && batch.iter().all(|m| !matches!(m.kind, Kind::Bind(_)));
        if shard == HOME || !(binary || bare) {
            return;
        }
        let mut bound: Vec<(&str, RowTypes)> = Vec::new();
        let mut described: Vec<&str> = Vec::new();
        let mut entries = Vec::new();
        for m in batch {
            match &m.kind {
                Kind::Bind(b) => {
                    let shown = self
                        .statements
                        .get(b.statement.as_str())
                        .and_then(|s| s.columns.as_ref());
                    let r = exec.row_types_for(shard, shown, &b.result_formats).await;
                    bound.retain(|(p, _)| *p != b.portal.as_str());
                    bound.push((&b.portal, r));
                }
                Kind::Describe(t) if t.kind == TargetKind::Portal => described.push(&t.name),
                Kind::Execute(e) => {
                    let portal = e.portal.as_str();
                    let r = match bound.iter().find(|(p, _)| *p == portal) {
                        Some((_, RowTypes::Learn { .. })) if !described.contains(&portal) => {
                            RowTypes::Plain
                        }
                        Some((_, r)) => r.clone(),
                        // Bound in an earlier batch.
                        None => match self.portals.get(portal) {
                            Some(Portal::Shard(s, Some(r))) if *s == shard => r.clone(),
                            _ => RowTypes::Plain,
                        },
                    };
                    entries.push(r);
                }
                _ => {}
            }
        }
        // Kept for the portal's later Executes (a Learn is resolved only within its batch).
        for (portal, r) in bound {
            if let (Some(Portal::Shard(_, kept)), RowTypes::Renumber { .. }) =
                (self.portals.get_mut(portal), &r)
            {
                *kept = Some(r);
            }
        }
        if entries.iter().any(|r| !matches!(r, RowTypes::Plain)) {
            for r in entries {
                exec.links[shard].row_types.push(r);
            }
        }
    }
}
