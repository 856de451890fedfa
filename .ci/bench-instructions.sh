#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind (user space, all threads): nginx as
# a proxy, the hyper floor (.ci/bench/bare_proxy.rs), pagegate on an unprotected path and
# pagegate on a protected page with a signed-in visitor's cookie, all in front of the same nginx
# upstream serving 1 KiB. Instruction counts do not depend on what else the machine runs, so
# this is the figure to compare between builds (docs/performance.md, "Instructions per request").
#
#   bash .ci/bench-instructions.sh
#
# Each proxy runs with one worker under callgrind twice: WARMUP requests uncounted, then BASELINE
# (first run) or BASELINE + MEASURED (second run) counted ones, over CONNECTIONS keep-alive
# connections, then a stop. The difference of the two counts divided by MEASURED is the cost of
# one request, the stop cancelling out.
# Settings (environment): WARMUP=1000 BASELINE=500 MEASURED=4000 CONNECTIONS=4
#                         PAGEGATE_BIN=... FLOOR_BIN=... (use these binaries instead of building)
#                         PROFILE_DIR=... (keep each target's larger profile there, for
#                         callgrind_annotate)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/.ci/bench
WARMUP=${WARMUP:-1000}
BASELINE=${BASELINE:-500}
MEASURED=${MEASURED:-4000}
CONNECTIONS=${CONNECTIONS:-4}

BENCH_TAG=bench-instructions
# shellcheck source=.ci/bench/lib.sh
. "$BENCH/lib.sh"
WORK=$(mktemp -d /tmp/pagegate-bench-instr.XXXXXX)

missing=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v valgrind >/dev/null || missing+=(valgrind)
command -v curl >/dev/null || missing+=(curl)
apt_install "${missing[@]}"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
build_pagegate
FLOOR=${FLOOR_BIN:-$(build_example bare_proxy)}

# wait_port PORT PID: until something answers on PORT; a process under valgrind starts slowly.
wait_port() {
    for _ in $(seq 600); do
        curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0
        kill -0 "$2" 2>/dev/null || die "the process for port $1 ended (see $WORK/run.log)"
        sleep 0.1
    done
    die "nothing listens on port $1"
}

read -r UPSTREAM_PORT PROXY_PORT < <(free_ports 2)
USER_LINE=; [ "$(id -u)" -eq 0 ] && USER_LINE="user root;"
mkdir -p "$WORK/www/course" "$WORK/upstream-temp" "$WORK/proxy-temp" "$WORK/mail"
head -c 1024 /dev/zero | tr '\0' 'x' >"$WORK/www/1k"
cp "$WORK/www/1k" "$WORK/www/course/1k"
render "$BENCH/upstream.nginx.conf" "$WORK/upstream.conf" DIR="$WORK" PORT="$UPSTREAM_PORT" \
    WORKERS=1 NOFILE=65536 USER_LINE="$USER_LINE"
start_nginx upstream "$WORK/upstream.conf"
wait_port "$UPSTREAM_PORT" "$LAST_PID"

# nginx as the proxy: one process, no master, so callgrind sees the worker's instructions.
render "$BENCH/proxy.nginx.conf" "$WORK/proxy.conf" DIR="$WORK" PORT="$PROXY_PORT" \
    UPSTREAM_PORT="$UPSTREAM_PORT" NOFILE=65536 USER_LINE="$USER_LINE"
sed -i 's/^worker_processes auto;/worker_processes 1;/; s/^master_process on;/master_process off;/' "$WORK/proxy.conf"
# pagegate: the session-check benchmark's configuration with one worker.
render "$BENCH/auth.pagegate.toml" "$WORK/pagegate.toml" DIR="$WORK" PORT="$PROXY_PORT" \
    UPSTREAM_PORT="$UPSTREAM_PORT"
sed -i 's/^\[server\]$/[server]\nworkers = 1/' "$WORK/pagegate.toml"

# A signed-in visitor, made once without valgrind: the session lives in the database and the
# key in the data directory, so the cookie stays good in every run below.
"$PG_BIN" clients --config "$WORK/pagegate.toml" add --page course --email bench@example.com --name Bench >/dev/null
PAGEGATE_LOG=warn "$PG_BIN" serve --config "$WORK/pagegate.toml" 2>"$WORK/pagegate.log" &
pid=$!
STARTED_PIDS+=("$pid")
wait_port "$PROXY_PORT" "$pid"
# shellcheck source=.ci/bench/sign_in.sh
. "$BENCH/sign_in.sh"
COOKIE=$(sign_in "http://127.0.0.1:$PROXY_PORT" bench@example.com /course/1k "$WORK/cookies" "$WORK/mail")
[ -n "$COOKIE" ] || die "no session cookie"
kill -TERM "$pid"; wait "$pid" || true

