//! Logging a client in to a cluster of several shards, through the pools.
//!
//! In session mode every shard's connection is checked out now, logged in with the client's
//! startup parameters, and kept to the end. In transaction mode only the first shard's is
//! taken, given the client's settings so that the greeting reports them as PostgreSQL would,
//! and returned after the first request like any other; the pid in BackendKeyData is then the
//! proxy's own, since no server connection stays the client's.

use crate::client::cancel::{Owner, Registration};
use crate::config::PoolMode;
use crate::error::PgError;
use crate::executor::link::ShardLink;
use crate::frontend::ProxyContext;
use crate::pool::settings::Settings;
use crate::protocol::build;
use bytes::BytesMut;

/// A logged-in several-shard session, ready for its client loop.
pub struct Login {
    pub links: Vec<ShardLink>,
    pub registration: Registration,
    /// AuthenticationOk through ReadyForQuery.
    pub greeting: BytesMut,
}

/// `forwarded`: the client's startup parameters for the shards (`options` already split into
/// its `-c` settings in `settings`).
pub async fn log_in(
    ctx: &ProxyContext,
    forwarded: &[(String, String)],
    settings: &Settings,
    owner: Owner,
) -> Result<Login, PgError> {
    // The client loop sets it again with the placement its session starts with.
    let placement_version = ctx.live.placement().version;
    let mut links: Vec<ShardLink> = ctx
        .pools
        .shards
        .iter()
        .enumerate()
        .map(|(i, pool)| {
            let mut link = ShardLink::new(i, pool.clone())
                .with_response_timeout(ctx.live.timeouts().shard_response)
                .with_health(ctx.health.watch(i));
            link.set_placement_version(placement_version);
            link
        })
        .collect();
    let mut parameters: Vec<(String, String)>;
    let keys: Vec<Option<(i32, i32)>>;
    match ctx.pools.mode {
        PoolMode::Session => {
            let checkouts = ctx
                .pools
                .shards
                .iter()
                .map(|p| p.checkout(forwarded, placement_version));
            let conns = futures_util::future::join_all(checkouts).await;
            let mut held = Vec::with_capacity(conns.len());
            for c in conns {
                held.push(c?);
            }
            parameters = held[0].parameters.clone();
            keys = held.iter().map(|c| Some(c.key)).collect();
            links = links
                .into_iter()
                .zip(held)
                .map(|(l, c)| l.with_conn(c))
                .collect();
        }
        PoolMode::Transaction => {
            for l in &mut links {
                l.set_settings(settings.replay(), settings.fingerprint());
            }
            let home = &mut links[0];
            home.greet().await.map_err(|lost| {
                lost.error.map(|e| *e).unwrap_or_else(|| {
                    PgError::fatal(
                        crate::error::sqlstate::CONNECTION_FAILURE,
                        format!("lost connection to shard {}", lost.shard),
                    )
                })
            })?;
            parameters = home.login_parameters().to_vec();
            for f in &home.replay_status {
                if let Some((name, value)) = parameter_status(f.body()) {
                    match parameters.iter_mut().find(|(n, _)| *n == name) {
                        Some(p) => p.1 = value,
                        None => parameters.push((name, value)),
                    }
                }
            }
            keys = vec![None; links.len()];
        }
    }
    let registration = ctx.cancel.register_slots(ctx.shards.clone(), keys, owner);
    let links = links
        .into_iter()
        .enumerate()
        .map(|(i, l)| l.with_cancel(registration.slot(i), registration.key.pid))
        .collect();
    let mut greeting = BytesMut::with_capacity(512);
    build::auth_ok(&mut greeting);
    // Every shard runs the same server; the first one's parameters speak for the cluster.
    for (name, value) in &parameters {
        build::parameter_status(name, value, &mut greeting);
    }
    build::backend_key_data(registration.key.pid, registration.key.secret, &mut greeting);
    build::ready_for_query(b'I', &mut greeting);
    Ok(Login {
        links,
        registration,
        greeting,
    })
}

/// A ParameterStatus body: name and value.
fn parameter_status(body: &[u8]) -> Option<(String, String)> {
    let mut parts = body.split(|b| *b == 0);
    let name = std::str::from_utf8(parts.next()?).ok()?;
    let value = std::str::from_utf8(parts.next()?).ok()?;
    Some((name.to_string(), value.to_string()))
}

/// The client's startup parameters as settings a pooled connection can be given: each
/// forwarded parameter, then each `-c name=value` of `options`.
pub fn startup_settings(
    forwarded: &[(String, String)],
    options: &super::startup_options::StartupOptions,
) -> Vec<(String, String)> {
    forwarded
        .iter()
        .filter(|(k, _)| k != "options")
        .cloned()
        .chain(options.forwarded_settings())
        .collect()
}
