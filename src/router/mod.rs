//! Routing: where each statement of a several-shard cluster goes and how its answers combine.
//!
//! `plan` decides, for one statement and its bound values: one shard, a scatter and its merge,
//! a write of several shards, every shard, or a refusal with a reason. `keys` and `params` read
//! shard-key values out of statements, `subquery`, `aggregate`, `computed` and `variance` handle
//! what a scatter must rewrite, `cursor`, `copy` and `utility` the statements with rules of their
//! own. Nothing here sends anything; the executor carries plans out. (With one shard there is nothing to route:
//! the relay passes statements through unexamined.)

pub mod aggregate;
pub mod computed;
pub mod copy;
pub mod cursor;
pub mod gathered;
pub mod keys;
pub mod learned_route;
pub mod params;
pub mod plan;
pub mod route_metrics;
pub mod subquery;
pub mod uncorrelated;
pub mod utility;
pub mod variance;
