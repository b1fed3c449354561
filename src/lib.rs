//! shardgate: a PostgreSQL wire-protocol proxy in front of several ordinary PostgreSQL servers.
//!
//! Data flow: client socket → `frontend` (handshake, relay) → `router` (which shard, using
//! `sql` analysis) → `backend` (shard connections) → shard. `protocol` is the wire codec,
//! `auth` the client authentication, `config` the TOML file (`reload` applies a changed one),
//! `metrics` the Prometheus names, `localpg` the throwaway PostgreSQL clusters used by `demo`
//! and the tests. The crate is a library so tests and benchmarks run the same code as the
//! binary.

pub mod admin;
pub mod auth;
pub mod backend;
pub mod client;
pub mod config;
pub mod demo;
pub mod error;
pub mod executor;
pub mod failpoint;
pub mod frontend;
pub mod fuzz;
pub mod http;
mod io_enum;
mod kept_wait;
pub mod localpg;
pub mod logsafe;
pub mod metrics;
pub mod moves;
pub mod placement;
pub mod pool;
pub mod protocol;
pub mod reload;
pub mod router;
pub mod server;
pub mod shutdown;
pub mod signals;
pub mod slot_commands;
pub mod sql;
pub mod start_progress;
pub mod txn;
