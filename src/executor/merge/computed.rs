//! Items computed over merged aggregates (see `router::computed`): once every group is merged,
//! one shard evaluates each item's template for every group, reading the group's merged parts
//! as the columns of a VALUES list. The parts are bound as parameters in the types and formats
//! they came in, and the results asked for in the formats the client's columns have, so no
//! value is converted in the proxy and PostgreSQL does all of the arithmetic.
//!
//! A template reading the client's bound parameters gets them as `$1 ...` again, with the
//! client's values, formats and declared types (the parts follow them), so the server reads
//! them as it read the client's statement. Groups go in batches that keep a statement's
//! parameters under PostgreSQL's limit of 65,535.
//! Invariant: each evaluated row lands in the group it was computed for (the VALUES rows carry
//! their position, and the answer is ordered by it).

use super::rows::error_frame;
use crate::error::{sqlstate, PgError};
use crate::executor::session::{Exec, R};
use crate::executor::value;
use crate::protocol::inspect::{self, FieldDesc};
use crate::protocol::Frame;
use crate::router::aggregate::{AggColumn, AggSpec};
use crate::router::computed::part_name;
use crate::router::params::Params;
use bytes::Bytes;

type Row = Vec<Option<Bytes>>;

/// The most parameters one Bind can carry.
const MAX_PARAMS: usize = u16::MAX as usize;

/// Parameters in one evaluation, well under that.
const PARAMS_PER_STATEMENT: usize = 30_000;

/// Fills the computed columns of `rows` (the merged groups, in `fields`' types and formats)
/// that `pick` chooses, evaluated on `shard`. Err: the error to give the client.
pub async fn fill(
    exec: &mut Exec<'_>,
    shard: usize,
    rows: &mut [Row],
    fields: &[FieldDesc],
    spec: &AggSpec,
    pick: &(dyn Fn(usize) -> bool + Sync),
) -> R<Result<(), Frame>> {
    let computed: Vec<(usize, &str)> = spec
        .columns
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match c {
            AggColumn::Computed { template, .. } if pick(i) => Some((i, template.as_str())),
            _ => None,
        })
        .collect();
    if computed.is_empty() || rows.is_empty() {
        return Ok(Ok(()));
    }
    let client_params = read_by_templates(spec, pick, |params, _| params);
    let client = match client_params.last() {
        None => None,
        Some(&highest) => match &exec.bound {
            Some((params, types)) if highest <= params.values.len() => {
                Some(again(params, types, &client_params))
            }
            // Numbered otherwise, a template would read a part in place of a value.
            _ => {
                return Ok(Err(error_frame(&PgError::error(
                    sqlstate::INTERNAL_ERROR,
                    "the bound values an item computed after the merge reads are not at hand",
                ))))
            }
        },
    };
    let inputs = read_by_templates(spec, pick, |_, parts| parts);
    // A part of a type the database made (an enum's min or max) is bound with the evaluating
    // shard's OID for it (see `evaluate`).
    if inputs.iter().any(|&p| p >= fields.len()) {
        return Ok(Err(error_frame(&PgError::error(
            sqlstate::INTERNAL_ERROR,
            "a computed item reads a column the shards did not return",
        ))));
    }
    let ahead = client.as_ref().map_or(0, |(p, _)| p.values.len());
    // A Bind counts its parameters in 16 bits: the client's and one group's parts must fit.
    if ahead + inputs.len() > MAX_PARAMS {
        return Ok(Err(error_frame(
            &PgError::error(
                sqlstate::PROGRAM_LIMIT_EXCEEDED,
                "an item computed after merging several shards reads more bound values than one statement can carry",
            )
            .with_hint("Bind fewer values, or select the aggregates and compute in the application."),
        )));
    }
    let per_batch = (PARAMS_PER_STATEMENT.saturating_sub(ahead) / inputs.len().max(1)).max(1);
    let mut start = 0;
    while start < rows.len() {
        let end = (start + per_batch).min(rows.len());
        let batch = &mut rows[start..end];
        let statement = Statement {
            computed: &computed,
            inputs: &inputs,
            client: client.as_ref(),
        };
        if let Err(e) = evaluate(exec, shard, batch, fields, &statement).await? {
            return Ok(Err(e));
        }
        start = end;
    }
    Ok(Ok(()))
}

