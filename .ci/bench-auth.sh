#!/usr/bin/env bash
# Session-check benchmark: what the gate costs. The same nginx upstream serves a 1 KiB file at
# /1k (unprotected) and at /course/1k (a protected page); pagegate is measured on both, the
# protected one with a real session cookie obtained through the real sign-in flow (the code is
# read from the mail the file transport writes). Everything runs on 127.0.0.1 in a temporary
# directory removed on exit with every process started here. See docs/performance.md.
#
#   bash .ci/bench-auth.sh
#
# Settings (environment): BENCH_DURATION=10s BENCH_WARMUP=3s BENCH_CONNECTIONS=64 BENCH_THREADS=1
#                         PAGEGATE_BIN=... (use this binary instead of building one)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/.ci/bench
BENCH_DURATION=${BENCH_DURATION:-10s}
BENCH_WARMUP=${BENCH_WARMUP:-3s}
BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-64}
BENCH_THREADS=${BENCH_THREADS:-1}

BENCH_TAG=bench-auth
# shellcheck source=.ci/bench/lib.sh
. "$BENCH/lib.sh"
WORK=$(mktemp -d /tmp/pagegate-bench-auth.XXXXXX)

missing=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
apt_install "${missing[@]}"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
build_pagegate
PAGEGATE=$PG_BIN

wait_port() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.1; done; die "nothing listens on port $1"; }

UPSTREAM_PORT=$(free_ports 1); PG_PORT=$(free_ports 1)
USER_LINE=; [ "$(id -u)" -eq 0 ] && USER_LINE="user root;"
mkdir -p "$WORK/www/course" "$WORK/upstream-temp" "$WORK/mail"
head -c 1024 /dev/zero | tr '\0' 'x' >"$WORK/www/1k"
cp "$WORK/www/1k" "$WORK/www/course/1k"
render "$BENCH/upstream.nginx.conf" "$WORK/upstream.conf" DIR="$WORK" PORT="$UPSTREAM_PORT" \
    WORKERS=1 NOFILE=65536 USER_LINE="$USER_LINE"
render "$BENCH/auth.pagegate.toml" "$WORK/pagegate.toml" DIR="$WORK" PORT="$PG_PORT" UPSTREAM_PORT="$UPSTREAM_PORT"

"$NGINX" -c "$WORK/upstream.conf" -e "$WORK/upstream.err" &
STARTED_PIDS+=($!)
"$PAGEGATE" clients --config "$WORK/pagegate.toml" add --page course --email bench@example.com --name Bench >/dev/null
PAGEGATE_LOG=warn "$PAGEGATE" serve --config "$WORK/pagegate.toml" 2>"$WORK/pagegate.log" &
PG_PID=$!
STARTED_PIDS+=($PG_PID)
wait_port "$UPSTREAM_PORT"; wait_port "$PG_PORT"

# Sign in the way a browser does: form, code from the mail, verify.
BASE=http://127.0.0.1:$PG_PORT
# shellcheck source=.ci/bench/sign_in.sh
. "$BENCH/sign_in.sh"
cookie=$(sign_in "$BASE" bench@example.com /course/1k "$WORK/cookies" "$WORK/mail")
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $cookie" "$BASE/course/1k")" = 200 ] || die "the session does not open the page"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/course/1k")" = 302 ] || die "the page is not protected"

# CPU time (user + system, in clock ticks) pagegate has used so far: steadier than requests per
# second on a machine where the load generator and the upstream share the cores.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$PG_PID/stat"; }
TICK=$(getconf CLK_TCK)

run() { # NAME URL [wrk args...]: prints "NAME|req/s|p50|p99|CPU µs per request"
    local name=$1 url=$2; shift 2
    wrk -t"$BENCH_THREADS" -c"$BENCH_CONNECTIONS" -d"$BENCH_WARMUP" "$@" "$url" >/dev/null
    local before after out rps p50 p99 requests cpu
    before=$(cpu_ticks)
    out=$(wrk -t"$BENCH_THREADS" -c"$BENCH_CONNECTIONS" -d"$BENCH_DURATION" --latency "$@" "$url")
    after=$(cpu_ticks)
    grep -qE 'Non-2xx|Socket errors' <<<"$out" && { printf '%s\n' "$out" >&2; die "$name: errors during the run"; }
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    cpu=$(python3 -c "print(f'{($after - $before) / $TICK * 1e6 / $requests:.1f}')")
    printf '%s|%s|%s|%s|%s\n' "$name" "$rps" "$p50" "$p99" "$cpu"
}

# Alternate the two, BENCH_ROUNDS times each, so drift on a shared machine hits both alike.
rows=()
for _ in $(seq "${BENCH_ROUNDS:-3}"); do
    rows+=("$(run "unprotected /1k" "$BASE/1k")")
    rows+=("$(run "protected /course/1k, signed in" "$BASE/course/1k" -H "Cookie: $cookie")")
done

printf '\n| target | req/s | p50 | p99 | pagegate CPU per request |\n|---|---:|---:|---:|---:|\n'
for row in "${rows[@]}"; do
    IFS='|' read -r n r a b c <<<"$row"
    printf '| %s | %s | %s | %s | %s µs |\n' "$n" "$r" "$a" "$b" "$c"
done
printf '%s\n' "${rows[@]}" | python3 "$BENCH/auth_summary.py"
