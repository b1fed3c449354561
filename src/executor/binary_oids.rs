//! Binary rows from shards other than the first, renumbered into the first shard's type OIDs.
//!
//! A RowDescription is translated on its way to the client (see `Exec::for_client`), but a
//! binary value names types inside itself too: an array its element type, a composite each
//! field's. Before rows of such columns come from a shard, its link is told what to renumber
//! (`link::row_types`): when a batch is sent, from the columns the client was shown for the
//! statement and the formats it bound; or, when those are not known, from the RowDescription
//! the shard sends for the portal. The type graph comes from the catalog, cached.
//!
//! A lookup that fails leaves the rows as the shard sent them (logged): the same as a proxy
//! that did not renumber, never a refusal of rows that are right for most clients.

use crate::executor::link::row_types::RowTypes;
use crate::executor::session::Exec;
use crate::protocol::embedded_oids::{may_name_types, Shape, RECORD, RECORD_ARRAY};
use crate::protocol::Frame;
use crate::router::plan::HOME;

/// The format a column is sent in, as Bind's result formats give it.
fn format_of(formats: &[i16], column: usize) -> i16 {
    match formats {
        [] => 0,
        [all] => *all,
        each => each.get(column).copied().unwrap_or(0),
    }
}

/// The binary columns of `types` whose values may name types: (column, type).
fn candidates(types: &[(u32, i16)], formats: Option<&[i16]>) -> Vec<(usize, u32)> {
    types
        .iter()
        .enumerate()
        .filter(|(i, (oid, own))| {
            formats.map_or(*own, |f| format_of(f, *i)) == 1 && may_name_types(*oid)
        })
        .map(|(i, (oid, _))| (i, *oid))
        .collect()
}

impl Exec<'_> {
    /// What the rows of `shard` need for binary `columns` given as that shard numbers them.
    async fn renumbering(&self, shard: usize, columns: &[(usize, u32)]) -> RowTypes {
        let Some(catalog) = self.catalog else {
            return RowTypes::Plain;
        };
        let types: Vec<u32> = columns.iter().map(|(_, t)| *t).collect();
        // An anonymous record's fields may be of any type.
        let map = if types.iter().any(|&t| t == RECORD || t == RECORD_ARRAY) {
            catalog.all_types_map(shard, HOME).await
        } else {
            catalog.type_map(shard, HOME, &types).await
        };
        match map {
            Ok(map) if !map.is_empty() => {
                let shaped: Vec<(usize, Shape)> = columns
                    .iter()
                    .filter_map(|&(c, t)| map.shape(t).map(|s| (c, s)))
                    .collect();
                if shaped.is_empty() {
                    RowTypes::Plain
                } else {
                    RowTypes::Renumber {
                        columns: shaped,
                        map,
                    }
                }
            }
            Ok(_) => RowTypes::Plain,
            Err(e) => {
                tracing::warn!("binary rows passed without renumbering their types: {e}");
                RowTypes::Plain
            }
        }
    }

    /// A RowDescription `f` that `shard` sent for a portal (not for a statement), before its
    /// rows: their renumbering, for the result waiting for its column types or, if none is,
    /// for the result it describes.
    pub async fn learn_row_types(&mut self, shard: usize, f: &Frame) {
        if shard == HOME || f.tag != b'T' {
            return;
        }
        // With no result waiting for its column types, only a binary column that may name
        // types could change anything (`Pending::learned` keeps no Plain then). The usual case,
        // text results, ends here without allocating.
        if self.links[shard].row_types.learning().is_none()
            && !crate::protocol::inspect::any_column(f.body(), |oid, format| {
                format == 1 && may_name_types(oid)
            })
        {
            return;
        }
        let Some(types) = crate::protocol::inspect::column_types(f.body()) else {
            return;
        };
        let learning = self.links[shard].row_types.learning().map(<[i16]>::to_vec);
        let columns = candidates(&types, learning.as_deref());
        let r = if columns.is_empty() {
            RowTypes::Plain
        } else {
            self.renumbering(shard, &columns).await
        };
        self.links[shard].row_types.learned(r);
    }

    /// The rows of a result bound with `formats` on `shard`, of a statement whose columns the
    /// client was shown as `shown` (numbered as the first shard numbers them), if it was.
    pub async fn row_types_for(
        &self,
        shard: usize,
        shown: Option<&Frame>,
        formats: &[i16],
    ) -> RowTypes {
        if shard == HOME || !formats.contains(&1) {
            return RowTypes::Plain;
        }
        let Some(shown) = shown else {
            return RowTypes::Learn {
                formats: formats.to_vec(),
            };
        };
        if shown.tag != b'T' {
            return RowTypes::Plain;
        }
        let Some(types) = crate::protocol::inspect::column_types(shown.body()) else {
            return RowTypes::Plain;
        };
        let mut columns = candidates(&types, Some(formats));
        if columns.is_empty() {
            return RowTypes::Plain;
        }
        for (_, oid) in &mut columns {
            let own = self.own_type(HOME, shard, *oid);
            let translated = match (own, self.catalog) {
                (Some(o), _) => Ok(o),
                (None, Some(catalog)) => catalog.translate_type(HOME, shard, *oid).await,
                (None, None) => Ok(*oid),
            };
            match translated {
                Ok(o) => *oid = o,
                Err(e) => {
                    tracing::warn!("binary rows passed without renumbering their types: {e}");
                    return RowTypes::Plain;
                }
            }
        }
        self.renumbering(shard, &columns).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_columns_of_user_types_and_records_are_the_candidates() {
        let types = [(23, 1), (16500, 1), (16501, 0), (2249, 1), (1007, 1)];
        assert_eq!(candidates(&types, None), vec![(1, 16500), (3, 2249)]);
        // Bind's formats decide, one for all or one each.
        assert_eq!(candidates(&types, Some(&[0])), vec![]);
        assert_eq!(
            candidates(&types, Some(&[1])),
            vec![(1, 16500), (2, 16501), (3, 2249)]
        );
        assert_eq!(candidates(&types, Some(&[0, 0, 1])), vec![(2, 16501)]);
    }
}
