//! Metric names and the Prometheus exporter.
//!
//! Names are constants so docs, tests and code agree. Per-session handles are created once per
//! session (label lookup happens at connect, not per query), so recording on the query path is an
//! atomic add.

use metrics::{Counter, Gauge, Histogram};

/// Gauge: clients currently connected.
pub const CLIENTS_CONNECTED: &str = "shardgate_clients_connected";
/// Counter: client connections accepted.
pub const CLIENT_CONNECTIONS: &str = "shardgate_client_connections_total";
/// Counter, label `shard`: queries sent (simple Query, extended Execute, function call).
pub const QUERIES: &str = "shardgate_queries_total";
/// Histogram (seconds), label `shard`: request to ReadyForQuery.
pub const QUERY_DURATION: &str = "shardgate_query_duration_seconds";
/// Counter, label `shard`: Parses the proxy sent on its own so that a server connection holds a
/// client's statement before a Bind of it (pooling gave the client another connection, or a
/// statement prepared elsewhere met this shard).
pub const STATEMENT_PREPARES: &str = "shardgate_statement_prepares_total";
/// Counter, label `shard`: failed logins to a shard (down, refused, timed out).
pub const BACKEND_CONNECT_ERRORS: &str = "shardgate_backend_connect_errors_total";
/// Counter: statements refused by the router.
pub const STATEMENTS_REJECTED: &str = "shardgate_statements_rejected_total";
/// Counter: statements whose subqueries over sharded tables were answered first.
pub const SUBQUERIES_ANSWERED_FIRST: &str = "shardgate_subqueries_answered_first_total";
/// Counter: statements whose outer join keeps a reference table's rows against a sharded
/// table, read in two parts (the rows some shard matches first).
pub const KEPT_ROWS_ANSWERED_FIRST: &str = "shardgate_kept_rows_answered_first_total";
/// Counter: rows sent to clients from merged multi-shard results.
pub const MERGE_ROWS: &str = "shardgate_merge_rows_total";
/// Counter, label `route`: statements on multi-shard clusters by route kind (`single`, `several`,
/// `all`, `broadcast`, `session`, `proxy`).
pub const STATEMENTS_BY_ROUTE: &str = "shardgate_statements_total";
/// Counter: client authentication failures.
pub const AUTH_FAILURES: &str = "shardgate_auth_failures_total";
/// Counter, label `kind` (`one_phase`, `two_phase`): transactions committed that wrote.
pub const COMMITS: &str = "shardgate_commits_total";
/// Counter, label `reason`: transactions that wrote on several shards and were rolled back:
/// `prepare_failed`, `decision_failed` (at commit), `oracle_unavailable` (no commit window),
/// `rollback` (the client's ROLLBACK, an error, or a failed COMMIT).
pub const ABORTS: &str = "shardgate_aborts_total";
/// Counter: deadlocks across shards the proxy ended by cancelling one transaction's statement.
pub const DISTRIBUTED_DEADLOCKS: &str = "shardgate_distributed_deadlocks_total";
/// Histogram (seconds), label `phase` (`prepare`, `decide`, `commit_prepared`): 2PC phases.
pub const TWO_PHASE_SECONDS: &str = "shardgate_2pc_phase_seconds";
/// Gauge: prepared transactions of ours seen by the last recovery pass, or whose outcome this
/// proxy could not learn (08007).
pub const IN_DOUBT: &str = "shardgate_transactions_in_doubt";
/// Counter, label `outcome` (`commit`, `rollback`): prepared branches resolved by recovery.
pub const RECOVERY_RESOLUTIONS: &str = "shardgate_recovery_resolutions_total";
/// Histogram (seconds), label `class` (`commit`, `snapshot`): time waiting for the gate.
pub const GATE_WAIT_SECONDS: &str = "shardgate_gate_wait_seconds";
/// Counter: consistent snapshots (cuts) taken.
pub const SNAPSHOTS: &str = "shardgate_snapshot_acquisitions_total";
/// Histogram (seconds): round trip of a request to a standalone oracle.
pub const ORACLE_RTT: &str = "shardgate_oracle_rtt_seconds";
/// Gauge: commit windows open in the gate.
pub const WINDOWS_OPEN: &str = "shardgate_commit_windows_open";
/// Counter: timestamps issued by the oracle.
pub const TIMESTAMPS: &str = "shardgate_timestamps_issued_total";
/// Counter, label `reason` (`limit`, `evicted`, `startup_timeout`): client connections closed
/// before they logged in, by the admission defences.
pub const CONNECTIONS_REFUSED: &str = "shardgate_client_connections_refused_total";
/// Counter: connections evicted from a full startup queue (also counted in `CONNECTIONS_REFUSED`).
pub const STARTUPS_EVICTED: &str = "shardgate_startups_evicted_total";
/// Counter: accept() failures (for example, out of file descriptors).
pub const ACCEPT_ERRORS: &str = "shardgate_accept_errors_total";
/// Counter: protocol violations that ended a client session (malformed messages).
pub const PROTOCOL_VIOLATIONS: &str = "shardgate_protocol_violations_total";
/// Gauge: bytes held by sessions for clients (pending extended-protocol messages, and results
/// held for a row-limited Execute).
pub const SESSION_BUFFERED_BYTES: &str = "shardgate_session_buffered_bytes";
/// Counter, label `shard`: sessions that gave up on a shard that stayed silent past
/// `shard_response_timeout_secs`.
pub const SHARD_TIMEOUTS: &str = "shardgate_shard_timeouts_total";
/// Gauge, label `shard`: 1 when the shard answered its last health probe, 0 when not.
pub const SHARD_UP: &str = "shardgate_shard_up";
/// Gauge: 1 while a shard holds a declared sharded table whose key column the proxy cannot
/// route by (made there directly after the start), 0 otherwise.
pub const UNROUTABLE_KEY_COLUMNS: &str = "shardgate_unroutable_key_columns";

