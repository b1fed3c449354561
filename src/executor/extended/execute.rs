//! Execute of a portal: on its shard, or carried out by the proxy for local portals (a merged
//! scatter, handed out in parts under a row limit; a write of several shards; a statement run
//! on every shard; transaction control and what else the proxy answers itself).

use super::{buffered, Extended, Portal};
use crate::error::PgError;
use crate::executor::rebind::{rebind, split_frames};
use crate::executor::session::{Exec, Step, R};
use crate::protocol::message::Execute;
use crate::protocol::{build, Frame};
use crate::router::plan::{Plan, HOME};
use crate::txn::state::TxnState;
use bytes::Bytes;

impl Extended {
    pub(super) async fn execute(&mut self, exec: &mut Exec<'_>, f: &Frame, e: &Execute) -> R<Step> {
        let (name, max_rows) = (e.portal.as_str(), e.max_rows);
        match self.portals.get(name) {
            Some(Portal::Shard(s, rows)) => {
                let (s, rows) = (*s, rows.clone());
                if let Some(r) = rows {
                    // Told to the link once nothing else is left to answer before the rows
                    // (the portal's Bind joined the shard to any transaction already).
                    if self.reach(exec, s, b'E').await? == Step::Failed {
                        return Ok(Step::Failed);
                    }
                    exec.links[s].row_types.push(r);
                }
                self.send_and_relay(exec, s, std::slice::from_ref(&f.bytes), b'E', 0)
                    .await
            }
            Some(Portal::Local(lp))
                if matches!(&lp.plan, Plan::Scatter { shards, .. } if shards.len() > 1)
                    && exec.consistency == crate::txn::snapshot::Consistency::Snapshot
                    && exec.txn == TxnState::Idle
                    && max_rows <= 0
                    && lp.pending.is_none() =>
            {
                // An autocommit read of several shards: its own snapshot transaction.
                let types = match lp.types_by_shard(exec).await {
                    Ok(t) => t,
                    Err(e) => return Ok(exec.error(&e)),
                };
                let (shards, merge, requests) = lp.scatter(true, &types).expect("a scatter portal");
                exec.fixed_columns = lp.columns.clone();
                exec.bound = lp.bound_for_merge(&merge, &types, &shards);
                let step = exec
                    .autocommit_snapshot_read(&shards, &requests, &merge, false)
                    .await;
                exec.fixed_columns = None;
                exec.bound = None;
                step
            }
            Some(Portal::Local(lp)) if matches!(lp.plan, Plan::Scatter { .. }) => {
                let types = match lp.types_by_shard(exec).await {
                    Ok(t) => t,
                    Err(e) => return Ok(exec.error(&e)),
                };
                let (shards, merge, requests) = lp.scatter(true, &types).expect("a scatter portal");
                exec.rewritten = lp.rewritten();
                // Read by items computed after the merge.
                let bound = lp.bound_for_merge(&merge, &types, &shards);
                if max_rows <= 0 && lp.pending.is_none() {
                    exec.fixed_columns = lp.columns.clone();
                    exec.bound = bound;
                    let step = crate::executor::merge::scatter_request(
                        exec, &shards, &requests, &merge, false,
                    )
                    .await;
                    exec.fixed_columns = None;
                    exec.bound = None;
                    return step;
                }
                if lp.pending.is_none() {
                    // A row-limited Execute: materialize the merged result, hand it out in parts.
                    let start = exec.out.len();
                    exec.hold_output = true;
                    exec.fixed_columns = lp.columns.clone();
                    exec.bound = bound;
                    let step = crate::executor::merge::scatter_request(
                        exec, &shards, &requests, &merge, false,
                    )
                    .await;
                    exec.fixed_columns = None;
                    exec.bound = None;
                    exec.hold_output = false;
                    if step? == Step::Failed {
                        return Ok(Step::Failed);
                    }
                    let produced = exec.out.split_off(start);
                    let held = produced.len();
                    let frames = split_frames(produced.freeze());
                    if let Some(Portal::Local(lp)) = self.portals.get_mut(name) {
                        lp.pending = Some(frames);
                        lp.held = held;
                        buffered(held as i64);
                    }
                }
                let Some(Portal::Local(lp)) = self.portals.get_mut(name) else {
                    unreachable!("portal looked up above")
                };
                let pending = lp.pending.as_mut().expect("materialized above");
                let mut sent = 0i64;
                while pending.front().is_some_and(|f| f.tag == b'D')
                    && (max_rows <= 0 || sent < max_rows as i64)
                {
                    let row = pending.pop_front().expect("front checked");
                    exec.out.extend_from_slice(&row.bytes);
                    sent += 1;
                }
                if pending.front().is_some_and(|f| f.tag == b'D') {
                    build::empty(b's', &mut exec.out);
                } else {
                    // Done: this Execute's row count, as PostgreSQL reports it.
                    pending.clear();
                    buffered(-(lp.held as i64));
                    lp.held = 0;
                    build::command_complete(&format!("SELECT {sent}"), &mut exec.out);
                }
                Ok(Step::Done)
            }
            Some(Portal::Local(lp)) if matches!(lp.plan, Plan::Write { .. }) => {
                let Plan::Write {
                    parts,
                    sum,
                    serialize,
                    row_order,
                    ..
                } = &lp.plan
                else {
                    unreachable!("matched above")
                };
                let types = match lp.types_by_shard(exec).await {
                    Ok(t) => t,
                    Err(e) => return Ok(exec.error(&e)),
                };
                let requests: Vec<(usize, Bytes)> = (0..parts.len())
                    .map(|i| (parts[i].0, lp.write_part(i, false, true, &types)))
                    .collect();
                let sum = *sum;
                exec.rewritten = lp.rewritten();
                let own = exec.own_implicit();
                let (serialize, row_order) = (serialize.clone(), row_order.clone());
                exec.given = lp.given.clone();
                let mut rows = Vec::with_capacity(requests.len());
                for (shard, _) in &requests {
                    rows.push(
                        exec.row_types_for(*shard, lp.columns.as_ref(), &lp.result_formats)
                            .await,
                    );
                }
                let step = crate::executor::write::run(
                    exec,
                    &requests,
                    sum,
                    false,
                    serialize.as_deref(),
                    &row_order,
                    rows,
                )
                .await?;
                exec.end_own_implicit(own, step).await
            }
            Some(Portal::Local(lp))
                if matches!(lp.plan, Plan::Session | Plan::Broadcast { .. })
                    && !lp.params.values.is_empty() =>
            {
                // With bound values it must run as the client sent it, on every shard.
                let request = rebind(
                    &lp.sql,
                    &lp.params,
                    &lp.param_types,
                    &lp.result_formats,
                    false,
                    true,
                );
                self.everywhere_bound(exec, &request).await
            }
            Some(Portal::Local(lp)) => {
                let (plan, sql) = (lp.plan.clone(), lp.sql.clone());
                // An Execute answers with rows only: the description belongs to Describe.
                exec.describe_rows = false;
                exec.result_formats = lp.result_formats.clone();
                exec.bound = Some((lp.params.clone(), lp.param_types.clone()));
                let step = exec.run_plan(plan, &sql).await;
                exec.describe_rows = true;
                exec.result_formats.clear();
                exec.bound = None;
                step
            }
            None => Ok(exec.error(&PgError::error(
                "34000",
                format!("portal \"{name}\" does not exist"),
            ))),
        }
    }

