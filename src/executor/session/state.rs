//! What a session keeps between statements for the features that run on top of it: where
//! its cursors live, its SQL-prepared statements, a snapshot cut sent ahead of a read, and its
//! side of pooling. Only the data is here; the behaviour is in `cursor`, `sql_prepare`,
//! `snapshot_read` and `pooling`, which the session's state must not depend on.

use crate::config::PoolMode;
use crate::executor::value::SortValue;
use crate::pool::names::StatementNames;
use crate::pool::settings::Settings;
use crate::protocol::Frame;
use sqlparser::ast::Statement;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub enum CursorAt {
    One(usize),
    Several(Several),
}

#[derive(Debug, Clone)]
pub struct Several {
    pub(in crate::executor) shards: Vec<usize>,
    /// Index in `shards` of the shard being read; `shards.len()` when all are exhausted.
    pub(in crate::executor) current: usize,
    /// The columns the client sees (hidden sort columns left out).
    pub(in crate::executor) description: Option<Frame>,
    /// Under ORDER BY, the shards' cursors merged in its order (see `cursor_order`).
    pub(in crate::executor) order: Option<Box<OrderedCursor>>,
}

/// A cursor over several shards read in its ORDER BY: the rows each shard's cursor has
/// handed out and the merge has not yet, with their sort values.
#[derive(Debug, Clone)]
pub struct OrderedCursor {
    pub(in crate::executor) merge: crate::router::plan::MergeSpec,
    /// The shards' columns, hidden sort columns included.
    pub(in crate::executor) columns: Frame,
    /// Per shard, in `Several::shards`' order: rows read and not yet handed out.
    pub(in crate::executor) buffered: Vec<std::collections::VecDeque<(Frame, Vec<SortValue>)>>,
    /// Per shard: its cursor has no rows left.
    pub(in crate::executor) ended: Vec<bool>,
    /// The result formats the buffered rows were read in.
    pub(in crate::executor) formats: Vec<i16>,
    /// Rows of the merge still to be skipped (OFFSET), and still to be handed out (LIMIT;
    /// None: no limit).
    pub(in crate::executor) skip: u64,
    pub(in crate::executor) left: Option<u64>,
}

pub enum CursorPortal {
    /// Held by this shard, which describes it.
    On(usize),
    /// Over several shards, described by the proxy.
    Described(Frame),
}

/// A statement prepared with SQL PREPARE.
#[derive(Debug, Clone)]
pub struct SqlPrepared {
    /// The declared parameter types, as written.
    pub(in crate::executor) types: Vec<String>,
    pub(in crate::executor) body: Arc<Statement>,
}

/// A cut whose answers have not been read yet, and the gate it holds until they are.
pub struct PendingCut {
    pub(in crate::executor) grant: Option<crate::txn::snapshot::client::Grant>,
    pub(in crate::executor) shards: Vec<usize>,
    /// The isolation level every shard must report (see `take_cut`).
    pub(in crate::executor) expect: Option<&'static str>,
}

/// A session's side of pooling.
#[derive(Debug)]
pub struct SessionPool {
    pub mode: PoolMode,
    pub settings: Settings,
    pub names: StatementNames,
    /// Why the session keeps its connections to the end, once something tied it to them.
    pub pinned: Option<&'static str>,
    /// A ROLLBACK TO SAVEPOINT undid some of the open transaction's SETs, and which ones is
    /// not tracked: at commit the session is pinned rather than replay a guess.
    pub(in crate::executor) uncertain: bool,
    /// The last text found not to pin (see `Exec::pin_for`): drivers parse the same text
    /// query after query.
    pub(in crate::executor) pins_nothing: String,
    /// Statements whose Parse of `EXECUTE name(...)` was inlined (see `Exec::inline_execute`),
    /// by their name on the shards: the client's text, and the text it became.
    pub(in crate::executor) inlined: foldhash::HashMap<String, (String, String)>,
}

impl SessionPool {
    pub fn new(mode: PoolMode, settings: Settings) -> SessionPool {
        SessionPool {
            mode,
            settings,
            names: StatementNames::default(),
            pinned: None,
            uncertain: false,
            pins_nothing: String::new(),
            inlined: Default::default(),
        }
    }

    /// Transaction mode: statement names are the session's own on the shards.
    pub fn renames(&self) -> bool {
        self.mode == PoolMode::Transaction
    }

    /// Connections are shared between transactions (transaction mode, not pinned).
    pub fn shares(&self) -> bool {
        self.mode == PoolMode::Transaction && self.pinned.is_none()
    }
}
