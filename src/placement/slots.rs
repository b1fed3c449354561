//! The slot table: slot (hash mod `SLOT_COUNT`) → shard. It is the single source of truth for
//! placement. By default it is derived from the shard names with consistent hashing (many
//! virtual points per shard, so the spread is even and adding a shard moves about 1/(N+1) of the
//! slots), and it can be pinned in config so no upgrade or reordering can ever move data.

use hashring::HashRing;
use std::collections::BTreeMap;

/// Fixed for the life of a cluster.
pub const SLOT_COUNT: u32 = 1024;
const VIRTUAL_POINTS: u32 = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotTable {
    /// `owner[slot]` = shard index (config order).
    owner: Vec<usize>,
}

#[derive(Hash, Clone, PartialEq)]
struct Point<'a> {
    shard: &'a str,
    i: u32,
}

impl SlotTable {
    /// Consistent-hash derivation from shard names (not from their order).
    pub fn derive(shards: &[String]) -> SlotTable {
        let mut ring = HashRing::new();
        for name in shards {
            for i in 0..VIRTUAL_POINTS {
                ring.add(Point { shard: name, i });
            }
        }
        let owner = (0..SLOT_COUNT)
            .map(|slot| {
                let p = ring.get(&("slot", slot)).expect("ring has points");
                shards
                    .iter()
                    .position(|s| s == p.shard)
                    .expect("point of a known shard")
            })
            .collect();
        SlotTable { owner }
    }

    /// From a pinned map of shard name → ranges like `"0-340,512-600"`.
    pub fn from_ranges(
        shards: &[String],
        map: &BTreeMap<String, String>,
    ) -> Result<SlotTable, String> {
        let mut owner: Vec<Option<usize>> = vec![None; SLOT_COUNT as usize];
        for (shard, ranges) in map {
            let idx = shards
                .iter()
                .position(|s| s == shard)
                .ok_or_else(|| format!("placement.slots names unknown shard {shard:?}"))?;
            let runs = parse_runs(ranges).map_err(|e| format!("placement.slots.{shard}: {e}"))?;
            for (lo, hi) in runs {
                for slot in lo..=hi {
                    if let Some(prev) = owner[slot as usize] {
                        return Err(format!(
                            "placement.slots: slot {slot} given to both {} and {shard}",
                            shards[prev]
                        ));
                    }
                    owner[slot as usize] = Some(idx);
                }
            }
        }
        let missing: Vec<usize> = owner
            .iter()
            .enumerate()
            .filter(|(_, o)| o.is_none())
            .map(|(i, _)| i)
            .collect();
        if let Some(first) = missing.first() {
            return Err(format!(
                "placement.slots: {} slots have no shard (first: {first})",
                missing.len()
            ));
        }
        Ok(SlotTable {
            owner: owner.into_iter().map(|o| o.expect("checked")).collect(),
        })
    }

    pub fn shard_of_slot(&self, slot: u32) -> usize {
        self.owner[slot as usize]
    }

    /// The table with the slots of `ranges` (inclusive) given to shard `to`.
    pub fn moved(&self, ranges: &[(u32, u32)], to: usize) -> SlotTable {
        let mut owner = self.owner.clone();
        for &(a, b) in ranges {
            for slot in a..=b.min(SLOT_COUNT - 1) {
                owner[slot as usize] = to;
            }
        }
        SlotTable { owner }
    }

    /// Each shard's slots as merged ranges like `"0-340,512-600"` (empty when it owns none), in
    /// the order of `shards`.
    pub fn ranges(&self, shards: &[String]) -> Vec<(String, String)> {
        let mut owned: Vec<Vec<u32>> = vec![Vec::new(); shards.len()];
        for (slot, &s) in self.owner.iter().enumerate() {
            owned[s].push(slot as u32);
        }
        shards
            .iter()
            .zip(owned)
            .map(|(name, slots)| (name.clone(), runs_text(&runs(&slots))))
            .collect()
    }

