#!/usr/bin/env bash
# Transaction pooling on three shards, measured in one run:
#  1. 300 pgbench clients (-M prepared, point lookups) through a proxy with [pool] size = 8:
#     failed transactions, and the most server connections any shard saw from the proxy;
#  2. 3000 idle clients: the proxy's resident memory per idle client;
#  3. 20 clients that each prepare and keep 200 statements: the proxy's memory per client;
#  4. point lookups (pgbench -S, 8 clients) routed over the 3 shards vs the same proxy binary
#     relaying to one shard (a database holding all of pgbench's rows, so that every lookup
#     finds its row, as on the shards), in simple, extended and prepared mode, interleaved
#     rounds; the sharded proxy again over three shard databases of one server, which leaves
#     out what three PostgreSQL servers cost on two cores; and the sharded proxy on two worker
#     threads (the others run on one), against one; and PostgreSQL alone, three servers against
#     one, which bounds what sharded / relay can reach on this machine; and, over three copies
#     of the relay's database on one server, the sharded proxy against three relays, one per
#     copy: both spread the lookups over three databases, so only routing differs;
#  5. with valgrind installed: the proxy's instructions per lookup (callgrind), relay and sharded.
#   benches/pooling.sh [SECONDS=10] [ROUNDS=2]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
ROUNDS=${2:-2}
BASE=${BENCH_PORT:-18432}
SHARDED_PORT=$((BASE + 50))
RELAY_PORT=$((BASE + 51))
SHARDED2_PORT=$((BASE + 52))
ONEHOST_PORT=$((BASE + 53))
STATEMENTS_PORT=$((BASE + 54))
COPIES_PORT=$((BASE + 56)) # and the three relays over the copies: BASE + 57 to 59
WORK=$(mktemp -d /tmp/shardgate-pooling.XXXXXX)
chmod 755 "$WORK"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cargo build --release -q
./target/release/shardgate --log-level warn demo --shards 3 --port "$BASE" --metrics-port $((BASE + 200)) --dir "$WORK/demo" >"$WORK/demo.log" 2>&1 &
DEMO=$!
cleanup() {
    for p in ${SHARDED:-} ${RELAY:-} ${SHARDED2:-} ${ONEHOST:-} ${STATEMENTS:-} ${COPIES:-} ${RELAYS3:-}; do kill "$p" 2>/dev/null || true; done
    kill "$DEMO" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
for _ in $(seq 150); do grep -q "press Ctrl-C" "$WORK/demo.log" && break; sleep 0.2; done
grep -q "press Ctrl-C" "$WORK/demo.log" || { cat "$WORK/demo.log"; exit 1; }

# The sharded proxy: the demo's shards, pgbench's tables declared, a pool of 8 per shard.
{
    sed -e "s/^listen = \"127.0.0.1:$BASE\"/listen = \"127.0.0.1:$SHARDED_PORT\"\nmax_client_connections = 5000\nmax_pending_startups = 5000/" \
        -e "s/^listen = \"127.0.0.1:$((BASE + 200))\"/listen = \"\"/" "$WORK/demo/shardgate.toml"
    printf '\n[tables.pgbench_accounts]\nshard_key = "aid"\nkey_type = "integer"\n'
    printf '[tables.pgbench_branches]\nreference = true\n[tables.pgbench_tellers]\nreference = true\n[tables.pgbench_history]\nreference = true\n'
    printf '[pool]\nsize = 8\ncheckout_timeout_secs = 120\n'
} >"$WORK/sharded.toml"
# The relay: the same binary in front of the first shard alone.
awk -v port="$RELAY_PORT" '
    /^\[\[shards\]\]/ { n++ }
    n >= 2 && /^\[\[shards\]\]/ { skip = 1 }
    skip && /^\[/ && !/^\[\[shards\]\]/ { skip = 0 }
    !skip { print }
' "$WORK/demo/shardgate.toml" | sed -e "s/^listen = \"127.0.0.1:$BASE\"/listen = \"127.0.0.1:$RELAY_PORT\"/" \
    -e "s/^listen = \"127.0.0.1:$((BASE + 200))\"/listen = \"\"/" -e "s#127.0.0.1:$((BASE + 1))/postgres\"#127.0.0.1:$((BASE + 1))/relaydb\"#" |
    grep -v '^\[tables\|^shard_key\|^key_type\|^reference\|^co_locate' >"$WORK/relay.toml"
# The same proxy over three shard databases of the first shard's server.
sed -e "s/^listen = \"127.0.0.1:$SHARDED_PORT\"/listen = \"127.0.0.1:$ONEHOST_PORT\"/" \
    -e "s#127.0.0.1:$((BASE + 1))/postgres\"#127.0.0.1:$((BASE + 1))/shard0\"#" \
    -e "s#127.0.0.1:$((BASE + 2))/postgres\"#127.0.0.1:$((BASE + 1))/shard1\"#" \
    -e "s#127.0.0.1:$((BASE + 3))/postgres\"#127.0.0.1:$((BASE + 1))/shard2\"#" "$WORK/sharded.toml" >"$WORK/onehost.toml"
# Each shard gets the rows it owns (the slot formula in SQL): on its own server, and in a
# database of the first server for the one-server proxy.
SLOTS=$(./target/release/shardgate slots --config "$WORK/sharded.toml")
load() { # url slot-list
    psql -q "$1" <<SQL
drop table if exists pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history;
create table pgbench_accounts (aid int not null, bid int, abalance int, filler char(84));
create table pgbench_branches (bid int not null, bbalance int, filler char(88));
create table pgbench_tellers (tid int not null, bid int, tbalance int, filler char(84));
create table pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22));
insert into pgbench_branches select b, 0 from generate_series(1, 10) b;
insert into pgbench_tellers select t, (t - 1) / 10 + 1, 0 from generate_series(1, 100) t;
insert into pgbench_accounts
  select aid, (aid - 1) / 100000 + 1, 0, '' from generate_series(1, 1000000) aid
  where (((hashint8extended(aid, 8816678312871386365)::numeric + 5305509591434766563 + 18446744073709551616)
          % 18446744073709551616 % 1024)::int) = any('{$2}'::int[]);
alter table pgbench_accounts add primary key (aid);
vacuum analyze;
SQL
}
FIRST="postgres://postgres@127.0.0.1:$((BASE + 1))"
for i in 0 1 2; do
    ranges=$(sed -n "s/^s$i = \"\(.*\)\"/\1/p" <<<"$SLOTS")
    slot_list=$(tr ',' '\n' <<<"$ranges" | awk -F- '{ if (NF == 1) print $1; else for (s = $1; s <= $2; s++) print s }' | paste -sd, -)
    load "postgres://postgres@127.0.0.1:$((BASE + 1 + i))/postgres" "$slot_list"
    psql -q "$FIRST/postgres" -c "create database shard$i"
    load "$FIRST/shard$i" "$slot_list"
