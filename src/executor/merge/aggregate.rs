//! Combining partial aggregates from several shards, group by group.
//!
//! Every shard returns one row per group with its partial count/sum/min/max (avg arrives as sum
//! plus a hidden count). Rows are keyed by the group columns' bytes, which identify a value within
//! one column type and format. Memory is proportional to the number of groups, not rows, at
//! most `GROUP_BYTES` (a DISTINCT or UNION makes a group of every distinct row), and for
//! count(DISTINCT x) its distinct values are held per group, at most `DISTINCT_BYTES` in all;
//! beyond either the query fails with 54000 rather than grow without bound. The combined
//! groups go on through `group_output`.

use super::encode::{
    count_row, encode_float8, encode_int, encode_interval, encode_numeric, interval_out_of_range,
    read_int,
};
use super::enums::Enums;
use super::group_keys::{distinct_key, group_key, groupable, ONE_SPELLING};
use super::numeric_sum::NumSum;
use crate::error::{sqlstate, PgError};
use crate::executor::numeric::{float4_text, Num};
use crate::executor::value::interval::Interval;
use crate::executor::value::{self, oid, SortValue};
use crate::protocol::inspect::{self, FieldDesc};
use crate::protocol::Frame;
use crate::router::aggregate::{AggColumn, AggSpec};
use crate::router::plan::SortColumn;
use bytes::Bytes;
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

/// How much memory one query's count(DISTINCT) values may take in the proxy.
pub const DISTINCT_BYTES: usize = 64 << 20;
/// What one held distinct value costs beyond its bytes (the set's entry and allocation).
const DISTINCT_OVERHEAD: usize = 48;

pub(super) use super::encode::Row;
pub(super) use super::rows::unsupported;

/// Partial state of one column within one group.
enum State {
    Group(Option<Bytes>),
    Count(i64),
    SumInt(Option<i128>),
    SumNum(Option<NumSum>),
    SumFloat(Option<f64>),
    /// A sum of intervals, each part apart, as PostgreSQL's `+` adds them.
    SumInterval(Option<Interval>),
    Best(Option<(SortValue, Bytes)>),
    /// bit_or, bit_and or bit_xor of integers so far.
    Bits(Option<i64>),
    /// The distinct values of a count(DISTINCT x), in `distinct_key` form; None for a NULL
    /// where it counts.
    Distinct(HashSet<Option<Vec<u8>>>),
    /// Filled from a `Distinct` column when the group is finished.
    CountDistinct,
    /// The partials of a concatenating aggregate so far (see `joined`), NULLs left out.
    Joined(Vec<Bytes>),
}

