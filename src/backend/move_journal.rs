//! The move journal: one row of `shardgate.moves` on the first shard per slot move, which the
//! mover writes and every running proxy reads at each placement look (see `moves::follow`).
//!
//! A move is `copying` (rows are copied and caught up; proxies go on as before), then
//! `cutover` (proxies hold new transactions until `pause_until`, each acknowledging in its
//! `shardgate.proxies` row once it holds and has no transaction open), then `done` or
//! `aborted`. The cut-over's distributed transaction carries the gid in `cutover_gid`, so a
//! proxy whose hold runs out can settle it (fence, then resolve) instead of guessing.
//!
//! Invariant: at most one move is unfinished; a second mover is refused by `begin`.

use super::control;
use std::time::Duration;

/// Created with the placement table (`backend::placement_store`) on every shard.
pub const CREATE: &str = "CREATE TABLE IF NOT EXISTS shardgate.moves (
    id bigserial PRIMARY KEY,
    slots text NOT NULL,
    target text NOT NULL,
    state text NOT NULL CHECK (state IN ('copying', 'cutover', 'done', 'aborted')),
    cutover_gid text,
    pause_until timestamptz,
    rows_copied bigint NOT NULL DEFAULT 0,
    rows_total bigint NOT NULL DEFAULT 0,
    lag bigint NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE shardgate.proxies ADD COLUMN IF NOT EXISTS paused_for text";

/// Where a move stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Copying,
    Cutover,
    Done,
    Aborted,
}

impl State {
    fn parse(s: &str) -> State {
        match s {
            "cutover" => State::Cutover,
            "done" => State::Done,
            "aborted" => State::Aborted,
            _ => State::Copying,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Copying => "copying",
            State::Cutover => "cutover",
            State::Done => "done",
            State::Aborted => "aborted",
        }
    }
}

/// An unfinished move, as a proxy or the mover reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    pub id: i64,
    pub slots: String,
    pub target: String,
    pub state: State,
    pub cutover_gid: Option<String>,
    /// During a cut-over: whether its hold has not yet run out (by the first shard's clock).
    pub in_time: bool,
    pub rows_copied: i64,
    pub rows_total: i64,
    pub lag: i64,
}

/// What one look at the first shard finds: the newest placement version and the unfinished
/// move, in one round trip.
#[derive(Debug, Clone, PartialEq)]
pub struct Look {
    pub newest: i64,
    pub active: Option<Move>,
}

const COLUMNS: &str =
    "m.id, m.slots, m.target, m.state, m.cutover_gid, coalesce(m.pause_until > now(), false), \
     m.rows_copied, m.rows_total, m.lag";

fn from_row(row: &tokio_postgres::Row, at: usize) -> Option<Move> {
    let id: Option<i64> = row.get(at);
    Some(Move {
        id: id?,
        slots: row.get(at + 1),
        target: row.get(at + 2),
        state: State::parse(row.get(at + 3)),
        cutover_gid: row.get(at + 4),
        in_time: row.get(at + 5),
        rows_copied: row.get(at + 6),
        rows_total: row.get(at + 7),
        lag: row.get(at + 8),
    })
}

/// The proxies' look, every refresh interval (and faster while a cut-over holds).
pub async fn look(client: &tokio_postgres::Client) -> Result<Look, tokio_postgres::Error> {
    let row = client
        .query_one(
            &format!(
                "SELECT coalesce((SELECT max(version) FROM shardgate.placement), 0), {COLUMNS} \
                 FROM (SELECT 1) AS one LEFT JOIN LATERAL (SELECT * FROM shardgate.moves \
                 WHERE state IN ('copying', 'cutover') ORDER BY id DESC LIMIT 1) AS m ON true"
            ),
            &[],
        )
        .await?;
    Ok(Look {
        newest: row.get(0),
        active: from_row(&row, 1),
    })
}

/// The unfinished move, if any.
pub async fn unfinished(client: &tokio_postgres::Client) -> Result<Option<Move>, String> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM shardgate.moves AS m \
                 WHERE state IN ('copying', 'cutover') ORDER BY id DESC LIMIT 1"
            ),
            &[],
        )
        .await
        .map_err(|e| control::describe(&e))?;
    Ok(rows.first().and_then(|r| from_row(r, 0)))
}