done
# The relay's database holds every row, so that its lookups find a row as the shards' do.
psql -q "$FIRST/postgres" -c "create database relaydb"
pgbench -i -s 10 -q "$FIRST/relaydb" >"$WORK/relay-init.log" 2>&1
psql -q "$FIRST/relaydb" -c "vacuum analyze"
# Three copies of it, made before the relay connects (a template must have no connections).
for i in 0 1 2; do psql -q "$FIRST/postgres" -c "create database relaycopy$i template relaydb"; done

./target/release/shardgate --log-level warn --config "$WORK/sharded.toml" >"$WORK/sharded.log" 2>&1 &
SHARDED=$!
./target/release/shardgate --log-level warn --config "$WORK/relay.toml" >"$WORK/relay.log" 2>&1 &
RELAY=$!
sleep 2

SHARDED_URL="postgres://app:app@127.0.0.1:$SHARDED_PORT/postgres"
RELAY_URL="postgres://app:app@127.0.0.1:$RELAY_PORT/relaydb"
ONEHOST_URL="postgres://app:app@127.0.0.1:$ONEHOST_PORT/shard0"
SHARDED2_URL="postgres://app:app@127.0.0.1:$SHARDED2_PORT/postgres"
proxy_conns() { # the most connections any shard serves for sessions (control connections left out)
    for i in 0 1 2; do
        psql -At "postgres://postgres@127.0.0.1:$((BASE + 1 + i))/postgres" -c \
            "select count(*) from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid() and application_name <> 'shardgate-control'"
    done | sort -n | tail -1
}

