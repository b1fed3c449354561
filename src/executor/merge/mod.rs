//! Scatter-gather: run one statement on several shards and give the client one result set,
//! equal to what one PostgreSQL holding all the rows would return.
//!
//! Rows stream: without ORDER BY the shards' rows are concatenated; with ORDER BY the heads of
//! the shard streams are merged (k-way), so memory is one row per shard plus socket buffers,
//! whatever the result size. LIMIT was pushed down as offset+limit; OFFSET and LIMIT are applied
//! again after the merge. Only the sort columns of head rows are decoded.
//!
//! `rows` reads the shards' rows and applies OFFSET and LIMIT; `groups` merges grouped and
//! aggregated results through `aggregate`'s per-group state (keyed by `group_keys`, written
//! back by `encode`) and hands them out through `group_output` (HAVING, ORDER BY, the client's
//! columns), and `computed` evaluates items
//! over the merged aggregates; `collation` refuses text the merge cannot compare as
//! PostgreSQL does, and `enums` groups enum labels as text and sorts them in their declared
//! order.

mod aggregate;
pub(super) mod collation;
mod computed;
mod encode;
mod enums;
mod group_keys;
mod group_output;
mod groups;
mod having;
mod joined;
mod numbering;
mod numeric_sum;
pub mod rows;
mod totals;

use super::session::{Exec, Step, R};
use super::value::{self, SortValue};
use crate::error::{sqlstate, PgError};
use crate::protocol::inspect::FieldDesc;
use crate::protocol::{build, inspect, Frame};
use crate::router::plan::{MergeSpec, SortColumn, SortKey};
use bytes::{Bytes, BytesMut};
pub use group_output::client_description;
pub use rows::strip_columns;
use rows::{drain, error_frame, next_row, non_c_order, Window};
use std::cmp::Ordering;

/// A resolved sort key: 0-based column, its type and format, direction.
#[derive(Clone)]
struct Key {
    column: usize,
    type_oid: u32,
    format: i16,
    /// An enum column's declared order, which its values sort by.
    labels: Option<std::sync::Arc<enums::EnumOrder>>,
    descending: bool,
    nulls_first: bool,
}

pub async fn scatter(
    exec: &mut Exec<'_>,
    shards: &[usize],
    sql: &str,
    merge: &MergeSpec,
) -> R<Step> {
    let requests = queries(shards, sql, merge);
    scatter_request(exec, shards, &requests, merge, true).await
}

/// The Query message of each of `shards` (one for all when they run the same text).
pub fn queries(shards: &[usize], sql: &str, merge: &MergeSpec) -> Vec<Bytes> {
    let one = |text: &str| {
        let mut q = BytesMut::new();
        build::query(text, &mut q);
        q.freeze()
    };
    if merge.shard_text.is_none() {
        return vec![one(sql)];
    }
    shards
        .iter()
        .map(|&s| one(merge.text_for(s, sql)))
        .collect()
}

/// Sends each shard its request (a Query, or Parse+Bind+Describe+Execute+Sync; `requests` holds
/// one per shard, or one for all) and merges the answers. `describe`: whether the client gets
/// the RowDescription (simple protocol) or already has it (extended protocol, from its
/// Describe).
pub async fn scatter_request(
    exec: &mut Exec<'_>,
    shards: &[usize],
    requests: &[bytes::Bytes],
    merge: &MergeSpec,
    describe: bool,
) -> R<Step> {
    // Outside a transaction block each shard would answer `now()` with its own statement's
    // start.
    let own = exec.own_read_for_clock(shards, requests.iter().map(|r| &r[..]));
    let step = scatter_in_txn(exec, shards, requests, merge, describe).await?;
    exec.end_own_implicit(own, step).await
}

