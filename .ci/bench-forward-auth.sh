#!/usr/bin/env bash
# Forward-auth benchmark: signed-in requests for a protected 1 KiB file, in one run, three ways:
#
#   nginx auth_request -> pagegate   the edge nginx with the shipped config/forward-auth/nginx.conf
#                                    asking pagegate about every request, then serving the file
#                                    from the upstream nginx
#   nginx auth_request -> 204        the same edge and snippet asking an nginx location that
#                                    answers 204 to everything: the fastest possible auth
#                                    service, the floor of this architecture
#   pagegate full proxy              pagegate in front of the same upstream, no edge
#
# Besides requests per second and latency, each run gives the CPU time per request of the auth
# service it asks (pagegate, or the floor's nginx worker; pagegate itself as the full proxy).
#
# Everything runs on 127.0.0.1 in a temporary directory removed on exit with every process
# started here. The session is real: signed in through the edge by the email form, the code read
# from the mail the file transport writes. See docs/performance.md.
#
#   bash .ci/bench-forward-auth.sh
#
# Settings (environment): BENCH_DURATION=10s BENCH_WARMUP=3s BENCH_CONNECTIONS=64 BENCH_THREADS=1
#                         BENCH_ROUNDS=3 (runs of each, interleaved, order turned every round)
#                         PAGEGATE_BIN=... (use this binary instead of building one)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/.ci/bench
BENCH_DURATION=${BENCH_DURATION:-10s}
BENCH_WARMUP=${BENCH_WARMUP:-3s}
BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-64}
BENCH_THREADS=${BENCH_THREADS:-1}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
HOST=school.example

BENCH_TAG=bench-forward-auth
# shellcheck source=.ci/bench/lib.sh
. "$BENCH/lib.sh"
WORK=$(mktemp -d /tmp/pagegate-bench-fwd.XXXXXX)

missing=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
apt_install "${missing[@]}"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
build_pagegate
PAGEGATE=$PG_BIN

wait_port() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.1; done; die "nothing listens on port $1"; }
# The shipped snippet with the benchmark's addresses, as docs/forward-auth.md has it installed.
snippet() { # NAME EDGE_PORT AUTH_PORT
    sed -e "s/    listen 80;/    listen 127.0.0.1:$2 backlog=4096;/" \
        -e "s/127\.0\.0\.1:9091/127.0.0.1:$3/" \
        -e "s/127\.0\.0\.1:8000/127.0.0.1:$UPSTREAM_PORT/" \
        "$ROOT/config/forward-auth/nginx.conf" >"$WORK/$1.snippet.conf"
    mkdir -p "$WORK/$1-temp"
    render "$BENCH/forward-auth.edge.nginx.conf" "$WORK/$1.conf" DIR="$WORK" NAME="$1" USER_LINE="$USER_LINE"
}

UPSTREAM_PORT=$(free_ports 1); PG_PORT=$(free_ports 1); FLOOR_PORT=$(free_ports 1)
EDGE_PG_PORT=$(free_ports 1); EDGE_FLOOR_PORT=$(free_ports 1)
USER_LINE=; [ "$(id -u)" -eq 0 ] && USER_LINE="user root;"
mkdir -p "$WORK/www/course" "$WORK/upstream-temp" "$WORK/floor-temp" "$WORK/mail"
head -c 1024 /dev/zero | tr '\0' 'x' >"$WORK/www/course/1k"
render "$BENCH/upstream.nginx.conf" "$WORK/upstream.conf" DIR="$WORK" PORT="$UPSTREAM_PORT" \
    WORKERS=1 NOFILE=65536 USER_LINE="$USER_LINE"
render "$BENCH/forward-auth.floor.nginx.conf" "$WORK/floor.conf" DIR="$WORK" PORT="$FLOOR_PORT" USER_LINE="$USER_LINE"
render "$BENCH/forward-auth.pagegate.toml" "$WORK/pagegate.toml" DIR="$WORK" PORT="$PG_PORT" UPSTREAM_PORT="$UPSTREAM_PORT"
snippet edge-pagegate "$EDGE_PG_PORT" "$PG_PORT"
snippet edge-floor "$EDGE_FLOOR_PORT" "$FLOOR_PORT"

for conf in upstream floor edge-pagegate edge-floor; do
    "$NGINX" -c "$WORK/$conf.conf" -e "$WORK/$conf.err" &
    STARTED_PIDS+=($!)
    [ "$conf" = floor ] && FLOOR_PID=$!
done
"$PAGEGATE" clients --config "$WORK/pagegate.toml" add --page course --email bench@example.com --name Bench >/dev/null
PAGEGATE_LOG=warn "$PAGEGATE" serve --config "$WORK/pagegate.toml" 2>"$WORK/pagegate.log" &
PG_PID=$!
STARTED_PIDS+=($PG_PID)
for port in "$UPSTREAM_PORT" "$FLOOR_PORT" "$PG_PORT" "$EDGE_PG_PORT" "$EDGE_FLOOR_PORT"; do wait_port "$port"; done

# Sign in through the edge the way a browser does: form, code from the mail, verify.
JAR=$WORK/cookies
EDGE=http://127.0.0.1:$EDGE_PG_PORT
H=(-H "Host: $HOST")
csrf=$(curl -s "${H[@]}" -c "$JAR" -b "$JAR" "$EDGE/_pagegate/login?next=/course/1k" | grep -o 'name="csrf" value="[^"]*"' | head -1 | sed 's/.*value="//;s/"$//')
[ -n "$csrf" ] || die "no CSRF token on the email form"
curl -s -o /dev/null "${H[@]}" -c "$JAR" -b "$JAR" --data-urlencode email=bench@example.com --data-urlencode next=/course/1k \
    --data-urlencode "csrf=$csrf" "$EDGE/_pagegate/login"
