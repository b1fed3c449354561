//! Before rows move and after a move is undone: what the mover checks and creates on the
//! shards, and removes again.

use super::capture::{self, MovingTable};
use super::copy::{self, Shape};
use super::Mover;
use crate::backend::{control, placement_store};
use crate::config::{Config, ShardTarget};
use crate::placement::{slots, TableRule, HOME, SLOT_COUNT};
use std::time::Duration;
use tokio_postgres::Client;

/// The sharded tables a move moves, in a fixed order (their numbers name the move's objects).
pub fn moving_tables(config: &Config) -> Result<Vec<MovingTable>, String> {
    let placement = config.placement()?;
    let mut tables: Vec<MovingTable> = placement
        .sharded_tables()
        .map(|(name, key_column, key_type)| MovingTable {
            name: name.to_string(),
            key: key_column.to_string(),
            key_type,
            n: 0,
        })
        .collect();
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    for (n, t) in tables.iter_mut().enumerate() {
        t.n = n;
    }
    Ok(tables)
}

/// Checks the cluster and the target and builds the move; None when the target already owns
/// every slot asked for. `id` is the move's when resuming (the journal assigns a new one).
pub async fn prepare(
    config: &Config,
    shards: &[ShardTarget],
    home: Client,
    id: Option<i64>,
    ranges: &[(u32, u32)],
    target: &str,
) -> Result<Option<Mover>, String> {
    let timeout = Duration::from_secs(config.server.connect_timeout_secs);
    let names: Vec<String> = shards.iter().map(|s| s.name.clone()).collect();
    let target = names.iter().position(|n| n == target).ok_or_else(|| {
        format!("shard {target:?} is not in the config: list it under [[shards]] first")
    })?;
    let mut from = config.placement()?;
    let recorded = placement_store::current(shards, timeout)
        .await?
        .ok_or("no shard records a placement yet: start a proxy in front of the cluster once")?;
    from.slots = recorded.table;
    from.version = recorded.version;
    let slots: Vec<u32> = ranges
        .iter()
        .flat_map(|&(a, b)| a..=b.min(SLOT_COUNT - 1))
        .filter(|&slot| from.slots.shard_of_slot(slot) != target)
        .collect::<std::collections::BTreeSet<u32>>()
        .into_iter()
        .collect();
    if slots.is_empty() {
        return Ok(None);
    }
    let mut sources: Vec<(usize, Vec<u32>)> = Vec::new();
    for &slot in &slots {
        let owner = from.slots.shard_of_slot(slot);
        match sources.iter_mut().find(|(s, _)| *s == owner) {
            Some((_, list)) => list.push(slot),
            None => sources.push((owner, vec![slot])),
        }
    }
    sources.sort();
    let mut clients = Vec::new();
    for shard in shards {
        clients.push(control::connect(shard, timeout).await?);
    }
    let moving = moving_tables(config)?;
    let mut present = vec![vec![false; moving.len()]; shards.len()];
    let mut tables = Vec::new();
    for (i, t) in moving.iter().enumerate() {
        let mut reference: Option<Shape> = None;
        let mut on_target: Option<Shape> = None;
        for (s, client) in clients.iter().enumerate() {
            let shape = copy::shape(client, t)
                .await
                .map_err(|e| format!("shard {}: {e}", names[s]))?;
            let Some(shape) = shape else { continue };
            present[s][i] = true;
            if s == target {
                on_target = Some(shape.clone());
            }
            if sources.iter().any(|(src, _)| *src == s) {
                match &reference {
                    None => reference = Some(shape),
                    Some(r) if same_columns(r, &shape) => {}
                    Some(_) => {
                        return Err(format!(
                            "table {} has different columns on the sources (compare {} with \
                             the others); make them alike before moving its rows",
                            t.name, names[s]
                        ))
                    }
                }
            }
        }
        let on_target = on_target.ok_or_else(|| {
            format!(
                "table {} is missing on {} (create it there first)",
                t.name, names[target]
            )
        })?;
        let shape = reference.unwrap_or_else(|| on_target.clone());
        if let Some(missing) = shape.names.iter().find(|c| !on_target.names.contains(c)) {
            return Err(format!(
                "table {} on {} lacks column {missing:?} that its rows have on the sources",
                t.name, names[target]
            ));
        }
        tables.push((t.clone(), shape));
    }
    reference_tables(config, &clients, &names, target).await?;
    let slowest: f64 = home
        .query_one(
            "SELECT coalesce(max(refresh_secs), 0) FROM shardgate.proxies \
             WHERE seen_at > now() - make_interval(secs => 3 * refresh_secs + 2)",
            &[],
        )
        .await
        .map_err(|e| control::describe(&e))?
        .get(0);
    let to = from.slots.moved(&slots::runs(&slots), target);
    Ok(Some(Mover {
        shards: shards.to_vec(),
        names,
        clients,
        home,
        id: id.unwrap_or(0),
        target,
        sources,
        slots,
        tables,
        present,
        from,
        to,
        timeout,
        slowest_look: Duration::from_secs_f64(slowest + 0.1),
    }))
}

fn same_columns(a: &Shape, b: &Shape) -> bool {
    let mut x = a.names.clone();
    let mut y = b.names.clone();
    x.sort();
    y.sort();
    x == y
}

