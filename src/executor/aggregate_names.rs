//! Aggregate and window functions a session's DDL defined (`CREATE AGGREGATE`, an extension),
//! read in the DDL's own transaction right after it, so that the planner combines or refuses
//! calls of them from the session's next statement on, and other sessions from their next
//! transaction (see `backend::aggregate_names` for why the planner needs them).

use super::session::{Exec, Step, R};
use std::collections::BTreeSet;
use std::sync::Arc;

impl Exec<'_> {
    /// After a statement that succeeded, adds the names the shards list now to the session's
    /// placement and to the proxy's. A failure to read them fails the statement: its
    /// transaction could not be trusted to go on.
    pub async fn learn_aggregates(&mut self, step: Step) -> R<Step> {
        if step != Step::Done {
            return Ok(step);
        }
        let mut names = BTreeSet::new();
        for shard in 0..self.links.len() {
            let (found, error) = self
                .query_values(shard, crate::backend::aggregate_names::SQL)
                .await?;
            if let Some(e) = error {
                self.out.extend_from_slice(&e.bytes);
                return Ok(Step::Failed);
            }
            names.extend(found);
        }
        if names.is_subset(&self.placement.aggregates) {
            return Ok(step);
        }
        let mut placement = (*self.placement).clone();
        placement.aggregates = Arc::new(names.union(&self.placement.aggregates).cloned().collect());
        self.placement = Arc::new(placement);
        if let Some(live) = self.live {
            live.add_aggregates(&names);
        }
        Ok(step)
    }
}