async fn scatter_in_txn(
    exec: &mut Exec<'_>,
    shards: &[usize],
    requests: &[bytes::Bytes],
    merge: &MergeSpec,
    describe: bool,
) -> R<Step> {
    for &s in shards {
        if exec.enlist(s).await? == Step::Failed {
            return Ok(Step::Failed);
        }
    }
    if exec.gates_statements(shards).await? {
        // READ COMMITTED in snapshot consistency: this statement's own consistent cut.
        if let Some(err) = exec.gate_statement(shards, requests).await? {
            exec.shard_error(&err);
            return Ok(Step::Failed);
        }
    } else {
        for (i, &s) in shards.iter().enumerate() {
            let request = &requests[i.min(requests.len() - 1)];
            exec.links[s].send(request).await?;
        }
    }
    // A snapshot cut sent just before this read answers first.
    if let Some(err) = exec.finish_cut().await? {
        drain(exec, shards).await?;
        exec.shard_error(&err);
        return Ok(Step::Failed);
    }
    // Each shard's first answer: its RowDescription, or an error.
    let mut description: Option<Frame> = None;
    let mut failure: Option<Frame> = None;
    for &s in shards {
        loop {
            let f = exec.links[s].recv().await?;
            match f.tag {
                b'T' => {
                    // Compared and passed on numbered as the first shard numbers types,
                    // tables and columns (each shard has its own numbers for them), and so
                    // are the types inside binary values of the rows that follow.
                    exec.learn_row_types(s, &f).await;
                    let f = exec.for_client(s, f).await;
                    match &description {
                        None => description = Some(f),
                        Some(d) if inspect::same_columns(d.body(), f.body()) => {}
                        Some(_) => {
                            failure.get_or_insert_with(|| {
                                error_frame(&PgError::error(
                                sqlstate::FEATURE_NOT_SUPPORTED,
                                "shards returned different result columns; their schemas differ",
                            ))
                            });
                        }
                    }
                    break;
                }
                b'E' => {
                    failure.get_or_insert(f);
                    break;
                }
                b'N' => exec.out.extend_from_slice(&f.bytes),
                b'Z' => {
                    // Answered without rows (cannot happen for a SELECT); nothing to drain.
                    break;
                }
                _ => {}
            }
        }
    }
    // A prepared statement keeps the columns the client was shown. Grouped results are built
    // by the proxy from other columns, so only plain ones are compared.
    let fixed = exec.fixed_columns.take();
    if let (None, Some(d), Some(fixed), None) = (&failure, &description, &fixed, &merge.aggregate) {
        let shown = Frame {
            tag: b'T',
            bytes: strip_columns(d, merge.hidden),
        };
        if !crate::protocol::inspect::same_description(&fixed.bytes, &shown.bytes) {
            failure = Some(error_frame(&PgError::changed_result_type()));
        }
    }
    if merge.aggregate.is_some() {
        return groups::run(exec, shards, description, failure, merge, describe).await;
    }
    let keys = match (&failure, &description) {
        (None, Some(d)) => match Sorting::resolve(exec, shards, d, merge).await {
            Ok(Sorting(k)) => k,
            Err(e) => {
                failure = Some(error_frame(&e));
                vec![]
            }
        },
        _ => vec![],
    };
    let fields = match (
        &description,
        merge.totals.is_empty() && merge.numbers.is_empty(),
    ) {
        (Some(d), false) => inspect::row_description(d.body()).unwrap_or_default(),
        _ => Vec::new(),
    };
    let total_columns = match totals::columns(&merge.totals, &fields, merge.hidden) {
        Ok(c) => c,
        Err(e) => {
            failure.get_or_insert_with(|| error_frame(&e));
            Vec::new()
        }
    };
    if let Some(err) = failure {
        drain(exec, shards).await?;
        exec.shard_error(&err);
        return Ok(Step::Failed);
    }
    let Some(description) = description else {
        return Ok(Step::Done);
    };
    if describe {
        exec.out
            .extend_from_slice(&strip_columns(&description, merge.hidden));
    }
    // With count(...) OVER () items, one row of every shard before the first is sent.
    let mut sums: Vec<(usize, Bytes)> = Vec::new();

    let mut window = Window {
        skip: merge.offset,
        left: merge.limit,
        sent: 0,
    };
    let mut late_error: Option<Frame> = None;
    let mut numbers = numbering::Numbers::new(&merge.numbers, &fields);
    if keys.is_empty() && !merge.numbers.is_empty() {
        late_error = Some(error_frame(&PgError::error(
            sqlstate::INTERNAL_ERROR,
            "numbered rows of several shards came unsorted",
        )));
    }
    if keys.is_empty() {
        let mut firsts: Vec<Option<Frame>> = Vec::with_capacity(shards.len());
        if !total_columns.is_empty() {
            for &s in shards {
                firsts.push(next_row(exec, s, &mut late_error).await?);
            }
            let present: Vec<&Frame> = firsts.iter().flatten().collect();
            match totals::sums(&present, &total_columns, &fields) {
                Ok(t) => sums = t,
                Err(e) => {
                    late_error.get_or_insert_with(|| error_frame(&e));
                }
            }
        }
        for (i, &s) in shards.iter().enumerate() {
            // A shard read ahead that had no row has ended: asking it again would wait for ever.
            if firsts.get(i).is_some_and(Option::is_none) {
                continue;
            }
            let mut first = firsts.get_mut(i).and_then(Option::take);
            loop {
                let row = match first.take() {
                    Some(row) => row,
                    None => match next_row(exec, s, &mut late_error).await? {
                        Some(row) => row,
                        None => break,
                    },
                };
                // Totals that could not be read are not written in any row.
                let unread = !total_columns.is_empty() && late_error.is_some();
                if !unread && window.admit() {
                    send(exec, &row, merge, &sums);
                    exec.maybe_flush().await?;
                }
            }
        }
    } else {
        let mut heads: Vec<Option<(Frame, Vec<SortValue>)>> = Vec::with_capacity(shards.len());
        for &s in shards {
            heads.push(head(exec, s, &keys, &mut late_error).await?);
        }
        if !total_columns.is_empty() {
            let present: Vec<&Frame> = heads.iter().flatten().map(|(row, _)| row).collect();
            match totals::sums(&present, &total_columns, &fields) {
                Ok(t) => sums = t,
                Err(e) => {
                    late_error.get_or_insert_with(|| error_frame(&e));
                }
            }
        }
        // DISTINCT ON: the leading sort values of the last row kept.
        let on = &keys[..merge.distinct_on.min(keys.len())];
        let mut kept: Option<Vec<SortValue>> = None;
        while late_error.is_none() && !window.full() {
            let Some(best) = pick(&heads, &keys) else {
                break;
            };
            let (row, values) = heads[best].take().expect("picked a present head");
            let repeated = !on.is_empty()
                && kept
                    .as_ref()
                    .is_some_and(|k| order(k, &values, on) == Ordering::Equal);
            let written = if repeated {
                None
            } else {
                numbers.next(&values, &keys)
            };
            if !on.is_empty() && !repeated {
                kept = Some(values);
            }
            if !repeated && window.admit() {
                match written {
                    Some(Ok(n)) => {
                        let all: Vec<(usize, Bytes)> = sums.iter().cloned().chain(n).collect();
                        send(exec, &row, merge, &all);
                    }
                    Some(Err(e)) => {
                        late_error.get_or_insert_with(|| error_frame(&e));
                        break;
                    }
                    None => send(exec, &row, merge, &sums),
                }
                exec.maybe_flush().await?;
            }
            heads[best] = head(exec, shards[best], &keys, &mut late_error).await?;
        }
        // Rows still buffered in heads are past the limit: drop them with the rest.
        for (i, h) in heads.iter().enumerate() {
            if h.is_some() {
                while next_row(exec, shards[i], &mut late_error).await?.is_some() {}
            }
        }
    }
    drain(exec, shards).await?;
    metrics::counter!(crate::metrics::MERGE_ROWS).increment(window.sent);
    if let Some(err) = late_error {
        exec.shard_error(&err);
        return Ok(Step::Failed);
    }
    build::command_complete(&format!("SELECT {}", window.sent), &mut exec.out);
    Ok(Step::Done)
}

