//! Carrying out COPY on several shards (planned in `router::copy`).
//!
//! COPY TO STDOUT runs on each shard in turn and the client gets one stream: one
//! CopyOutResponse, every shard's rows, one CopyDone, and `COPY n` with the total. Repeated
//! per-shard framing is dropped: the CSV/text header line of every shard after the first, and
//! the binary file header and trailer of all but one.
//!
//! COPY FROM STDIN opens the COPY on every shard inside one distributed transaction (the
//! client's, or its own, committed two-phase like any write of several shards). The client's
//! data is split into rows (`copy_rows`) and each row goes to the shard owning its key, batched
//! into CopyData messages of about `BATCH_BYTES`; a reference table's data goes to every shard
//! as it came. A row the proxy cannot place (a malformed key, a missing key field) fails the
//! COPY with the line it was on; the rest of the client's data is read and dropped, as
//! PostgreSQL does after an error, and every shard's COPY is failed so nothing is kept.
//! Sequence columns (the key or others) the column list leaves out are filled in from the
//! cluster-wide sequence (see `key_sequence`), appended to each row before it is placed.

use super::copy_given::CopyGiven;
use super::copy_rows::{append_fields, BadRow, Piece, Splitter};
use super::session::{Exec, Step, Stop, R};
use crate::error::{sqlstate, PgError};
use crate::placement::KeyValue;
use crate::protocol::{build, inspect, Frame};
use crate::router::copy::CopyIn;
use crate::router::copy::{Format, Kind};
use crate::router::plan::HOME;
use crate::txn::state::TxnState;
use bytes::{BufMut, BytesMut};
use std::collections::VecDeque;

/// Rows held for one shard before they are sent as one CopyData.
const BATCH_BYTES: usize = 64 * 1024;

/// The binary COPY trailer: a field count of -1.
const BINARY_TRAILER: [u8; 2] = [0xff, 0xff];

/// Length of the binary COPY header PostgreSQL writes (signature, flags, no extension).
const BINARY_HEADER: usize = 19;

fn copy_data(payload: &[u8], out: &mut BytesMut) {
    out.put_u8(b'd');
    out.put_u32(payload.len() as u32 + 4);
    out.extend_from_slice(payload);
}