/// Gauge, label `shard`: server connections checked out by sessions.
pub const POOL_ACTIVE: &str = "shardgate_pool_active_connections";
/// Gauge, label `shard`: server connections idle in the pool.
pub const POOL_IDLE: &str = "shardgate_pool_idle_connections";
/// Gauge, label `shard`: sessions waiting for a server connection.
pub const POOL_WAITING: &str = "shardgate_pool_waiting_clients";
/// Histogram (seconds), label `shard`: time a session waited to check out a connection.
pub const POOL_CHECKOUT_WAIT: &str = "shardgate_pool_checkout_wait_seconds";
/// Counter, label `shard`: checkouts that gave up after the checkout timeout.
pub const POOL_CHECKOUT_TIMEOUTS: &str = "shardgate_pool_checkout_timeouts_total";
/// Counter, label `reason`: sessions pinned to their server connections in transaction mode.
pub const POOL_PINS: &str = "shardgate_pool_pinned_sessions_total";
/// Counter, labels `shard` and `class` (the SQLSTATE's first two characters): errors shards
/// answered to sessions.
pub const SHARD_ERRORS: &str = "shardgate_shard_errors_total";
/// Gauge (always 1), labels `version` and `profile`: what is running.
pub const BUILD_INFO: &str = "shardgate_build_info";
/// Gauge: the version of the cluster's slot table the proxy routes by.
pub const PLACEMENT_VERSION: &str = "shardgate_placement_version";
/// Gauges: the unfinished slot move's rows copied, rows to copy, and changes not yet applied
/// on its target (every proxy reports the figures the mover records).
pub const MOVE_ROWS_COPIED: &str = "shardgate_move_rows_copied";
pub const MOVE_ROWS_TOTAL: &str = "shardgate_move_rows_total";
pub const MOVE_CATCHUP_LAG: &str = "shardgate_move_catchup_lag";
/// Histogram: how long this proxy held new transactions for a slot move's cut-over.
pub const MOVE_HOLD_SECONDS: &str = "shardgate_move_hold_seconds";

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Installs the process's Prometheus recorder (call once per process); `http::serve` publishes
/// what the returned handle renders.
pub fn install_recorder() -> Result<metrics_exporter_prometheus::PrometheusHandle, String> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(QUERY_DURATION.to_string()),
            LATENCY_BUCKETS,
        )
        .map_err(|e| e.to_string())?
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(TWO_PHASE_SECONDS.to_string()),
            LATENCY_BUCKETS,
        )
        .map_err(|e| e.to_string())?
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(GATE_WAIT_SECONDS.to_string()),
            LATENCY_BUCKETS,
        )
        .map_err(|e| e.to_string())?
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(ORACLE_RTT.to_string()),
            LATENCY_BUCKETS,
        )
        .map_err(|e| e.to_string())?
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(POOL_CHECKOUT_WAIT.to_string()),
            LATENCY_BUCKETS,
        )
        .map_err(|e| e.to_string())?
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(MOVE_HOLD_SECONDS.to_string()),
            LATENCY_BUCKETS,
        )
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    describe();
    let _ = HANDLE.set(handle.clone());
    Ok(handle)
}