/// What the templates of the columns `pick` chooses read, in order, once each: `read`
/// chooses, of a computed column's parameters and part columns, which.
fn read_by_templates(
    spec: &AggSpec,
    pick: &(dyn Fn(usize) -> bool + Sync),
    read: impl for<'a> Fn(&'a [usize], &'a [usize]) -> &'a [usize],
) -> Vec<usize> {
    let mut out: Vec<usize> = spec
        .columns
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match c {
            AggColumn::Computed { params, parts, .. } if pick(i) => {
                Some(read(params, parts).iter().copied())
            }
            _ => None,
        })
        .flatten()
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The client's parameters bound again: those the templates read as the client bound them,
/// the others NULL of their declared type, or of text (an undeclared parameter nothing reads
/// has no type to infer).
fn again(params: &Params, declared: &[u32], read: &[usize]) -> (Params, Vec<u32>) {
    let format_of = |i: usize| match params.formats.len() {
        0 => 0,
        1 => params.formats[0],
        _ => params.formats.get(i).copied().unwrap_or(0),
    };
    let mut out = Params::default();
    let mut types = Vec::with_capacity(params.values.len());
    for (i, value) in params.values.iter().enumerate() {
        let declared = declared.get(i).copied().unwrap_or(0);
        if read.binary_search(&(i + 1)).is_ok() {
            out.values.push(value.clone());
            out.formats.push(format_of(i));
            types.push(declared);
        } else {
            out.values.push(None);
            out.formats.push(0);
            types.push(if declared == 0 { TEXT } else { declared });
        }
    }
    (out, types)
}

const TEXT: u32 = 25;

/// What an evaluation reads: the computed columns with their templates, the part columns,
/// and the client's parameters bound again with their types.
struct Statement<'a> {
    computed: &'a [(usize, &'a str)],
    inputs: &'a [usize],
    client: Option<&'a (Params, Vec<u32>)>,
}

