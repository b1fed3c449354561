//! The aggregate branch of a scatter: collect every shard's partial groups, combine, filter,
//! sort and send (see `aggregate` for the combination rules).

use super::aggregate::{self, Groups};
use super::group_output;
use super::having;
use super::rows::{drain, error_frame, next_row, Window};
use crate::error::{sqlstate, PgError};
use crate::executor::session::{Exec, Step, R};
use crate::protocol::{build, inspect, Frame};
use crate::router::plan::{MergeSpec, SortColumn, SortKey};

/// Why the grouped merge cannot combine these columns as PostgreSQL would, if it cannot. Enum
/// columns sorted by their declared order are not text to sort, though grouped as text.
async fn checked(
    exec: &Exec<'_>,
    grouped: &super::enums::Grouped,
    spec: &crate::router::aggregate::AggSpec,
    merge: &MergeSpec,
) -> Option<Frame> {
    let by_text: Vec<SortKey> = merge
        .order
        .iter()
        .filter(|k| match k.column {
            SortColumn::Position(p) => !grouped.orders.contains_key(&(p - 1)),
            SortColumn::Name(_) => true,
        })
        .cloned()
        .collect();
    let f = &grouped.fields;
    if let Err(e) = aggregate::check(f, spec, &by_text, exec.text_order_c, &grouped.orders) {
        return Some(error_frame(&e));
    }
    let compared = super::collation::grouped(spec, &by_text);
    super::collation::problem(exec, f, &compared, &merge.text)
        .await
        .map(|e| error_frame(&e))
}

pub async fn run(
    exec: &mut Exec<'_>,
    shards: &[usize],
    description: Option<Frame>,
    failure: Option<Frame>,
    merge: &MergeSpec,
    describe: bool,
) -> R<Step> {
    let spec = merge.aggregate.as_ref().expect("aggregate merge");
    let mut fields = description
        .as_ref()
        .and_then(|d| inspect::row_description(d.body()));
    let mut failure = failure;
    // Names in ORDER BY become positions once the shards described the columns.
    let mut resolved = None;
    let mut enum_orders = Default::default();
    if failure.is_none() {
        match fields.take() {
            None => {
                failure = Some(error_frame(&PgError::error(
                    sqlstate::PROTOCOL_VIOLATION,
                    "no RowDescription from a shard",
                )))
            }
            Some(f) => match group_output::positioned(&merge.order, &f) {
                Err(e) => failure = Some(error_frame(&e)),
                Ok(order) => {
                    resolved = order.map(|order| MergeSpec {
                        order,
                        ..merge.clone()
                    });
                    let merge = resolved.as_ref().unwrap_or(merge);
                    match super::enums::grouped(exec, shards, f, spec, &merge.order).await {
                        Err(e) => failure = Some(error_frame(&e)),
                        Ok(grouped) => {
                            failure = checked(exec, &grouped, spec, merge).await;
                            enum_orders = grouped.orders;
                            fields = Some(grouped.fields);
                        }
                    }
                }
            },
        }
    }
    let merge = resolved.as_ref().unwrap_or(merge);
    if let Some(err) = failure {
        drain(exec, shards).await?;
        exec.shard_error(&err);
        return Ok(Step::Failed);
    }
    let (fields, description) = (fields.expect("checked"), description.expect("checked"));
    let mut groups = Groups::default();
    groups.enums = enum_orders.clone();
    let mut late: Option<Frame> = None;
    for &s in shards {
        while let Some(row) = next_row(exec, s, &mut late).await? {
            if late.is_none() {
                if let Err(e) = groups.add(&fields, spec, &row) {
                    late = Some(error_frame(&e));
                }
            }
        }
    }
    drain(exec, shards).await?;
    if let Some(err) = late {
        exec.shard_error(&err);
        return Ok(Step::Failed);
    }
    if aggregate::reads_text_floats(&fields, spec) {
        if let Some(refusal) = rounded_floats(exec, shards[0]).await? {
            return Ok(exec.error(&refusal));
        }
    }
    let client_fields = group_output::client_fields(&fields, spec);
    let mut rows = match groups.finish(&fields, spec) {
        Ok(r) => r,
        Err(e) => return Ok(exec.error(&e)),
    };
    // HAVING first, as PostgreSQL keeps groups before it computes their select items (an
    // item may divide by a sum that HAVING keeps away from zero).
    if let Some(h) = spec.having {
        if let Err(e) = having::check(&client_fields, h) {
            return Ok(exec.error(&e));
        }
        let only_having = |c: usize| c == h;
        let filled = super::computed::fill(
            exec,
            shards[0],
            &mut rows,
            &client_fields,
            spec,
            &only_having,
        );
        if let Err(e) = filled.await? {
            exec.shard_error(&e);
            return Ok(Step::Failed);
        }
        rows = having::keep(rows, h);
    }
    // Before ORDER BY, which may read the computed items.
    let rest = |c: usize| Some(c) != spec.having;
    if let Err(e) =
        super::computed::fill(exec, shards[0], &mut rows, &client_fields, spec, &rest).await?
    {
        exec.shard_error(&e);
        return Ok(Step::Failed);
    }
    let rows = group_output::sort(&mut rows, &client_fields, merge, &enum_orders).map(|()| rows);
    // Groups counted after HAVING: the count of those it kept.
    let rows = match rows {
        Ok(kept) if spec.count_groups && spec.having.is_some() => {
            super::encode::count_row(kept.len(), &fields).map(|row| vec![row])
        }
        other => other,
    };
    let rows = match rows {
        Ok(r) => r,
        Err(e) => return Ok(exec.error(&e)),
    };
    if describe {
        exec.out
            .extend_from_slice(&group_output::client_description(&description, merge));
    }
    let visible = fields.len() - merge.hidden;
    let mut window = Window {
        skip: merge.offset,
        left: merge.limit,
        sent: 0,
    };
    for row in rows {
        if window.admit() {
            exec.out
                .extend_from_slice(&group_output::data_row(&row[..visible]));
            exec.maybe_flush().await?;
        }
    }
    metrics::counter!(crate::metrics::MERGE_ROWS).increment(window.sent);
    build::command_complete(&format!("SELECT {}", window.sent), &mut exec.out);
    Ok(Step::Done)
}

/// The refusal of float sums over several shards when the session writes floats rounded
/// (`extra_float_digits` below 1), asked of a shard, which holds the session's settings.
async fn rounded_floats(exec: &mut Exec<'_>, shard: usize) -> R<Option<PgError>> {
    let (values, error) = exec.query_values(shard, "SHOW extra_float_digits").await?;
    let digits = values.first().and_then(|v| v.trim().parse::<i32>().ok());
    if error.is_none() && digits.is_some_and(|d| d >= 1) {
        return Ok(None);
    }
    Ok(Some(
        PgError::error(
            sqlstate::FEATURE_NOT_SUPPORTED,
            "sums, averages and conditions or items computed from float columns over several \
             shards need extra_float_digits of 1 or more: the shards would write their partial \
             results rounded",
        )
        .with_hint("SET extra_float_digits = 1 (the default), or ask for binary results."),
    ))
}