/// Passes one merged row on to the client: totals written in, hidden columns removed.
fn send(exec: &mut Exec<'_>, row: &Frame, merge: &MergeSpec, sums: &[(usize, Bytes)]) {
    let stripped = if sums.is_empty() {
        strip_columns(row, merge.hidden)
    } else {
        strip_columns(&totals::written(row, sums), merge.hidden)
    };
    exec.out.extend_from_slice(&stripped);
}

async fn resolve_keys(
    exec: &Exec<'_>,
    shards: &[usize],
    description: &Frame,
    merge: &MergeSpec,
) -> Result<Vec<Key>, PgError> {
    let fields = inspect::row_description(description.body()).ok_or_else(|| {
        PgError::error(
            sqlstate::PROTOCOL_VIOLATION,
            "malformed RowDescription from a shard",
        )
    })?;
    let mut keys = Vec::with_capacity(merge.order.len());
    for k in &merge.order {
        let column = key_column(&fields, k)?;
        let f = &fields[column];
        let labels = match value::supported(f.type_oid) {
            Ok(()) => None,
            Err(why) => match enums::order_of(exec, shards, f.type_oid).await? {
                Some(order) => Some(order),
                None => {
                    return Err(PgError::error(sqlstate::FEATURE_NOT_SUPPORTED, why)
                        .with_hint("Add a shard-key condition so the query runs on one shard."))
                }
            },
        };
        let text = value::is_text(f.type_oid) || value::is_text_array(f.type_oid);
        if text && !exec.text_order_c && !k.bytewise {
            return Err(non_c_order(&f.name));
        }
        // jsonb strings sort by the database's collation, which no COLLATE clause changes.
        if f.type_oid == value::oid::JSONB && !exec.text_order_c {
            return Err(non_c_order(&f.name));
        }
        keys.push(Key {
            column,
            type_oid: f.type_oid,
            format: f.format,
            labels,
            descending: k.descending,
            nulls_first: k.nulls_first,
        });
    }
    Ok(keys)
}

/// A merge's sort keys resolved against the shards' columns, for rows read apart from a
/// scatter (a cursor over several shards, read FETCH by FETCH).
#[derive(Clone)]
pub struct Sorting(Vec<Key>);

