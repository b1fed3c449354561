//! Portals the proxy carries out itself: the plan made at Bind with its bound values, and the
//! requests built from it for the shards (re-binds of a scatter or of each part of a write,
//! with parameter types translated into each shard's own OIDs).

use super::*;
use crate::executor::rebind;

/// A portal the proxy carries out (`Portal::Local`).
pub(super) struct LocalPortal {
    pub(super) plan: Plan,
    pub(super) sql: String,
    pub(super) params: Params,
    /// The client's declared parameter types (values were encoded for them).
    pub(super) param_types: Vec<u32>,
    pub(super) result_formats: Vec<i16>,
    /// A merged result materialized for Execute with a row limit: rows, then the CommandComplete.
    pub(super) pending: Option<std::collections::VecDeque<Frame>>,
    /// Bytes of `pending` counted in the buffered-bytes gauge.
    pub(super) held: usize,
    /// The statement's result columns as the client was shown them (see `fixed_result`).
    pub(super) columns: Option<Frame>,
    /// What the INSERT must do on every shard before it writes (see `given_values`).
    pub(super) given: Option<crate::executor::given_lookup::GivenValues>,
}

impl Drop for LocalPortal {
    fn drop(&mut self) {
        buffered(-(self.held as i64));
    }
}

/// The client's declared parameter types as each shard other than the first knows them, for
/// the shards that will run a portal; empty when every declared type is built in.
pub(super) type TypesByShard = HashMap<usize, Vec<u32>>;

impl LocalPortal {
    pub(super) async fn types_by_shard(&self, exec: &Exec<'_>) -> Result<TypesByShard, PgError> {
        let mut out = HashMap::default();
        if !self
            .param_types
            .iter()
            .any(|o| crate::backend::catalog::type_oids::is_user(*o))
        {
            return Ok(out);
        }
        let shards: Vec<usize> = match &self.plan {
            Plan::Scatter { shards, .. } => shards.clone(),
            Plan::Write { parts, .. } => parts.iter().map(|p| p.0).collect(),
            _ => Vec::new(),
        };
        for s in shards.into_iter().filter(|&s| s != HOME) {
            out.insert(s, exec.types_for(s, &self.param_types).await?);
        }
        Ok(out)
    }

    pub(super) fn types_on<'t>(&'t self, types: &'t TypesByShard, shard: usize) -> &'t [u32] {
        types.get(&shard).map_or(&self.param_types, |t| t)
    }

    /// The values and declared types (as the first shard, which evaluates, knows them) that
    /// the merge's computed items read; None when it has none.
    pub(super) fn bound_for_merge(
        &self,
        merge: &crate::router::plan::MergeSpec,
        types: &TypesByShard,
        shards: &[usize],
    ) -> Option<(Params, Vec<u32>)> {
        let computes = merge.aggregate.as_ref().is_some_and(|a| a.computes());
        let first = *shards.first()?;
        computes.then(|| (self.params.clone(), self.types_on(types, first).to_vec()))
    }

    /// The re-bind of part `i` of a write, with only the parameters its rows use.
    pub(super) fn write_part(
        &self,
        i: usize,
        describe: bool,
        execute: bool,
        types: &TypesByShard,
    ) -> Bytes {
        let Plan::Write { parts, picks, .. } = &self.plan else {
            unreachable!("write_part of a write")
        };
        let (shard, sql) = (parts[i].0, &parts[i].1);
        let declared = self.types_on(types, shard);
        match picks.get(i) {
            Some(pick) => {
                let types: Vec<u32> = pick
                    .iter()
                    .map(|&p| declared.get(p).copied().unwrap_or(0))
                    .collect();
                rebind::rebind(
                    sql,
                    &self.params.pick(pick),
                    &types,
                    &self.result_formats,
                    describe,
                    execute,
                )
            }
            None => rebind::rebind(
                sql,
                &self.params,
                declared,
                &self.result_formats,
                describe,
                execute,
            ),
        }
    }

    /// Whether the shards run a text other than the client's.
    pub(super) fn rewritten(&self) -> bool {
        match &self.plan {
            Plan::Scatter { sql, .. } => *sql != self.sql,
            Plan::Write { parts, .. } => parts.iter().any(|(_, text)| *text != self.sql),
            _ => false,
        }
    }

    /// For a scattered read: its shards, merge spec, and the re-bind to send each of them
    /// (Parse+Bind+Describe, plus Execute+Sync when `execute`), in the same order.
    pub(super) fn scatter(
        &self,
        execute: bool,
        types: &TypesByShard,
    ) -> Option<(Vec<usize>, crate::router::plan::MergeSpec, Vec<Bytes>)> {
        let (shards, sql, merge) = match &self.plan {
            Plan::Scatter { shards, sql, merge } => (shards.clone(), sql, merge.clone()),
            // Describing a write: every part returns the same columns.
            Plan::Write { parts, .. } if !execute => {
                return Some((
                    vec![parts[0].0],
                    Default::default(),
                    vec![self.write_part(0, true, false, types)],
                ));
            }
            // Describing what every shard runs (set_config(), DDL with RETURNING): the home
            // shard's answer is the one the client sees.
            Plan::Session | Plan::Broadcast { .. } if !execute => {
                (vec![HOME], &self.sql, Default::default())
            }
            _ => return None,
        };
        let requests = shards
            .iter()
            .map(|&s| {
                let declared = self.types_on(types, s);
                let sql = merge.text_for(s, sql);
                let Some(picks) = &merge.picks else {
                    return rebind::rebind(
                        sql,
                        &self.params,
                        declared,
                        &self.result_formats,
                        true,
                        execute,
                    );
                };
                // The shards' text uses only some of the parameters (see `keep_used_params`).
                let picked: Vec<u32> = picks
                    .iter()
                    .map(|&p| declared.get(p).copied().unwrap_or(0))
                    .collect();
                rebind::rebind(
                    sql,
                    &self.params.pick(picks),
                    &picked,
                    &self.result_formats,
                    true,
                    execute,
                )
            })
            .collect();
        Some((shards, merge, requests))
    }
}
