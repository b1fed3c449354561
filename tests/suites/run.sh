#!/usr/bin/env bash
# Runs client libraries' own test suites against direct PostgreSQL, shardgate on one shard and
# shardgate on three unlike shards, and prints pass/fail/skip counts per target.
#
#   tests/suites/run.sh psycopg|asyncpg [TARGET...]      TARGET: direct, one, three (default: all)
#
# Sources: SUITE_PSYCOPG_SRC is a psycopg git checkout (default: a clone from GitHub at the tag
# matching the installed version); asyncpg's tests come from its sdist on PyPI.
# SUITE_TESTS narrows the run (pytest node ids), SUITE_PYTEST_ARGS adds pytest options. It runs
# target/debug/shardgate, so `cargo build` first. Servers live under target/suites and are
# removed on exit; the logs and JUnit reports stay in target/suites/logs.
set -euo pipefail

suite=${1:?usage: run.sh psycopg|asyncpg [direct|one|three ...]}
shift
targets=("${@:-direct one three}")
targets=(${targets[@]})

root=$(cd "$(dirname "$0")/../.." && pwd)
work=$root/target/suites
logs=$work/logs
mkdir -p "$work" "$logs"
pgbin=${PGBIN:-/usr/lib/postgresql/15/bin}
psycopg_version=3.3.4
asyncpg_version=0.32.0

as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pids=()
dirs=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for d in "${dirs[@]}"; do
        as_owner "$pgbin/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$d"
    done
}
trap cleanup EXIT
# Servers an interrupted run left behind (one run at a time).
for stale in "$work"/pg-*; do
    [ -d "$stale" ] || continue
    as_owner "$pgbin/pg_ctl" -D "$stale" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$stale"
done

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_pg DIR PORT NEXT_OID: a throwaway server; NEXT_OID makes its catalogs differ from others'.
start_pg() {
    local dir=$1 port=$2 oid=$3
    dirs+=("$dir")
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    as_owner "$pgbin/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    [ "$oid" != 0 ] && as_owner "$pgbin/pg_resetwal" -o "$oid" "$dir" >/dev/null
    as_owner "$pgbin/pg_ctl" -D "$dir" -l "$dir/log" -w \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 \
            -c max_prepared_transactions=100 -c fsync=off -c synchronous_commit=off" start >/dev/null
}

# start_proxy N: N shards (unlike when N > 1) and a proxy; sets DSN.
start_proxy() {
    local n=$1 port config
    port=$(free_port)
    config=$work/proxy-$n.toml
    printf '[server]\nlisten = "127.0.0.1:%s"\n[metrics]\nlisten = ""\n' "$port" >"$config"
    printf '[[users]]\nname = "postgres"\npassword = "secret"\n' >>"$config"
    for i in $(seq 0 $((n - 1))); do
        local sport dir
        sport=$(free_port)
        dir=$work/pg-$n-$i
        start_pg "$dir" "$sport" $([ "$n" -gt 1 ] && echo $((20000 + 7919 * i)) || echo 0)
        # Unlike shards also hold objects the others lack.
        as_owner "$pgbin/psql" -qX -h "$dir" -p "$sport" -U postgres -d postgres \
            -c "create table local_only_$i(x int); insert into local_only_$i select generate_series(1, $i * 10)" >/dev/null
        printf '[[shards]]\nname = "s%s"\nurl = "postgres://postgres@127.0.0.1:%s/postgres"\n' "$i" "$sport" >>"$config"
    done
    cat "$root/tests/suites/$suite.toml" >>"$config"
    "$root/target/debug/shardgate" --config "$config" >"$logs/$suite-proxy-$n.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do
        PGPASSWORD=secret "$pgbin/psql" -qX "postgres://postgres@127.0.0.1:$port/postgres" -c 'select 1' >/dev/null 2>&1 && break
        sleep 0.2
    done
    DSN="host=127.0.0.1 port=$port user=postgres password=secret dbname=postgres"
}

start_direct() {
    local port
    port=$(free_port)
    start_pg "$work/pg-direct" "$port" 0
    DSN="host=127.0.0.1 port=$port user=postgres dbname=postgres"
}