    /// The table as a `[placement.slots]` config block, ranges merged, to pin it. A shard that
    /// owns no slot is left out (the block may not give it an empty list).
    pub fn to_config(&self, shards: &[String]) -> String {
        let mut out = String::from("[placement.slots]\n");
        for (name, ranges) in self.ranges(shards) {
            if !ranges.is_empty() {
                out.push_str(&format!("{name} = \"{ranges}\"\n"));
            }
        }
        out
    }
}

/// Runs as the config writes them (`"0-340,512-600"`), each slot below `SLOT_COUNT`.
pub fn parse_runs(text: &str) -> Result<Vec<(u32, u32)>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let parse = |s: &str| -> Result<u32, String> {
            s.parse::<u32>()
                .ok()
                .filter(|v| *v < SLOT_COUNT)
                .ok_or_else(|| format!("{s:?} is not a slot 0..{}", SLOT_COUNT - 1))
        };
        let (lo, hi) = (parse(lo)?, parse(hi)?);
        if lo > hi {
            return Err(format!("{part:?} runs backwards"));
        }
        out.push((lo, hi));
    }
    Ok(out)
}

/// Ascending slots as inclusive runs: `[1, 2, 3, 7]` → `[(1, 3), (7, 7)]`.
pub fn runs(slots: &[u32]) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &slot in slots {
        match out.last_mut() {
            Some((_, hi)) if *hi + 1 == slot => *hi = slot,
            _ => out.push((slot, slot)),
        }
    }
    out
}

/// Runs as the config writes them: `"1-3,7"`.
pub fn runs_text(runs: &[(u32, u32)]) -> String {
    runs.iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("s{i}")).collect()
    }

    #[test]
    fn derivation_is_even_and_stable() {
        let t = SlotTable::derive(&names(3));
        let mut counts = [0u32; 3];
        for slot in 0..SLOT_COUNT {
            counts[t.shard_of_slot(slot)] += 1;
        }
        for c in counts {
            assert!((200..=480).contains(&c), "uneven spread {counts:?}");
        }
        assert_eq!(t, SlotTable::derive(&names(3)));
    }

    #[test]
    fn adding_a_shard_moves_about_one_in_n_plus_one() {
        let (a, b) = (SlotTable::derive(&names(3)), SlotTable::derive(&names(4)));
        let moved = (0..SLOT_COUNT)
            .filter(|&s| a.shard_of_slot(s) != b.shard_of_slot(s))
            .count();
        assert!((150..=400).contains(&moved), "moved {moved}");
        // Every moved slot moved to the new shard.
        assert!((0..SLOT_COUNT)
            .all(|s| a.shard_of_slot(s) == b.shard_of_slot(s) || b.shard_of_slot(s) == 3));
    }

    #[test]
    fn pinned_config_round_trips() {
        let shards = names(3);
        let t = SlotTable::derive(&shards);
        let text = t.to_config(&shards);
        let map: BTreeMap<String, String> = toml::from_str::<toml::Table>(&text).unwrap()
            ["placement"]["slots"]
            .as_table()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        assert_eq!(SlotTable::from_ranges(&shards, &map).unwrap(), t);
    }

    #[test]
    fn pinned_gaps_and_overlaps_are_errors() {
        let shards = names(2);
        let mut map = BTreeMap::new();
        map.insert("s0".to_string(), "0-511".to_string());
        assert!(SlotTable::from_ranges(&shards, &map)
            .unwrap_err()
            .contains("have no shard"));
        map.insert("s1".to_string(), "500-1023".to_string());
        assert!(SlotTable::from_ranges(&shards, &map)
            .unwrap_err()
            .contains("slot 500"));
        map.insert("s1".to_string(), "512-1023".to_string());
        assert!(SlotTable::from_ranges(&shards, &map).is_ok());
        map.insert("zz".to_string(), "1".to_string());
        assert!(SlotTable::from_ranges(&shards, &map)
            .unwrap_err()
            .contains("unknown shard"));
    }
}
