#!/usr/bin/env bash
# What the transaction's time costs a shard. In a session that calls the clock, the proxy opens
# each transaction on a shard with `BEGIN; SET LOCAL shardgate.transaction_time = '...'` in the
# same message as the first statement there (so that `now()` answers one value on every shard). This runs a short write
# transaction (BEGIN and an UPDATE in one message, a SELECT, END) directly against one
# PostgreSQL server, with and without that SET LOCAL, in interleaved rounds, and prints the
# TPS of each and their ratio: the shard-side price, without the proxy's own cost around it.
#
#   benches/transaction_time.sh [DURATION_SECONDS=8] [ROUNDS=3]
#
# Uses `shardgate demo --shards 1` for the server.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-8}
ROUNDS=${2:-3}
BASE=${BENCH_PORT:-17432}
PG_PORT=$((BASE + 1))
WORK=$(mktemp -d /tmp/shardgate-bench.XXXXXX)
chmod 755 "$WORK"

cargo build -q
./target/debug/shardgate --log-level warn demo --shards 1 --port "$BASE" --metrics-port $((BASE + 200)) --dir "$WORK/demo" >"$WORK/demo.log" 2>&1 &
DEMO=$!
cleanup() {
    kill "$DEMO" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
for _ in $(seq 150); do grep -q "press Ctrl-C" "$WORK/demo.log" && break; sleep 0.2; done
grep -q "press Ctrl-C" "$WORK/demo.log" || { cat "$WORK/demo.log"; exit 1; }

DIRECT="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
pgbench -i -s 5 -q "$DIRECT" >/dev/null 2>&1

cat >"$WORK/plain.sql" <<'SQL'
\set aid random(1, 500000)
BEGIN \; UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
END;
SQL
cat >"$WORK/stamped.sql" <<'SQL'
\set aid random(1, 500000)
BEGIN \; SET LOCAL shardgate.transaction_time = '2026-12-04 22:26:22.698738+00' \; UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
END;
SQL

declare -A SUM
for round in $(seq "$ROUNDS"); do
    for script in plain stamped; do
        tps=$(pgbench -n -c 4 -j 2 -T "$DURATION" -f "$WORK/$script.sql" "$DIRECT" 2>/dev/null |
            sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)
        echo "round $round $script: $tps tps"
        SUM[$script]=$(echo "${SUM[$script]:-0} + $tps" | bc -l)
    done
done
plain=$(echo "${SUM[plain]} / $ROUNDS" | bc -l)
stamped=$(echo "${SUM[stamped]} / $ROUNDS" | bc -l)
printf 'mean tps: without %.0f, with the SET LOCAL %.0f; with / without %.3f\n' \
    "$plain" "$stamped" "$(echo "$stamped / $plain" | bc -l)"
