//! Connections from the proxy to shards: transport, login, and cancel requests.
//!
//! A `ShardConnection` is a logged-in, idle (ReadyForQuery 'I') connection together with what the
//! shard told us at login (ParameterStatus values, BackendKeyData). After login the connection is
//! split into halves that the session relay drives; this module never interprets queries.

mod cancel;
pub mod catalog;
mod connect;
pub mod control;
pub mod health;
pub mod key_columns;
pub mod move_journal;
pub mod output_settings;
pub mod own_functions;
pub mod per_shard_constraints;
pub mod placement_store;
pub mod proxy_registry;
pub mod same_database;
mod stream;

pub use cancel::{forward as forward_cancel, send_cancel};
pub use connect::{connect, shard_login_error, BackendError, ShardConnection};
pub use stream::{ShardReader, ShardStream, ShardWriter};
