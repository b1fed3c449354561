//! Statements the session handles apart from routing: session settings, refusals and syntax
//! errors worded as PostgreSQL words them, the parse cache, the column lists of INSERTs without
//! one, DEALLOCATE bookkeeping and the admin commands answered in the proxy.

use super::*;

impl Exec<'_> {
    /// A session statement (SET, RESET, DISCARD, DEALLOCATE ...): on every shard.
    pub async fn session_statement(&mut self, sql: &str) -> R<Step> {
        if let Some(step) = self.pooled_discard(sql) {
            return Ok(step);
        }
        self.note_deallocate(sql);
        self.session_setting_ran();
        let mut step = self.everywhere(sql).await?;
        if step == Step::Done {
            step = self.restore_startup(sql).await?;
        }
        self.session_statement_ran(sql, step);
        if step == Step::Done {
            self.clock_maybe_reset(sql);
        }
        Ok(step)
    }

    /// After a RESET: the shards' connections went back to their own login's values, and
    /// are given the client's startup parameters again, which PostgreSQL's RESET keeps.
    async fn restore_startup(&mut self, sql: &str) -> R<Step> {
        let Some(sets) = self.pool.settings.restoring(sql) else {
            return Ok(Step::Done);
        };
        for s in 0..self.links.len() {
            if let Some(e) = self.run_quiet(s, &sets).await? {
                self.out.extend_from_slice(&e.bytes);
                return Ok(Step::Failed);
            }
        }
        Ok(Step::Done)
    }

    /// A statement the proxy cannot read. The home shard parses it (without running it, and
    /// without analysis for utility statements), so a syntax error gets PostgreSQL's own 42601,
    /// message and position; valid SQL is refused as unroutable.
    pub(in crate::executor) async fn unrecognised(&mut self, sql: &str) -> R<Step> {
        metrics::counter!(crate::metrics::STATEMENTS_REJECTED).increment(1);
        match self.syntax_error(sql).await? {
            Some(e) => {
                self.shard_error(&e);
                Ok(Step::Failed)
            }
            None => Ok(self.error(&crate::router::plan::unrecognised())),
        }
    }

    /// The home shard's answer to parsing `sql` (never running it): its error, if any.
    pub(in crate::executor) async fn syntax_error(&mut self, sql: &str) -> R<Option<Frame>> {
        let mut q = BytesMut::new();
        crate::protocol::message::Parse {
            name: String::new(),
            sql: sql.into(),
            param_types: Vec::new(),
        }
        .encode(&mut q);
        q.extend_from_slice(&[b'S', 0, 0, 0, 4]);
        self.links[HOME].send(&q).await?;
        let mut error = None;
        loop {
            let f = self.links[HOME].recv().await?;
            match f.tag {
                b'E' if error.is_none() => error = Some(f),
                b'Z' => break,
                _ => {}
            }
        }
        Ok(error)
    }

    /// The statements of `sql` (None when sqlparser cannot parse them, or for `SHOW shardgate.*`,
    /// which the proxy answers), from the worker thread's cache.
    pub fn parse(&self, sql: &str) -> Option<Parsed> {
        self.parse_shaped(sql, None)
    }

    /// As `parse`, given the shape of `sql` when the caller has already worked it out.
    pub fn parse_shaped(&self, sql: &str, shape: Option<crate::sql::Shape>) -> Option<Parsed> {
        if sql.len() > MAX_ANALYSED_BYTES {
            return None;
        }
        if crate::router::plan::is_admin(sql) {
            return None;
        }
        crate::executor::parse_cache::get_shared(sql, shape)
    }

    /// Works out into `self.shape` the shape of a simple-protocol text short enough for a
    /// learned route, and not one the proxy answers itself; false when it has none.
    pub fn simple_shape(&mut self, sql: &str) -> bool {
        if sql.len() > super::super::shape_route::LONGEST_SHAPE
            || crate::router::plan::is_admin(sql)
        {
            return false;
        }
        crate::sql::shape_into(sql, &mut self.shape)
    }

    /// The proven template of a shape, when the parse cache holds one.
    pub fn shape_template(
        &self,
        key: &str,
    ) -> Option<std::sync::Arc<Vec<sqlparser::ast::Statement>>> {
        crate::executor::parse_cache::shared_template(key)
    }

    /// Reads (once per session and table) the column order of the table an INSERT without a
    /// column list targets, when that table is sharded: placement needs to know which value is
    /// the key.
    pub async fn fetch_insert_columns(&mut self, stmt: &sqlparser::ast::Statement) -> R<()> {
        if let Some(table) = insert_without_columns(stmt, &self.placement) {
            self.table_columns(&table).await?;
        }
        Ok(())
    }

    /// DDL ran: the columns read so far may have moved.
    pub fn forget_columns(&mut self) {
        self.columns.clear();
    }

    /// A table's columns in order, if this session has read them.
    pub fn known_columns(&self, table: &str) -> Option<Vec<String>> {
        self.columns.get(table).cloned()
    }

    /// A table's columns in order, read once per session from the home shard's catalog
    /// (empty when it has no such table).
    pub async fn table_columns(&mut self, table: &str) -> R<Vec<String>> {
        if let Some(names) = self.columns.get(table) {
            return Ok(names.clone());
        }
        let sql = format!(
            "select attname from pg_catalog.pg_attribute \
             where attrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass('{}') \
             and attnum OPERATOR(pg_catalog.>) 0 and not attisdropped order by attnum",
            table.replace('\'', "''")
        );
        let (names, _) = self.query_values(HOME, &sql).await?;
        if !names.is_empty() {
            self.columns.insert(table.to_string(), names.clone());
        }
        Ok(names)
    }

    /// The statement as planning needs it: an INSERT without a column list gets its table's
    /// columns (the shard still receives the client's text). Other statements are shared as is.
    pub fn with_insert_columns(
        &self,
        stmt: &std::sync::Arc<sqlparser::ast::Statement>,
    ) -> std::sync::Arc<sqlparser::ast::Statement> {
        let Some(table) = insert_without_columns(stmt, &self.placement) else {
            return stmt.clone();
        };
        let Some(cols) = self.columns.get(&table) else {
            return stmt.clone();
        };
        let mut filled = (**stmt).clone();
        if let sqlparser::ast::Statement::Insert(ins) = &mut filled {
            // PostgreSQL gives the values to the first columns, in order, and the rest their
            // defaults.
            let given = source_width(ins).unwrap_or(cols.len()).min(cols.len());
            ins.columns = cols[..given]
                .iter()
                .map(|c| sqlparser::ast::ObjectName::from(vec![sqlparser::ast::Ident::new(c)]))
                .collect();
        }
        std::sync::Arc::new(filled)
    }

    /// DEALLOCATE name | DEALLOCATE ALL | DISCARD ALL drop statements the shards had prepared.
    pub(super) fn note_deallocate(&mut self, sql: &str) {
        let words: Vec<String> = sql
            .split_whitespace()
            .map(|w| w.trim_end_matches(';').to_string())
            .collect();
        let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
        match lower
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["deallocate", "all"] | ["deallocate", "prepare", "all"] | ["discard", "all"] => {
                self.sql_statements.clear();
                self.deallocated.push(None)
            }
            ["deallocate", name] | ["deallocate", "prepare", name] => {
                let original = &words[words.len() - 1];
                let _ = name;
                self.deallocated
                    .push(Some(original.trim_matches('"').to_string()));
            }
            _ => {}
        }
    }

    pub(in crate::executor) async fn admin(&mut self, cmd: AdminCmd) -> Step {
        match cmd {
            AdminCmd::Set { name, value } => self.set_variable(&name, &value),
            AdminCmd::Show { name } => self.show_variable(&name),
            AdminCmd::Recover => {
                let report =
                    crate::txn::recovery::run(&self.txn_ctx.shards, &self.txn_ctx.recovery).await;
                if self.describe_rows {
                    build::row_description_text(&["gid", "shard", "outcome"], &mut self.out);
                }
                for r in &report.resolved {
                    build::data_row_text(
                        &[Some(&r.gid), Some(&r.shard), Some(r.outcome)],
                        &mut self.out,
                    );
                }
                for g in &report.skipped {
                    build::data_row_text(&[Some(g), None, Some("left for later")], &mut self.out);
                }
                for e in &report.errors {
                    build::warning("01000", e, &mut self.out);
                }
                let n = report.resolved.len() + report.skipped.len();
                build::command_complete(&format!("SHOW {n}"), &mut self.out);
                Step::Done
            }
            AdminCmd::Placement => {
                if self.describe_rows {
                    build::row_description_text(
                        &["version", "shard", "slots", "ranges"],
                        &mut self.out,
                    );
                }
                let placement = self.placement.clone();
                let version = placement.version.to_string();
                let mut counts = vec![0u32; placement.shard_names.len()];
                for slot in 0..crate::placement::SLOT_COUNT {
                    counts[placement.slots.shard_of_slot(slot)] += 1;
                }
                let ranges = placement.slots.ranges(&placement.shard_names);
                for ((shard, ranges), count) in ranges.iter().zip(&counts) {
                    let count = count.to_string();
                    build::data_row_text(
                        &[Some(&version), Some(shard), Some(&count), Some(ranges)],
                        &mut self.out,
                    );
                }
                build::command_complete(&format!("SHOW {}", ranges.len()), &mut self.out);
                Step::Done
            }
            AdminCmd::Route { table, key } => match self.placement.route_text(&table, &key) {
                Ok((slot, shard)) => {
                    if self.describe_rows {
                        build::row_description_text(
                            &["table", "key", "slot", "shard"],
                            &mut self.out,
                        );
                    }
                    let slot = slot.to_string();
                    build::data_row_text(
                        &[Some(&table), Some(&key), Some(&slot), Some(&shard)],
                        &mut self.out,
                    );
                    build::command_complete("SHOW", &mut self.out);
                    Step::Done
                }
                Err(e) => self.error(&PgError::error("42P01", e)),
            },
        }
    }
}

