//! Cursors on several shards (planned in `router::cursor`).
//!
//! The session remembers which shards hold each cursor it declared. A cursor on one shard is
//! transparent: its FETCH, MOVE and CLOSE are planned as statements for that shard (see
//! `resolve`), in the simple and the extended protocol alike. A cursor on several shards is read
//! from one shard after another: a FETCH of n rows takes what the current shard still has and
//! moves on to the next shard for the rest, so the client sees one cursor. Its row description
//! is read once, at DECLARE, from the first shard (`FETCH FORWARD 0` returns no row), which is
//! also what a Describe of its FETCH answers.
//!
//! A cursor over several shards under ORDER BY, LIMIT or OFFSET is merged instead, FETCH by
//! FETCH (`cursor_order`).
//!
//! Entries outlive the transaction that declared them; a stale name only sends a FETCH to shards
//! where PostgreSQL answers that the cursor does not exist, as it would directly.

use super::link::row_types::RowTypes;
use super::session::state::{CursorAt, CursorPortal, Several};
use super::session::{Exec, Step, R};
use crate::error::{sqlstate, PgError};
use crate::protocol::{build, inspect, Frame};
use crate::router::cursor::{CursorCmd, Fetch};
use crate::router::plan::{MergeSpec, Plan, HOME};
use crate::txn::state::TxnState;
use bytes::BytesMut;

