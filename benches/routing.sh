#!/usr/bin/env bash
# Routing overhead on three shards:
#  1. single-shard point lookups (pgbench -S: SELECT abalance FROM pgbench_accounts WHERE aid = $1)
#     through shardgate, routed by the bound key, vs the same pgbench directly against one shard,
#     in -M extended and -M prepared, interleaved;
#  2. a scattered `ORDER BY abalance DESC, aid LIMIT 10` over the 3 shards holding 1M rows:
#     latency, and the proxy's peak memory (VmHWM) before and after.
#   benches/routing.sh [SECONDS=10] [ROUNDS=2]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
ROUNDS=${2:-2}
BASE=${BENCH_PORT:-17432}
PROXY_PORT=$((BASE + 50))
WORK=$(mktemp -d /tmp/shardgate-routing.XXXXXX)
chmod 755 "$WORK"

cargo build --release -q
./target/release/shardgate --log-level warn demo --shards 3 --port "$BASE" --metrics-port $((BASE + 200)) --dir "$WORK/demo" >"$WORK/demo.log" 2>&1 &
DEMO=$!
cleanup() {
    [ -n "${PROXY:-}" ] && kill "$PROXY" 2>/dev/null || true
    kill "$DEMO" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
for _ in $(seq 150); do grep -q "press Ctrl-C" "$WORK/demo.log" && break; sleep 0.2; done
grep -q "press Ctrl-C" "$WORK/demo.log" || { cat "$WORK/demo.log"; exit 1; }

# A proxy of our own in front of the demo's shards, with pgbench's tables declared.
{
    sed -e "s/^listen = \"127.0.0.1:$BASE\"/listen = \"127.0.0.1:$PROXY_PORT\"\nworker_threads = 1/" \
        -e "s/^listen = \"127.0.0.1:$((BASE + 200))\"/listen = \"\"/" "$WORK/demo/shardgate.toml"
    printf '\n[tables.pgbench_accounts]\nshard_key = "aid"\nkey_type = "integer"\n'
    printf '[tables.pgbench_branches]\nreference = true\n[tables.pgbench_tellers]\nreference = true\n[tables.pgbench_history]\nreference = true\n'
} >"$WORK/routing.toml"
./target/release/shardgate --config "$WORK/routing.toml" check-config "$WORK/routing.toml" >/dev/null 2>&1 || true
./target/release/shardgate --log-level warn --config "$WORK/routing.toml" >"$WORK/proxy.log" 2>&1 &
PROXY=$!
sleep 1

# Each shard gets exactly the rows it owns: the slot formula in SQL, the proxy's slot table.
SLOTS=$(./target/release/shardgate slots --config "$WORK/routing.toml")
ROWS=1000000
for i in 0 1 2; do
    port=$((BASE + 1 + i))
    ranges=$(sed -n "s/^s$i = \"\(.*\)\"/\1/p" <<<"$SLOTS")
    slot_list=$(tr ',' '\n' <<<"$ranges" | awk -F- '{ if (NF == 1) print $1; else for (s = $1; s <= $2; s++) print s }' | paste -sd, -)
    psql -q "postgres://postgres@127.0.0.1:$port/postgres" <<SQL
drop table if exists pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history;
create table pgbench_accounts (aid int not null, bid int, abalance int, filler char(84)) with (fillfactor = 100);
create table pgbench_branches (bid int not null, bbalance int, filler char(88));
create table pgbench_tellers (tid int not null, bid int, tbalance int, filler char(84));
create table pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22));
insert into pgbench_branches select b, 0 from generate_series(1, 10) b;
insert into pgbench_tellers select t, (t - 1) / 10 + 1, 0 from generate_series(1, 100) t;
insert into pgbench_accounts
  select aid, (aid - 1) / 100000 + 1, (aid::bigint * 7919 % 100000)::int, ''
  from generate_series(1, $ROWS) aid
  where (((hashint8extended(aid, 8816678312871386365)::numeric + 5305509591434766563 + 18446744073709551616)
          % 18446744073709551616 % 1024)::int) = any('{$slot_list}'::int[]);
alter table pgbench_accounts add primary key (aid);
create index on pgbench_accounts (abalance desc, aid);
vacuum analyze;
SQL
done
COUNTS=$(for i in 0 1 2; do psql -At "postgres://postgres@127.0.0.1:$((BASE + 1 + i))/postgres" -c "select count(*) from pgbench_accounts"; done | paste -sd' ' -)
echo "rows per shard: $COUNTS"

