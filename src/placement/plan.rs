//! Planning slot moves: which slots each shard gives up so that a shard being added ends up
//! with its share. Only the added shard receives slots, so every move is from one old owner to
//! it. Each donor gives its highest-numbered slots: on a table of contiguous ranges (pinned by
//! hand) that keeps everyone's ranges few; a derived table is scattered to begin with.

use super::slots::{SlotTable, SLOT_COUNT};

/// Slots one shard hands to the added one, as merged inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub from: usize,
    pub ranges: Vec<(u32, u32)>,
}

impl Move {
    pub fn slot_count(&self) -> u32 {
        self.ranges.iter().map(|(a, b)| b - a + 1).sum()
    }

    /// `"a-b,c"` as the `--slots` of a move and `[placement.slots]` write ranges.
    pub fn ranges_text(&self) -> String {
        self.ranges
            .iter()
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
}

/// The moves that give shard `added` an even share of the slots, taken from the shards that
/// own slots now. `shard_count` is the number of shards in the config.
pub fn balance_onto(table: &SlotTable, shard_count: usize, added: usize) -> Vec<Move> {
    let mut owned: Vec<Vec<u32>> = vec![Vec::new(); shard_count];
    for slot in 0..SLOT_COUNT {
        owned[table.shard_of_slot(slot)].push(slot);
    }
    let mut members: Vec<usize> = (0..shard_count)
        .filter(|&s| !owned[s].is_empty() || s == added)
        .collect();
    // The larger owners keep the remainder's extra slots, so as few slots as possible move.
    members.sort_by_key(|&s| (std::cmp::Reverse(owned[s].len()), s));
    let k = members.len() as u32;
    let (base, extra) = (SLOT_COUNT / k, SLOT_COUNT % k);
    let mut moves = Vec::new();
    for (rank, &s) in members.iter().enumerate() {
        if s == added {
            continue;
        }
        let target = (base + u32::from((rank as u32) < extra)) as usize;
        if owned[s].len() > target {
            let given = &owned[s][target..];
            moves.push(Move {
                from: s,
                ranges: merge(given),
            });
        }
    }
    moves.sort_by_key(|m| m.from);
    moves
}

fn merge(slots: &[u32]) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &slot in slots {
        match out.last_mut() {
            Some((_, hi)) if *hi + 1 == slot => *hi = slot,
            _ => out.push((slot, slot)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::record;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("s{i}")).collect()
    }

    fn counts(table: &SlotTable, n: usize) -> Vec<u32> {
        let mut c = vec![0; n];
        for slot in 0..SLOT_COUNT {
            c[table.shard_of_slot(slot)] += 1;
        }
        c
    }

    /// The table after the moves, built through the stored form as a mover would record it.
    fn after(table: &SlotTable, moves: &[Move], n: usize, added: usize) -> SlotTable {
        let mut owner: Vec<usize> = (0..SLOT_COUNT).map(|s| table.shard_of_slot(s)).collect();
        for m in moves {
            for &(a, b) in &m.ranges {
                for slot in a..=b {
                    assert_eq!(
                        owner[slot as usize], m.from,
                        "slot {slot} moved by a non-owner"
                    );
                    owner[slot as usize] = added;
                }
            }
        }
        let text = (0..n)
            .map(|s| {
                let mine: Vec<u32> = (0..SLOT_COUNT)
                    .filter(|&x| owner[x as usize] == s)
                    .collect();
                let ranges = merge(&mine)
                    .iter()
                    .map(|(a, b)| format!("{a}-{b}"))
                    .collect::<Vec<_>>()
                    .join(",");
                format!("s{s}={ranges}")
            })
            .collect::<Vec<_>>()
            .join(";");
        record::decode(&text, &names(n)).unwrap()
    }

    #[test]
    fn adding_a_fourth_shard_gives_it_a_quarter_from_the_three() {
        let three = SlotTable::derive(&names(3));
        let four = record::decode(&record::encode(&three, &names(3)), &names(4)).unwrap();
        let moves = balance_onto(&four, 4, 3);
        assert_eq!(moves.len(), 3);
        let moved: u32 = moves.iter().map(Move::slot_count).sum();
        assert_eq!(moved, 256);
        let c = counts(&after(&four, &moves, 4, 3), 4);
        assert_eq!(c, vec![256, 256, 256, 256]);
    }

    #[test]
    fn uneven_counts_keep_the_remainder_with_the_largest_owners() {
        let two = SlotTable::derive(&names(2));
        let three = record::decode(&record::encode(&two, &names(2)), &names(3)).unwrap();
        let moves = balance_onto(&three, 3, 2);
        let c = counts(&after(&three, &moves, 3, 2), 3);
        assert_eq!(c.iter().sum::<u32>(), SLOT_COUNT);
        assert!(c.iter().all(|&x| x == 341 || x == 342), "{c:?}");
        // Nothing to do once balanced.
        let balanced = after(&three, &moves, 3, 2);
        assert!(balance_onto(&balanced, 3, 2).is_empty());
    }

    #[test]
    fn ranges_print_as_the_config_writes_them() {
        let m = Move {
            from: 0,
            ranges: merge(&[1, 2, 3, 7, 9, 10]),
        };
        assert_eq!(m.ranges_text(), "1-3,7,9-10");
        assert_eq!(m.slot_count(), 6);
    }
}
