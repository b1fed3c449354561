//! The client side of the proxy: one task per client connection.
//!
//! `handshake` takes a fresh socket through SSL/GSS negotiation, authentication and the shard
//! login; `session` then relays messages between client and shard until either side ends;
//! `cancel` maps the keys we hand to clients onto the shards' own keys.

pub mod admission;
pub mod cancel;
mod handshake;
mod pooled_login;
mod relay_state;
pub mod session;
pub mod startup_options;
pub mod tls;

pub use handshake::{handle_client, refuse_client, send_fatal, shard_login_error};
pub use session::SessionEnd;