PROXIED="postgres://app:app@127.0.0.1:$PROXY_PORT/postgres"
DIRECT="postgres://postgres@127.0.0.1:$((BASE + 1))/postgres"
declare -A SUM
PROXIED_TXNS=0
run() { # mode target url
    local out tps
    out=$(pgbench -n -S -s 10 -M "$1" -c 8 -j 2 -T "$DURATION" "$3" 2>&1) || true
    if [ "$2" = shardgate ]; then
        PROXIED_TXNS=$((PROXIED_TXNS + $(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out" | grep . || echo 0)))
    fi
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' <<<"$out")
    if [ -z "$tps" ] || grep -q "number of failed transactions: [1-9]" <<<"$out"; then
        echo "  $1 $2: FAILED"; tail -5 <<<"$out" | sed 's/^/    /'; tps=0
    else
        echo "  $1 $2: $tps tps"
    fi
    SUM[$1,$2]=$(awk -v a="${SUM[$1,$2]:-0}" -v b="$tps" 'BEGIN{print a+b}')
}
rss() { sed -n 's/^VmRSS:\s*\([0-9]*\) kB/\1/p' "/proc/$PROXY/status"; }
# Warmed up first in both modes: the proxy's first sessions allocate what later ones reuse.
for mode in extended prepared; do
    pgbench -n -S -s 10 -M "$mode" -c 8 -j 2 -T 3 "$PROXIED" >/dev/null 2>&1 || true
done
RSS_BEFORE=$(rss)
for round in $(seq "$ROUNDS"); do
    echo "round $round"
    for mode in extended prepared; do
        run "$mode" direct "$DIRECT"
        run "$mode" shardgate "$PROXIED"
    done
done

RSS_AFTER=$(rss)
hwm() { sed -n 's/^VmHWM:\s*//p' "/proc/$PROXY/status"; }
HWM_BEFORE=$(hwm)
echo 'select aid, abalance from pgbench_accounts order by abalance desc, aid limit 10;' >"$WORK/scatter.sql"
SCATTER=$(pgbench -n -f "$WORK/scatter.sql" -c 1 -T "$DURATION" "$PROXIED" 2>&1)
SCATTER_DIRECT=$(pgbench -n -f "$WORK/scatter.sql" -c 1 -T "$DURATION" "$DIRECT" 2>&1)
# The same query without a usable index on the shards: each shard sorts its third of the rows.
echo 'select aid, abalance from pgbench_accounts order by abalance + 0 desc, aid limit 10;' >"$WORK/scatter_sort.sql"
SCATTER_SORT=$(pgbench -n -f "$WORK/scatter_sort.sql" -c 1 -t 5 "$PROXIED" 2>&1)
HWM_AFTER=$(hwm)
lat() { sed -n 's/^latency average = \(.*\)$/\1/p' <<<"$1"; }

echo
echo "point lookups, pgbench -S, 8 clients, ${DURATION}s x $ROUNDS rounds (mean TPS); direct = one shard"
printf "%-9s %10s %10s %12s\n" mode direct shardgate "sg/direct"
for mode in extended prepared; do
    awk -v m="$mode" -v r="$ROUNDS" -v d="${SUM[$mode,direct]}" -v s="${SUM[$mode,shardgate]}" \
        'BEGIN{d/=r; s/=r; printf "%-9s %10.0f %10.0f %12.2f\n", m, d, s, (d ? s/d : 0)}'
done
# This proxy has no metrics endpoint, so nothing ever scrapes it: what it records must not pile up.
echo "proxy resident memory over $PROXIED_TXNS proxied lookups: $RSS_BEFORE kB before, $RSS_AFTER kB after" \
    "($(awk -v a="$RSS_BEFORE" -v b="$RSS_AFTER" -v n="$PROXIED_TXNS" 'BEGIN{printf "%.1f", n ? (b-a)*1024/n : 0}') bytes per lookup)"
echo
echo "scatter ORDER BY abalance DESC, aid LIMIT 10 over 3 shards ($ROWS rows), 1 client:"
echo "  through shardgate (index scan on each shard): $(lat "$SCATTER")"
echo "  direct to one shard (a third of the rows):    $(lat "$SCATTER_DIRECT")"
echo "  through shardgate, sort without index:        $(lat "$SCATTER_SORT")"
echo "  proxy peak memory (VmHWM): $HWM_BEFORE before the scatter runs, $HWM_AFTER after"