impl Sorting {
    /// The keys of `merge` over `description`, refused where the merge cannot order them as
    /// PostgreSQL does: a type it cannot decode, text under a collation bytes do not order.
    pub async fn resolve(
        exec: &Exec<'_>,
        shards: &[usize],
        description: &Frame,
        merge: &MergeSpec,
    ) -> Result<Sorting, PgError> {
        let keys = resolve_keys(exec, shards, description, merge).await?;
        let fields = inspect::row_description(description.body()).unwrap_or_default();
        let sorted: Vec<(usize, collation::Use)> = keys
            .iter()
            .zip(&merge.order)
            .filter(|(_, o)| !o.bytewise)
            .map(|(k, _)| (k.column, collation::Use::Order))
            .collect();
        match collation::problem(exec, &fields, &sorted, &merge.text).await {
            Some(e) => Err(e),
            None => Ok(Sorting(keys)),
        }
    }

    /// The same keys over rows in `formats` (a Bind's result formats: none for text, one for
    /// every column, or one per column).
    pub fn in_formats(&self, formats: &[i16]) -> Sorting {
        let mut keys = self.0.clone();
        for k in &mut keys {
            k.format = match formats {
                [] => 0,
                [one] => *one,
                many => many.get(k.column).copied().unwrap_or(0),
            };
        }
        Sorting(keys)
    }

    /// A row's sort values.
    pub fn values(&self, row: &Frame) -> Result<Vec<SortValue>, PgError> {
        self.0
            .iter()
            .map(|k| {
                let raw = inspect::data_row_column(row.body(), k.column)
                    .ok_or_else(|| "malformed DataRow".to_string())?;
                match &k.labels {
                    Some(labels) => labels.value(raw),
                    None => value::decode(k.type_oid, k.format, raw),
                }
            })
            .collect::<Result<_, String>>()
            .map_err(|m| PgError::error(sqlstate::FEATURE_NOT_SUPPORTED, m))
    }

    /// Whether `a` sorts after `b`.
    pub fn after(&self, a: &[SortValue], b: &[SortValue]) -> bool {
        order(a, b, &self.0) == Ordering::Greater
    }
}

/// The column a sort key names in `fields`.
fn key_column(fields: &[FieldDesc], k: &SortKey) -> Result<usize, PgError> {
    match &k.column {
        SortColumn::Position(p) if (1..=fields.len()).contains(p) => Ok(*p - 1),
        SortColumn::Position(p) => Err(PgError::error(
            "42P10",
            format!("ORDER BY position {p} is not in select list"),
        )),
        SortColumn::Name(n) => {
            let mut found = fields
                .iter()
                .enumerate()
                .filter(|(_, f)| &f.name == n)
                .map(|(i, _)| i);
            match (found.next(), found.next()) {
                (Some(one), None) => Ok(one),
                _ => Err(PgError::error(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    format!("ORDER BY {n} over several shards needs {n} once in the select list"),
                )
                .with_hint("Select the sort column (once) so the merge can sort on it.")),
            }
        }
    }
}

async fn head(
    exec: &mut Exec<'_>,
    shard: usize,
    keys: &[Key],
    late: &mut Option<Frame>,
) -> R<Option<(Frame, Vec<SortValue>)>> {
    let Some(row) = next_row(exec, shard, late).await? else {
        return Ok(None);
    };
    let mut values = Vec::with_capacity(keys.len());
    for k in keys {
        let raw = inspect::data_row_column(row.body(), k.column)
            .ok_or(())
            .map_err(|_| ());
        let decoded = match raw {
            Ok(raw) => match &k.labels {
                Some(labels) => labels.value(raw),
                None => value::decode(k.type_oid, k.format, raw),
            },
            Err(()) => Err("malformed DataRow".into()),
        };
        match decoded {
            Ok(v) => values.push(v),
            Err(msg) => {
                late.get_or_insert(error_frame(&PgError::error(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    msg,
                )));
                return Ok(None);
            }
        }
    }
    Ok(Some((row, values)))
}

fn order(a: &[SortValue], b: &[SortValue], keys: &[Key]) -> Ordering {
    for (k, (x, y)) in keys.iter().zip(a.iter().zip(b)) {
        let o = value::compare_key(x, y, k.descending, k.nulls_first);
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// The shard whose head row comes first (ties: lowest shard, which keeps the merge stable).
fn pick(heads: &[Option<(Frame, Vec<SortValue>)>], keys: &[Key]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, h) in heads.iter().enumerate() {
        let Some((_, v)) = h else { continue };
        best = match best {
            Some(b) if order(v, &heads[b].as_ref().expect("present").1, keys) != Ordering::Less => {
                Some(b)
            }
            _ => Some(i),
        };
    }
    best
}
