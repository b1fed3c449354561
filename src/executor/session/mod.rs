//! The executor session: one client over several shard links, request by request.
//!
//! Unlike the single-shard relay, this session reads whole client messages and answers each
//! request itself: it plans the statement, runs it on one shard or several, merges, and writes
//! one ReadyForQuery whose status is the session's (`TxnState`), not any one shard's.
//!
//! This room is the bottom of the executor: the session's state (`Exec`, with the data features
//! keep in it in `state`), `output` to the client, `on_shards` running text on shards, and
//! `statements` handled apart from routing. It depends on no feature; features add behaviour
//! as methods of `Exec`, and `dispatch` (above them all) carries a Query and its plans out.

use super::link::{Incoming, LinkLost, ShardLink};
use crate::client::tls::ClientWriter;
use crate::error::PgError;
use crate::placement::Placement;
use crate::protocol::{build, Frame};
use crate::router::params::Params;
use crate::router::plan::{AdminCmd, HOME};
use crate::txn::state::TxnState;
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

mod on_shards;
mod output;
mod participants;
mod shown_descriptions;
pub mod state;
mod statements;

const FLUSH_AT: usize = 64 * 1024;

/// DataRows and CopyData larger than this are streamed to the client as they arrive on relay
/// paths, never held whole.
const STREAM_AT: usize = 1 << 20;

/// The most a session holds of an answer before it is complete: a merged result that an
/// Execute with a row limit hands out in parts (it is materialized, since the shards' rows must
/// be merged before the first part), or what DDL and procedural code answer before their key
/// columns are checked (see `executor::key_columns`).
pub const MAX_HELD_BYTES: usize = 64 << 20;

/// Why a session cannot go on.
#[derive(Debug)]
pub enum Stop {
    Shard(String),
    Client,
    /// A per-session memory limit was reached; the session ends with 54000.
    Limit(String),
    /// No connection to a shard could be had (the pool's checkout timeout, a failed login):
    /// the session ends with this error.
    Refused(Box<PgError>),
}

impl From<LinkLost> for Stop {
    fn from(l: LinkLost) -> Stop {
        match l.error {
            Some(e) => Stop::Refused(e),
            None => Stop::Shard(l.shard),
        }
    }
}

pub type R<T> = Result<T, Stop>;

/// Whether a step succeeded or wrote an error for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Done,
    Failed,
}

pub struct Exec<'a> {
    /// Tables as of the last time the session was outside a transaction (see `reload`).
    pub placement: std::sync::Arc<Placement>,
    pub txn_ctx: &'a crate::txn::TxnContext,
    pub links: Vec<ShardLink>,
    client: ClientWriter,
    pub out: BytesMut,
    pub txn: TxnState,
    /// Shards sort text bytewise (C collation), so merged text order is PostgreSQL's.
    pub text_order_c: bool,
    /// Keep output in `out` (a result being materialized for a row-limited Execute).
    pub hold_output: bool,
    /// Prepared statements deallocated on the shards since the extended-protocol state last
    /// looked (None: all of them).
    pub deallocated: Vec<Option<String>>,
    /// Column order of sharded tables, read from the first shard's catalog, for INSERTs that
    /// give no column list.
    columns: std::collections::HashMap<String, Vec<String>>,
    /// Routes learned per shape for simple-protocol texts (see `shape_route`).
    pub(in crate::executor) shape_routes: super::shape_route::ShapeRoutes,
    /// The shape of the simple query being dispatched; kept so that each query reuses its
    /// allocations (see `simple_shape`).
    pub(in crate::executor) shape: crate::sql::Shape,
    pub routes: crate::router::route_metrics::RouteMetrics,
    /// `SET shardgate.consistency`.
    pub consistency: crate::txn::snapshot::Consistency,
    /// The shards' `default_transaction_isolation`, once read (see `snapshot_level`); None
    /// after anything that may have changed it.
    pub default_isolation: Option<crate::txn::state::Isolation>,
    /// The snapshot timestamp of the last cut taken (`SHOW shardgate.snapshot_ts`).
    pub snapshot_ts: Option<u64>,
    /// A cut sent ahead of a scattered read, whose answers the scatter reads first.
    pub pending_cut: Option<state::PendingCut>,
    /// The shards are running a text the proxy rewrote (a scatter's pushed-down LIMIT, one
    /// shard's rows of an INSERT): positions in their errors point into that text, not the
    /// client's, and are dropped (see `shard_error`).
    pub rewritten: bool,
    /// The result columns the client was shown for the prepared statement a scattered read
    /// runs: the shards' must still match them (see `extended::fixed_result`).
    pub fixed_columns: Option<Frame>,
    /// Characters of the client's Query before the statement running now (one of several in
    /// a simple Query): shards see the statement alone, so their error positions move by this.
    pub ahead: u64,
    /// Whether the proxy's own row answers start with a RowDescription (not for an
    /// extended-protocol Execute, whose description was the Describe's).
    pub describe_rows: bool,
    /// Catalog facts about the shards (see `backend::catalog`).
    pub catalog: Option<&'a crate::backend::catalog::Catalog>,
    /// The proxy's running placement, told of functions this session's DDL defines (see
    /// `own_functions`).
    pub live: Option<&'a crate::reload::Live>,
    /// Descriptions translated for the client, by shard (see `for_client`).
    shown_descriptions: shown_descriptions::ShownDescriptions,
    /// Shards that parsed or described something for the extended protocol outside the
    /// session's transaction, not yet followed by Sync: they are inside an implicit
    /// transaction of their own, which may hold a snapshot (see `settle`).
    pub unsynced: std::collections::BTreeSet<usize>,
    /// Statements prepared with SQL PREPARE, by name (see `sql_prepare`).
    pub sql_statements: std::collections::HashMap<String, state::SqlPrepared>,
    /// A COPY FROM STDIN took the client's data since the extended batch began (see
    /// `Extended::run_batch`).
    pub copied_in: bool,
    /// The client has sent a statement that calls the transaction's clock: its transactions
    /// give every shard one time (see `transaction_clock`).
    pub clock_seen: bool,
    /// Result formats of the extended-protocol Execute running now (empty: text, or the
    /// simple protocol).
    pub result_formats: Vec<i16>,
    /// Values and declared types bound by the extended-protocol Execute running now, for
    /// statements the proxy sends on with them (a DECLARE).
    pub bound: Option<(Params, Vec<u32>)>,
    /// Cursors this session declared, and where (see `cursor`).
    pub cursors: std::collections::HashMap<String, state::CursorAt>,
    /// The protocol-level portal a simple FETCH, MOVE or CLOSE being run names, and the
    /// shard it is bound on (None: the proxy carries it out). See `resolve_cursor`.
    pub named_portal: Option<(String, Option<usize>)>,
    /// Key values drawn from sequences, shared by the proxy's sessions (see `key_sequence`).
    pub key_blocks: Option<&'a super::key_blocks::KeyBlocks>,
    /// The client's input, lent by the client loop while a message runs (see `client_input`).
    pub input: Option<super::client_input::ClientInput>,
    /// Where `pg_cancel_backend` and `pg_terminate_backend` of the proxy's pids go (see
    /// `signal`); None answers them as of no session.
    pub signals: Option<crate::client::cancel::Signaller<'a>>,
    /// Pooling: settings, statement names, pinning (see `pooling`).
    pub pool: state::SessionPool,
    /// The last Query message sent to one shard, its buffer kept for the next (see `single`).
    query_out: BytesMut,
    /// What the INSERT being run must do on every shard before it writes, for values it gives
    /// a sequence-filled column (see `given_values`); taken by the write.
    pub given: Option<super::given_lookup::GivenValues>,
}