/// One batch: `SELECT <templates> FROM (VALUES (1, $k, ...), ...) AS v(n, parts...) ORDER BY
/// n`, the parts numbered after the client's parameters.
async fn evaluate(
    exec: &mut Exec<'_>,
    shard: usize,
    rows: &mut [Row],
    fields: &[FieldDesc],
    statement: &Statement<'_>,
) -> R<Result<(), Frame>> {
    let (computed, inputs) = (statement.computed, statement.inputs);
    let collations = match column_collations(exec, inputs, fields).await {
        Ok(c) => c,
        Err(e) => return Ok(Err(error_frame(&e))),
    };
    let mut values_list = String::new();
    let (mut params, mut types) = statement.client.cloned().unwrap_or_default();
    for (n, row) in rows.iter().enumerate() {
        values_list.push_str(if n == 0 { "(" } else { ", (" });
        values_list.push_str(&(n + 1).to_string());
        for (&p, collation) in inputs.iter().zip(&collations) {
            params.values.push(row.get(p).cloned().flatten());
            params.formats.push(fields[p].format);
            types.push(fields[p].type_oid);
            values_list.push_str(&format!(", ${}", params.values.len()));
            if let Some(clause) = collation {
                values_list.push_str(&format!(" COLLATE {clause}"));
            }
        }
        values_list.push(')');
    }
    let names: Vec<String> = std::iter::once("__shardgate_n".to_string())
        .chain(inputs.iter().map(|&p| part_name(p)))
        .collect();
    let templates: Vec<&str> = computed.iter().map(|(_, t)| *t).collect();
    let sql = format!(
        "SELECT {} FROM (VALUES {values_list}) AS __shardgate_v({}) ORDER BY __shardgate_n",
        templates.join(", "),
        names.join(", ")
    );
    let formats: Vec<i16> = computed.iter().map(|&(c, _)| fields[c].format).collect();
    // The fields are numbered as the first shard numbers types (an enum's min or max).
    let types = match exec.types_for(shard, &types).await {
        Ok(t) => t,
        Err(e) => return Ok(Err(error_frame(&e))),
    };
    let expected: Vec<u32> = computed.iter().map(|&(c, _)| fields[c].type_oid).collect();
    let expected = match exec.types_for(shard, &expected).await {
        Ok(t) => t,
        Err(e) => return Ok(Err(error_frame(&e))),
    };
    let request = crate::executor::rebind::rebind(&sql, &params, &types, &formats, true, true);
    exec.links[shard].send(&request).await?;
    let (mut at, mut error) = (0usize, None);
    loop {
        let f = exec.links[shard].recv().await?;
        match f.tag {
            b'T' if error.is_none() => {
                let described = inspect::row_description(f.body()).unwrap_or_default();
                let same = described.len() == computed.len()
                    && described
                        .iter()
                        .zip(&expected)
                        .all(|(d, &want)| d.type_oid == want);
                if !same {
                    error = Some(error_frame(&other_type(computed)));
                }
            }
            b'D' if error.is_none() => {
                let body = f.body();
                let Some(row) = rows.get_mut(at) else {
                    error = Some(error_frame(&extra_row()));
                    continue;
                };
                for (j, &(c, _)) in computed.iter().enumerate() {
                    match inspect::data_row_column(body, j) {
                        Some(v) => row[c] = v.map(Bytes::copy_from_slice),
                        None => error = Some(error_frame(&extra_row())),
                    }
                }
                at += 1;
            }
            // Its position would point into the proxy's statement, not the client's.
            b'E' if error.is_none() => {
                error = Some(Frame {
                    tag: b'E',
                    bytes: inspect::map_error_position(&f.bytes, |_| None),
                })
            }
            b'N' => exec.out.extend_from_slice(&f.bytes),
            b'Z' => break,
            _ => {}
        }
    }
    if error.is_none() && at != rows.len() {
        error = Some(error_frame(&extra_row()));
    }
    Ok(error.map_or(Ok(()), Err))
}

/// For each part, the collation its table column has other than its type's (a COLLATE
/// clause), which the evaluation gives the part so that the template compares it as the
/// column's own values compare (see `merge::collation`). Text computed from columns has none
/// here: the merge refused it unless it is under the database's default.
async fn column_collations(
    exec: &Exec<'_>,
    inputs: &[usize],
    fields: &[FieldDesc],
) -> Result<Vec<Option<String>>, PgError> {
    let mut out = Vec::with_capacity(inputs.len());
    for &p in inputs {
        let f = &fields[p];
        let text = value::is_text(f.type_oid) || value::is_text_array(f.type_oid);
        let clause = match exec.catalog {
            Some(catalog) if text && f.table_oid != 0 && f.column > 0 => {
                super::collation::column_clause(catalog, (f.table_oid, f.column), &f.name).await?
            }
            _ => None,
        };
        out.push(clause);
    }
    Ok(out)
}

/// The refusal of a computed item whose value came out of another type than the item's own.
/// The one case known to come here is a variance or standard deviation of floats, which the
/// merged sums would give as numeric (see `router::variance`).
fn other_type(computed: &[(usize, &str)]) -> PgError {
    let error = PgError::error(
        sqlstate::FEATURE_NOT_SUPPORTED,
        "an item computed after merging several shards came out of another type than the shards described",
    );
    let variance = format!("shardgate.{}(", crate::router::variance::FUNCTION);
    if computed.iter().any(|(_, t)| t.contains(&variance)) {
        error.with_hint(
            "Variance and standard deviation combine across shards over integer and numeric values, not over real or double precision ones: cast the argument to numeric, or add a shard-key condition so the query runs on one shard.",
        )
    } else {
        error
    }
}

fn extra_row() -> PgError {
    PgError::error(
        sqlstate::PROTOCOL_VIOLATION,
        "a shard answered the evaluation of computed items with another number of rows",
    )
}
