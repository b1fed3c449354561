//! The admin console: a client that logs in to database `shardgate` as a user with
//! `admin = true` gets PgBouncer-style commands instead of SQL (`console`). It reads who is
//! connected from `clients`, and `PAUSE` holds new transactions at `pause`.

pub mod clients;
pub mod console;
pub mod pause;

/// The database name that reaches the console.
pub const DATABASE: &str = "shardgate";