/// Checks that every column can be combined in its type and format.
/// `text_order_c`: the shards order text by code point (see `merge::non_c_order`), which
/// min/max and sort keys over text rely on.
/// `enums`: the min/max columns over an enum, combined by its declared order.
pub fn check(
    fields: &[FieldDesc],
    spec: &AggSpec,
    order: &[crate::router::plan::SortKey],
    text_order_c: bool,
    enums: &Enums,
) -> Result<(), PgError> {
    if !text_order_c {
        for k in order.iter().filter(|k| !k.bytewise) {
            if let SortColumn::Position(p) = k.column {
                if let Some(f) = fields.get(p - 1).filter(|f| value::is_text(f.type_oid)) {
                    return Err(super::rows::non_c_order(&f.name));
                }
            }
        }
        for (f, col) in fields.iter().zip(&spec.columns) {
            if matches!(col, AggColumn::Min | AggColumn::Max) && value::is_text(f.type_oid) {
                return Err(unsupported(format!(
                    "{} of text column {} across shards under a collation other than C",
                    col.called(),
                    f.name
                ))
                .with_hint("Combining text minimums and maximums compares by code point, as the C collation does; use a C-collated database."));
            }
        }
    }
    // Before any row: with none, the merge would answer where PostgreSQL refuses to sort
    // (json has no ordering).
    for k in order {
        if let Some(f) = match k.column {
            SortColumn::Position(p) => p.checked_sub(1).and_then(|i| fields.get(i)),
            SortColumn::Name(_) => None,
        } {
            value::supported(f.type_oid).map_err(unsupported)?;
        }
    }
    for (i, (f, col)) in fields.iter().zip(&spec.columns).enumerate() {
        let ok = match col {
            AggColumn::Group => groupable(f.type_oid),
            // Carried as the shards wrote it, never compared; or computed after the merge.
            AggColumn::Carried | AggColumn::Computed { .. } => true,
            AggColumn::Count | AggColumn::AvgCount => f.type_oid == oid::INT8,
            // An avg of intervals has one too (`x * 1::float8` is an interval), never read.
            AggColumn::AvgFloatSum => matches!(f.type_oid, oid::FLOAT8 | oid::INTERVAL),
            AggColumn::Sum | AggColumn::Avg { .. } => matches!(
                f.type_oid,
                oid::INT8 | oid::NUMERIC | oid::FLOAT4 | oid::FLOAT8 | oid::INTERVAL
            ),
            AggColumn::Min | AggColumn::Max => {
                enums.contains_key(&i) || value::supported(f.type_oid).is_ok()
            }
            AggColumn::DistinctValue { .. } => {
                ONE_SPELLING.contains(&f.type_oid) || value::supported(f.type_oid).is_ok()
            }
            AggColumn::CountDistinct { .. } => f.type_oid == oid::INT8,
            AggColumn::Joined(how) => super::joined::fits(how, f),
            // bit_or over bit strings fails on strings of different lengths, which the
            // merge would have to fail alike: only integers.
            AggColumn::BitOr | AggColumn::BitAnd | AggColumn::BitXor => {
                matches!(f.type_oid, oid::INT2 | oid::INT4 | oid::INT8)
            }
        };
        if !ok && *col == AggColumn::Group {
            return Err(unsupported(format!(
                "grouping the rows of several shards by {} is not supported: \
                 values PostgreSQL calls equal can be written differently, and each way would \
                 make a group of its own",
                super::rows::column_and_type(f)
            ))
            .with_hint("Add a shard-key condition so the query runs on one shard."));
        }
        if !ok {
            return Err(unsupported(format!(
                "combining {} of {} across shards is not supported",
                col.called(),
                super::rows::column_and_type(f)
            )));
        }
    }
    if fields.len() != spec.columns.len() {
        return Err(PgError::error(
            sqlstate::INTERNAL_ERROR,
            "shards returned an unexpected number of columns",
        ));
    }
    Ok(())
}

/// Whether the merge computes with floats the shards wrote as text: adds them up, or binds
/// them into an item computed after the merge (HAVING's condition among them). Their digits
/// are as many as the session's `extra_float_digits` lets them write: exact at 1 or more (the
/// default), rounded below. Partial sums added after rounding are not the sum PostgreSQL would
/// round, and a rounded maximum compared with a constant is not the maximum.
pub fn reads_text_floats(fields: &[FieldDesc], spec: &AggSpec) -> bool {
    let evaluated = |i: usize| {
        spec.columns.iter().any(|c| match c {
            AggColumn::Computed { parts, .. } => parts.contains(&i),
            _ => false,
        })
    };
    fields
        .iter()
        .zip(&spec.columns)
        .enumerate()
        .any(|(i, (f, c))| {
            f.format == 0
                && matches!(f.type_oid, oid::FLOAT4 | oid::FLOAT8)
                && (matches!(
                    c,
                    AggColumn::Sum | AggColumn::Avg { .. } | AggColumn::AvgFloatSum
                ) || evaluated(i))
        })
}

/// How much memory one query's merged groups may take in the proxy, counted as twice the bytes
/// of each group's first row (its key and its states hold copies) plus their bookkeeping.
pub const GROUP_BYTES: usize = 256 << 20;