/// Histogram samples wait in the recorder until they are folded into their buckets, which every
/// render does. A proxy that nobody scrapes (no endpoint, or Prometheus down) would keep every
/// sample, some 30 bytes per query, for ever; this folds them every few seconds instead.
/// Call from within the runtime, once the recorder is installed.
pub fn spawn_upkeep(handle: metrics_exporter_prometheus::PrometheusHandle) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            every.tick().await;
            handle.run_upkeep();
        }
    });
}

/// The recorder's handle, once installed.
static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
    std::sync::OnceLock::new();

/// Every series in Prometheus' text format (None before `install_recorder`).
pub fn rendered() -> Option<String> {
    HANDLE.get().map(render)
}

/// Gauges that change on every transaction are cheaper to set when read than to keep current:
/// their owners register a function here, run before every render.
static REFRESHERS: std::sync::Mutex<Vec<fn()>> = std::sync::Mutex::new(Vec::new());

/// Registers `refresh` to run before every render (once, however often it is called).
pub fn refresh_before_render(refresh: fn()) {
    if let Ok(mut all) = REFRESHERS.lock() {
        if !all.contains(&refresh) {
            all.push(refresh);
        }
    }
}

/// What `handle` renders, with the registered gauges refreshed first.
pub fn render(handle: &metrics_exporter_prometheus::PrometheusHandle) -> String {
    let refreshers = REFRESHERS.lock().map(|r| r.clone()).unwrap_or_default();
    for refresh in refreshers {
        refresh();
    }
    handle.render()
}

