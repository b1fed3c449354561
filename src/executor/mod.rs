//! Sessions on a cluster of several shards: planning each statement (`router::plan`), running
//! it on one shard or several (`session`), merging scattered results (`merge`, `value`), and the
//! session's transaction over its shards (`txn`). Single-shard clusters never come here: they
//! use the byte relay in `frontend::session`, which is transparent by construction.

pub mod aggregate;
pub mod client_input;
pub mod copy;
pub mod copy_rows;
pub mod cursor;
pub mod enlist;
pub mod extended;
pub mod insert_select;
pub mod key_sequence;
pub mod link;
pub mod merge;
pub mod merge_groups;
pub mod numeric;
pub mod own_types;
pub mod parse_cache;
pub mod pooling;
pub mod procedural;
pub mod session;
pub mod shape_route;
pub mod snapshot_read;
pub mod sql_prepare;
pub mod two_phase;
pub mod txn;
pub mod value;
pub mod write;