impl Exec<'_> {
    pub async fn copy_out(
        &mut self,
        shards: &[usize],
        sql: &str,
        format: &crate::router::copy::Format,
    ) -> R<Step> {
        // As any read of several shards (see `merge::scatter_request`).
        let own = self.own_read_for_clock(shards, std::iter::once(sql.as_bytes()));
        let step = self.copy_out_of(shards, sql, format).await?;
        self.end_own_implicit(own, step).await
    }

    async fn copy_out_of(
        &mut self,
        shards: &[usize],
        sql: &str,
        format: &crate::router::copy::Format,
    ) -> R<Step> {
        if let TxnState::Open(_) = self.txn {
            for &s in shards {
                if self.enlist(s).await? == Step::Failed {
                    return Ok(Step::Failed);
                }
            }
        }
        let mut q = BytesMut::new();
        build::query(sql, &mut q);
        for &s in shards {
            self.links[s].send(&q).await?;
        }
        let binary = format.kind == Kind::Binary;
        let (mut total, mut started) = (0u64, false);
        let mut failure: Option<Frame> = None;
        for (i, &s) in shards.iter().enumerate() {
            let mut first = true;
            loop {
                let f = self.links[s].recv().await?;
                match f.tag {
                    b'Z' => break,
                    b'E' => {
                        failure.get_or_insert(f);
                    }
                    b'N' => self.pass(&f).await?,
                    _ if failure.is_some() => {}
                    b'H' if !started => {
                        started = true;
                        self.pass(&f).await?;
                    }
                    b'd' => {
                        let mut body = f.body();
                        let was_first = std::mem::replace(&mut first, false);
                        if binary {
                            if was_first && i > 0 {
                                body = body.get(BINARY_HEADER..).unwrap_or(&[]);
                            }
                            // An empty table's header and trailer come in one message.
                            if was_first && i == 0 && body.len() == BINARY_HEADER + 2 {
                                body = &body[..BINARY_HEADER];
                            }
                            if body == BINARY_TRAILER || body.is_empty() {
                                continue;
                            }
                            if body.len() == f.body().len() {
                                self.pass(&f).await?;
                            } else {
                                let mut out = BytesMut::new();
                                copy_data(body, &mut out);
                                self.out.extend_from_slice(&out);
                            }
                        } else if !(format.header && was_first && i > 0) {
                            self.pass(&f).await?;
                        }
                        self.maybe_flush().await?;
                    }
                    b'C' => total += inspect::command_rows(f.body()).unwrap_or(0),
                    _ => {}
                }
            }
        }
        if let Some(err) = failure {
            self.shard_error(&err);
            return Ok(Step::Failed);
        }
        if binary {
            copy_data(&BINARY_TRAILER, &mut self.out);
        }
        build::empty(b'c', &mut self.out);
        build::command_complete(&format!("COPY {total}"), &mut self.out);
        Ok(Step::Done)
    }

    pub async fn copy_in(&mut self, plan: CopyIn, sql: &str) -> R<Step> {
        let mut generated = Vec::new();
        let mut sql = sql.to_string();
        let key = match &plan.key {
            None => None,
            Some((column, key_type)) => {
                let columns = if plan.columns.is_empty() {
                    self.table_columns(&plan.table).await?
                } else {
                    plan.columns.clone()
                };
                let at = columns.iter().position(|c| c.eq_ignore_ascii_case(column));
                if at.is_none() && plan.columns.is_empty() {
                    return Ok(self.error(&PgError::error(
                        "42703",
                        format!(
                            "column \"{column}\" of relation \"{}\" does not exist",
                            plan.table
                        ),
                    )));
                }
                // Sequence columns the list leaves out get the cluster-wide sequence's values,
                // as in an INSERT (the shards' own sequences would repeat each other's).
                if !plan.columns.is_empty() {
                    generated = self
                        .omitted_sequences(&plan.table, &plan.columns)
                        .await?
                        .into_iter()
                        .map(|(name, sequence, width, local)| Generated {
                            is_key: name.eq_ignore_ascii_case(column),
                            name,
                            sequence,
                            width,
                            local,
                            drawn: VecDeque::new(),
                        })
                        .collect();
                }
                if at.is_none() && !generated.iter().any(|g| g.is_key) {
                    return Ok(self.error(&PgError::error(
                        sqlstate::FEATURE_NOT_SUPPORTED,
                        format!("COPY into sharded table {} must give the shard key {column}", plan.table),
                    ).with_hint("The shard key decides where each row lives: add it to the column list, or give the column a sequence (serial or identity) for the proxy to fill in.")));
                }
                Some((at, *key_type, columns))
            }
        };
        // Values the rows give a sequence column held unique without the key: looked for on
        // every shard once they are written (see `copy_given`).
        let given = match (&plan.key, &key) {
            (Some((column, _)), Some((_, _, columns))) => {
                match self.copy_given(&plan, columns, column).await? {
                    Ok(given) => given,
                    Err(()) => return Ok(Step::Failed),
                }
            }
            _ => None,
        };
        let key = key.map(|(at, key_type, _)| (at, key_type));
        // Its values would be drawn in the session's transaction, which the COPY occupies.
        if generated.iter().any(|g| g.local) {
            return Ok(self.error(&PgError::error(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!("COPY into {} cannot fill in its sequence columns in the transaction that created the table", plan.table),
            ).with_hint("Commit the CREATE TABLE before the COPY, or give those columns in the COPY.")));
        }
        if !generated.is_empty() {
            let names: Vec<String> = generated.iter().map(|g| g.name.clone()).collect();
            match crate::router::copy::with_columns(&sql, &names) {
                Some(s) => sql = s,
                None => {
                    return Ok(self.error(&PgError::error(
                        sqlstate::INTERNAL_ERROR,
                        "could not add the sequence columns to the COPY",
                    )))
                }
            }
        }
        let own = self.own_implicit();
        let step = self
            .copy_in_everywhere(&plan, key, (generated, given), &sql)
            .await?;
        self.end_own_implicit(own, step).await
    }

    async fn copy_in_everywhere(
        &mut self,
        plan: &CopyIn,
        key: Option<(Option<usize>, crate::placement::KeyType)>,
        (generated, given): (Vec<Generated>, Option<CopyGiven>),
        sql: &str,
    ) -> R<Step> {
        let all: Vec<usize> = match plan.only {
            Some(shard) => vec![shard],
            None => (0..self.links.len()).collect(),
        };
        for &s in &all {
            self.txn.note_write(s);
            if self.enlist(s).await? == Step::Failed {
                return Ok(Step::Failed);
            }
        }
        let mut q = BytesMut::new();
        build::query(sql, &mut q);
        for &s in &all {
            self.links[s].send(&q).await?;
        }
        // Every shard must be ready to take rows before the client is asked for them.
        let (mut response, mut failure, mut copying) = (None, None, Vec::new());
        for &s in &all {
            loop {
                let f = self.links[s].recv().await?;
                match f.tag {
                    b'G' => {
                        copying.push(s);
                        response.get_or_insert(f);
                        break;
                    }
                    b'E' => {
                        failure.get_or_insert(f);
                    }
                    b'N' if s == HOME => self.out.extend_from_slice(&f.bytes),
                    b'Z' => break,
                    _ => {}
                }
            }
        }
        if let Some(err) = failure {
            for s in copying {
                // Its own answer is moot: the client hears the refusal.
                let _ = self
                    .end_shard_copy(s, Some("another shard refused the COPY"))
                    .await?;
            }
            self.shard_error(&err);
            return Ok(Step::Failed);
        }
        let Some(response) = response else {
            return Ok(self.error(&PgError::error(
                sqlstate::INTERNAL_ERROR,
                "no shard began the COPY",
            )));
        };
        self.pass(&response).await?;
        self.flush().await?;
        self.copied_in = true;

        let mut router = RowRouter {
            splitter: key.map(|(i, t)| {
                Splitter::new(plan.format.clone(), i, t).given_at(given.as_ref().map(|g| g.at))
            }),
            given_rows: Vec::new(),
            batches: vec![BytesMut::new(); self.links.len()],
            targets: all.clone(),
            generated,
            format: plan.format.clone(),
            key_type: key.map(|(_, t)| t),
        };
        let mut bad: Option<PgError> = None;
        let mut client_failed: Option<String> = None;
        loop {
            let input = self.input.as_mut().ok_or(Stop::Client)?;
            let f = match input.read_frame().await {
                Ok(Some(f)) => f,
                Ok(None) => return Err(Stop::Client),
                Err(msg) => return Err(Stop::Limit(msg)),
            };
            match f.tag {
                b'd' if bad.is_none() => {
                    if let Err(e) = self.route_rows(&mut router, f.body(), false).await? {
                        bad = Some(bad_row(&plan.table, e));
                    }
                }
                b'd' | b'H' | b'S' => {}
                b'c' => break,
                b'f' => {
                    // The client's reason is what PostgreSQL reports back to it.
                    let body = f.body();
                    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
                    client_failed = Some(String::from_utf8_lossy(&body[..end]).into_owned());
                    break;
                }
                other => {
                    bad = Some(PgError::error(
                        sqlstate::PROTOCOL_VIOLATION,
                        format!("unexpected message type 0x{other:02X} during COPY from stdin"),
                    ));
                    break;
                }
            }
        }
        if bad.is_none() && client_failed.is_none() {
            if let Err(e) = self.route_rows(&mut router, &[], true).await? {
                bad = Some(bad_row(&plan.table, e));
            }
        }
        let fail_reason = match &client_failed {
            Some(reason) => Some(reason.clone()),
            None => bad.as_ref().map(|e| e.message.clone()),
        };
        let mut total = 0;
        let mut failure = None;
        for &s in &all {
            let reason = fail_reason.clone();
            if reason.is_none() {
                let mut batch = std::mem::take(&mut router.batches[s]);
                if router.format.kind == Kind::Binary && router.splitter.is_some() {
                    batch.extend_from_slice(&BINARY_TRAILER);
                }
                self.send_rows(s, &batch).await?;
            }
            match self.end_shard_copy(s, reason.as_deref()).await? {
                // A reference table's count is one copy's.
                Ok(n) if s == all[0] || plan.key.is_some() => total += n,
                Ok(_) => {}
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        if let Some(e) = bad {
            return Ok(self.error(&e));
        }
        if let Some(f) = failure {
            self.shard_error(&f);
            return Ok(Step::Failed);
        }
        if let Some(given) = &given {
            let rows = std::mem::take(&mut router.given_rows);
            if self.copy_given_look(given, &rows).await? == Step::Failed {
                return Ok(Step::Failed);
            }
        }
        build::command_complete(&format!("COPY {total}"), &mut self.out);
        Ok(Step::Done)
    }

    /// Places the rows in `data` (and, with `last`, whatever the input ended with); sends each
    /// shard's batch once it is large enough.
    async fn route_rows(
        &mut self,
        router: &mut RowRouter,
        data: &[u8],
        last: bool,
    ) -> R<Result<(), BadRow>> {
        let Some(splitter) = router.splitter.as_mut() else {
            // A reference table: every shard takes the data as it came.
            for &s in &router.targets {
                router.batches[s].extend_from_slice(data);
                if router.batches[s].len() >= BATCH_BYTES || last {
                    let batch = std::mem::take(&mut router.batches[s]);
                    self.send_rows(s, &batch).await?;
                }
            }
            return Ok(Ok(()));
        };
        splitter.push(data);
        loop {
            let piece = match splitter.next(last) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => return Ok(Err(e)),
            };
            match piece {
                Piece::Header(h) => router
                    .batches
                    .iter_mut()
                    .for_each(|b| b.extend_from_slice(&h)),
                Piece::Row {
                    mut bytes,
                    mut key,
                    given,
                } => {
                    if !router.generated.is_empty() {
                        let mut values = Vec::with_capacity(router.generated.len());
                        for g in router.generated.iter_mut() {
                            if g.drawn.is_empty() {
                                match self.draw(&g.sequence, DRAW_FOR_COPY, g.local).await? {
                                    Some(d) => g.drawn.extend(d),
                                    None => {
                                        return Ok(Err(BadRow {
                                            message: format!(
                                                "could not draw values of sequence {}",
                                                g.sequence
                                            ),
                                            line: splitter.line(),
                                        }))
                                    }
                                }
                            }
                            let v = g.drawn.pop_front().expect("drawn above");
                            if g.is_key {
                                key = router
                                    .key_type
                                    .and_then(|t| KeyValue::from_text(t, &v.to_string()).ok());
                            }
                            values.push((v, g.width));
                        }
                        append_fields(&mut bytes, &router.format, &values);
                    }
                    if let (Some(v), Some(k)) = (given, &key) {
                        router.given_rows.push((v, k.clone()));
                    }
                    let s = key.map_or(HOME, |k| self.placement.shard_of(&k));
                    router.batches[s].extend_from_slice(&bytes);
                    if router.batches[s].len() >= BATCH_BYTES {
                        let batch = std::mem::take(&mut router.batches[s]);
                        self.send_rows(s, &batch).await?;
                    }
                }
            }
        }
        Ok(Ok(()))
    }

    async fn send_rows(&mut self, shard: usize, rows: &[u8]) -> R<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut out = BytesMut::with_capacity(rows.len() + 5);
        copy_data(rows, &mut out);
        self.links[shard].send(&out).await?;
        Ok(())
    }

    /// Ends one shard's COPY (CopyDone, or CopyFail with `fail`) and reads its answer: the row
    /// count, or its error.
    async fn end_shard_copy(&mut self, shard: usize, fail: Option<&str>) -> R<Result<u64, Frame>> {
        let mut out = BytesMut::new();
        match fail {
            None => build::empty(b'c', &mut out),
            Some(reason) => {
                out.put_u8(b'f');
                out.put_u32(reason.len() as u32 + 5);
                out.extend_from_slice(reason.as_bytes());
                out.put_u8(0);
            }
        }
        self.links[shard].send(&out).await?;
        let (mut rows, mut error) = (0, None);
        loop {
            let f = self.links[shard].recv().await?;
            match f.tag {
                b'Z' => break,
                b'C' => rows = inspect::command_rows(f.body()).unwrap_or(0),
                b'E' => {
                    error.get_or_insert(f);
                }
                b'N' if shard == HOME => self.out.extend_from_slice(&f.bytes),
                _ => {}
            }
        }
        Ok(match error {
            Some(e) => Err(e),
            None => Ok(rows),
        })
    }
}

struct RowRouter {
    /// None for a reference table.
    splitter: Option<Splitter>,
    /// Rows waiting to be sent, by shard.
    batches: Vec<BytesMut>,
    /// The shards taking part.
    targets: Vec<usize>,
    /// Sequence columns the client left out, appended to each row in this order.
    generated: Vec<Generated>,
    format: Format,
    key_type: Option<crate::placement::KeyType>,
    /// Each row's value of the column `copy_given` looks for, and its key.
    given_rows: Vec<(i64, KeyValue)>,
}

/// A sequence column the proxy fills in, with the values drawn for it and not used yet.
struct Generated {
    name: String,
    sequence: String,
    width: i16,
    is_key: bool,
    local: bool,
    drawn: VecDeque<i64>,
}

/// Values of a sequence drawn at once for a COPY (an INSERT draws `key_sequence::BLOCK`).
const DRAW_FOR_COPY: usize = 1000;

fn bad_row(table: &str, e: BadRow) -> PgError {
    PgError::error("22P04", e.message).with_detail(format!("COPY {table}, line {}", e.line))
}
