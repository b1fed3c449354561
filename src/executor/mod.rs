//! Sessions on a cluster of several shards: planning each statement (`router::plan`), running
//! it on one shard or several, merging scattered results (`merge`, `value`), and the session's
//! transaction carried out on its own links (`enlist`, `dispatch::transaction`; the protocols
//! themselves are in `crate::txn`). Single-shard clusters never come
//! here: they use the byte relay in `frontend`, which is transparent by construction.
//!
//! Three levels, none importing one above it: `session` (the state every part works on, and
//! its I/O), the features that add behaviour to it as methods, and `dispatch` on top.

pub mod binary_oids;
pub mod client_input;
mod copies_source;
pub mod copy;
pub mod copy_given;
pub mod copy_rows;
pub mod cursor;
mod cursor_order;
pub mod dispatch;
pub mod enlist;
pub mod extended;
pub mod given_lookup;
pub mod given_update;
pub mod given_values;
mod inline_nextval;
pub mod insert_select;
pub mod key_blocks;
pub mod key_columns;
pub mod key_sequence;
pub mod link;
pub mod merge;
pub mod numeric;
pub mod outer_columns;
pub mod own_functions;
pub mod own_types;
pub mod parse_cache;
pub mod pooling;
pub mod procedural;
pub mod rebind;
pub mod sequence_moves;
mod sequence_reset;
mod sequence_restart;
pub mod session;
pub mod shape_route;
pub mod signal;
pub mod snapshot_read;
pub mod sql_prepare;
pub mod subqueries_first;
mod subquery_answer;
pub mod transaction_clock;
pub mod unmatched_first;
pub mod upsert_arbiters;
pub mod value;
pub mod write;
pub mod write_subqueries;