fn describe() {
    metrics::describe_gauge!(POOL_ACTIVE, "Server connections checked out by sessions");
    metrics::describe_gauge!(POOL_IDLE, "Server connections idle in the pool");
    metrics::describe_gauge!(POOL_WAITING, "Sessions waiting for a server connection");
    metrics::describe_histogram!(
        POOL_CHECKOUT_WAIT,
        metrics::Unit::Seconds,
        "Time sessions waited for a server connection"
    );
    metrics::describe_counter!(POOL_CHECKOUT_TIMEOUTS, "Checkouts that timed out");
    metrics::describe_counter!(POOL_PINS, "Sessions pinned to their server connections");
    metrics::describe_counter!(SHARD_ERRORS, "Errors shards answered, by SQLSTATE class");
    metrics::describe_gauge!(BUILD_INFO, "Version of the running proxy");
    metrics::describe_gauge!(
        PLACEMENT_VERSION,
        "Version of the cluster's slot table this proxy routes by"
    );
    metrics::describe_gauge!(MOVE_ROWS_COPIED, "Rows the unfinished slot move has copied");
    metrics::describe_gauge!(
        MOVE_ROWS_TOTAL,
        "Rows the unfinished slot move copies in all"
    );
    metrics::describe_gauge!(
        MOVE_CATCHUP_LAG,
        "Changes to the moving slots not yet applied on the move's target"
    );
    metrics::describe_histogram!(
        MOVE_HOLD_SECONDS,
        metrics::Unit::Seconds,
        "How long new transactions were held for a slot move's cut-over"
    );
    metrics::gauge!(
        BUILD_INFO,
        "version" => env!("CARGO_PKG_VERSION"),
        "profile" => if cfg!(debug_assertions) { "debug" } else { "release" }
    )
    .set(1.0);
    metrics::describe_gauge!(CLIENTS_CONNECTED, "Clients currently connected");
    metrics::describe_counter!(CLIENT_CONNECTIONS, "Client connections accepted");
    metrics::describe_counter!(QUERIES, "Queries sent to each shard");
    metrics::describe_histogram!(
        QUERY_DURATION,
        metrics::Unit::Seconds,
        "Request to ReadyForQuery, per shard"
    );
    metrics::describe_counter!(
        STATEMENT_PREPARES,
        "Parses sent by the proxy so that a server connection holds a client's statement"
    );
    metrics::describe_counter!(BACKEND_CONNECT_ERRORS, "Failed logins to each shard");
    metrics::describe_counter!(STATEMENTS_REJECTED, "Statements refused by the planner");
    metrics::describe_counter!(AUTH_FAILURES, "Client authentication failures");
    metrics::describe_counter!(
        SUBQUERIES_ANSWERED_FIRST,
        "Statements whose subqueries over sharded tables the proxy answered first"
    );
    metrics::describe_counter!(
        KEPT_ROWS_ANSWERED_FIRST,
        "Statements whose outer join keeps reference rows against a sharded table, read in two parts"
    );
    metrics::describe_counter!(MERGE_ROWS, "Rows sent from merged multi-shard results");
    metrics::describe_counter!(COMMITS, "Committed writing transactions by kind");
    metrics::describe_counter!(ABORTS, "Distributed transactions rolled back, by reason");
    metrics::describe_counter!(
        DISTRIBUTED_DEADLOCKS,
        "Deadlocks across shards ended by cancelling one transaction's statement"
    );
    metrics::describe_histogram!(
        TWO_PHASE_SECONDS,
        metrics::Unit::Seconds,
        "Two-phase commit phase durations"
    );
    metrics::describe_gauge!(IN_DOUBT, "Prepared transactions awaiting resolution");
    metrics::describe_histogram!(
        GATE_WAIT_SECONDS,
        metrics::Unit::Seconds,
        "Time waiting for the commit/snapshot gate, by class"
    );
    metrics::describe_counter!(SNAPSHOTS, "Consistent snapshots taken");
    metrics::describe_histogram!(
        ORACLE_RTT,
        metrics::Unit::Seconds,
        "Round trip to a standalone oracle"
    );
    metrics::describe_gauge!(WINDOWS_OPEN, "Commit windows open in the gate");
    metrics::describe_counter!(TIMESTAMPS, "Timestamps issued by the oracle");
    metrics::describe_counter!(
        CONNECTIONS_REFUSED,
        "Client connections closed before login by the admission defences, by reason"
    );
    metrics::describe_counter!(
        STARTUPS_EVICTED,
        "Connections evicted from a full startup queue"
    );
    metrics::describe_counter!(ACCEPT_ERRORS, "accept() failures");
    metrics::describe_counter!(PROTOCOL_VIOLATIONS, "Sessions ended by a malformed message");
    metrics::describe_gauge!(
        SESSION_BUFFERED_BYTES,
        "Bytes sessions hold for clients (pending messages, held results)"
    );
    metrics::describe_gauge!(SHARD_UP, "1 when the shard answered its last health probe");
    metrics::describe_gauge!(
        UNROUTABLE_KEY_COLUMNS,
        "1 while a shard holds a sharded table whose key column cannot be routed by"
    );
    metrics::describe_counter!(
        SHARD_TIMEOUTS,
        "Sessions that gave up on a shard silent past shard_response_timeout_secs"
    );
    metrics::describe_counter!(
        RECOVERY_RESOLUTIONS,
        "Prepared branches resolved by recovery, by outcome"
    );
    metrics::describe_counter!(
        STATEMENTS_BY_ROUTE,
        "Statements by route kind on multi-shard clusters"
    );
}

/// Handles a session records into.
pub struct SessionMetrics {
    pub shard: String,
    pub queries: Counter,
    pub latency: Histogram,
    pub prepares: Counter,
}

impl SessionMetrics {
    pub fn new(shard: &str) -> SessionMetrics {
        SessionMetrics {
            shard: shard.to_string(),
            queries: metrics::counter!(QUERIES, "shard" => shard.to_string()),
            latency: metrics::histogram!(QUERY_DURATION, "shard" => shard.to_string()),
            prepares: metrics::counter!(STATEMENT_PREPARES, "shard" => shard.to_string()),
        }
    }
}

/// Counts a connected client for as long as it lives.
pub struct ClientGauge(Gauge);

impl ClientGauge {
    pub fn enter() -> ClientGauge {
        metrics::counter!(CLIENT_CONNECTIONS).increment(1);
        let g = metrics::gauge!(CLIENTS_CONNECTED);
        g.increment(1.0);
        ClientGauge(g)
    }
}

impl Drop for ClientGauge {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
