#!/usr/bin/env bash
# Slot moves under load. A cluster of three shards records its placement, a fourth empty shard
# is added, and `shardgate move-slots` gives it its share (a quarter of the slots) in MOVES
# moves while pgbench updates random rows of a sharded table through the proxy. Reports:
#
# - the copy rate of each move (rows/s) against a plain COPY of as many rows between the same
#   servers, piped through psql in the same run;
# - the write pause at each cut-over: the longest pgbench transaction that ended during the
#   move, p50 and p99 over the moves, against pgbench's own p99 latency with no move running
#   (measured first, in the same run); and the time the proxy held new transactions
#   (shardgate_move_hold_seconds).
#
#   benches/move_slots.sh [ROWS=200000] [MOVES=4]
#
# Uses `shardgate demo` for the shards; needs pgbench, psql and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-200000}
MOVES=${2:-4}
CLIENTS=8
BASE=${BENCH_PORT:-17432}
PROXY_PORT=$((BASE + 50))
METRICS_PORT=$((BASE + 201))
WORK=$(mktemp -d /tmp/shardgate-move-bench.XXXXXX)
chmod 755 "$WORK"
SG=./target/release/shardgate
DEMO=""
PROXY=""
cleanup() {
    [ -n "$PROXY" ] && kill "$PROXY" 2>/dev/null || true
    [ -n "$DEMO" ] && kill "$DEMO" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

cargo build --release -q
start_demo() {
    $SG --log-level warn demo --shards "$1" --port "$BASE" --metrics-port $((BASE + 200)) \
        --dir "$WORK/demo" >"$WORK/demo-$1.log" 2>&1 &
    DEMO=$!
    for _ in $(seq 150); do grep -q "press Ctrl-C" "$WORK/demo-$1.log" && return; sleep 0.2; done
    cat "$WORK/demo-$1.log"
    exit 1
}
# Three shards record the placement; the fourth, added next, owns no slot.
start_demo 3
kill -TERM "$DEMO"
wait "$DEMO" || true
# The demo writes a config naming the four shards; the first three keep their data.
rm "$WORK/demo/shardgate.toml"
start_demo 4

shard() { psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p $((BASE + 1 + $1)) -U postgres -d postgres "${@:2}"; }
for s in 0 1 2 3; do
    shard "$s" -c "create table pgbench_accounts (aid bigint primary key, bid int not null, abalance int not null, filler char(84))"
done
sed -e "s/127.0.0.1:$BASE\"/127.0.0.1:$PROXY_PORT\"/" \
    -e "s/127.0.0.1:$((BASE + 200))\"/127.0.0.1:$METRICS_PORT\"/" \
    "$WORK/demo/shardgate.toml" >"$WORK/bench.toml"
cat >>"$WORK/bench.toml" <<TOML

[tables.pgbench_accounts]
shard_key = "aid"
key_type = "bigint"
TOML
$SG --log-level warn --config "$WORK/bench.toml" >"$WORK/proxy.log" 2>&1 &
PROXY=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PROXY_PORT) 2>/dev/null && break; sleep 0.2; done
export PGPASSWORD=app
URL="host=127.0.0.1 port=$PROXY_PORT user=app dbname=postgres"
seq "$ROWS" | awk '{print $1 ",1,0,"}' >"$WORK/rows.csv"
psql -X -q -v ON_ERROR_STOP=1 "$URL" -c "\\copy pgbench_accounts from '$WORK/rows.csv' csv"
cat >"$WORK/update.sql" <<SQL
\\set aid random(1, $ROWS)
UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;
SQL

echo "== baseline: pgbench, $CLIENTS clients, no move (15 s)"
(cd "$WORK" && pgbench -n -f update.sql -c "$CLIENTS" -j 2 -T 15 -l --log-prefix=base "$URL" >base.out 2>&1)
grep -E "^tps" "$WORK/base.out" || cat "$WORK/base.out"

echo "== direct COPY between two shards, for the copy rate's baseline"
shard 3 -c "create table scratch (like pgbench_accounts)"
start=$(date +%s.%N)
shard 0 -c "\\copy (select * from pgbench_accounts limit $((ROWS / 4))) to stdout" | shard 3 -c "\\copy scratch from stdin"
end=$(date +%s.%N)
copied=$(shard 3 -At -c "select count(*) from scratch")
shard 3 -c "drop table scratch"
echo "$copied $start $end" >"$WORK/direct.txt"