echo "1. 300 clients, -M prepared, [pool] size = 8, ${DURATION}s"
pgbench -n -S -s 10 -M prepared -c 300 -j 2 -T "$DURATION" "$SHARDED_URL" >"$WORK/many.out" 2>&1 &
BENCH=$!
MOST=0
while kill -0 "$BENCH" 2>/dev/null; do
    n=$(proxy_conns); [ "$n" -gt "$MOST" ] && MOST=$n
    sleep 0.5
done
wait "$BENCH" || true
grep -E "^tps|number of (failed|transactions actually)" "$WORK/many.out" | sed 's/^/   /'
echo "   clients aborted by an error: $(grep -c "client [0-9]* .*aborted" "$WORK/many.out" || true)"
echo "   most session connections on one shard while it ran: $MOST (pool size 8)"

echo "2. 3000 idle clients"
rss() { sed -n 's/^VmRSS:\s*\([0-9]*\) kB/\1/p' "/proc/$SHARDED/status"; }
printf '\\sleep 20 s\n' >"$WORK/idle.sql"
BEFORE=$(rss)
pgbench -n -c 3000 -j 2 -t 1 -f "$WORK/idle.sql" "$SHARDED_URL" >"$WORK/idle.out" 2>&1 &
IDLE=$!
sleep 15
DURING=$(rss)
wait "$IDLE" || true
grep -E "number of (failed|transactions actually)|error" "$WORK/idle.out" | head -3 | sed 's/^/   /'
awk -v b="$BEFORE" -v d="$DURING" 'BEGIN { printf "   proxy RSS %d kB before, %d kB with 3000 idle clients: %.1f KiB per idle client\n", b, d, (d - b) / 3000 }'

echo "3. 20 clients holding 200 prepared statements each (-M prepared), on a proxy of their own"
# A fresh proxy: memory the idle clients above left to the allocator would hide what these take.
sed -e "s/^listen = \"127.0.0.1:$SHARDED_PORT\"/listen = \"127.0.0.1:$STATEMENTS_PORT\"/" "$WORK/sharded.toml" >"$WORK/statements.toml"
./target/release/shardgate --log-level warn --config "$WORK/statements.toml" >"$WORK/statements.log" 2>&1 &
STATEMENTS=$!
sleep 1
{
    echo '\set aid random(1, 1000000)'
    for i in $(seq 200); do echo "SELECT abalance AS c$i FROM pgbench_accounts WHERE aid = :aid;"; done
    echo '\sleep 8 s'
} >"$WORK/statements.sql"
BEFORE=$(sed -n 's/^VmRSS:\s*\([0-9]*\) kB/\1/p' "/proc/$STATEMENTS/status")
pgbench -n -M prepared -c 20 -j 2 -t 1 -f "$WORK/statements.sql" \
    "postgres://app:app@127.0.0.1:$STATEMENTS_PORT/postgres" >"$WORK/statements.out" 2>&1 &
HOLDING=$!
# Every client has prepared and run its 200 statements within a few seconds, then sleeps.
sleep 6
DURING=$(sed -n 's/^VmRSS:\s*\([0-9]*\) kB/\1/p' "/proc/$STATEMENTS/status")
wait "$HOLDING" || true
grep -E "number of (failed|transactions actually)" "$WORK/statements.out" | sed 's/^/   /'
awk -v b="$BEFORE" -v d="$DURING" 'BEGIN { printf "   proxy RSS %d kB before, %d kB with the 20 clients: %.0f KiB per client\n", b, d, (d - b) / 20 }'
kill "$STATEMENTS" 2>/dev/null || true
STATEMENTS=