/// The longest statement text analysed on several shards. Its syntax tree takes about a hundred
/// times the text's size and is built on the session's thread, so without a limit one 20 MB
/// IN-list would take gigabytes and stall every other client on that thread.
pub const MAX_ANALYSED_BYTES: usize = 2 << 20;

/// The refusal of a statement over `MAX_ANALYSED_BYTES`.
pub fn too_large_to_analyse(sql: &str) -> Option<PgError> {
    (sql.len() > MAX_ANALYSED_BYTES).then(|| {
        PgError::error(
            crate::error::sqlstate::PROGRAM_LIMIT_EXCEEDED,
            format!(
                "statement of {} bytes is too long to route across shards (the limit is {} bytes)",
                sql.len(),
                MAX_ANALYSED_BYTES
            ),
        )
        .with_hint("Send long lists as a bound array parameter (= ANY($1)) or split the statement.")
    })
}

pub use super::parse_cache::Parsed;
impl<'a> Exec<'a> {
    pub fn new(
        placement: std::sync::Arc<Placement>,
        txn_ctx: &'a crate::txn::TxnContext,
        links: Vec<ShardLink>,
        client: ClientWriter,
        text_order_c: bool,
        pool: state::SessionPool,
    ) -> Exec<'a> {
        let routes = crate::router::route_metrics::RouteMetrics::new(&placement.shard_names);
        Exec {
            placement,
            txn_ctx,
            links,
            client,
            out: BytesMut::with_capacity(FLUSH_AT),
            txn: TxnState::Idle,
            text_order_c,
            hold_output: false,
            deallocated: Vec::new(),
            columns: std::collections::HashMap::new(),
            shape_routes: Default::default(),
            shape: Default::default(),
            routes,
            consistency: txn_ctx.default_consistency,
            default_isolation: None,
            snapshot_ts: None,
            pending_cut: None,
            rewritten: false,
            fixed_columns: None,
            ahead: 0,
            describe_rows: true,
            catalog: None,
            live: None,
            shown_descriptions: Default::default(),
            unsynced: std::collections::BTreeSet::new(),
            sql_statements: std::collections::HashMap::new(),
            input: None,
            key_blocks: None,
            signals: None,
            cursors: std::collections::HashMap::new(),
            named_portal: None,
            copied_in: false,
            clock_seen: false,
            result_formats: Vec::new(),
            bound: None,
            pool,
            query_out: BytesMut::new(),
            given: None,
        }
    }

    /// A session statement ran (SET, RESET, DISCARD ...): it may have changed
    /// default_transaction_isolation, now or, inside a transaction, at its rollback.
    pub fn session_setting_ran(&mut self) {
        self.default_isolation = None;
        if let TxnState::Open(t) = &mut self.txn {
            t.changed_session = true;
        }
    }

    /// Ends the implicit transaction a Parse or Describe left open on `shard` (see
    /// `unsynced`) before a Query opens a transaction there: BEGIN would otherwise adopt it,
    /// snapshot and all, and a REPEATABLE READ opening would fail with 25001.
    pub async fn settle(&mut self, shard: usize) -> R<()> {
        if self.unsynced.remove(&shard) {
            self.links[shard].send(b"S\0\0\0\x04").await?;
            if let Some(e) = self.quiet_until_ready(shard).await? {
                tracing::debug!(shard, "a Sync ending an outside Parse answered {:?}", e.tag);
            }
        }
        Ok(())
    }
}