    /// Runs a re-bound statement (Parse..Execute+Sync) on every shard; the client sees the home
    /// shard's rows and the first error.
    pub(super) async fn everywhere_bound(
        &mut self,
        exec: &mut Exec<'_>,
        request: &[u8],
    ) -> R<Step> {
        let all: Vec<usize> = (0..exec.links.len()).collect();
        exec.session_setting_ran();
        // It may be DDL: types may be dropped and made again under new OIDs, columns moved.
        exec.forget_columns();
        if let Some(catalog) = exec.catalog {
            catalog.forget();
        }
        if let Some(keys) = exec.key_blocks {
            keys.forget();
        }
        for &s in &all {
            if exec.enlist(s).await? == Step::Failed {
                return Ok(Step::Failed);
            }
            exec.links[s].send(request).await?;
        }
        let mut step = Step::Done;
        for &s in &all {
            loop {
                let f = exec.links[s].recv().await?;
                match f.tag {
                    b'Z' => break,
                    b'1' | b'2' => {}
                    b'E' => {
                        if step == Step::Done {
                            exec.out.extend_from_slice(&f.bytes);
                        }
                        step = Step::Failed;
                    }
                    _ if s == HOME => exec.out.extend_from_slice(&f.bytes),
                    _ => {}
                }
            }
        }
        Ok(step)
    }
}