/// A target must hold every reference table before it owns a slot: co-located joins there
/// read its copy. A target without their rows gets them copied from the first shard, with
/// both copies locked against writes meanwhile; one whose copy differs is refused.
async fn reference_tables(
    config: &Config,
    clients: &[Client],
    names: &[String],
    target: usize,
) -> Result<(), String> {
    if target == HOME {
        return Ok(());
    }
    let placement = config.placement()?;
    let mut references: Vec<&String> = placement
        .tables
        .iter()
        .filter(|(_, rule)| matches!(rule, TableRule::Reference))
        .map(|(name, _)| name)
        .collect();
    references.sort();
    let (home, there) = (&clients[HOME], &clients[target]);
    for table in references {
        let quoted = crate::sql::identifier(table);
        if !control::relation_exists(there, table)
            .await
            .map_err(|e| control::describe(&e))?
        {
            return Err(format!(
                "reference table {table} is missing on {} (create it there first)",
                names[target]
            ));
        }
        let count = format!("SELECT count(*) FROM {quoted}");
        let run = async {
            // The target first: a reference write reaches every shard, so locking the first
            // shard's copy first could wait on a writer that waits on the target.
            there
                .batch_execute(&format!(
                    "BEGIN; SET LOCAL lock_timeout = '5s'; LOCK TABLE {quoted} IN EXCLUSIVE MODE"
                ))
                .await?;
            home.batch_execute(&format!(
                "BEGIN; SET LOCAL lock_timeout = '5s'; LOCK TABLE {quoted} IN SHARE MODE"
            ))
            .await?;
            let mine: i64 = home.query_one(&count, &[]).await?.get(0);
            let theirs: i64 = there.query_one(&count, &[]).await?.get(0);
            Ok::<_, tokio_postgres::Error>((mine, theirs))
        };
        let (mine, theirs) = match run.await {
            Ok(c) => c,
            Err(e) => {
                let _ = there.batch_execute("ROLLBACK").await;
                let _ = home.batch_execute("ROLLBACK").await;
                return Err(format!(
                    "reference table {table}: {}",
                    control::describe(&e)
                ));
            }
        };
        let outcome = if mine == theirs {
            Ok(())
        } else if theirs == 0 {
            let shape = copy::shape(
                home,
                &MovingTable {
                    name: table.clone(),
                    key: String::new(),
                    key_type: crate::placement::KeyType::Text,
                    n: 0,
                },
            )
            .await;
            match shape {
                Ok(Some(shape)) => copy::stream(
                    home,
                    there,
                    &format!("SELECT {} FROM {quoted}", shape.columns),
                    (&quoted, &shape.columns),
                    |_| {},
                )
                .await
                .map(|n| {
                    tracing::info!(table = %table, rows = n, shard = %names[target], "copied a reference table to the move's target");
                }),
                Ok(None) => Err(format!("reference table {table} is missing on {}", names[HOME])),
                Err(e) => Err(e),
            }
        } else {
            Err(format!(
                "reference table {table} has {theirs} rows on {} and {mine} on {}; empty it on \
                 {} (it is copied then) or make the copies equal",
                names[target], names[HOME], names[target]
            ))
        };
        let end = if outcome.is_ok() {
            "COMMIT"
        } else {
            "ROLLBACK"
        };
        let ended = there.batch_execute(end).await;
        let _ = home.batch_execute("ROLLBACK").await;
        outcome?;
        ended.map_err(|e| format!("reference table {table}: {}", control::describe(&e)))?;
    }
    Ok(())
}

/// Every sharded table gets the placement fence before anything moves, so that the cut-over
/// has only the version to write.
pub async fn fence(m: &Mover) -> Result<(), String> {
    let names: Vec<String> = m.tables.iter().map(|(t, _)| t.name.clone()).collect();
    placement_store::fence(&m.shards, &m.clients, &names).await
}

/// Starts capturing the moving slots' changes on each source and creates the target's empty
/// staging tables.
pub async fn capture(m: &Mover) -> Result<(), String> {
    for (s, slots) in &m.sources {
        for (t, _) in m.tables.iter().filter(|(t, _)| m.present[*s][t.n]) {
            let sql = format!(
                "SET lock_timeout = '5s'; {}; RESET lock_timeout",
                capture::install(m.id, t, slots)
            );
            m.clients[*s].batch_execute(&sql).await.map_err(|e| {
                format!(
                    "capturing changes to {} on {}: {}",
                    t.name,
                    m.names[*s],
                    control::describe(&e)
                )
            })?;
        }
    }
    let target = &m.clients[m.target];
    for (t, _) in &m.tables {
        let staging = capture::staging(m.id, t);
        target
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {staging}; CREATE TABLE {staging} (LIKE {})",
                crate::sql::identifier(&t.name)
            ))
            .await
            .map_err(|e| {
                format!(
                    "staging {} on {}: {}",
                    t.name,
                    m.names[m.target],
                    control::describe(&e)
                )
            })?;
    }
    Ok(())
}

/// Removes what move `id` created on every shard: capture triggers and functions, logged keys,
/// staging tables. Idempotent; the tables themselves are not touched.
pub async fn remove_leftovers(
    config: &Config,
    shards: &[ShardTarget],
    id: i64,
    timeout: Duration,
) -> Result<(), String> {
    let tables = moving_tables(config)?;
    for shard in shards {
        let client = control::connect(shard, timeout).await?;
        let failed = |e: tokio_postgres::Error| {
            format!(
                "removing move {id}'s objects on {}: {}",
                shard.name,
                control::describe(&e)
            )
        };
        for t in &tables {
            if control::relation_exists(&client, &t.name)
                .await
                .map_err(failed)?
            {
                client
                    .batch_execute(&capture::remove(id, t))
                    .await
                    .map_err(failed)?;
            }
            client
                .batch_execute(&format!("DROP TABLE IF EXISTS {}", capture::staging(id, t)))
                .await
                .map_err(failed)?;
        }
        match client
            .execute("DELETE FROM shardgate.move_log WHERE move_id = $1", &[&id])
            .await
        {
            Ok(_) => {}
            Err(e) if matches!(control::code(&e), Some("42P01" | "3F000")) => {}
            Err(e) => return Err(failed(e)),
        }
    }
    Ok(())
}
