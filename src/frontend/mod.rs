//! The client side of the proxy: one task per client connection.
//!
//! `handshake` takes a fresh socket through SSL/GSS negotiation, authentication and the shard
//! login; on one shard, `session` (session pooling) or `pooled_relay` (transaction pooling) then
//! relays messages between client and shard until either side ends, and on several
//! `client_loop` reads the client's messages and hands them to the executor's session. A login
//! to database `shardgate` gets `admin_console` instead. `context` is what all of them share.

pub mod admin_console;
pub mod admission;
pub mod client_loop;
mod context;
mod handshake;
mod pooled_login;
mod pooled_relay;
mod relay_state;
pub mod session;
pub mod startup_options;

pub use context::ProxyContext;
pub use handshake::{handle_client, refuse_client};
pub use session::SessionEnd;