/// Starts a move, refused while another is unfinished. The check and the insert hold the
/// table's lock, so two movers starting together cannot both pass.
pub async fn begin(
    client: &tokio_postgres::Client,
    slots: &str,
    target: &str,
) -> Result<i64, String> {
    let run = async {
        client
            .batch_execute("BEGIN; LOCK TABLE shardgate.moves IN EXCLUSIVE MODE")
            .await?;
        let open = client
            .query(
                "SELECT id, slots, target, state FROM shardgate.moves \
                 WHERE state IN ('copying', 'cutover')",
                &[],
            )
            .await?;
        if let Some(r) = open.first() {
            client.batch_execute("ROLLBACK").await?;
            let (id, s, t, state): (i64, String, String, String) =
                (r.get(0), r.get(1), r.get(2), r.get(3));
            return Ok(Err(format!(
                "move {id} (slots {s} to {t}) is unfinished ({state}); finish it with \
                 `shardgate move-slots --resume` or undo it with `--abort` first"
            )));
        }
        let id: i64 = client
            .query_one(
                "INSERT INTO shardgate.moves (slots, target, state) VALUES ($1, $2, 'copying') \
                 RETURNING id",
                &[&slots, &target],
            )
            .await?
            .get(0);
        client.batch_execute("COMMIT").await?;
        Ok(Ok(id))
    };
    run.await
        .map_err(|e: tokio_postgres::Error| control::describe(&e))?
}

/// Progress figures, for the CLI's readers and the proxies' metrics.
pub async fn progress(
    client: &tokio_postgres::Client,
    id: i64,
    (copied, total, lag): (i64, i64, i64),
) -> Result<(), String> {
    client
        .execute(
            "UPDATE shardgate.moves SET rows_copied = $2, rows_total = $3, lag = $4, \
             updated_at = now() WHERE id = $1",
            &[&id, &copied, &total, &lag],
        )
        .await
        .map(|_| ())
        .map_err(|e| control::describe(&e))
}

/// Asks every proxy to hold new transactions for a cut-over whose distributed transaction will
/// be `gid`, until `hold` has passed.
pub async fn request_cutover(
    client: &tokio_postgres::Client,
    id: i64,
    gid: &str,
    hold: Duration,
) -> Result<(), String> {
    client
        .execute(
            "UPDATE shardgate.moves SET state = 'cutover', cutover_gid = $2, \
             pause_until = now() + make_interval(secs => $3), updated_at = now() WHERE id = $1",
            &[&id, &gid, &hold.as_secs_f64()],
        )
        .await
        .map(|_| ())
        .map_err(|e| control::describe(&e))
}

/// Sets the move's state (and ends any hold the proxies keep for it).
pub async fn set_state(
    client: &tokio_postgres::Client,
    id: i64,
    state: State,
) -> Result<(), String> {
    client
        .execute(
            "UPDATE shardgate.moves SET state = $2, pause_until = NULL, updated_at = now() \
             WHERE id = $1",
            &[&id, &state.as_str()],
        )
        .await
        .map(|_| ())
        .map_err(|e| control::describe(&e))
}

/// A proxy's acknowledgement: it holds new transactions and has none open, for `gid`.
pub async fn acknowledge(
    client: &tokio_postgres::Client,
    proxy_id: &str,
    gid: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE shardgate.proxies SET paused_for = $2, seen_at = now() WHERE id = $1",
            &[&proxy_id, &gid],
        )
        .await
        .map(|_| ())
}

/// The running proxies that have not acknowledged `gid` (their listen addresses).
pub async fn not_holding(
    client: &tokio_postgres::Client,
    gid: &str,
) -> Result<Vec<String>, String> {
    let rows = client
        .query(
            "SELECT listen FROM shardgate.proxies \
             WHERE seen_at > now() - make_interval(secs => 3 * refresh_secs + 2) \
               AND paused_for IS DISTINCT FROM $1 ORDER BY listen",
            &[&gid],
        )
        .await
        .map_err(|e| control::describe(&e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
