#!/usr/bin/env bash
# End-to-end throughput: pgbench -S (8 clients) in simple, extended and prepared mode, directly
# against PostgreSQL, through PgBouncer (transaction mode) and through shardgate, in interleaved
# rounds on the same server in the same run. Prints TPS per target, the ratios of the means, and
# shardgate/PgBouncer round by round (the spread). A second shardgate with `worker_threads = 2`
# in front of the same server shows how the proxy scales with a second thread.
#
#   benches/pgbench.sh [DURATION_SECONDS=10] [ROUNDS=2]
#
# Uses `shardgate demo --shards 1` for the server and the proxy. PgBouncer is $PGBOUNCER if set,
# else the one on PATH (installed from the distribution if missing). From 1.21 on, PgBouncer
# carries prepared statements across server connections in transaction mode
# (`max_prepared_statements`), which the script then turns on; older ones abort prepared-mode
# clients, and those runs are left out of the comparison.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
ROUNDS=${2:-2}
CLIENTS=8
BASE=${BENCH_PORT:-16432}
PG_PORT=$((BASE + 1))
BOUNCER_PORT=$((BASE + 100))
TWO_THREADS_PORT=$((BASE + 50))
WORK=$(mktemp -d /tmp/shardgate-bench.XXXXXX)
chmod 755 "$WORK"