# The plan's slots for s3, cut into MOVES pieces.
$SG slots --config "$WORK/bench.toml" --plan --add s3 >"$WORK/plan.txt"
python3 - "$MOVES" "$WORK/plan.txt" >"$WORK/chunks.txt" <<'PY'
import sys
moves, plan = int(sys.argv[1]), sys.argv[2]
slots = []
for line in open(plan):
    if line.startswith("move "):
        for part in line.split(": ", 1)[1].strip().split(","):
            a, _, b = part.partition("-")
            slots.extend(range(int(a), int(b or a) + 1))
slots.sort()
size = -(-len(slots) // moves)
for i in range(0, len(slots), size):
    print(",".join(map(str, slots[i:i + size])))
PY

echo "== pgbench while $MOVES moves give s3 its share"
DURATION=$((20 + 12 * MOVES))
(cd "$WORK" && pgbench -n -f update.sql -c "$CLIENTS" -j 2 -T "$DURATION" -l --log-prefix=moving "$URL" >moving.out 2>&1) &
BENCH=$!
sleep 5
: >"$WORK/moves.txt"
while read -r chunk; do
    start=$(date +%s.%N)
    $SG --log-level warn move-slots --config "$WORK/bench.toml" --slots "$chunk" --to s3 >"$WORK/move.out" 2>"$WORK/move.err" || { cat "$WORK/move.err"; exit 1; }
    end=$(date +%s.%N)
    echo "$start $end $(cat "$WORK/move.out")" >>"$WORK/moves.txt"
    tail -n 1 "$WORK/move.out"
    sleep 3
done <"$WORK/chunks.txt"
wait "$BENCH"
grep -E "^tps|failed" "$WORK/moving.out" || cat "$WORK/moving.out"
curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | grep -E "^shardgate_move_hold_seconds_(sum|count)" >"$WORK/hold.txt" || true

python3 - "$WORK" <<'PY'
import glob, re, sys
work = sys.argv[1]
def log(prefix):
    out = []
    for path in glob.glob(f"{work}/{prefix}.[0-9]*"):
        for line in open(path):
            f = line.split()
            # client_id transaction_no latency_us script_no epoch us
            out.append((int(f[4]) + int(f[5]) / 1e6, int(f[2]) / 1000.0))
    return out
def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]
base = [lat for _, lat in log("base")]
moving = log("moving")
base_p50, base_p99 = pct(base, 50), pct(base, 99)
print(f"baseline latency: p50 {base_p50:.2f} ms, p99 {base_p99:.2f} ms over {len(base)} transactions")
copied, start, end = open(f"{work}/direct.txt").read().split()
direct_rate = int(copied) / (float(end) - float(start))
print(f"direct COPY between two shards: {int(copied)} rows at {direct_rate:.0f} rows/s")
pauses, rates = [], []
for line in open(f"{work}/moves.txt"):
    start, end, rest = line.split(" ", 2)
    start, end = float(start), float(end)
    m = re.search(r"(\d+) rows moved \(copied in ([\d.]+) s, (\d+) rows/s\).*cut-over (\d+) ms", rest)
    rows, rate, cut = int(m.group(1)), int(m.group(3)), int(m.group(4))
    rates.append(rate)
    # The longest write that ended while the move ran (or just after, as held ones end).
    worst = max([lat for t, lat in moving if start <= t <= end + 1.0] or [0.0])
    pauses.append(worst)
    print(f"move: {rows} rows, copy {rate} rows/s ({rate / direct_rate:.2f}x direct COPY), "
          f"cut-over {cut} ms, longest write {worst:.0f} ms ({worst / base_p99:.1f}x baseline p99)")
print(f"write pause over {len(pauses)} moves: p50 {pct(pauses, 50):.0f} ms, p99 {pct(pauses, 99):.0f} ms "
      f"(baseline p99 latency {base_p99:.2f} ms)")
print(f"copy rate: mean {sum(rates) / len(rates):.0f} rows/s, {sum(rates) / len(rates) / direct_rate:.2f}x direct COPY")
hold = dict(l.split() for l in open(f"{work}/hold.txt")) if open(f"{work}/hold.txt").read() else {}
if hold:
    s, c = float(hold["shardgate_move_hold_seconds_sum"]), float(hold["shardgate_move_hold_seconds_count"])
    print(f"proxy hold per cut-over: mean {1000 * s / max(c, 1):.0f} ms over {int(c)} holds")
PY
