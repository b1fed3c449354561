# Sourced by the benchmarks: a proxy's user-space instructions per pgbench transaction, counted
# by valgrind's callgrind. Unlike CPU time they do not move with the machine's speed or with
# the other processes on it, so two proxies (or two paths of one) compare without noise. The
# kernel's network work, about the same for every proxy, is not counted.
#
#   instructions_per_txn WORK PORT URL MODE USER COMMAND...
#
# Starts COMMAND (the proxy, listening on PORT) under callgrind as USER, warms it up with 200
# transactions, counts 4 clients x 500 point lookups (pgbench -S) in MODE against URL, stops
# the proxy and prints the instructions per transaction (0 if the run failed). WORK must be a
# directory USER can write to.

have_callgrind() {
    command -v valgrind >/dev/null && command -v callgrind_control >/dev/null
}

instructions_per_txn() {
    local work=$1 port=$2 url=$3 mode=$4 user=$5 pid total
    shift 5
    local as=()
    [ "$user" != "$(id -un)" ] && as=(runuser -u "$user" --)
    rm -f "$work"/cg.out.*
    "${as[@]}" valgrind --tool=callgrind --callgrind-out-file="$work/cg.out.%p" "$@" >"$work/cg.log" 2>&1 &
    pid=$!
    for _ in $(seq 120); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.5
    done
    pgbench -n -S -s 10 -M "$mode" -c 4 -j 1 -t 50 "$url" >/dev/null 2>&1 || true
    # With no process named, callgrind_control acts on every callgrind run of the user: the
    # one started here.
    "${as[@]}" callgrind_control -z >/dev/null 2>&1
    pgbench -n -S -s 10 -M "$mode" -c 4 -j 1 -t 500 "$url" >"$work/cg.bench" 2>&1 || true
    "${as[@]}" callgrind_control -d >/dev/null 2>&1
    "${as[@]}" callgrind_control -k >/dev/null 2>&1 || true
    kill -INT "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    total=$(sed -n 's/^summary: //p' "$work"/cg.out.*.1 2>/dev/null | head -1)
    if grep -q "number of transactions actually processed: 2000/2000" "$work/cg.bench" && [ -n "$total" ]; then
        echo $((total / 2000))
    else
        echo 0
    fi
}