# The sharded proxy's configuration on two worker threads, and the one-server proxy, started
# only now so that the connection counts above are the first proxy's alone.
sed -e "s/^listen = \"127.0.0.1:$SHARDED_PORT\"/listen = \"127.0.0.1:$SHARDED2_PORT\"\nworker_threads = 2/" "$WORK/sharded.toml" >"$WORK/sharded2.toml"
./target/release/shardgate --log-level warn --config "$WORK/sharded2.toml" >"$WORK/sharded2.log" 2>&1 &
SHARDED2=$!
./target/release/shardgate --log-level warn --config "$WORK/onehost.toml" >"$WORK/onehost.log" 2>&1 &
ONEHOST=$!
# The sharded proxy over the three copies, and a relay in front of each copy.
sed -e "s/^listen = \"127.0.0.1:$ONEHOST_PORT\"/listen = \"127.0.0.1:$COPIES_PORT\"/" \
    -e "s#/shard\([0-9]\)\"#/relaycopy\1\"#" "$WORK/onehost.toml" >"$WORK/copies.toml"
./target/release/shardgate --log-level warn --config "$WORK/copies.toml" >"$WORK/copies.log" 2>&1 &
COPIES=$!
RELAYS3=
for i in 0 1 2; do
    sed -e "s/^listen = \"127.0.0.1:$RELAY_PORT\"/listen = \"127.0.0.1:$((COPIES_PORT + 1 + i))\"/" \
        -e "s#/relaydb\"#/relaycopy$i\"#" "$WORK/relay.toml" >"$WORK/relaycopy$i.toml"
    ./target/release/shardgate --log-level warn --config "$WORK/relaycopy$i.toml" >"$WORK/relaycopy$i.log" 2>&1 &
    RELAYS3="$RELAYS3 $!"
