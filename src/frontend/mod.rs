//! The client side of the proxy: one task per client connection.
//!
//! `handshake` takes a fresh socket through SSL/GSS negotiation, authentication and the shard
//! login; on one shard, `session` (session pooling) or `pooled_relay` (transaction pooling) then
//! relays messages between client and shard until either side ends, and on several the
//! executor takes over; `cancel` maps the keys we hand to clients onto the shards' own keys.

pub mod admission;
pub mod cancel;
mod handshake;
mod pooled_login;
mod pooled_relay;
mod relay_state;
pub mod session;
pub mod startup_options;
pub mod tls;

pub use handshake::{handle_client, refuse_client, send_fatal, shard_login_error};
pub use session::SessionEnd;
