//! What the admin console reads and sets: who is connected (`clients`), and the gate where
//! `PAUSE` holds new transactions (`pause`). The console itself, the session a client gets by
//! logging in to database `shardgate` as a user with `admin = true`, is
//! `frontend::admin_console`.

pub mod clients;
pub mod pause;

/// The database name that reaches the console.
pub const DATABASE: &str = "shardgate";