/// Groups in first-seen order with their states.
pub struct Groups {
    index: HashMap<Vec<Option<Bytes>>, usize>,
    states: Vec<Vec<State>>,
    /// Memory held by count(DISTINCT) values, checked against `DISTINCT_BYTES`.
    distinct_bytes: usize,
    /// Memory held by the groups, checked against `group_budget`.
    group_bytes: usize,
    group_budget: usize,
    /// Enum columns' declared orders, which their min and max follow.
    pub enums: Enums,
}

impl Default for Groups {
    fn default() -> Groups {
        Groups {
            index: HashMap::new(),
            states: Vec::new(),
            distinct_bytes: 0,
            group_bytes: 0,
            group_budget: GROUP_BYTES,
            enums: HashMap::new(),
        }
    }
}

/// A group before any row: counts 0, everything else NULL.
fn fresh(fields: &[FieldDesc], spec: &AggSpec) -> Vec<State> {
    spec.columns
        .iter()
        .zip(fields)
        .map(|(c, f)| match c {
            AggColumn::Group | AggColumn::Carried | AggColumn::Computed { .. } => {
                State::Group(None)
            }
            AggColumn::Count | AggColumn::AvgCount => State::Count(0),
            AggColumn::AvgFloatSum if f.type_oid == oid::INTERVAL => State::Group(None),
            AggColumn::AvgFloatSum => State::SumFloat(None),
            AggColumn::Sum | AggColumn::Avg { .. } => match f.type_oid {
                oid::INT8 => State::SumInt(None),
                oid::NUMERIC => State::SumNum(None),
                oid::INTERVAL => State::SumInterval(None),
                _ => State::SumFloat(None),
            },
            AggColumn::Min | AggColumn::Max => State::Best(None),
            AggColumn::BitOr | AggColumn::BitAnd | AggColumn::BitXor => State::Bits(None),
            AggColumn::DistinctValue { .. } => State::Distinct(HashSet::new()),
            AggColumn::CountDistinct { .. } => State::CountDistinct,
            AggColumn::Joined(_) => State::Joined(Vec::new()),
        })
        .collect()
}

impl Groups {
    /// Folds one shard row into its group.
    pub fn add(
        &mut self,
        fields: &[FieldDesc],
        spec: &AggSpec,
        row: &Frame,
    ) -> Result<(), PgError> {
        let body = row.body();
        let column = |i: usize| -> Result<Option<Bytes>, PgError> {
            inspect::data_row_column(body, i)
                .map(|c| c.map(Bytes::copy_from_slice))
                .ok_or_else(|| {
                    PgError::error(
                        sqlstate::PROTOCOL_VIOLATION,
                        "malformed DataRow from a shard",
                    )
                })
        };
        let mut key = Vec::new();
        for (i, (c, f)) in spec.columns.iter().zip(fields).enumerate() {
            if *c == AggColumn::Group {
                key.push(match column(i)? {
                    Some(raw) => Some(group_key(f, raw)?),
                    None => None,
                });
            }
        }
        let slot = match self.index.get(&key) {
            Some(&s) => s,
            None => {
                self.group_bytes += 2 * body.len()
                    + GROUP_OVERHEAD
                    + spec.columns.len() * std::mem::size_of::<State>();
                if self.group_bytes > self.group_budget {
                    return Err(too_many_groups(self.group_budget));
                }
                self.states.push(fresh(fields, spec));
                self.index.insert(key, self.states.len() - 1);
                self.states.len() - 1
            }
        };
        for (i, (c, f)) in spec.columns.iter().zip(fields).enumerate() {
            let raw = column(i)?;
            let state = &mut self.states[slot][i];
            if let State::Distinct(seen) = &mut *state {
                let key = match (raw.as_deref(), c) {
                    (Some(raw), _) => Some(distinct_key(f, raw)?),
                    (None, AggColumn::DistinctValue { with_null: true }) => None,
                    (None, _) => continue,
                };
                let cost = key.as_ref().map_or(0, Vec::len) + DISTINCT_OVERHEAD;
                if seen.insert(key) {
                    self.distinct_bytes += cost;
                    if self.distinct_bytes > DISTINCT_BYTES {
                        return Err(too_many_distinct());
                    }
                }
                continue;
            }
            if let (State::Joined(_), Some(raw)) = (&*state, &raw) {
                // The joined strings grow with the rows, not with the groups.
                self.group_bytes += raw.len();
                if self.group_bytes > self.group_budget {
                    return Err(too_many_groups(self.group_budget));
                }
            }
            combine(state, c, f, raw, self.enums.get(&i).map(|e| &**e))?;
        }
        Ok(())
    }