done
COPIES_URL="postgres://app:app@127.0.0.1:$COPIES_PORT/relaycopy0"
copy_url() { echo "postgres://app:app@127.0.0.1:$((COPIES_PORT + 1 + $1))/relaycopy$1"; }
sleep 1
echo "4. point lookups, 8 clients, sharded (3 shards) vs relay (1 shard), ${DURATION}s x $ROUNDS rounds"
declare -A SUM SPREAD PROXY_US PROXY_USER_US PG_US REST_US
HZ=$(getconf CLK_TCK)
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; } # user nice system irq softirq
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
user_ticks() { awk '{print $14}' "/proc/$1/stat"; }
# Every PostgreSQL process's (servers, backends) user and system time, in ticks. Pooled backends
# live through a run, so none of their time goes uncounted.
pg_ticks() { for p in $(pgrep -x postgres); do cat "/proc/$p/stat" 2>/dev/null || true; done | awk '{s += $14 + $15} END {print s + 0}'; }
run() { # mode target url proxy-pid
    local out tps txns p0 p1 u0 u1 b0 b1 g0 g1 bench
    p0=$(ticks "$4"); u0=$(user_ticks "$4"); b0=$(busy); g0=$(pg_ticks)
    out=$({ time pgbench -n -S -s 10 -M "$1" -c 8 -j 2 -T "$DURATION" "$3" 2>&1; } 2>"$WORK/time") || true
    p1=$(ticks "$4"); u1=$(user_ticks "$4"); b1=$(busy); g1=$(pg_ticks)
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' <<<"$out")
    txns=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
    # A client pgbench aborted at an error leaves the others counting on: a failed run too.
    if [ -z "$tps" ] || [ -z "$txns" ] || [ "$txns" = 0 ] || grep -q "number of failed transactions: [1-9]\|aborted" <<<"$out"; then
        echo "   $1 $2: FAILED"; tail -5 <<<"$out" | sed 's/^/     /'; tps=0; txns=0
    fi
    # CPU per lookup: the proxy's own, PostgreSQL's processes' own (their system calls too), and
    # the rest of the machine's busy time less pgbench's (the kernel's work outside them).
    bench=$(awk '{print $1 + $2}' "$WORK/time")
    # The proxy's user time is its own code; its system time, the kernel's work on its sockets.
    read -r proxy user pg rest < <(awk -v p=$((p1 - p0)) -v u=$((u1 - u0)) -v g=$((g1 - g0)) -v b=$((b1 - b0)) -v q="$bench" -v hz="$HZ" -v t="$txns" \
        'BEGIN{ if (t) printf "%.1f %.1f %.1f %.1f\n", p/hz/t*1e6, u/hz/t*1e6, g/hz/t*1e6, (b/hz - p/hz - g/hz - q)/t*1e6; else print "0 0 0 0" }')
    [ "$txns" != 0 ] && echo "   $1 $2: $tps tps; CPU per lookup: proxy $proxy us (user $user), PostgreSQL $pg us, the rest $rest us"
    SUM[$1,$2]=$(awk -v a="${SUM[$1,$2]:-0}" -v b="$tps" 'BEGIN{print a+b}')
    PROXY_US[$1,$2]=$(awk -v a="${PROXY_US[$1,$2]:-0}" -v b="$proxy" 'BEGIN{print a+b}')
    PROXY_USER_US[$1,$2]=$(awk -v a="${PROXY_USER_US[$1,$2]:-0}" -v b="$user" 'BEGIN{print a+b}')
    PG_US[$1,$2]=$(awk -v a="${PG_US[$1,$2]:-0}" -v b="$pg" 'BEGIN{print a+b}')
    REST_US[$1,$2]=$(awk -v a="${REST_US[$1,$2]:-0}" -v b="$rest" 'BEGIN{print a+b}')
    [ -n "${SPREAD[$1,$2]:-}" ] && SPREAD[$1,$2]="${SPREAD[$1,$2]} $tps" || SPREAD[$1,$2]=$tps
}
# PostgreSQL alone, no proxy: the same 8 clients as three pgbench processes (3 + 3 + 2), all
# against the relay's database, or one per shard server. Three servers sharing two cores cost
# PostgreSQL more per lookup than one, whatever sits in front; their ratio is the most a proxy
# that cost nothing could reach as sharded / relay on this machine.
run_direct() { # mode target url url url
    local mode=$1 target=$2 total=0 txns=0 i=0 c tps n g0 g1 pids=()
    shift 2
    # PostgreSQL's time counts only behind the relays, whose backends outlive the run.
    g0=$(pg_ticks)
    for url in "$@"; do
        c=$([ $i = 2 ] && echo 2 || echo 3)
        pgbench -n -S -s 10 -M "$mode" -c "$c" -j 1 -T "$DURATION" "$url" >"$WORK/direct.$i" 2>&1 &
        pids+=($!)
        i=$((i + 1))
    done
    # Only these: a bare wait would also wait for the proxies running in the background.
    wait "${pids[@]}" || true
    g1=$(pg_ticks)
    for i in 0 1 2; do
        tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$WORK/direct.$i")
        n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$WORK/direct.$i")
        if [ -z "$tps" ] || grep -q "aborted" "$WORK/direct.$i"; then
            echo "   $mode $target: FAILED"; tail -3 "$WORK/direct.$i" | sed 's/^/     /'; tps=0; n=0
        fi
        total=$(awk -v a="$total" -v b="$tps" 'BEGIN{print a+b}')
        txns=$((txns + ${n:-0}))
    done
    PG_US[$mode,$target]=$(awk -v a="${PG_US[$mode,$target]:-0}" -v g=$((g1 - g0)) -v hz="$HZ" -v t="$txns" 'BEGIN{print a + (t ? g/hz/t*1e6 : 0)}')
    echo "   $mode $target: $total tps"
    SUM[$mode,$target]=$(awk -v a="${SUM[$mode,$target]:-0}" -v b="$total" 'BEGIN{print a+b}')
    [ -n "${SPREAD[$mode,$target]:-}" ] && SPREAD[$mode,$target]="${SPREAD[$mode,$target]} $total" || SPREAD[$mode,$target]=$total
}
DIRECT_ONE="postgres://postgres@127.0.0.1:$((BASE + 1))/relaydb"
TIMEFORMAT='%U %S'
for round in $(seq "$ROUNDS"); do
    for mode in simple extended prepared; do
        run_direct "$mode" direct1 "$DIRECT_ONE" "$DIRECT_ONE" "$DIRECT_ONE"
        run_direct "$mode" direct3 "postgres://postgres@127.0.0.1:$((BASE + 1))/postgres" \
            "postgres://postgres@127.0.0.1:$((BASE + 2))/postgres" "postgres://postgres@127.0.0.1:$((BASE + 3))/postgres"
        run "$mode" relay "$RELAY_URL" "$RELAY"
        run "$mode" sharded "$SHARDED_URL" "$SHARDED"
        run "$mode" sharded2 "$SHARDED2_URL" "$SHARDED2"
        run "$mode" onehost "$ONEHOST_URL" "$ONEHOST"
        run "$mode" copies "$COPIES_URL" "$COPIES"
        run_direct "$mode" relays3 "$(copy_url 0)" "$(copy_url 1)" "$(copy_url 2)"
    done