impl Exec<'_> {
    /// FETCH, MOVE and CLOSE of a cursor on one shard: a statement for that shard.
    pub fn resolve_cursor(&self, plan: Plan) -> Plan {
        let name = match &plan {
            Plan::Cursor(CursorCmd::Fetch(Fetch { name, .. }))
            | Plan::Cursor(CursorCmd::Close(Some(name))) => name,
            _ => return plan,
        };
        match self.cursors.get(name) {
            Some(CursorAt::One(shard)) => Plan::Shard {
                shard: *shard,
                write: false,
            },
            Some(CursorAt::Several(_)) => plan,
            // A portal the client bound through the protocol is a cursor to SQL, as in
            // PostgreSQL (asyncpg's `Cursor.forward()` is a MOVE of its portal).
            None => match &self.named_portal {
                Some((portal, Some(shard))) if portal == name => Plan::Shard {
                    shard: *shard,
                    write: false,
                },
                Some((portal, None)) if portal == name => Plan::Reject(
                    PgError::error(
                        sqlstate::FEATURE_NOT_SUPPORTED,
                        format!(
                            "FETCH, MOVE and CLOSE of portal \"{name}\", whose rows the proxy merges from several shards, are not supported"
                        ),
                    )
                    .with_hint("Read the portal with Execute and a row count, or DECLARE a cursor."),
                ),
                // Unknown here: the home shard gives PostgreSQL's own answer.
                _ => Plan::Shard {
                    shard: HOME,
                    write: false,
                },
            },
        }
    }

    /// What a Describe of the portal named like a cursor this session declared answers.
    pub fn cursor_portal(&self, name: &str) -> Option<CursorPortal> {
        match self.cursors.get(name)? {
            CursorAt::One(s) => Some(CursorPortal::On(*s)),
            CursorAt::Several(c) => c.description.clone().map(CursorPortal::Described),
        }
    }

    /// The row description of a FETCH from a cursor on several shards (for Describe).
    pub fn cursor_description(&self, name: &str) -> Option<Frame> {
        match self.cursors.get(name) {
            Some(CursorAt::Several(s)) => s.description.clone(),
            _ => None,
        }
    }

    pub async fn cursor(&mut self, cmd: CursorCmd, sql: &str) -> R<Step> {
        match cmd {
            CursorCmd::Declare {
                name,
                shards,
                per_shard,
                merge,
            } => {
                let text = if shards.len() == 1 { sql } else { &per_shard };
                self.declare_on(name, shards, text, *merge).await
            }
            CursorCmd::Fetch(f) => self.fetch_several(f).await,
            CursorCmd::Close(None) => {
                self.cursors.clear();
                self.session_statement(sql).await
            }
            CursorCmd::Close(Some(name)) => {
                let Some(CursorAt::Several(c)) = self.cursors.remove(&name) else {
                    return Ok(self.error(&PgError::error(
                        "34000",
                        format!("cursor \"{name}\" does not exist"),
                    )));
                };
                if self.close_on(&name, &c.shards).await? == Step::Failed {
                    return Ok(Step::Failed);
                }
                build::command_complete("CLOSE CURSOR", &mut self.out);
                Ok(Step::Done)
            }
        }
    }

    /// A protocol-level Close of the portal named like a cursor this session declared: the
    /// cursor is gone, as after CLOSE. `None` when no such cursor; `Some(shard)` when the one
    /// shard holding it should answer the Close itself.
    pub async fn close_cursor_portal(&mut self, name: &str) -> R<Option<Result<usize, Step>>> {
        Ok(match self.cursors.remove(name) {
            None => None,
            Some(CursorAt::One(s)) => Some(Ok(s)),
            Some(CursorAt::Several(c)) => {
                let step = self.close_on(name, &c.shards).await?;
                if step == Step::Done {
                    build::empty(b'3', &mut self.out);
                }
                Some(Err(step))
            }
        })
    }

    async fn close_on(&mut self, name: &str, shards: &[usize]) -> R<Step> {
        let close = format!("CLOSE {}", crate::sql::identifier(name));
        for &s in shards {
            if let Some(e) = self.run_quiet(s, &close).await? {
                self.shard_error(&e);
                return Ok(Step::Failed);
            }
        }
        Ok(Step::Done)
    }

    async fn declare_on(
        &mut self,
        name: String,
        shards: Vec<usize>,
        sql: &str,
        merge: MergeSpec,
    ) -> R<Step> {
        if let TxnState::Open(_) = self.txn {
            for &s in &shards {
                if self.enlist(s).await? == Step::Failed {
                    return Ok(Step::Failed);
                }
            }
        }
        // With bound values (a DECLARE sent in the extended protocol) it runs as bound.
        let request = match &self.bound {
            Some((params, types)) if !params.values.is_empty() => {
                super::rebind::rebind(sql, params, types, &[], false, true)
            }
            _ => {
                let mut q = BytesMut::new();
                build::query(sql, &mut q);
                q.freeze()
            }
        };
        for &s in &shards {
            self.links[s].send(&request).await?;
        }
        let mut failure = None;
        for &s in &shards {
            if let Some(e) = self.quiet_until_ready(s).await? {
                failure.get_or_insert(e);
            }
        }
        if let Some(e) = failure {
            self.close_failed_declare(&name, &shards).await?;
            self.rewritten = shards.len() > 1;
            self.shard_error(&e);
            self.rewritten = false;
            return Ok(Step::Failed);
        }
        let at = match shards.as_slice() {
            [one] => CursorAt::One(*one),
            _ => {
                let columns = self.describe_cursor(shards[0], &name).await?;
                // Read one shard after another unless rows must be merged in order, or
                // skipped and counted across the shards.
                let merged = !merge.order.is_empty() || merge.limit.is_some() || merge.offset > 0;
                let order = match (&columns, merged) {
                    (Some(columns), true) => {
                        match self.ordered_cursor(&shards, columns.clone(), merge).await {
                            Ok(o) => Some(Box::new(o)),
                            Err(e) => {
                                // The cursors stay declared on the shards until the
                                // transaction ends; this one is refused.
                                self.close_failed_declare(&name, &shards).await?;
                                return Ok(self.error(&e));
                            }
                        }
                    }
                    _ => None,
                };
                let hidden = order.as_ref().map_or(0, |o| o.merge.hidden);
                CursorAt::Several(Several {
                    description: columns.map(|d| Frame {
                        tag: b'T',
                        bytes: super::merge::strip_columns(&d, hidden),
                    }),
                    shards,
                    current: 0,
                    order,
                })
            }
        };
        self.cursors.insert(name, at);
        build::command_complete("DECLARE CURSOR", &mut self.out);
        Ok(Step::Done)
    }

    /// Outside a transaction a WITH HOLD cursor that some shards declared would outlive a
    /// DECLARE that failed: closed there.
    async fn close_failed_declare(&mut self, name: &str, shards: &[usize]) -> R<()> {
        if self.txn == TxnState::Idle {
            let close = format!("CLOSE {}", crate::sql::identifier(name));
            for &s in shards {
                let _ = self.run_quiet(s, &close).await?;
            }
        }
        Ok(())
    }

    /// The cursor's row description, from a FETCH of no rows.
    async fn describe_cursor(&mut self, shard: usize, name: &str) -> R<Option<Frame>> {
        let mut q = BytesMut::new();
        build::query(
            &format!("FETCH FORWARD 0 FROM {}", crate::sql::identifier(name)),
            &mut q,
        );
        self.links[shard].send(&q).await?;
        let mut description = None;
        loop {
            let f = self.links[shard].recv().await?;
            match f.tag {
                b'T' => description = Some(self.for_client(shard, f).await),
                b'Z' => return Ok(description),
                _ => {}
            }
        }
    }

    async fn fetch_several(&mut self, f: Fetch) -> R<Step> {
        let Some(CursorAt::Several(mut c)) = self.cursors.get(&f.name).cloned() else {
            return Ok(self.error(&PgError::error(
                "34000",
                format!("cursor \"{}\" does not exist", f.name),
            )));
        };
        if c.order.is_some() {
            return self.fetch_ordered(f, c).await;
        }
        let verb = if f.is_move { "MOVE" } else { "FETCH" };
        let Some(mut remaining) = f.forward else {
            return Ok(self.error(&backward(verb)));
        };
        if !f.is_move && self.describe_rows {
            if let Some(d) = &c.description {
                self.out.extend_from_slice(&d.bytes);
            }
        }
        let mut total = 0u64;
        while c.current < c.shards.len() && remaining != Some(0) {
            let s = c.shards[c.current];
            let count = remaining.map_or("ALL".to_string(), |n| n.to_string());
            let text = format!(
                "{verb} FORWARD {count} FROM {}",
                crate::sql::identifier(&f.name)
            );
            // Rows in the formats the client's Bind asked for.
            let request = if self.result_formats.iter().any(|f| *f != 0) {
                super::rebind::rebind(
                    &text,
                    &Default::default(),
                    &[],
                    &self.result_formats,
                    false,
                    true,
                )
            } else {
                let mut q = BytesMut::new();
                build::query(&text, &mut q);
                q.freeze()
            };
            // Binary rows name types inside them as this shard numbers them.
            let rows = self
                .row_types_for(s, c.description.as_ref(), &self.result_formats)
                .await;
            if matches!(rows, RowTypes::Renumber { .. }) {
                self.links[s].row_types.push(rows);
            }
            self.links[s].send(&request).await?;
            let mut got = 0;
            let mut failed = false;
            loop {
                let frame = self.links[s].recv().await?;
                match frame.tag {
                    b'Z' => break,
                    b'D' if !failed => {
                        self.pass(&frame).await?;
                        self.maybe_flush().await?;
                    }
                    b'C' => got = inspect::command_rows(frame.body()).unwrap_or(0),
                    b'E' if !failed => {
                        failed = true;
                        self.rewritten = true;
                        self.shard_error(&frame);
                        self.rewritten = false;
                    }
                    b'N' => self.pass(&frame).await?,
                    _ => {}
                }
            }
            if failed {
                return Ok(Step::Failed);
            }
            total += got;
            match remaining {
                Some(n) if got >= n => remaining = Some(0),
                Some(n) => {
                    remaining = Some(n - got);
                    c.current += 1;
                }
                None => c.current += 1,
            }
        }
        self.cursors.insert(f.name, CursorAt::Several(c));
        build::command_complete(&format!("{verb} {total}"), &mut self.out);
        Ok(Step::Done)
    }
}

/// The refusal of a FETCH or MOVE (`verb`) other than forward from a cursor over several
/// shards, which reads each shard's cursor forward only.
pub(super) fn backward(verb: &str) -> PgError {
    PgError::error(
        sqlstate::FEATURE_NOT_SUPPORTED,
        format!("{verb} in that direction from a cursor over several shards"),
    )
    .with_hint("A cursor over several shards reads forward only: FETCH n, FETCH NEXT or FETCH ALL.")
}