    /// Final rows, one per group, in the client's formats.
    /// Groups counted under HAVING are finished one row each, and counted once HAVING has
    /// filtered them (`count_row`).
    pub fn finish(mut self, fields: &[FieldDesc], spec: &AggSpec) -> Result<Vec<Row>, PgError> {
        if spec.count_groups && spec.having.is_none() {
            return Ok(vec![count_row(self.states.len(), fields)?]);
        }
        if self.states.is_empty() && spec.single_group {
            self.states.push(fresh(fields, spec));
        }
        let mut rows = Vec::with_capacity(self.states.len());
        for states in self.states {
            let distinct: Vec<i64> = states
                .iter()
                .map(|s| match s {
                    State::Distinct(seen) => seen.len() as i64,
                    _ => 0,
                })
                .collect();
            let counts: Vec<Option<i64>> = states
                .iter()
                .map(|s| {
                    if let State::Count(n) = s {
                        Some(*n)
                    } else {
                        None
                    }
                })
                .collect();
            // The double-precision sums beside each avg, looked up by column.
            let float_sums: Vec<Option<f64>> = states
                .iter()
                .map(|s| match s {
                    State::SumFloat(v) => *v,
                    _ => None,
                })
                .collect();
            let mut row = Vec::with_capacity(states.len());
            for (i, (s, c)) in states.into_iter().zip(&spec.columns).enumerate() {
                let f = &fields[i];
                row.push(match (s, c) {
                    (State::Group(v), _) => v,
                    (State::Count(n), _) => Some(encode_int(n as i128, f)?),
                    (State::Best(b), _) => b.map(|(_, raw)| raw),
                    (State::Bits(v), _) => v.map(|v| encode_sized_int(v, f)),
                    (State::Joined(parts), AggColumn::Joined(how)) => {
                        super::joined::finish(how, f, parts)?
                    }
                    (State::Joined(_), _) => None,
                    (State::CountDistinct, AggColumn::CountDistinct { values }) => {
                        Some(encode_int(distinct[*values] as i128, f)?)
                    }
                    // Hidden; never sent.
                    (State::Distinct(_) | State::CountDistinct, _) => None,
                    (sum, AggColumn::Avg { count, float_sum }) => {
                        let n = counts[*count].unwrap_or(0);
                        // A float column: PostgreSQL's avg sums it in double precision.
                        let sum = match (sum, float_sum) {
                            (State::SumFloat(_), Some(at)) => State::SumFloat(float_sums[*at]),
                            (sum, _) => sum,
                        };
                        match sum {
                            _ if n == 0 => None,
                            State::SumNum(Some(v)) => Some(v.divided(n).encode(f.format)),
                            State::SumInt(Some(v)) => Some(encode_numeric(
                                &Num::parse(&v.to_string()).expect("integer").div_count(n),
                                f.format,
                            )),
                            State::SumFloat(Some(v)) => Some(encode_float8(v / n as f64, f.format)),
                            // PostgreSQL's avg(interval) divides its sum by the count so.
                            State::SumInterval(Some(v)) => {
                                Some(encode_interval(v.divided_by(n as f64), f)?)
                            }
                            _ => None,
                        }
                    }
                    (State::SumInt(v), _) => v.map(|v| encode_int(v, f)).transpose()?,
                    (State::SumNum(v), _) => v.map(|v| v.encode(f.format)),
                    (State::SumInterval(v), _) => {
                        v.map(|v| encode_interval(Some(v), f)).transpose()?
                    }
                    (State::SumFloat(v), _) => v.map(|v| {
                        if f.type_oid == oid::FLOAT4 {
                            if f.format == 1 {
                                Bytes::copy_from_slice(&(v as f32).to_be_bytes())
                            } else {
                                Bytes::from(float4_text(v as f32))
                            }
                        } else {
                            encode_float8(v, f.format)
                        }
                    }),
                });
            }
            rows.push(row);
        }
        Ok(rows)
    }
}

