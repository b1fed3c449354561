//! Functions a session's DDL defined (`CREATE FUNCTION`, `CREATE AGGREGATE`, an extension),
//! read in the DDL's own transaction right after it, so that the planner combines or refuses
//! calls of them from the session's next statement on, and other sessions from their next
//! transaction (see `backend::own_functions` for why the planner needs them).

use super::session::{Exec, Step, R};
use crate::backend::own_functions::OwnFunctions;

impl Exec<'_> {
    /// After a statement that succeeded, adds what the shards define now to the session's
    /// placement and to the proxy's. A failure to read it fails the statement: its
    /// transaction could not be trusted to go on.
    pub async fn learn_functions(&mut self, step: Step) -> R<Step> {
        if step != Step::Done {
            return Ok(step);
        }
        let mut found = OwnFunctions::default();
        for shard in 0..self.links.len() {
            let (rows, error) = self
                .query_values(shard, crate::backend::own_functions::SQL)
                .await?;
            if let Some(e) = error {
                self.out.extend_from_slice(&e.bytes);
                return Ok(Step::Failed);
            }
            for row in &rows {
                found.add_row(row);
            }
        }
        let known = OwnFunctions {
            aggregates: (*self.placement.aggregates).clone(),
            words: (*self.placement.function_words).clone(),
            writes: (*self.placement.function_writes).clone(),
        };
        if known.covers(&found) {
            return Ok(step);
        }
        let mut all = known;
        all.extend(&found);
        let mut placement = (*self.placement).clone();
        placement.aggregates = std::sync::Arc::new(all.aggregates);
        placement.function_words = std::sync::Arc::new(all.words);
        placement.function_writes = std::sync::Arc::new(all.writes);
        self.placement = std::sync::Arc::new(placement);
        if let Some(live) = self.live {
            live.add_functions(&found);
        }
        Ok(step)
    }
}
