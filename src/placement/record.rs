//! The slot table as cluster state. Every shard of a cluster keeps a versioned copy of it in
//! `shardgate.placement`; the newest version found on any shard is the cluster's placement, and
//! the config file's table only seeds the first version. This module holds the pure part:
//! the text form stored on the shards and the decision a proxy takes from what it found there
//! (`backend::placement_store` reads and writes the shards).
//!
//! Invariants:
//! - A proxy never routes by a table other than the newest recorded one: routing by a table the
//!   rows do not follow is a wrong answer, so a disagreeing file is refused, not obeyed.
//! - A shard the file adds owns nothing until slots are moved to it; a shard the record gives
//!   slots to cannot be left out of the file.

use super::slots::{SlotTable, SLOT_COUNT};
use std::collections::BTreeMap;

/// A version of the cluster's slot table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub version: i64,
    pub table: SlotTable,
}

/// What a proxy does with the placements it found on the shards.
#[derive(Debug, PartialEq, Eq)]
pub struct Decision {
    pub current: Recorded,
    /// The text to write on shards whose newest version is older (or that have none), by
    /// index: the first start of a cluster writes the file's table everywhere.
    pub write: Vec<usize>,
    /// The stored form of `current`.
    pub text: String,
    /// Shards of the file that own no slot.
    pub empty: Vec<String>,
}

/// The stored form: `name=ranges` per shard that owns slots, `;`-separated, e.g.
/// `s0=0-340,512-600;s1=341-511,601-1023`.
pub fn encode(table: &SlotTable, names: &[String]) -> String {
    table
        .ranges(names)
        .into_iter()
        .filter(|(_, r)| !r.is_empty())
        .map(|(name, r)| format!("{name}={r}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// The stored form read back against the file's shard list.
pub fn decode(text: &str, names: &[String]) -> Result<SlotTable, String> {
    let mut map = BTreeMap::new();
    for part in text.split(';').filter(|p| !p.trim().is_empty()) {
        let (name, ranges) = part
            .split_once('=')
            .ok_or_else(|| format!("a recorded placement entry {part:?} has no '='"))?;
        map.insert(name.trim().to_string(), ranges.trim().to_string());
    }
    if let Some(missing) = map.keys().find(|n| !names.contains(n)) {
        return Err(format!(
            "the cluster's placement gives slots to shard {missing:?}, which the config does not \
             list; its rows would be unreachable. List it under [[shards]] again (a shard leaves \
             the cluster only after its slots are moved away)"
        ));
    }
    SlotTable::from_ranges(names, &map)
}

/// Decides the placement from the newest version each shard holds (`found[i]`, in config
/// order). `pinned` is whether the file pins `[placement.slots]`: a pinned table that differs
/// from the cluster's is refused, a derived one gives way to it.
pub fn decide(
    found: &[Option<(i64, String)>],
    file: &SlotTable,
    pinned: bool,
    names: &[String],
) -> Result<Decision, String> {
    let newest = found
        .iter()
        .flatten()
        .max_by_key(|(version, _)| *version)
        .cloned();
    let (current, text) = match newest {
        None => (
            Recorded {
                version: 1,
                table: file.clone(),
            },
            encode(file, names),
        ),
        Some((version, text)) => {
            let table =
                decode(&text, names).map_err(|e| format!("placement version {version}: {e}"))?;
            if pinned && &table != file {
                return Err(format!(
                    "the config pins [placement.slots], but the cluster records a different slot \
                     table (version {version}); routing by the file would look for rows where \
                     they are not. Remove [placement.slots] to follow the cluster, or pin the \
                     table `shardgate slots --config FILE` prints"
                ));
            }
            (Recorded { version, table }, text)
        }
    };
    let write = found
        .iter()
        .enumerate()
        .filter(|(_, f)| f.as_ref().is_none_or(|(v, _)| *v < current.version))
        .map(|(i, _)| i)
        .collect();
    let mut owns = vec![false; names.len()];
    for slot in 0..SLOT_COUNT {
        owns[current.table.shard_of_slot(slot)] = true;
    }
    let empty = names
        .iter()
        .zip(owns)
        .filter(|(_, o)| !o)
        .map(|(n, _)| n.clone())
        .collect();
    Ok(Decision {
        current,
        write,
        text,
        empty,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("s{i}")).collect()
    }

    #[test]
    fn the_stored_form_round_trips_and_leaves_out_shards_that_own_nothing() {
        let three = SlotTable::derive(&names(3));
        let text = encode(&three, &names(3));
        assert_eq!(decode(&text, &names(3)).unwrap(), three);
        // A fourth shard in the file owns nothing under the same record.
        let four = decode(&text, &names(4)).unwrap();
        assert!((0..SLOT_COUNT).all(|s| four.shard_of_slot(s) == three.shard_of_slot(s)));
        assert_eq!(encode(&four, &names(4)), text);
    }

    #[test]
    fn the_first_start_records_the_files_table_everywhere() {
        let file = SlotTable::derive(&names(2));
        let d = decide(&[None, None], &file, false, &names(2)).unwrap();
        assert_eq!(d.current.version, 1);
        assert_eq!(d.current.table, file);
        assert_eq!(d.write, vec![0, 1]);
        assert!(d.empty.is_empty());
    }

    #[test]
    fn the_newest_record_wins_over_a_derived_file_and_is_copied_where_missing() {
        let old = SlotTable::derive(&names(3));
        let text = encode(&old, &names(3));
        let file = SlotTable::derive(&names(4)); // a shard added: the derivation moved slots
        assert_ne!(file, decode(&text, &names(4)).unwrap());
        let found = vec![Some((2, text.clone())), Some((1, "x".into())), None, None];
        let d = decide(&found, &file, false, &names(4)).unwrap();
        assert_eq!(d.current.version, 2);
        assert_eq!(d.current.table, decode(&text, &names(4)).unwrap());
        assert_eq!(d.write, vec![1, 2, 3]);
        assert_eq!(d.empty, vec!["s3".to_string()]);
    }

    #[test]
    fn a_pinned_file_that_disagrees_or_a_missing_shard_is_refused() {
        let recorded = encode(&SlotTable::derive(&names(3)), &names(3));
        let other = SlotTable::derive(&names(4));
        let e = decide(&[Some((1, recorded.clone()))], &other, true, &names(4)).unwrap_err();
        assert!(e.contains("pins [placement.slots]"), "{e}");
        let e = decide(&[Some((1, recorded))], &other, false, &names(2)).unwrap_err();
        assert!(
            e.contains("shard \"s2\"") && e.contains("[[shards]]"),
            "{e}"
        );
    }
}