if [ -z "${PGBOUNCER:-}" ] && ! command -v pgbouncer >/dev/null && [ ! -x /usr/sbin/pgbouncer ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer
fi
PGBOUNCER=${PGBOUNCER:-$(command -v pgbouncer || echo /usr/sbin/pgbouncer)}
BOUNCER_VERSION=$("$PGBOUNCER" --version | sed -n 's/^PgBouncer \([0-9.]*\).*/\1/p')
# Prepared statements in transaction mode: 1.21 and later.
BOUNCER_PREPARED=""
if printf '1.21\n%s\n' "$BOUNCER_VERSION" | sort -V -C; then
    BOUNCER_PREPARED="max_prepared_statements = 200"
fi

cargo build --release -q
./target/release/shardgate --log-level warn demo --shards 1 --port "$BASE" --metrics-port $((BASE + 200)) --dir "$WORK/demo" >"$WORK/demo.log" 2>&1 &
DEMO=$!
cleanup() {
    kill "$DEMO" 2>/dev/null || true
    [ -n "${TWO:-}" ] && kill "$TWO" 2>/dev/null || true
    [ -n "${BOUNCER:-}" ] && kill "$BOUNCER" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
for _ in $(seq 100); do grep -q "press Ctrl-C" "$WORK/demo.log" && break; sleep 0.2; done
grep -q "press Ctrl-C" "$WORK/demo.log" || { cat "$WORK/demo.log"; exit 1; }

# The same proxy configuration as the demo's, on two worker threads.
sed -e "s/^listen = \"127.0.0.1:$BASE\"/listen = \"127.0.0.1:$TWO_THREADS_PORT\"\nworker_threads = 2/" \
    -e "s/^listen = \"127.0.0.1:$((BASE + 200))\"/listen = \"\"/" "$WORK/demo/shardgate.toml" >"$WORK/two-threads.toml"
./target/release/shardgate --log-level warn --config "$WORK/two-threads.toml" >"$WORK/two-threads.log" 2>&1 &
TWO=$!

cat >"$WORK/pgbouncer.ini" <<INI
[databases]
postgres = host=127.0.0.1 port=$PG_PORT dbname=postgres user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $WORK/userlist.txt
pool_mode = transaction
default_pool_size = $CLIENTS
max_client_conn = 100
$BOUNCER_PREPARED
INI
echo '"postgres" ""' >"$WORK/userlist.txt"
chown -R postgres "$WORK/pgbouncer.ini" "$WORK/userlist.txt" 2>/dev/null || true
if [ "$(id -u)" = 0 ]; then
    chmod 777 "$WORK"
    runuser -u postgres -- "$PGBOUNCER" -q "$WORK/pgbouncer.ini" >/dev/null 2>&1 &
else
    "$PGBOUNCER" -q "$WORK/pgbouncer.ini" >/dev/null 2>&1 &
fi
BOUNCER=$!
sleep 1
# PgBouncer's own process (under runuser, $! is runuser's), for its CPU time.
BOUNCER_PID=$(pgrep -x -f "$PGBOUNCER -q $WORK/pgbouncer.ini" | head -1 || true)

DIRECT="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
BOUNCED="postgres://postgres@127.0.0.1:$BOUNCER_PORT/postgres"
PROXIED="postgres://app:app@127.0.0.1:$BASE/postgres"
PROXIED_TWO="postgres://app:app@127.0.0.1:$TWO_THREADS_PORT/postgres"
pgbench -i -s 10 -q "$DIRECT" >/dev/null 2>&1

declare -A SUM USER_TICKS SYSTEM_TICKS TXNS
# A process's user and system time so far, in clock ticks.
cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat" 2>/dev/null || echo "0 0"; }
run() { # mode target url
    local out tps txns pid="" u0 s0 u1 s1
    case $2 in
        pgbouncer) pid=${BOUNCER_PID:-} ;;
        shardgate) pid=$DEMO ;;
    esac
    [ -n "$pid" ] && read -r u0 s0 < <(cpu_ticks "$pid")
    out=$(pgbench -S -M "$1" -c $CLIENTS -j 2 -T "$DURATION" "$3" 2>&1) || true
    [ -n "$pid" ] && read -r u1 s1 < <(cpu_ticks "$pid")
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' <<<"$out")
    txns=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
    if [ -z "$tps" ] || grep -q "number of failed transactions: [1-9]" <<<"$out"; then
        echo "  $1 $2: FAILED"; sed 's/^/    /' <<<"$out" | tail -5
        tps=0
    elif grep -q "aborted" <<<"$out"; then
        # pgbench ends a client at its first error and counts on with the rest: the figure is
        # not a comparison (PgBouncer before 1.21 in transaction mode, for one, carries no
        # prepared statements, so a client meeting a connection without its statement is aborted).
        echo "  $1 $2: $tps tps with $(grep -c "client [0-9]* .*aborted" <<<"$out") clients aborted: left out"
        ABORTED[$1,$2]=$((${ABORTED[$1,$2]:-0} + 1))
        [ "$2" = pgbouncer ] && LAST_BOUNCER=0
        [ "$2" = shardgate ] && RATIOS[$1]="${RATIOS[$1]:-} x"
        return 0
    else
        echo "  $1 $2: $tps tps"
        if [ -n "$pid" ] && [ -n "$txns" ]; then
            USER_TICKS[$1,$2]=$((${USER_TICKS[$1,$2]:-0} + u1 - u0))
            SYSTEM_TICKS[$1,$2]=$((${SYSTEM_TICKS[$1,$2]:-0} + s1 - s0))
            TXNS[$1,$2]=$((${TXNS[$1,$2]:-0} + txns))
        fi
    fi
    SUM[$1,$2]=$(awk -v a="${SUM[$1,$2]:-0}" -v b="$tps" 'BEGIN{print a+b}')
    COUNTED[$1,$2]=$((${COUNTED[$1,$2]:-0} + 1))
    # Per round, the ratio of shardgate to PgBouncer (run just before it), for the spread.
    if [ "$2" = shardgate ]; then
        RATIOS[$1]="${RATIOS[$1]:-} $(awk -v s="$tps" -v p="$LAST_BOUNCER" 'BEGIN{if (p) printf "%.2f", s/p; else printf "x"}')"
    fi
    [ "$2" = pgbouncer ] && LAST_BOUNCER=$tps
    return 0
}
# Rounds counted in each mean (a run with aborted clients is not), and runs left out.
declare -A RATIOS COUNTED ABORTED
LAST_BOUNCER=0
for round in $(seq "$ROUNDS"); do
    echo "round $round"
    for mode in simple extended prepared; do
        run "$mode" direct "$DIRECT"
        run "$mode" pgbouncer "$BOUNCED"
        run "$mode" shardgate "$PROXIED"
        run "$mode" shardgate2 "$PROXIED_TWO"
    done
done

mean() { # mode target: the mean of its counted rounds, 0 with none
    awk -v s="${SUM[$1,$2]:-0}" -v n="${COUNTED[$1,$2]:-0}" 'BEGIN{print (n ? s/n : 0)}'
}
echo
echo "pgbench -S, $CLIENTS clients, ${DURATION}s x $ROUNDS rounds (mean TPS of the rounds without aborted clients)"
echo "PgBouncer $BOUNCER_VERSION${BOUNCER_PREPARED:+ ($BOUNCER_PREPARED)}"
printf "%-9s %10s %10s %10s %12s %12s %14s\n" mode direct pgbouncer shardgate "sg/direct" "pgb/direct" "sg/pgbouncer"
for mode in simple extended prepared; do
    awk -v m="$mode" -v d="$(mean "$mode" direct)" -v p="$(mean "$mode" pgbouncer)" -v s="$(mean "$mode" shardgate)" \
        'BEGIN{printf "%-9s %10.0f %10.0f %10.0f %12.2f %12.2f %14s\n", m, d, p, s, (d?s/d:0), (d?p/d:0), (p?sprintf("%.2f", s/p):"n/a")}'
