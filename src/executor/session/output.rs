//! What a session sends its client: frames from the shards (with the first shard's type and
//! table numbers), its own answers and errors, buffered and flushed in as few writes as the
//! protocol allows, and what idle shard connections say between statements.

use super::*;

impl Exec<'_> {
    /// The end of a request: notifications that arrived with its answers, as PostgreSQL sends
    /// them (just before ReadyForQuery), then ReadyForQuery with the session's status.
    pub fn ready_for_query(&mut self) {
        self.pass_notifications();
        build::ready_for_query(self.txn.status(), &mut self.out);
    }

    /// After messages ran that the client has not yet followed with Sync or Flush: sends what
    /// they answered only if that holds an error or a notice, which PostgreSQL sends at once.
    /// Other answers wait for the client's Flush or Sync (or for the output to fill, see
    /// `maybe_flush`), as in PostgreSQL's send buffer: a client that pipelines reads them when
    /// it asks, and never finds one result in before it sent the next statement.
    pub async fn flush_reports(&mut self) -> R<()> {
        if crate::protocol::inspect::has_tag(&self.out, b"EN") {
            self.flush().await?;
        }
        Ok(())
    }

    pub(super) fn pass_notifications(&mut self) {
        for link in &mut self.links {
            if link.notifications.is_empty() {
                continue;
            }
            for n in link.notifications.drain(..) {
                self.out.extend_from_slice(&n.bytes);
            }
        }
    }

    pub async fn flush(&mut self) -> R<()> {
        if !self.out.is_empty() {
            self.client
                .write_all(&self.out)
                .await
                .map_err(|_| Stop::Client)?;
            // Over TLS, written bytes can wait in the TLS layer until a flush.
            self.client.flush().await.map_err(|_| Stop::Client)?;
            self.out.clear();
            // A burst (a materialized result) must not stay allocated for the session's life.
            if self.out.capacity() > 16 * FLUSH_AT {
                self.out = BytesMut::with_capacity(FLUSH_AT);
            }
        }
        Ok(())
    }

    /// A RowDescription or ParameterDescription from `shard`, numbered as the first shard
    /// numbers things: user-defined type OIDs, and each column's table OID and attribute
    /// number (the ones a client can look up in the catalog it queries). Any other message is
    /// returned as it is. What cannot be translated is described as 0 (unknown), never as a
    /// number that may name something else on the first shard.
    ///
    /// A description a shard sent before comes out as it did then (see `shown_descriptions`).
    pub async fn for_client(&mut self, shard: usize, f: Frame) -> Frame {
        use crate::backend::catalog::type_oids::is_user;
        if shard == HOME || !matches!(f.tag, b'T' | b't') {
            return f;
        }
        let Some(catalog) = self.catalog else {
            return f;
        };
        let generation = catalog.generation();
        if let Some(shown) = self.shown_descriptions.get(shard, generation, &f.bytes) {
            return Frame {
                tag: f.tag,
                bytes: shown,
            };
        }
        let Some(positions) = crate::protocol::inspect::type_oid_positions(&f.bytes) else {
            return f;
        };
        // In a RowDescription the table OID and attribute number come just before the type.
        let origin = |at: usize| -> (u32, i16) {
            if f.tag != b'T' {
                return (0, 0);
            }
            let b = &f.bytes;
            (
                u32::from_be_bytes([b[at - 6], b[at - 5], b[at - 4], b[at - 3]]),
                i16::from_be_bytes([b[at - 2], b[at - 1]]),
            )
        };
        if !positions
            .iter()
            .any(|&(at, oid)| is_user(oid) || origin(at).0 != 0)
        {
            return f;
        }
        let mut bytes = BytesMut::from(&f.bytes[..]);
        // Whether every number was found in the catalog (see `shown_descriptions`).
        let mut whole = !self.has_own_types();
        for (at, oid) in positions {
            let home = match self.own_type(shard, HOME, oid) {
                Some(home) => Ok(home),
                None => catalog.translate_type(shard, HOME, oid).await,
            };
            let home = home.unwrap_or_else(|e| {
                tracing::warn!("describing a column of user-defined type as unknown: {e}");
                whole = false;
                0
            });
            bytes[at..at + 4].copy_from_slice(&home.to_be_bytes());
            let (table, column) = origin(at);
            if table != 0 {
                let (table, column) = catalog
                    .home_column(shard, table, column)
                    .await
                    .unwrap_or_else(|e| {
                        tracing::debug!("describing a column's origin as unknown: {e}");
                        whole = false;
                        (0, 0)
                    });
                bytes[at - 6..at - 2].copy_from_slice(&table.to_be_bytes());
                bytes[at - 2..at].copy_from_slice(&column.to_be_bytes());
            }
        }
        let shown = bytes.freeze();
        if whole {
            self.shown_descriptions
                .keep(shard, generation, &f.bytes, shown.clone());
        }
        Frame {
            tag: f.tag,
            bytes: shown,
        }
    }

    /// The type OIDs a client declared (the first shard's), as `shard` knows the same types.
    pub async fn types_for(&self, shard: usize, declared: &[u32]) -> Result<Vec<u32>, PgError> {
        let mut out = Vec::with_capacity(declared.len());
        for &oid in declared {
            if let Some(own) = self.own_type(HOME, shard, oid) {
                out.push(own);
                continue;
            }
            out.push(match self.catalog {
                Some(catalog) => catalog
                    .translate_type(HOME, shard, oid)
                    .await
                    .map_err(|e| {
                        PgError::error("42704", e).with_hint(
                            "Create types through the proxy so that every shard has them.",
                        )
                    })?,
                None => oid,
            });
        }
        Ok(out)
    }

    /// Waits, between requests, until a shard sends something unprompted; returns which.
    pub async fn idle_input(&mut self) -> (usize, Result<(), LinkLost>) {
        // Between transactions in transaction mode no link holds a connection, and often one
        // does: no need to box a wait per link then (this runs for every client message).
        let mut holding = self
            .links
            .iter()
            .enumerate()
            .filter(|(_, l)| l.holds_conn());
        let (first, second) = (holding.next().map(|(i, _)| i), holding.next());
        match (first, second) {
            (None, _) => std::future::pending().await,
            (Some(i), None) => (i, self.links[i].idle_input().await),
            _ => {
                let waits = self.links.iter_mut().map(|l| Box::pin(l.idle_input()));
                let (result, i, _) = futures_util::future::select_all(waits).await;
                (i, result)
            }
        }
    }

    /// Passes on what shard `i` sent while the session was idle: notifications, notices, and
    /// (from the first shard) parameter changes. A FATAL ends the session with the shard's own
    /// words (see `ShardLink::fatal`).
    pub async fn on_idle_input(&mut self, i: usize, read: Result<(), LinkLost>) -> R<()> {
        let frames = self.links[i].buffered()?;
        for f in frames {
            match f.tag {
                b'N' => self.out.extend_from_slice(&f.bytes),
                b'S' if i == HOME => self.out.extend_from_slice(&f.bytes),
                b'S' => {}
                // An error outside a request is the FATAL before the shard closes.
                _ => return Err(Stop::Shard(self.links[i].name.clone())),
            }
        }
        read?;
        self.pass_notifications();
        self.flush().await
    }

    /// The next message from `shard` on a path that relays its answer to the client. A DataRow or
    /// CopyData over `STREAM_AT` is not returned: it is passed to the client piece by piece as it
    /// arrives (`None`), so a large value is never held whole. While output is being held (a
    /// result materialized for a row-limited Execute), every message is returned whole.
    pub async fn relay_recv(&mut self, shard: usize) -> R<Option<Frame>> {
        if self.hold_output {
            return Ok(Some(self.links[shard].recv().await?));
        }
        match self.links[shard].recv_or_large(STREAM_AT).await? {
            Incoming::Whole(f) => Ok(Some(f)),
            Incoming::Large {
                head,
                mut remaining,
            } => {
                self.flush().await?;
                self.write_client(&head).await?;
                while remaining > 0 {
                    let piece = self.links[shard].piece(remaining).await?;
                    remaining -= piece.len();
                    self.write_client(&piece).await?;
                }
                Ok(None)
            }
        }
    }

    /// Passes on the messages of `shard` already received that `plain` accepts, up to the first
    /// other one, without making a frame of each (see `ShardLink::move_plain`).
    pub async fn pass_plain(&mut self, shard: usize, plain: impl Fn(u8) -> bool) -> R<()> {
        self.links[shard].move_plain(&mut self.out, plain, FLUSH_AT);
        self.maybe_flush().await
    }

    pub(super) async fn write_client(&mut self, bytes: &[u8]) -> R<()> {
        self.client
            .write_all(bytes)
            .await
            .map_err(|_| Stop::Client)?;
        self.client.flush().await.map_err(|_| Stop::Client)
    }

    /// Sends a shard's message on to the client. A large one (a big value) is written straight
    /// from the frame after what is queued, instead of being copied into the output buffer, so
    /// it is held once, not twice, and the buffer does not keep its size afterwards.
    pub async fn pass(&mut self, f: &Frame) -> R<()> {
        if f.bytes.len() >= FLUSH_AT && !self.hold_output {
            self.flush().await?;
            return self.write_client(&f.bytes).await;
        }
        self.out.extend_from_slice(&f.bytes);
        self.maybe_flush().await
    }

    pub async fn maybe_flush(&mut self) -> R<()> {
        if self.hold_output && self.out.len() > MAX_HELD_BYTES {
            return Err(Stop::Limit(format!(
                "an answer held until it was complete exceeded {MAX_HELD_BYTES} bytes (a result handed out in parts by an Execute with a row limit over several shards, the rows of a subquery answered first, or the notices of DDL or DO code, held until its key columns are checked)"
            )));
        }
        if self.out.len() >= FLUSH_AT && !self.hold_output {
            self.flush().await?;
        }
        Ok(())
    }

    /// Passes a shard's ErrorResponse to the client; its position is dropped when the shard ran
    /// a rewritten text.
    pub fn shard_error(&mut self, f: &Frame) {
        self.shard_error_after(f, 0);
    }

    /// As `shard_error`, for a statement that ran with `prefix` characters of the proxy's own
    /// in front of it.
    pub fn shard_error_after(&mut self, f: &Frame, prefix: u64) {
        if !self.rewritten && prefix == 0 && self.ahead == 0 {
            self.out.extend_from_slice(&f.bytes);
            return;
        }
        let (rewritten, ahead) = (self.rewritten, self.ahead);
        let placed = crate::protocol::inspect::map_error_position(&f.bytes, |p| {
            let own = p.checked_sub(prefix).filter(|&p| p > 0);
            own.filter(|_| !rewritten).map(|p| p + ahead)
        });
        self.out.extend_from_slice(&placed);
    }

    pub fn error(&mut self, err: &PgError) -> Step {
        build::error(err, &mut self.out);
        Step::Failed
    }

    /// A statement refused as planned: the error, counted.
    pub fn reject(&mut self, err: &PgError) -> Step {
        metrics::counter!(crate::metrics::STATEMENTS_REJECTED).increment(1);
        self.error(err)
    }

    pub fn into_client(self) -> ClientWriter {
        self.client
    }
}