/// How many values each row of an INSERT's source gives, where its text says: the first
/// VALUES row's, or a SELECT list without `*`.
fn source_width(ins: &sqlparser::ast::Insert) -> Option<usize> {
    use sqlparser::ast::{SelectItem, SetExpr};
    match ins.source.as_deref().map(|q| q.body.as_ref())? {
        SetExpr::Values(values) => values.rows.first().map(|row| row.content.len()),
        SetExpr::Select(select) => select
            .projection
            .iter()
            .all(|item| {
                matches!(
                    item,
                    SelectItem::UnnamedExpr(_) | SelectItem::ExprWithAlias { .. }
                )
            })
            .then_some(select.projection.len()),
        _ => None,
    }
}

/// The table of an INSERT ... VALUES without a column list into a sharded table.
fn insert_without_columns(
    stmt: &sqlparser::ast::Statement,
    placement: &Placement,
) -> Option<String> {
    let sqlparser::ast::Statement::Insert(ins) = stmt else {
        return None;
    };
    let sqlparser::ast::TableObject::TableName(name) = &ins.table else {
        return None;
    };
    if !ins.columns.is_empty() {
        return None;
    }
    match placement.rule(&name.to_string()) {
        Some(crate::placement::TableRule::Sharded { .. }) => Some(name.to_string()),
        _ => None,
    }
}
