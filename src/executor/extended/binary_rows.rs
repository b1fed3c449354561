//! What the rows of each Execute in a batch sent to one shard need before the client sees them
//! (see `executor::binary_oids`): told to the shard's link just before the batch goes.

use super::{binds, Extended};
use crate::executor::link::row_types::RowTypes;
use crate::executor::session::Exec;
use crate::protocol::message::{ClientMessage, Kind, TargetKind};
use crate::router::plan::HOME;

impl Extended {
    /// One entry per Execute of `batch`, queued on `shard`'s link when any of them has rows to
    /// renumber. A portal bound in an earlier batch, or whose columns are known only from a
    /// Describe this batch does not send, passes its rows as they come.
    pub(super) async fn expect_rows(
        &self,
        exec: &mut Exec<'_>,
        shard: usize,
        batch: &[ClientMessage],
    ) {
        // Drivers that read binary bind every statement so: this is the only test most
        // batches pay.
        if shard == HOME || !binds(batch).any(|b| b.result_formats.contains(&1)) {
            return;
        }
        let mut bound: Vec<(&str, &str, &[i16])> = Vec::new();
        let mut described: Vec<&str> = Vec::new();
        let mut entries = Vec::new();
        for m in batch {
            match &m.kind {
                Kind::Bind(b) => {
                    bound.retain(|(p, _, _)| *p != b.portal.as_str());
                    bound.push((&b.portal, &b.statement, &b.result_formats));
                }
                Kind::Describe(t) if t.kind == TargetKind::Portal => described.push(&t.name),
                Kind::Execute(e) => {
                    let found = bound.iter().find(|(p, _, _)| *p == e.portal.as_str());
                    let r = match found {
                        Some(&(portal, statement, formats)) => {
                            let shown = self
                                .statements
                                .get(statement)
                                .and_then(|s| s.columns.as_ref());
                            match exec.row_types_for(shard, shown, formats).await {
                                RowTypes::Learn { .. } if !described.contains(&portal) => {
                                    RowTypes::Plain
                                }
                                r => r,
                            }
                        }
                        None => RowTypes::Plain,
                    };
                    entries.push(r);
                }
                _ => {}
            }
        }
        if entries.iter().any(|r| !matches!(r, RowTypes::Plain)) {
            for r in entries {
                exec.links[shard].row_types.push(r);
            }
        }
    }
}