done
echo
printf "%-9s %10s %10s %14s   %s\n" mode relay sharded "sharded/relay" "rounds (relay | sharded)"
for mode in simple extended prepared; do
    awk -v m="$mode" -v r="$ROUNDS" -v d="${SUM[$mode,relay]}" -v s="${SUM[$mode,sharded]}" \
        -v sp="${SPREAD[$mode,relay]} | ${SPREAD[$mode,sharded]}" \
        'BEGIN{d/=r; s/=r; printf "%-9s %10.0f %10.0f %14.2f   %s\n", m, d, s, (d ? s/d : 0), sp}'
done
echo
echo "PostgreSQL alone (no proxy, 8 clients): three servers against one. The ceiling a proxy that"
echo "cost nothing would reach as sharded / relay, and sharded / relay measured against it:"
printf "%-9s %10s %10s %8s %20s   %s\n" mode direct1 direct3 ratio "(sharded/relay)/ratio" "rounds (direct1 | direct3)"
for mode in simple extended prepared; do
    awk -v m="$mode" -v r="$ROUNDS" -v one="${SUM[$mode,direct1]}" -v three="${SUM[$mode,direct3]}" \
        -v d="${SUM[$mode,relay]}" -v s="${SUM[$mode,sharded]}" -v sp="${SPREAD[$mode,direct1]} | ${SPREAD[$mode,direct3]}" \
        'BEGIN{c = (one ? three/one : 0); printf "%-9s %10.0f %10.0f %8.2f %20s   %s\n", m, one/r, three/r, c, (c && d ? sprintf("%.2f", s/d/c) : "n/a"), sp}'
done
echo
echo "sharded over three databases of one server (onehost) against the relay: the proxy's own"
echo "cost, without what three PostgreSQL servers add on two cores:"
for mode in simple extended prepared; do
    awk -v m="$mode" -v r="$ROUNDS" -v d="${SUM[$mode,relay]}" -v o="${SUM[$mode,onehost]}" -v sp="${SPREAD[$mode,onehost]}" \
        'BEGIN{printf "%-9s %10.0f %10.0f %8s   %s\n", m, d/r, o/r, (d ? sprintf("%.2f", o/d) : "n/a"), sp}'
done
echo
echo "Over three copies of the relay's database on one server: the sharded proxy (copies)"
echo "against three relays, one per copy, the clients split 3 + 3 + 2 (relays3). Both spread the"
echo "lookups over three databases; only routing differs, except that three relay processes can"
echo "run on both cores at once and the sharded proxy's one worker thread cannot. PostgreSQL's"
echo "processes' CPU per lookup (µs) tells what the spreading costs it behind each:"
printf "%-9s %10s %10s %8s %16s   %s\n" mode relays3 copies ratio "PostgreSQL µs" "rounds (relays3 | copies)"
for mode in simple extended prepared; do
    awk -v m="$mode" -v r="$ROUNDS" -v t="${SUM[$mode,relays3]}" -v c="${SUM[$mode,copies]}" -v sp="${SPREAD[$mode,relays3]} | ${SPREAD[$mode,copies]}" \
        -v gt="${PG_US[$mode,relays3]:-0}" -v gc="${PG_US[$mode,copies]:-0}" \
        'BEGIN{printf "%-9s %10.0f %10.0f %8s %16s   %s\n", m, t/r, c/r, (t ? sprintf("%.2f", c/t) : "n/a"), sprintf("%.1f | %.1f", gt/r, gc/r), sp}'
