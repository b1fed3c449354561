//! Deadlocks across shards. PostgreSQL finds a cycle of lock waits on one server; two
//! transactions that wait for each other on different shards (A holds a row on s0 and waits on
//! s1, B holds that row on s1 and waits on s0) form a cycle no server sees, and would wait for
//! ever.
//!
//! While one of its sessions holds connections on two shards or more, a watch asks every shard
//! once a second for its lock waits (`pg_blocking_pids`) and names each backend by the session
//! that holds it (`waits`): its own sessions by the cancel registry, another proxy's by the
//! claims that proxy published (`claims`), any other backend as a transaction of its one server.
//! A proxy publishes claims only while a wait reaches beyond its own backends, so a lone proxy
//! writes nothing. A cycle that spans two shards or more (`graph`) is acted on only if a second
//! look, a moment later, finds every one of its waits still there, the same statement still
//! waiting (its `query_start` unchanged): waits seen on different shards at different moments
//! could otherwise join into a cycle that never existed at once. The greatest session in the
//! cycle is then cancelled on the shard where it waits, by its own proxy (every proxy that sees
//! the cycle picks the same one), and its link reports the cancel as PostgreSQL reports a
//! deadlock (`40P01`), which drivers and ORMs retry.

mod claims;
mod graph;
mod waits;

use crate::backend::control;
use crate::client::cancel::CancelRegistry;
use crate::config::ShardTarget;
use crate::placement::HOME;
use crate::protocol::frame::Frame;
use graph::{Party, Wait};
use std::collections::HashMap;
use std::time::Duration;
use tokio_postgres::Client;
use waits::{Claim, Holders};

/// How often the shards are asked, as PostgreSQL's default `deadlock_timeout`.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// How long after a cycle is seen the second look is taken.
const CONFIRM_AFTER: Duration = Duration::from_millis(300);

/// What the cancelled session's client sees instead of the cancel.
pub fn victim_error() -> Frame {
    let err = crate::error::PgError::error("40P01", "deadlock detected")
        .with_detail(
            "This transaction and another waited for each other's locks on different shards; \
             shardgate cancelled this one's statement to end the wait.",
        )
        .with_hint(
            "Retry the transaction. Taking locks in the same order everywhere avoids the wait.",
        );
    let mut buf = bytes::BytesMut::new();
    crate::protocol::build::error(&err, &mut buf);
    Frame {
        tag: b'E',
        bytes: buf.freeze(),
    }
}

/// What the watch keeps between looks.
struct Watch {
    me: String,
    shards: Vec<ShardTarget>,
    registry: CancelRegistry,
    timeout: Duration,
    clients: Vec<Option<Client>>,
    /// The claims this proxy last published (none published: empty).
    published: Vec<Claim>,
}

impl Watch {
    async fn client(&mut self, shard: usize) -> Result<&Client, String> {
        if self.clients[shard].is_none() {
            let target = &self.shards[shard];
            let connected = control::connect(target, self.timeout)
                .await
                .map_err(|e| format!("shard {}: {e}", target.name))?;
            self.clients[shard] = Some(connected);
        }
        self.clients[shard]
            .as_ref()
            .ok_or_else(|| "no connection".to_string())
    }

    /// Replaces this proxy's published claims if they changed.
    async fn publish(&mut self, mine: Vec<Claim>) -> Result<(), String> {
        if mine == self.published {
            return Ok(());
        }
        let (me, shards) = (self.me.clone(), self.shards.clone());
        let home = self.client(HOME).await?;
        let written = claims::publish(home, &me, &shards, &mine).await;
        if written.is_err() {
            self.clients[HOME] = None;
        }
        written?;
        self.published = mine;
        Ok(())
    }

    /// Every shard's lock waits, their parties named.
    async fn look(&mut self) -> Result<Vec<Wait>, String> {
        let own = self.registry.held_by_shard(self.shards.len());
        // A cycle across shards passes through a session on several shards; while none of
        // this proxy's sessions is on several, other proxies' watches see such cycles.
        if !on_several_shards(&own) {
            self.publish(Vec::new()).await?;
            return Ok(Vec::new());
        }
        let mut raw = Vec::new();
        for shard in 0..self.shards.len() {
            let timeout = self.timeout;
            let asking = self.client(shard).await?;
            match waits::read(asking, shard, timeout).await {
                Ok(found) => raw.extend(found),
                Err(e) => {
                    self.clients[shard] = None;
                    return Err(format!("shard {}: {e}", self.shards[shard].name));
                }
            }
        }
        let beyond = waits::reaches_beyond(&own, &raw);
        let mine = if beyond {
            waits::own_claims(&self.me, &own, &raw)
        } else {
            Vec::new()
        };
        self.publish(mine).await?;
        let others = if beyond {
            let (me, shards) = (self.me.clone(), self.shards.clone());
            let home = self.client(HOME).await?;
            claims::others(home, &me, &shards).await?
        } else {
            Vec::new()
        };
        let holders = Holders {
            me: &self.me,
            own: &own,
            claims: &others,
        };
        Ok(holders.name(&raw))
    }

    /// Ends the cycle `found` if its victim is one of this proxy's sessions.
    async fn end(&self, found: &[Wait]) {
        let Some(v) = graph::victim(found) else {
            return;
        };
        let Party::Session { proxy, pid } = &v.waiter else {
            return;
        };
        if *proxy != self.me {
            return;
        }
        let Some(key) = self.registry.deadlock_victim(*pid, v.shard, v.backend) else {
            return;
        };
        tracing::warn!(
            shard = %key.target.name,
            parties = ?found.iter().map(|w| &w.waiter).collect::<Vec<_>>(),
            "deadlock across shards: cancelling the statement of session {pid}"
        );
        metrics::counter!(crate::metrics::DISTRIBUTED_DEADLOCKS).increment(1);
        crate::backend::forward_cancel(vec![key]).await;
    }
}

/// Whether a session holds connections on two shards or more.
fn on_several_shards(own: &[HashMap<i32, i32>]) -> bool {
    let mut seen: HashMap<i32, usize> = HashMap::new();
    own.iter().flat_map(|held| held.values()).any(|&session| {
        let n = seen.entry(session).or_default();
        *n += 1;
        *n > 1
    })
}

/// Looks for deadlocks across shards for as long as the proxy runs, and ends each it finds
/// whose victim is one of its sessions. `me` is this proxy's registry id.
pub async fn watch(
    me: String,
    shards: Vec<ShardTarget>,
    registry: CancelRegistry,
    timeout: Duration,
) {
    let mut w = Watch {
        me,
        clients: shards.iter().map(|_| None).collect(),
        shards,
        registry,
        timeout,
        published: Vec::new(),
    };
    loop {
        tokio::time::sleep(INTERVAL).await;
        let first = match w.look().await {
            Ok(found) => found,
            Err(e) => {
                tracing::debug!("lock waits not read: {e}");
                continue;
            }
        };
        if graph::cycle(&first).is_none() {
            continue;
        }
        tokio::time::sleep(CONFIRM_AFTER).await;
        let Ok(second) = w.look().await else {
            continue;
        };
        let lasting: Vec<Wait> = second.into_iter().filter(|x| first.contains(x)).collect();
        if let Some(found) = graph::cycle(&lasting) {
            w.end(&found).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_on_several_shards_when_two_shards_name_it() {
        let one = vec![HashMap::from([(10, 1), (11, 2)]), HashMap::from([(20, 3)])];
        assert!(!on_several_shards(&one));
        let two = vec![HashMap::from([(10, 1)]), HashMap::from([(20, 1)])];
        assert!(on_several_shards(&two));
    }
}