/// `labels`: the column is an enum's, whose values compare by its declared order.
fn combine(
    state: &mut State,
    col: &AggColumn,
    f: &FieldDesc,
    raw: Option<Bytes>,
    labels: Option<&super::enums::EnumOrder>,
) -> Result<(), PgError> {
    let bad = || {
        PgError::error(
            sqlstate::PROTOCOL_VIOLATION,
            format!("cannot read partial aggregate of column {}", f.name),
        )
    };
    match state {
        State::Group(v) => {
            if v.is_none() {
                *v = raw;
            }
        }
        State::Count(n) => {
            if let Some(r) = raw {
                *n += read_int(&r, f.format).ok_or_else(bad)? as i64;
            }
        }
        State::SumInt(acc) => {
            if let Some(r) = raw {
                let v = read_int(&r, f.format).ok_or_else(bad)?;
                *acc = Some(acc.unwrap_or(0) + v);
            }
        }
        State::SumNum(acc) => {
            if let Some(r) = raw {
                let v = NumSum::read(&r, f.format).ok_or_else(bad)?;
                *acc = Some(match acc.take() {
                    None => v,
                    Some(sum) => sum.add(v),
                });
            }
        }
        State::SumInterval(acc) => {
            if let Some(r) = raw {
                let v = if f.format == 1 {
                    Interval::from_binary(&r)
                } else {
                    std::str::from_utf8(&r).ok().and_then(Interval::parse)
                }
                .ok_or_else(|| {
                    unsupported(format!(
                        "cannot read a partial sum of column {} as an interval: the proxy adds \
                         intervals written in IntervalStyle postgres, the default",
                        f.name
                    ))
                    .with_hint(
                        "SET IntervalStyle = postgres, or add a shard-key condition so the \
                         query runs on one shard.",
                    )
                })?;
                let total = match acc.take() {
                    None => Some(v),
                    Some(a) => a.checked_add(v),
                };
                *acc = Some(total.ok_or_else(interval_out_of_range)?);
            }
        }
        State::SumFloat(acc) => {
            if let Some(r) = raw {
                let v = match value::decode(f.type_oid, f.format, Some(&r)).map_err(|_| bad())? {
                    SortValue::Float(v) => v,
                    _ => return Err(bad()),
                };
                *acc = Some(acc.unwrap_or(0.0) + v);
            }
        }
        State::Best(best) => {
            if let Some(r) = raw {
                let v = match labels {
                    Some(l) => l.value(Some(&r)),
                    None => value::decode(f.type_oid, f.format, Some(&r)),
                }
                .map_err(unsupported)?;
                let better = match best {
                    None => true,
                    Some((b, _)) => {
                        let o = value::compare(&v, b);
                        if *col == AggColumn::Min {
                            o == Ordering::Less
                        } else {
                            o == Ordering::Greater
                        }
                    }
                };
                if better {
                    *best = Some((v, r));
                }
            }
        }
        State::Bits(acc) => {
            if let Some(r) = raw {
                let v = read_sized_int(&r, f.format).ok_or_else(bad)?;
                *acc = Some(match (*acc, col) {
                    (None, _) => v,
                    (Some(a), AggColumn::BitAnd) => a & v,
                    (Some(a), AggColumn::BitXor) => a ^ v,
                    (Some(a), _) => a | v,
                });
            }
        }
        State::Distinct(_) | State::CountDistinct => {}
        State::Joined(parts) => parts.extend(raw),
    }
    Ok(())
}