done
echo
echo "sharded on two worker threads (sharded2) against one:"
for mode in simple extended prepared; do
    awk -v m="$mode" -v r="$ROUNDS" -v one="${SUM[$mode,sharded]}" -v two="${SUM[$mode,sharded2]}" \
        'BEGIN{printf "%-9s %10.0f %10.0f %8s\n", m, one/r, two/r, (one ? sprintf("%.2f", two/one) : "n/a")}'
done
echo
echo "CPU per lookup in microseconds, mean of the rounds: the proxy's own | PostgreSQL's processes'"
echo "| the rest (the kernel's work outside both, less pgbench). Throughput follows the sum: what"
echo "PostgreSQL spends more behind the sharded proxy counts as much as the proxy's own cost."
printf "%-9s %22s %22s %22s\n" mode relay sharded onehost
for mode in simple extended prepared; do
    awk -v m="$mode" -v r="$ROUNDS" \
        -v a="${PROXY_US[$mode,relay]}" -v b="${PG_US[$mode,relay]}" -v c="${REST_US[$mode,relay]}" \
        -v d="${PROXY_US[$mode,sharded]}" -v e="${PG_US[$mode,sharded]}" -v f="${REST_US[$mode,sharded]}" \
        -v g="${PROXY_US[$mode,onehost]}" -v h="${PG_US[$mode,onehost]}" -v i="${REST_US[$mode,onehost]}" \
        'BEGIN{printf "%-9s %6.1f | %5.1f | %5.1f %6.1f | %5.1f | %5.1f %6.1f | %5.1f | %5.1f\n", m, a/r, b/r, c/r, d/r, e/r, f/r, g/r, h/r, i/r}'
done
echo
echo "Of the proxy's own, its user time (its code, as against the kernel's work on its sockets):"
printf "%-9s %10s %10s %10s\n" mode relay sharded onehost
for mode in simple extended prepared; do
    awk -v m="$mode" -v r="$ROUNDS" -v a="${PROXY_USER_US[$mode,relay]}" -v b="${PROXY_USER_US[$mode,sharded]}" \
        -v c="${PROXY_USER_US[$mode,onehost]}" 'BEGIN{printf "%-9s %10.1f %10.1f %10.1f\n", m, a/r, b/r, c/r}'
done

# The proxy's own instructions per lookup (see benches/callgrind.sh): the sharded path's cost
# against the relay's, read without the machine's noise.
# shellcheck source=benches/callgrind.sh
. benches/callgrind.sh
if have_callgrind; then
    echo
    echo "5. the proxy's instructions per lookup (callgrind, 4 clients x 500 lookups after a warm-up)"
    CG_PORT=$((BASE + 55))
    count() { # config mode database
        sed -E "s/^listen = \"127.0.0.1:[0-9]+\"/listen = \"127.0.0.1:$CG_PORT\"/" "$1" >"$WORK/cg.toml"
        instructions_per_txn "$WORK" "$CG_PORT" "postgres://app:app@127.0.0.1:$CG_PORT/$3" "$2" "$(id -un)" \
            ./target/release/shardgate --log-level warn --config "$WORK/cg.toml"
    }
    printf "%-9s %10s %10s %8s\n" mode relay sharded ratio
    for mode in simple extended prepared; do
        r=$(count "$WORK/relay.toml" "$mode" relaydb)
        s=$(count "$WORK/sharded.toml" "$mode" postgres)
        awk -v m="$mode" -v r="$r" -v s="$s" 'BEGIN{printf "%-9s %10d %10d %8s\n", m, r, s, (r ? sprintf("%.2f", s/r) : "n/a")}'
    done
else
    echo
    echo "5. skipped: valgrind (callgrind) is not installed"
fi
