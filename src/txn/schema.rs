//! The `shardgate` schema every shard of a multi-shard cluster carries, and the start-up checks
//! two-phase commit depends on.
//!
//! - `shardgate.commit_record(gid primary key, outcome, ...)`: one row per distributed
//!   transaction, on its decider shard. Committing the row with outcome 'c' *is* the commit
//!   decision; recovery's fence inserts 'a' for a gid that has none.
//! - `shardgate.txn_marker(gid primary key, ...)`: written inside each prepared branch, so a
//!   branch's outcome can be seen on its own shard after the fact.
//!
//! - The transaction's clock: `shardgate.now()` and its kin (`transaction_timestamp()`,
//!   `"current_timestamp"()`, `"current_date"()`, `"current_time"()`, `"localtime"()`,
//!   `"localtimestamp"()`), which the proxy calls in place of PostgreSQL's (see `sql::clock`).
//!   Each reads the time the proxy gave the transaction, and the shard's own transaction start
//!   where it gave none, so a call outside the proxy answers as PostgreSQL's would. They are
//!   plain SQL functions, inlined by the planner as `now()` is evaluated: once per statement
//!   where an index condition needs it.
//!
//! - `shardgate.unchanged_key(new, old, what)`: `new` when it equals `old`, else an error (0A000);
//!   the planner wraps assignments to a sharded table's key in it (see `router::plan::key_guard`).
//!
//! - `shardgate.variance_of(n, s, q, sample, root)`: a variance or standard deviation from the
//!   count, sum and sum of squares of the values, as PostgreSQL computes it over integers and
//!   numerics (see `router::variance`).
//!
//! Creation is idempotent and serialized by an advisory lock, so proxies starting together do
//! not race on the catalog.

use crate::backend::control;
use crate::config::ShardTarget;
use std::time::Duration;

/// Lock key for schema creation ("shardgat" in ASCII).
const SCHEMA_LOCK: i64 = 0x7368_6172_6467_6174;

const CREATE: &str = "
CREATE SCHEMA IF NOT EXISTS shardgate;
CREATE TABLE IF NOT EXISTS shardgate.commit_record (
    gid text PRIMARY KEY,
    outcome \"char\" NOT NULL CHECK (outcome IN ('c', 'a')),
    commit_ts bigint,
    decided_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS shardgate.txn_marker (
    gid text PRIMARY KEY,
    prepared_at timestamptz NOT NULL DEFAULT now()
);
CREATE OR REPLACE FUNCTION shardgate.now() RETURNS pg_catalog.timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT COALESCE(NULLIF(pg_catalog.current_setting('shardgate.transaction_time', true), '')::pg_catalog.timestamptz,
                          pg_catalog.transaction_timestamp()) $$;
CREATE OR REPLACE FUNCTION shardgate.transaction_timestamp() RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT shardgate.now() $$;
CREATE OR REPLACE FUNCTION shardgate.\"current_timestamp\"() RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT shardgate.now() $$;
CREATE OR REPLACE FUNCTION shardgate.\"current_date\"() RETURNS date
    LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT shardgate.now()::pg_catalog.date $$;
CREATE OR REPLACE FUNCTION shardgate.\"current_time\"() RETURNS timetz
    LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT shardgate.now()::pg_catalog.timetz $$;
CREATE OR REPLACE FUNCTION shardgate.\"localtime\"() RETURNS time
    LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT shardgate.now()::pg_catalog.time $$;
CREATE OR REPLACE FUNCTION shardgate.\"localtimestamp\"() RETURNS timestamp
    LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT shardgate.now()::pg_catalog.timestamp $$;
CREATE OR REPLACE FUNCTION shardgate.unchanged_key(new anycompatible, old anycompatible, what text)
    RETURNS anycompatible LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF new IS DISTINCT FROM old THEN
        RAISE EXCEPTION 'UPDATE may not change the shard key %', what
            USING ERRCODE = '0A000',
                  DETAIL = pg_catalog.format('The row''s key is %s; the new value is %s.',
                                            old, COALESCE(new::text, 'null')),
                  HINT = 'The row would belong on another shard. DELETE it and INSERT it with the new key instead.';
    END IF;
    RETURN new;
END $$;
CREATE OR REPLACE FUNCTION shardgate.variance_of(n bigint, s numeric, q numeric, sample boolean, root boolean)
    RETURNS numeric LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    d numeric;
    v numeric;
    big numeric;
    f numeric;
BEGIN
    IF n IS NULL OR n <= sample::int THEN
        RETURN NULL;
    END IF;
    d := n * q - s * s;
    IF d <= 0 THEN
        RETURN 0;
    END IF;
    v := d / (n::numeric * (n - sample::int));
    IF NOT root OR v = 'NaN' THEN
        RETURN v;
    END IF;
    big := v * ('1e' || 2 * pg_catalog.scale(v))::numeric;
    f := pg_catalog.floor(pg_catalog.sqrt(big));
    IF f * f > big THEN
        f := f - 1;
    END IF;
    IF big > f * f + f THEN
        f := f + 1;
    END IF;
    RETURN f * ('1e-' || pg_catalog.scale(v))::numeric;
END $$;
GRANT USAGE ON SCHEMA shardgate TO PUBLIC;";

/// Checks that the shard can prepare transactions and creates the schema.
pub async fn prepare_shard(shard: &ShardTarget, timeout: Duration) -> Result<(), String> {
    let client = control::connect(shard, timeout).await?;
    let row = client
        .query_one(
            "SELECT current_setting('max_prepared_transactions')::int",
            &[],
        )
        .await
        .map_err(|e| format!("shard {}: {}", shard.name, control::describe(&e)))?;
    let max: i32 = row.get(0);
    if max == 0 {
        return Err(format!(
            "shard {} has max_prepared_transactions = 0, so it cannot take part in two-phase commit; \
             set max_prepared_transactions (at least max_connections) in its postgresql.conf and restart it",
            shard.name
        ));
    }
    let sql = format!("BEGIN; SELECT pg_advisory_xact_lock({SCHEMA_LOCK}); {CREATE} COMMIT;");
    client.batch_execute(&sql).await.map_err(|e| {
        format!(
            "shard {}: cannot create the shardgate schema: {}",
            shard.name,
            control::describe(&e)
        )
    })
}
