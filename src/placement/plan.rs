//! Planning slot moves. Adding a shard: each owner gives up what it holds above an even share,
//! and only the added shard receives, so every move is from one old owner to it. Draining one:
//! its slots are shared out among the other owners, the emptiest first, so they end even.
//! Slots move in slot order (donors give their highest-numbered ones; a drained shard's go out
//! in runs), which on a table of contiguous ranges (pinned by hand) keeps everyone's ranges
//! few; a derived table is scattered to begin with.

use super::slots::{runs, runs_text, SlotTable, SLOT_COUNT};

/// Slots one shard hands to another, as merged inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub from: usize,
    pub to: usize,
    pub ranges: Vec<(u32, u32)>,
}

impl Move {
    pub fn slot_count(&self) -> u32 {
        self.ranges.iter().map(|(a, b)| b - a + 1).sum()
    }

    /// `"a-b,c"`, as `[placement.slots]` writes ranges.
    pub fn ranges_text(&self) -> String {
        runs_text(&self.ranges)
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
                to: added,
                ranges: runs(given),
            });
        }
    }
    moves.sort_by_key(|m| m.from);
    moves
}

/// The moves that empty shard `drained`, sharing its slots out among the other shards that own
/// slots so that they end as even as they can. Empty when it owns none; an error when no other
/// shard owns slots (its slots would have nowhere to go).
pub fn drain(table: &SlotTable, shard_count: usize, drained: usize) -> Result<Vec<Move>, String> {
    let mut owned: Vec<Vec<u32>> = vec![Vec::new(); shard_count];
    for slot in 0..SLOT_COUNT {
        owned[table.shard_of_slot(slot)].push(slot);
    }
    let giving = std::mem::take(&mut owned[drained]);
    if giving.is_empty() {
        return Ok(Vec::new());
    }
    let mut takers: Vec<usize> = (0..shard_count)
        .filter(|&s| s != drained && !owned[s].is_empty())
        .collect();
    if takers.is_empty() {
        return Err("no other shard owns slots to take the drained shard's".into());
    }
    // Fill the emptiest first: each taker's share brings it up to an even count.
    takers.sort_by_key(|&s| (owned[s].len(), s));
    let k = takers.len() as u32;
    let (base, extra) = (SLOT_COUNT / k, SLOT_COUNT % k);
    let mut next = 0usize;
    let mut moves = Vec::new();
    for (rank, &s) in takers.iter().enumerate() {
        // The remainder's extra slots go to the takers that already hold the most.
        let target = (base + u32::from((rank as u32) >= k - extra)) as usize;
        let share = target
            .saturating_sub(owned[s].len())
            .min(giving.len() - next);
        if share > 0 {
            moves.push(Move {
                from: drained,
                to: s,
                ranges: runs(&giving[next..next + share]),
            });
            next += share;
        }
    }
    // What rounding left over goes to the emptiest.
    if next < giving.len() {
        let rest = runs(&giving[next..]);
        match moves.iter_mut().find(|m| m.to == takers[0]) {
            Some(m) => {
                m.ranges.extend(rest);
                let mut all: Vec<u32> = m.ranges.iter().flat_map(|&(a, b)| a..=b).collect();
                all.sort_unstable();
                m.ranges = runs(&all);
            }
            None => moves.push(Move {
                from: drained,
                to: takers[0],
                ranges: rest,
            }),
        }
    }
    moves.sort_by_key(|m| m.to);
    Ok(moves)
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
                let ranges = runs(&mine)
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
    fn draining_a_shard_shares_its_slots_out_evenly() {
        let four = SlotTable::derive(&names(4));
        let moves = drain(&four, 4, 1).unwrap();
        assert!(moves.iter().all(|m| m.from == 1 && m.to != 1));
        let mut t = four.clone();
        for m in &moves {
            t = t.moved(&m.ranges, m.to);
        }
        let c = counts(&t, 4);
        assert_eq!(c[1], 0, "{c:?}");
        assert!(
            [c[0], c[2], c[3]].iter().all(|&x| x == 341 || x == 342),
            "{c:?}"
        );
        // Nothing left to drain, and nowhere to drain the last owner to.
        assert!(drain(&t, 4, 1).unwrap().is_empty());
        let one = SlotTable::derive(&names(1));
        assert!(drain(&one, 1, 0).is_err());
    }

    #[test]
    fn ranges_print_as_the_config_writes_them() {
        let m = Move {
            from: 0,
            to: 1,
            ranges: runs(&[1, 2, 3, 7, 9, 10]),
        };
        assert_eq!(m.ranges_text(), "1-3,7,9-10");
        assert_eq!(m.slot_count(), 6);
    }
}
