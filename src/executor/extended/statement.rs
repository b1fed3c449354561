//! A statement the client prepared with Parse, as the session keeps it: the message to replay on
//! a shard that does not hold it, its text, declared types and syntax tree, and which server
//! connections hold it now.
//!
//! Invariant: `on` names only connections the Parse was sent to (under its name on the
//! shards), and for the unnamed statement `parsed_at` says which of the connection's unnamed
//! parses it was, since any later Parse there replaces it.

use super::shard_set::ShardMap;
use super::{parse_ast_for, Ast};
use crate::error::PgError;
use crate::executor::session::Exec;
use crate::protocol::message::{ClientMessage, Parse};
use crate::protocol::Frame;
use crate::router::plan::HOME;
use bytes::Bytes;

pub(super) struct Statement {
    /// The client's Parse message, replayed on shards that have not prepared it.
    pub(super) parse: Bytes,
    pub(super) sql: String,
    /// Parameter types the client declared in its Parse.
    pub(super) param_types: Vec<u32>,
    /// The types a shard inferred for every parameter, once the client described the
    /// statement (its ParameterDescription): what the values it then binds in binary are.
    pub(super) described_types: Vec<u32>,
    pub(super) ast: Option<Ast>,
    /// The server connections it was prepared on (see `ShardLink::conn_id`, unique in the
    /// process): with pooling, a shard's connection changes between transactions, and a
    /// session may meet a connection again that still holds its statement.
    pub(super) on: foldhash::HashSet<u64>,
    /// For the unnamed statement: each shard's `ShardLink::unnamed_parses` once it was parsed
    /// there. The proxy's own re-binds use the unnamed statement too and replace it.
    pub(super) parsed_at: ShardMap<u64>,
    pub(super) unnamed: bool,
    /// The result columns (RowDescription or NoData) the client was shown when it described
    /// the statement: PostgreSQL keeps them fixed (see `fixed_result`).
    pub(super) columns: Option<Frame>,
}

impl Statement {
    pub(super) fn new(exec: &Exec<'_>, m: &ClientMessage, p: &Parse) -> Statement {
        Statement {
            // A copy: the message is a slice of the session's read buffer, which a statement
            // kept for the session's life would otherwise hold (and keep from being reused).
            parse: Bytes::copy_from_slice(&m.frame.bytes),
            sql: p.sql.to_string(),
            param_types: p.param_types.clone(),
            described_types: Vec::new(),
            ast: parse_ast_for(exec, &p.sql),
            on: Default::default(),
            parsed_at: Default::default(),
            unnamed: p.name.is_empty(),
            columns: None,
        }
    }

    /// The same Parse of the unnamed statement again: a new statement with this one's text,
    /// types and tree, held nowhere yet and its columns not shown.
    pub(super) fn renew(&mut self, exec: &Exec<'_>) {
        self.on.clear();
        self.parsed_at.clear();
        self.columns = None;
        self.described_types.clear();
        if self.tree_has_columns() {
            self.ast = parse_ast_for(exec, &self.sql);
        }
    }

    /// A statement whose Parse of `EXECUTE name` had been inlined, `name` having changed
    /// since: it takes back the client's text (`client`), which a Bind resolves each time it
    /// runs (see `portal::executed`), as PostgreSQL does. No shard holds it under that text.
    pub(super) fn executes_again(&mut self, exec: &Exec<'_>, name: &str, client: String) {
        let mut parse = bytes::BytesMut::new();
        Parse {
            name: name.to_string(),
            sql: client.as_str().into(),
            param_types: self.param_types.clone(),
        }
        .encode(&mut parse);
        self.parse = parse.freeze();
        self.ast = parse_ast_for(exec, &client);
        self.sql = client;
        self.on.clear();
        self.parsed_at.clear();
    }

    /// Whether its tree carries the table's columns as the session knew them when it was
    /// built (an INSERT's), so that the same text parsed again may need a new one.
    pub(super) fn tree_has_columns(&self) -> bool {
        self.ast
            .as_ref()
            .is_some_and(|a| matches!(**a, sqlparser::ast::Statement::Insert(_)))
    }

    /// Whether shard `s` holds this statement now (a Bind there needs no Parse first). A
    /// link holding no connection holds nothing: callers about to send check one out first
    /// (`ShardLink::ensure`), so that a statement it already holds is not parsed again.
    pub(super) fn held_on(&self, exec: &Exec<'_>, s: usize) -> bool {
        self.held_after(exec, s, 0)
    }

    /// Whether shard `s` will hold this statement once `pending` more messages replacing the
    /// unnamed statement, written but not yet sent, reach it (see `unnamed_parses`).
    pub(super) fn held_after(&self, exec: &Exec<'_>, s: usize, pending: u64) -> bool {
        let conn = exec.links[s].conn_id();
        conn != 0
            && self.on.contains(&conn)
            && (!self.unnamed
                || self.parsed_at.get(&s) == Some(&(exec.links[s].unnamed_parses + pending)))
    }

    /// After the client's Parse of it was sent to shard `s`.
    pub(super) fn sent_to(&mut self, exec: &Exec<'_>, s: usize) {
        self.on.insert(exec.links[s].conn_id());
        self.parsed_at.insert(s, exec.links[s].unnamed_parses);
    }

    /// Shards holding it now.
    pub(super) fn held_shards<'s>(
        &'s self,
        exec: &'s Exec<'_>,
    ) -> impl Iterator<Item = usize> + 's {
        (0..exec.links.len()).filter(|&s| self.held_on(exec, s))
    }

    /// Keeps the parameter types of a ParameterDescription (whole frame) the client was
    /// shown for this statement.
    pub(super) fn keep_described_types(&mut self, description: &Frame) {
        if let Some(types) = crate::protocol::inspect::type_oid_positions(&description.bytes) {
            self.described_types = types.into_iter().map(|(_, oid)| oid).collect();
        }
    }

    /// The type of each parameter as far as the session knows it: as declared, else as a
    /// shard described it, else 0 (left to the server).
    pub(super) fn known_types(&self) -> impl Iterator<Item = u32> + '_ {
        let n = self.param_types.len().max(self.described_types.len());
        (0..n).map(|i| match self.param_types.get(i).copied().unwrap_or(0) {
            0 => self.described_types.get(i).copied().unwrap_or(0),
            declared => declared,
        })
    }

    /// Whether the client declared a user-defined parameter type (whose OID differs per shard).
    pub(super) fn declares_user_types(&self) -> bool {
        self.param_types
            .iter()
            .any(|o| crate::backend::catalog::type_oids::is_user(*o))
    }

    /// The client's Parse as `shard` must receive it: with its declared types translated into
    /// that shard's OIDs (the client's are the first shard's).
    pub(super) async fn parse_for(&self, exec: &Exec<'_>, shard: usize) -> Result<Bytes, PgError> {
        if shard == HOME || !self.declares_user_types() {
            return Ok(self.parse.clone());
        }
        let name = crate::protocol::message::Parse::decode(&self.parse.slice(5..))
            .map(|p| p.name)
            .unwrap_or_default();
        let mut b = bytes::BytesMut::new();
        crate::protocol::message::Parse {
            name,
            sql: self.sql.as_str().into(),
            param_types: exec.types_for(shard, &self.param_types).await?,
        }
        .encode(&mut b);
        Ok(b.freeze())
    }
}