done
for key in "${!ABORTED[@]}"; do
    echo "${key%,*} ${key#*,}: ${ABORTED[$key]} of $ROUNDS rounds had clients aborted by errors and are left out"
done
echo
echo "CPU per lookup in microseconds, user / system, over all rounds: the user time is the proxy's"
echo "own code, the system time the kernel's work on its sockets (the same system calls for both)."
HZ=$(getconf CLK_TCK)
printf "%-9s %16s %16s\n" mode pgbouncer shardgate
for mode in simple extended prepared; do
    awk -v m="$mode" -v hz="$HZ" -v pu="${USER_TICKS[$mode,pgbouncer]:-0}" -v ps="${SYSTEM_TICKS[$mode,pgbouncer]:-0}" \
        -v pt="${TXNS[$mode,pgbouncer]:-0}" -v su="${USER_TICKS[$mode,shardgate]:-0}" -v ss="${SYSTEM_TICKS[$mode,shardgate]:-0}" \
        -v st="${TXNS[$mode,shardgate]:-0}" \
        'function f(u, s, t) { return t ? sprintf("%.1f / %.1f", u/hz/t*1e6, s/hz/t*1e6) : "n/a" }
         BEGIN{printf "%-9s %16s %16s\n", m, f(pu, ps, pt), f(su, ss, st)}'
done
echo
echo "shardgate with worker_threads = 2 (shardgate2) against 1:"
for mode in simple extended prepared; do
    awk -v m="$mode" -v one="$(mean "$mode" shardgate)" -v two="$(mean "$mode" shardgate2)" \
        'BEGIN{printf "%-9s %10.0f %10.0f %8s\n", m, one, two, (one?sprintf("%.2f", two/one):"n/a")}'
done
echo
echo "shardgate/pgbouncer by round (min .. max; x: a round left out):"
for mode in simple extended prepared; do
    # shellcheck disable=SC2086
    printf "%-9s %s  (%s)\n" "$mode" "$(tr ' ' '\n' <<<"${RATIOS[$mode]}" | sed '/^$/d;/^x$/d' | sort -n | sed -n '1p;$p' | paste -sd' ' | sed 's/ / .. /')" "${RATIOS[$mode]# }"
done

# shellcheck source=benches/callgrind.sh
. benches/callgrind.sh
if have_callgrind; then
    echo
    echo "instructions per transaction (callgrind, 4 clients x 500 lookups after a warm-up):"
    CG_PORT=$((BASE + 60))
    sed "s/^listen_port = .*/listen_port = $CG_PORT/" "$WORK/pgbouncer.ini" >"$WORK/pgbouncer-cg.ini"
    sed -e "s/^listen = \"127.0.0.1:$BASE\"/listen = \"127.0.0.1:$CG_PORT\"/" \
        -e "s/^listen = \"127.0.0.1:$((BASE + 200))\"/listen = \"\"/" "$WORK/demo/shardgate.toml" >"$WORK/cg.toml"
    BOUNCER_USER=$(id -un)
    [ "$(id -u)" = 0 ] && BOUNCER_USER=postgres
    chown "$BOUNCER_USER" "$WORK/pgbouncer-cg.ini" 2>/dev/null || true
    printf "%-9s %10s %10s %14s\n" mode pgbouncer shardgate "sg/pgbouncer"
    for mode in simple extended prepared; do
        p=$(instructions_per_txn "$WORK" "$CG_PORT" "postgres://postgres@127.0.0.1:$CG_PORT/postgres" "$mode" \
            "$BOUNCER_USER" "$PGBOUNCER" -q "$WORK/pgbouncer-cg.ini")
        s=$(instructions_per_txn "$WORK" "$CG_PORT" "postgres://app:app@127.0.0.1:$CG_PORT/postgres" "$mode" \
            "$(id -un)" ./target/release/shardgate --log-level warn --config "$WORK/cg.toml")
        awk -v m="$mode" -v p="$p" -v s="$s" 'BEGIN{printf "%-9s %10d %10d %14s\n", m, p, s, (p ? sprintf("%.2f", s/p) : "n/a")}'
    done
else
    echo
    echo "instructions per transaction: skipped, valgrind (callgrind) is not installed"
fi