for _ in $(seq 100); do ls "$WORK/mail"/*.eml >/dev/null 2>&1 && break; sleep 0.1; done
code=$(grep -hoE '\b[0-9]{6}\b' "$WORK/mail"/*.eml | head -1)
[ -n "$code" ] || die "no code in the mail"
status=$(curl -s -o /dev/null -w '%{http_code}' "${H[@]}" -c "$JAR" -b "$JAR" --data-urlencode email=bench@example.com \
    --data-urlencode "code=$code" --data-urlencode next=/course/1k --data-urlencode "csrf=$csrf" "$EDGE/_pagegate/verify")
[ "$status" = 303 ] || die "sign-in failed with status $status"
cookie=$(awk '$6 ~ /^pagegate-[0-9a-f]+$/ {print $6"="$7}' "$JAR" | head -1)
[ -n "$cookie" ] || die "no session cookie after sign-in"
code_of() { curl -s -o /dev/null -w '%{http_code}' "${H[@]}" "$@"; }
for base in "$EDGE" "http://127.0.0.1:$PG_PORT"; do
    [ "$(code_of -H "Cookie: $cookie" "$base/course/1k")" = 200 ] || die "the session does not open the page at $base"
    [ "$(code_of "$base/course/1k")" = 302 ] || die "the page is not protected at $base"
done
[ "$(code_of -H "Cookie: $cookie" "http://127.0.0.1:$EDGE_FLOOR_PORT/course/1k")" = 200 ] || die "the floor does not serve the page"

# CPU time (user + system, in clock ticks) a process has used so far: of the auth service
# asked in each run (pagegate, or the floor's nginx worker; none for the full proxy, where the
# figure is pagegate's whole work).
cpu_ticks() { # PID...: their user + system ticks, summed
    local pid total=0
    for pid in "$@"; do total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat"))); done
    echo "$total"
}
TICK=$(getconf CLK_TCK)
FLOOR_WORKERS=$(ps -o pid= --ppid "$FLOOR_PID" | tr -d ' ' | tr '\n' ' ')
[ -n "$FLOOR_WORKERS" ] || die "no worker process of the floor's nginx"

run() { # NAME PORT PIDS: prints "NAME|req/s|p50|p99|CPU µs per request of PIDS"
    local name=$1 url="http://127.0.0.1:$2/course/1k" pids
    read -ra pids <<<"$3"
    local args=(-t"$BENCH_THREADS" -c"$BENCH_CONNECTIONS" -H "Host: $HOST" -H "Cookie: $cookie")
    wrk "${args[@]}" -d"$BENCH_WARMUP" "$url" >/dev/null
    local before after out rps p50 p99 requests cpu
    before=$(cpu_ticks "${pids[@]}")
    out=$(wrk "${args[@]}" -d"$BENCH_DURATION" --latency "$url")
    after=$(cpu_ticks "${pids[@]}")
    grep -qE 'Non-2xx|Socket errors' <<<"$out" && { printf '%s\n' "$out" >&2; die "$name: errors during the run"; }
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    cpu=$(python3 -c "print(f'{($after - $before) / $TICK * 1e6 / $requests:.1f}')")
    printf '%s|%s|%s|%s|%s\n' "$name" "$rps" "$p50" "$p99" "$cpu"
}

# Interleaved rounds, the order turned every other round, so drift on a shared machine hits
# all three alike.
names=("auth_request -> pagegate" "auth_request -> 204 floor" "pagegate full proxy")
ports=("$EDGE_PG_PORT" "$EDGE_FLOOR_PORT" "$PG_PORT")
pids=("$PG_PID" "$FLOOR_WORKERS" "$PG_PID")
rows=()
for round in $(seq "$BENCH_ROUNDS"); do
    order=(0 1 2); ((round % 2 == 0)) && order=(2 1 0)
    for i in "${order[@]}"; do rows+=("$(run "${names[$i]}" "${ports[$i]}" "${pids[$i]}")"); done
done

printf '\n| target | req/s | p50 | p99 | auth service CPU per request |\n|---|---:|---:|---:|---:|\n'
for row in "${rows[@]}"; do
    IFS='|' read -r n r a b c <<<"$row"
    printf '| %s | %s | %s | %s | %s µs |\n' "$n" "$r" "$a" "$b" "$c"
done
printf '%s\n' "${rows[@]}" | python3 -c '
import statistics, sys
rows = [l.rstrip("\n").split("|") for l in sys.stdin if l.strip()]
def med(name, col):
    return statistics.median(float(r[col]) for r in rows if r[0] == name)
names = ("auth_request -> pagegate", "auth_request -> 204 floor", "pagegate full proxy")
pg, floor, full = (med(n, 1) for n in names)
cpu_fwd, cpu_floor, cpu_full = (med(n, 4) for n in names)
print(f"\nmedians: auth_request -> pagegate {pg:.0f} req/s, -> 204 floor {floor:.0f} req/s, "
      f"pagegate full proxy {full:.0f} req/s")
print(f"pagegate as the auth service: {pg / floor:.2f}x the floor (target 0.90x)")
print(f"CPU per request: pagegate answering the question {cpu_fwd:.1f} us, nginx answering 204 "
      f"{cpu_floor:.1f} us; pagegate as the full proxy {cpu_full:.1f} us")
'
printf '\nmachine: %s, %s cores, %s; load average at the end: %s\n' "$(uname -sr)" "$(nproc)" \
    "$(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ *//')" \
    "$(cut -d' ' -f1-3 /proc/loadavg)"
