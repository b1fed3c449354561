//! Running a statement's text on shards and relaying their answers: on one shard, on several
//! or every one (DDL and session statements), or quietly for the proxy's own use.

use super::*;

impl Exec<'_> {
    /// Runs `sql` on one shard; returns the first column of every row and the first error.
    pub async fn query_values(
        &mut self,
        shard: usize,
        sql: &str,
    ) -> R<(Vec<String>, Option<Frame>)> {
        let mut q = BytesMut::new();
        build::query(sql, &mut q);
        self.links[shard].send(&q).await?;
        self.values_until_ready(shard).await
    }

    /// The first column of each row (NULL left out) a request sent to `shard` answers, and its
    /// first error, read up to ReadyForQuery; notices go to the client.
    pub async fn values_until_ready(&mut self, shard: usize) -> R<(Vec<String>, Option<Frame>)> {
        let (mut values, mut error) = (Vec::new(), None);
        loop {
            let f = self.links[shard].recv().await?;
            match f.tag {
                b'D' => {
                    if let Some(Some(v)) = crate::protocol::inspect::data_row_column(f.body(), 0) {
                        values.push(String::from_utf8_lossy(v).into_owned());
                    }
                }
                b'E' if error.is_none() => error = Some(f),
                b'N' => self.out.extend_from_slice(&f.bytes),
                b'Z' => return Ok((values, error)),
                _ => {}
            }
        }
    }

    /// Runs `sql` (one or more statements) on each of `shards` at once, and reads every
    /// answer in full: per shard, the first column of each statement's rows, statement by
    /// statement, and the first error (after which the shard ran nothing more of it).
    pub async fn statements_values(
        &mut self,
        shards: &[usize],
        sql: &str,
    ) -> R<Vec<(Vec<Vec<String>>, Option<Frame>)>> {
        let mut q = BytesMut::new();
        build::query(sql, &mut q);
        for &shard in shards {
            self.links[shard].send(&q).await?;
        }
        let mut answers = Vec::with_capacity(shards.len());
        for &shard in shards {
            let (mut statements, mut error) = (vec![Vec::new()], None);
            loop {
                let f = self.links[shard].recv().await?;
                match f.tag {
                    b'D' => {
                        let row = crate::protocol::inspect::data_row_column(f.body(), 0);
                        if let (Some(Some(v)), Some(rows)) = (row, statements.last_mut()) {
                            rows.push(String::from_utf8_lossy(v).into_owned());
                        }
                    }
                    b'C' => statements.push(Vec::new()),
                    b'E' if error.is_none() => error = Some(f),
                    b'N' => self.out.extend_from_slice(&f.bytes),
                    b'Z' => break,
                    _ => {}
                }
            }
            statements.pop();
            answers.push((statements, error));
        }
        Ok(answers)
    }

    pub(in crate::executor) async fn single(
        &mut self,
        shard: usize,
        write: bool,
        sql: &str,
    ) -> R<Step> {
        if write {
            self.txn.note_write(shard);
        }
        // A shard joining the transaction gets its BEGIN in the same message as the statement.
        let opening = self.opening(shard);
        if opening.is_some() {
            self.settle(shard).await?;
        }
        // The last query's buffer: a point query sent this way costs no allocation.
        let mut q = std::mem::take(&mut self.query_out);
        q.clear();
        match &opening {
            Some(o) => build::query(&format!("{};\n{sql}", o.sql), &mut q),
            None => build::query(sql, &mut q),
        }
        let sent = self.links[shard].send(&q).await;
        // One that a long text grew is let go rather than held for the session's life.
        if q.capacity() <= 4096 {
            self.query_out = q;
        }
        sent?;
        // A cut sent just before this statement answers first.
        if let Some(err) = self.finish_cut().await? {
            self.quiet_until_ready(shard).await?;
            self.out.extend_from_slice(&err.bytes);
            return Ok(Step::Failed);
        }
        let mut prefix = 0;
        if let Some(o) = opening {
            if self.read_opening(shard, &o).await? == Step::Failed {
                return Ok(Step::Failed);
            }
            prefix = o.sql.chars().count() as u64 + 2;
        }
        self.relay_until_ready_after(shard, prefix).await
    }

    /// Forwards everything up to (not including) ReadyForQuery.
    pub async fn relay_until_ready(&mut self, shard: usize) -> R<Step> {
        self.relay_until_ready_after(shard, 0).await
    }

    /// As `relay_until_ready`, for a statement that ran with `prefix` characters of the
    /// proxy's own in front of it: error positions are moved back to the client's text.
    pub(super) async fn relay_until_ready_after(&mut self, shard: usize, prefix: u64) -> R<Step> {
        let mut step = Step::Done;
        loop {
            // Rows and the like go on as they came, many at once, without a frame each.
            self.pass_plain(shard, |t| {
                matches!(t, b'D' | b'C' | b'I' | b'N') || (t == b'T' && shard == HOME)
            })
            .await?;
            let Some(f) = self.relay_recv(shard).await? else {
                continue; // a large row, already passed on
            };
            match f.tag {
                b'Z' => return Ok(step),
                b'E' => {
                    step = Step::Failed;
                    self.shard_error_after(&f, prefix);
                }
                b'T' if shard != HOME => {
                    let f = self.for_client(shard, f).await;
                    self.pass(&f).await?;
                }
                b'G' => {
                    // COPY FROM STDIN is refused by the planner on several shards; end it.
                    let mut fail = BytesMut::new();
                    fail.extend_from_slice(b"f\0\0\0\x1acopy not supported here\0");
                    self.links[shard].send(&fail).await?;
                }
                _ => self.pass(&f).await?,
            }
            self.maybe_flush().await?;
        }
    }

    /// Reads up to ReadyForQuery, forwarding only notices; returns the first error.
    pub async fn quiet_until_ready(&mut self, shard: usize) -> R<Option<Frame>> {
        self.quiet_until_ready_from(shard, None).await
    }

    /// As `quiet_until_ready`, for a statement every shard ran alike: a notice already queued
    /// for the client since `since` (the same one from another shard, say "table does not exist,
    /// skipping") is not passed on again.
    pub(super) async fn quiet_until_ready_once(
        &mut self,
        shard: usize,
        since: usize,
    ) -> R<Option<Frame>> {
        self.quiet_until_ready_from(shard, Some(since)).await
    }

    pub(super) async fn quiet_until_ready_from(
        &mut self,
        shard: usize,
        dedup_since: Option<usize>,
    ) -> R<Option<Frame>> {
        let mut first_error = None;
        loop {
            let f = self.links[shard].recv().await?;
            match f.tag {
                b'Z' => return Ok(first_error),
                b'E' if first_error.is_none() => first_error = Some(f),
                b'N' => {
                    let repeated = dedup_since.is_some_and(|since| {
                        let queued = &self.out[since.min(self.out.len())..];
                        queued.windows(f.bytes.len()).any(|w| w == &f.bytes[..])
                    });
                    if !repeated {
                        self.out.extend_from_slice(&f.bytes);
                    }
                }
                _ => {}
            }
        }
    }

    /// Runs `sql` on one shard without forwarding its results; returns its error, if any.
    pub async fn run_quiet(&mut self, shard: usize, sql: &str) -> R<Option<Frame>> {
        let mut q = BytesMut::new();
        build::query(sql, &mut q);
        self.links[shard].send(&q).await?;
        self.quiet_until_ready(shard).await
    }

    /// Session commands: every shard runs them; the client sees the home shard's answer.
    pub(super) async fn everywhere(&mut self, sql: &str) -> R<Step> {
        let all: Vec<usize> = (0..self.links.len()).collect();
        if let TxnState::Open(_) = self.txn {
            for &s in &all {
                if self.enlist(s).await? == Step::Failed {
                    return Ok(Step::Failed);
                }
            }
        }
        self.on_all(sql, &all).await
    }

    pub(crate) async fn on_all(&mut self, sql: &str, shards: &[usize]) -> R<Step> {
        let mut q = BytesMut::new();
        build::query(sql, &mut q);
        for &s in shards {
            self.links[s].send(&q).await?;
        }
        let mut step = Step::Done;
        let start = self.out.len();
        for &s in shards {
            if s == HOME {
                if self.relay_until_ready(s).await? == Step::Failed {
                    step = Step::Failed;
                }
            } else if let Some(err) = self.quiet_until_ready_once(s, start).await? {
                if step == Step::Done {
                    self.out.extend_from_slice(&err.bytes);
                }
                step = Step::Failed;
            }
        }
        Ok(step)
    }

    /// DDL on every shard. Outside a transaction it runs in one transaction per shard, committed
    /// only when every shard succeeded and the sharded tables' key columns are still ones the
    /// proxy can route by (see `executor::key_columns`).
    pub(in crate::executor) async fn broadcast(
        &mut self,
        sql: &str,
        transactional: bool,
    ) -> R<Step> {
        let all: Vec<usize> = (0..self.links.len()).collect();
        match &self.txn {
            TxnState::Open(t) if !transactional && !t.implicit => Ok(self.error(&PgError::error(
                "25001",
                format!(
                    "{} cannot run inside a transaction block",
                    sql.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
                ),
            ))),
            _ if !transactional => {
                for &s in &all {
                    let step = if s == HOME {
                        let mut q = BytesMut::new();
                        build::query(sql, &mut q);
                        self.links[s].send(&q).await?;
                        self.relay_until_ready(s).await?
                    } else {
                        match self.run_quiet(s, sql).await? {
                            None => Step::Done,
                            Some(e) => {
                                self.out.extend_from_slice(&e.bytes);
                                Step::Failed
                            }
                        }
                    };
                    if step == Step::Failed {
                        return Ok(Step::Failed);
                    }
                }
                Ok(Step::Done)
            }
            _ => {
                // One distributed transaction (the client's, or its own), so the schema changes
                // on every shard or none.
                let own = self.own_implicit();
                let held = self.hold_answer();
                let step = self.everywhere(sql).await;
                let step = self.key_columns_kept(held, step).await?;
                let step = self.learn_functions(step).await?;
                if step == Step::Done {
                    for s in all {
                        self.txn.note_write(s);
                    }
                }
                self.end_own_implicit(own, step).await
            }
        }
    }
}