/// An int2, int4 or int8 value as text or in its binary width.
fn read_sized_int(raw: &[u8], format: i16) -> Option<i64> {
    if format != 1 {
        return std::str::from_utf8(raw).ok()?.parse().ok();
    }
    Some(match raw.len() {
        2 => i16::from_be_bytes(raw.try_into().ok()?) as i64,
        4 => i32::from_be_bytes(raw.try_into().ok()?) as i64,
        8 => i64::from_be_bytes(raw.try_into().ok()?),
        _ => return None,
    })
}

/// `v` in the column's integer type and format. OR, AND and XOR of values of a type stay in
/// its range, so the casts keep every bit.
fn encode_sized_int(v: i64, f: &FieldDesc) -> Bytes {
    match (f.format, f.type_oid) {
        (1, oid::INT2) => Bytes::copy_from_slice(&(v as i16).to_be_bytes()),
        (1, oid::INT4) => Bytes::copy_from_slice(&(v as i32).to_be_bytes()),
        (1, _) => Bytes::copy_from_slice(&v.to_be_bytes()),
        _ => Bytes::from(v.to_string()),
    }
}

/// What one group costs beyond its values: its index entry, key and state vectors.
const GROUP_OVERHEAD: usize = 96;

fn too_many_groups(budget: usize) -> PgError {
    PgError::error(
        sqlstate::PROGRAM_LIMIT_EXCEEDED,
        format!(
            "merging groups or distinct rows over several shards holds more than {} MiB",
            budget >> 20
        ),
    )
    .with_hint(
        "Add a shard-key condition so the query runs on one shard, group by the shard key (each shard then holds whole groups), or narrow the rows.",
    )
}

fn too_many_distinct() -> PgError {
    PgError::error(
        sqlstate::PROGRAM_LIMIT_EXCEEDED,
        format!(
            "count(DISTINCT) over several shards holds more than {} MiB of distinct values",
            DISTINCT_BYTES >> 20
        ),
    )
    .with_hint(
        "Add a shard-key condition so the query runs on one shard, or narrow the rows it counts.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::merge::group_output::data_row;

    #[test]
    fn an_order_on_a_type_the_merge_cannot_sort_is_refused_before_any_row() {
        let field = |type_oid| FieldDesc {
            name: "j".into(),
            table_oid: 0,
            column: 0,
            type_oid,
            typmod: -1,
            format: 0,
        };
        let spec = AggSpec {
            columns: vec![AggColumn::Group],
            ..AggSpec::default()
        };
        let order = [crate::router::plan::SortKey {
            column: SortColumn::Position(1),
            descending: false,
            nulls_first: false,
            bytewise: false,
        }];
        let json = 114;
        let e = check(&[field(json)], &spec, &order, true, &Enums::default()).unwrap_err();
        assert_eq!(e.code, sqlstate::FEATURE_NOT_SUPPORTED);
        assert!(check(&[field(oid::INT8)], &spec, &order, true, &Enums::default()).is_ok());
        assert!(check(&[field(json)], &spec, &[], true, &Enums::default())
            .is_err_and(|e| e.message.contains("grouping")));
    }

    #[test]
    fn groups_beyond_the_budget_fail_instead_of_growing() {
        let fields = [FieldDesc {
            name: "v".into(),
            table_oid: 0,
            column: 0,
            type_oid: oid::INT8,
            typmod: -1,
            format: 0,
        }];
        let spec = AggSpec {
            columns: vec![AggColumn::Group],
            ..AggSpec::default()
        };
        let row = |v: u32| Frame {
            tag: b'D',
            bytes: data_row(&[Some(Bytes::from(v.to_string()))]),
        };
        let mut groups = Groups {
            group_budget: 4096,
            ..Groups::default()
        };
        // The same value again and again is one group: nothing grows.
        for _ in 0..1000 {
            groups.add(&fields, &spec, &row(7)).unwrap();
        }
        let failed = (0..1000).find_map(|v| groups.add(&fields, &spec, &row(v)).err());
        let e = failed.expect("the budget ends it");
        assert_eq!(e.code, sqlstate::PROGRAM_LIMIT_EXCEEDED);
        assert!(groups.states.len() < 1000);
    }
}