# counted N PATH COOKIE STOP_SIGNAL COMMAND...: instructions of COMMAND serving N requests after
# WARMUP uncounted ones, and then stopping. Counting starts only after the warm-up
# (`callgrind_control -i on`), so start-up work whose length depends on time (the rate limiters'
# clock calibration, a few million instructions that vary from run to run) is left out.
counted() {
    local n=$1 path=$2 cookie=$3 signal=$4; shift 4
    local out=$WORK/callgrind.out
    rm -f "$out"
    valgrind --tool=callgrind --instr-atstart=no --trace-children=yes --callgrind-out-file="$out" \
        "$@" >"$WORK/run.log" 2>&1 &
    local pid=$!
    STARTED_PIDS+=("$pid")
    wait_port "$PROXY_PORT" "$pid"
    python3 "$BENCH/fixed_requests.py" "$PROXY_PORT" "$path" "$WARMUP" "$CONNECTIONS" ${cookie:+"$cookie"} \
        || die "the warm-up requests failed (see $WORK/run.log)"
    callgrind_control -i on "$pid" >/dev/null || die "callgrind_control could not reach $pid"
    python3 "$BENCH/fixed_requests.py" "$PROXY_PORT" "$path" "$n" "$CONNECTIONS" ${cookie:+"$cookie"} \
        || die "the requests failed (see $WORK/run.log)"
    kill "-$signal" "$pid"
    wait "$pid" || true
    [ -s "$out" ] || die "callgrind wrote no profile"
    awk '/^totals:/ {print $2}' "$out"
}
# per_request NAME PATH COOKIE STOP_SIGNAL COMMAND...: prints "NAME|instructions per request".
per_request() {
    local name=$1 path=$2 cookie=$3 signal=$4; shift 4
    local low high
    # Both runs count the same shutdown; the difference is MEASURED requests.
    low=$(counted "$BASELINE" "$path" "$cookie" "$signal" "$@")
    high=$(counted "$((BASELINE + MEASURED))" "$path" "$cookie" "$signal" "$@")
    if [ -n "${PROFILE_DIR:-}" ]; then
        mkdir -p "$PROFILE_DIR"
        cp "$WORK/callgrind.out" "$PROFILE_DIR/callgrind.$(echo "$name" | tr -c 'A-Za-z0-9\n' '-')"
    fi
    printf '%s|%s\n' "$name" "$(( (high - low) / MEASURED ))"
    printf 'bench-instructions: %s done\n' "$name" >&2
}

rows=()
rows+=("$(per_request "nginx proxy" /1k "" QUIT "$NGINX" -c "$WORK/proxy.conf" -e "$WORK/proxy.err")")
rows+=("$(per_request "hyper floor (bare_proxy)" /1k "" TERM taskset -c 0 "$FLOOR" "127.0.0.1:$PROXY_PORT" "127.0.0.1:$UPSTREAM_PORT")")
export PAGEGATE_LOG=warn
rows+=("$(per_request "pagegate, unprotected /1k" /1k "" TERM "$PG_BIN" serve --config "$WORK/pagegate.toml")")
rows+=("$(per_request "pagegate, protected /course/1k, signed in" /course/1k "$COOKIE" TERM "$PG_BIN" serve --config "$WORK/pagegate.toml")")

floor=$(printf '%s\n' "${rows[@]}" | awk -F'|' '/^hyper floor/ {print $2}')
echo
echo "Instructions per request at $(pagegate_commit) (callgrind, one worker, $MEASURED requests over $CONNECTIONS keep-alive connections, counted after $WARMUP; $(uname -m), $(nproc) CPUs)"
echo
echo "| target | instructions per request | × floor |"
echo "|---|---:|---:|"
for row in "${rows[@]}"; do
    name=${row%%|*}; value=${row##*|}
    printf '| %s | %s | ×%s |\n' "$name" "$value" "$(python3 -c "print(f'{$value / $floor:.2f}')")"
done