venv=$work/venv
setup_venv() {
    [ -x "$venv/bin/pytest" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install -q "psycopg[binary]==$psycopg_version" "asyncpg==$asyncpg_version" \
        pytest anyio distro uvloop >/dev/null
}

fetch_psycopg() {
    local src=$work/psycopg
    [ -d "$src/tests" ] && return
    mkdir -p "$src"
    if [ -n "${SUITE_PSYCOPG_SRC:-}" ]; then
        git -C "$SUITE_PSYCOPG_SRC" archive "$psycopg_version" tests pyproject.toml | tar x -C "$src"
    else
        git clone -q --depth 1 --branch "$psycopg_version" https://github.com/psycopg/psycopg "$src.git"
        cp -r "$src.git/tests" "$src.git/pyproject.toml" "$src/"
        rm -rf "$src.git"
    fi
}

run_psycopg() {
    local name=$1
    fetch_psycopg
    # psycopg's conftest refuses to start after a run that did not finish (it assumes a crash).
    rm -rf "$work/pytest-cache-$name"
    # Tests that need tools not installed here (mypy, pproxy, gevent, numpy, DNS) skip themselves.
    (cd "$work/psycopg" && PSYCOPG_TEST_DSN="$DSN" timeout 3600 "$venv/bin/pytest" -q -o cache_dir="$work/pytest-cache-$name" \
        -o addopts="" -W ignore -m "not slow and not timing and not flakey" ${SUITE_PYTEST_ARGS:-} \
        --ignore tests/pool --ignore tests/crdb \
        --junitxml="$logs/psycopg-$name.xml" ${SUITE_TESTS:-tests} \
        >"$logs/psycopg-$name.log" 2>&1) || true
    tail -1 "$logs/psycopg-$name.log"
}

fetch_asyncpg() {
    local src=$work/asyncpg
    [ -d "$src/tests" ] && return
    mkdir -p "$src"
    "$venv/bin/pip" download -q --no-binary :all: --no-deps "asyncpg==$asyncpg_version" -d "$src/sdist"
    tar xzf "$src/sdist/asyncpg-$asyncpg_version.tar.gz" -C "$src/sdist"
    # Only the tests: beside the package's source, they would import it uncompiled.
    cp -r "$src/sdist/asyncpg-$asyncpg_version/tests" "$src/"
    rm -rf "$src/sdist"
}

run_asyncpg() {
    local name=$1 host port user password
    fetch_asyncpg
    # asyncpg's harness uses a running server when PGHOST is set.
    host=$(sed -E 's/.*host=([^ ]+).*/\1/' <<<"$DSN")
    port=$(sed -E 's/.*port=([^ ]+).*/\1/' <<<"$DSN")
    user=$(sed -E 's/.*user=([^ ]+).*/\1/' <<<"$DSN")
    password=$(sed -nE 's/.*password=([^ ]+).*/\1/p' <<<"$DSN")
    (cd "$work/asyncpg" && PGHOST=$host PGPORT=$port PGUSER=$user PGPASSWORD=$password PGDATABASE=postgres \
        timeout 3600 "$venv/bin/pytest" -q -o cache_dir="$work/pytest-cache-asyncpg-$name" -W ignore \
        --junitxml="$logs/asyncpg-$name.xml" ${SUITE_TESTS:-tests} \
        >"$logs/asyncpg-$name.log" 2>&1) || true
    tail -1 "$logs/asyncpg-$name.log"
}

setup_venv
for t in "${targets[@]}"; do
    case $t in
        direct) start_direct ;;
        one) start_proxy 1 ;;
        three) start_proxy 3 ;;
        *) echo "unknown target $t" >&2; exit 2 ;;
    esac
    printf '%s %s: ' "$suite" "$t"
    "run_$suite" "$t"
done
# Of the tests that pass directly, how many pass through the proxy, and why the others fail.
for t in "${targets[@]}"; do
    if [ "$t" != direct ] && [ -f "$logs/$suite-direct.xml" ] && [ -f "$logs/$suite-$t.xml" ]; then
        echo "== $suite, direct vs $t"
        python3 "$root/tests/suites/compare.py" "$logs/$suite-direct.xml" "$logs/$suite-$t.xml"
    fi
done
