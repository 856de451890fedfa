#!/usr/bin/env bash
# HTTPS benchmark: pagegate (rustls) against nginx (OpenSSL) terminating TLS in front of the same
# nginx upstream, with an ECDSA P-256 and an RSA 2048 certificate, on four measures each:
#
#   h1        keep-alive HTTPS, HTTP/1.1: wrk, BENCH_CONNECTIONS connections
#   h2        keep-alive HTTPS, HTTP/2: h2load, BENCH_H2_CONNECTIONS connections with
#             BENCH_H2_STREAMS streams each
#   full      a new connection per request, full handshakes (no resumption): tls_handshakes
#             (.ci/bench/tls_handshakes.rs), BENCH_CONNECTIONS at once
#   resumed   the same, resuming the session (TLS 1.3 tickets) on every connection after the first
#
# Everything listens on 127.0.0.1 only, on free ports, in a temporary directory that is removed on
# exit together with every process started here. See docs/performance.md, "HTTPS benchmark".
#
#   bash .ci/bench-https.sh
#
# Settings (environment):
#   BENCH_DURATION=10s        measured run per target and measure
#   BENCH_WARMUP=3s           warm-up run before each measured run, not reported
#   BENCH_CONNECTIONS=64      wrk's keep-alive connections; tls_handshakes' connections at once
#   BENCH_H2_CONNECTIONS=16   h2load connections
#   BENCH_H2_STREAMS=32       h2load streams at once per connection
#   BENCH_ROUNDS=3            rounds, nginx and pagegate taking turns on each measure, the order
#                             reversed every other round; each figure is the median of its rounds
#   BENCH_KEYS="ecdsa rsa"    certificates to measure
#   BENCH_MEASURES="h1 h2 full resumed"
#   BENCH_UPSTREAM_WORKERS=1  nginx worker processes of the upstream
#   BENCH_PIN_WORKERS=false   pagegate's server.pin_workers (true: each worker kept on a CPU)
#   BENCH_QUIET_WAIT=30       seconds to wait, before each run, for other work on the machine to
#                             stop (CPUs at most 10% busy); a busy machine is warned about
#   PAGEGATE_BIN=...          use this binary instead of building target/release/pagegate
#   CLIENT_BIN=...            use this tls_handshakes binary instead of building the example
#   BENCH_OUT=DIR             also keep the results and the raw output in DIR
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/.ci/bench

BENCH_DURATION=${BENCH_DURATION:-10s}
BENCH_WARMUP=${BENCH_WARMUP:-3s}
BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-64}
BENCH_H2_CONNECTIONS=${BENCH_H2_CONNECTIONS:-16}
BENCH_H2_STREAMS=${BENCH_H2_STREAMS:-32}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
BENCH_KEYS=${BENCH_KEYS:-ecdsa rsa}
BENCH_MEASURES=${BENCH_MEASURES:-h1 h2 full resumed}
BENCH_UPSTREAM_WORKERS=${BENCH_UPSTREAM_WORKERS:-1}
BENCH_PIN_WORKERS=${BENCH_PIN_WORKERS:-false}
case "$BENCH_PIN_WORKERS" in true | false) ;; *) echo "BENCH_PIN_WORKERS must be true or false" >&2; exit 2 ;; esac
BENCH_QUIET_WAIT=${BENCH_QUIET_WAIT:-30}
BENCH_OUT=${BENCH_OUT:-}
BENCH_NOFILE=65536

BENCH_TAG=bench-https
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"

# --- set-up -------------------------------------------------------------------------------------

ensure_tools() {
    local missing=()
    command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
    command -v wrk >/dev/null || missing+=(wrk)
    command -v h2load >/dev/null || missing+=(nghttp2-client)
    command -v openssl >/dev/null || missing+=(openssl)
    command -v curl >/dev/null || missing+=(curl)
    command -v python3 >/dev/null || missing+=(python3)
    command -v ps >/dev/null || missing+=(procps)
    apt_install "${missing[@]}"
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
    command -v cargo >/dev/null || die "cargo is needed to build pagegate and the handshake client"
}

# make_certificate KIND: a self-signed certificate for localhost and 127.0.0.1 in
# $WORK/KIND.crt, its key in $WORK/KIND.key.
make_certificate() {
    local key
    case $1 in
    ecdsa) key=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
    rsa) key=(-newkey rsa:2048) ;;
    *) die "unknown certificate kind $1 (ecdsa or rsa)" ;;
    esac
    openssl req -x509 "${key[@]}" -nodes -days 2 -subj /CN=localhost \
        -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
        -keyout "$WORK/$1.key" -out "$WORK/$1.crt" 2>/dev/null ||
        die "openssl could not make the $1 certificate"
}

# --- one measure --------------------------------------------------------------------------------

# load_command MEASURE PORT SECONDS: sets LOAD to the command line of MEASURE's load generator
# against https://127.0.0.1:PORT/1k.
load_command() {
    local url="https://127.0.0.1:$2/1k"
    case $1 in
    h1) LOAD=(wrk -t 1 -c "$BENCH_CONNECTIONS" -d "${3}s" --latency "$url") ;;
    h2) LOAD=(h2load -t 1 -c "$BENCH_H2_CONNECTIONS" -m "$BENCH_H2_STREAMS" -D "$3" "$url") ;;
    full) LOAD=("$CLIENT_BIN" --addr "127.0.0.1:$2" --connections "$BENCH_CONNECTIONS" --seconds "$3") ;;
    resumed) LOAD=("$CLIENT_BIN" --addr "127.0.0.1:$2" --connections "$BENCH_CONNECTIONS" --seconds "$3" --resume) ;;
    *) die "unknown measure $1 (h1, h2, full or resumed)" ;;
    esac
}

# parse MEASURE FILE: prints "per_second errors resumed" (resumed: - where it does not apply).
parse() {
    case $1 in
    h1)
        local rps p50 p99 errors
        read -r rps p50 p99 errors <<<"$(parse_wrk "$2")" || return 1
        echo "$rps $errors -"
        ;;
    h2)
        awk '
            /^finished in/ { rate = $4 }
            /^requests:/ { for (i = 2; i < NF; i++) if ($(i + 1) ~ /^(failed|errored|timeout)/) err += $i }
            /^status codes:/ { for (i = 3; i < NF; i++) if ($(i + 1) ~ /^[345]xx/) err += $i }
            END { if (rate == "") exit 1; printf "%s %d -\n", rate, err }' "$2"
        ;;
    full | resumed)
        sed -n 's/^HANDSHAKES per_sec=\([^ ]*\) done=\([^ ]*\) resumed=\([^ ]*\) errors=\([^ ]*\).*/\1 \4 \3\/\2/p' "$2" |
            grep . || return 1
        ;;
    esac
}

ROWS=()
BUSY_WARNINGS=()
declare -A RATE CPU_US ERRORS RESUMED

# measure SERVER KIND MEASURE PORT PID...: a warm-up run, then the measured run, with the CPU
# time the server's processes spent during it; adds the figures to row "KIND MEASURE".
measure() {
    local server=$1 kind=$2 what=$3 port=$4 secs busy out limit parsed rate errors resumed
    local before after mine_before mine_after all_before all_after other key="$1 $2 $3"
    shift 4
    secs=$(duration_secs "$BENCH_DURATION")
    limit=$((secs + 30))
    out="$WORK/out-$server-$kind-$what-round$ROUND.txt"
    busy=$(wait_quiet)
    if [ "$busy" -gt 10 ]; then
        BUSY_WARNINGS+=("before \"$key\" (round $ROUND), ${busy}% of the CPUs were busy with other work")
    fi
    say "$key: warm-up $BENCH_WARMUP, then $BENCH_DURATION (CPUs ${busy}% busy before)"
    load_command "$what" "$port" "$(duration_secs "$BENCH_WARMUP")"
    timeout "$limit" "${LOAD[@]}" >"$out" 2>&1 || {
        sed 's/^/    /' "$out" >&2
        die "$key: warm-up run failed"
    }
    load_command "$what" "$port" "$secs"
    before=$(cpu_ticks "$@") mine_before=$(($(cpu_ticks $OURS) + $(children_ticks))) all_before=$(machine_ticks)
    timeout "$limit" "${LOAD[@]}" >"$out" 2>&1 || {
        sed 's/^/    /' "$out" >&2
        die "$key: measured run failed"
    }
    after=$(cpu_ticks "$@") mine_after=$(($(cpu_ticks $OURS) + $(children_ticks))) all_after=$(machine_ticks)
    other=$(other_pct $((all_after - all_before)) $((mine_after - mine_before)))
    if [ "$other" -gt 10 ]; then
        BUSY_WARNINGS+=("during \"$key\" (round $ROUND), other processes used ${other}% of the CPUs")
    fi
    parsed=$(parse "$what" "$out") || {
        sed 's/^/    /' "$out" >&2
        die "$key: cannot read the load generator's output (see above)"
    }
    read -r rate errors resumed <<<"$parsed"
    say "$key: $rate per second, $errors errors, resumed: $resumed; other processes used ${other}% of the CPUs"
    RATE[$key]="${RATE[$key]:-} $rate"
    CPU_US[$key]="${CPU_US[$key]:-} $(us_per_request $((after - before)) "$rate")"
    ERRORS[$key]=$((${ERRORS[$key]:-0} + errors))
    RESUMED[$key]="${RESUMED[$key]:-} $resumed"
    case " ${ROWS[*]:-} " in *" $kind $what "*) ;; *) ROWS+=("$kind $what") ;; esac
}

# --- results ------------------------------------------------------------------------------------

label() {
    case $1 in
    ecdsa) printf 'ECDSA P-256' ;;
    rsa) printf 'RSA 2048' ;;
    esac
    case $2 in
    h1) printf ', keep-alive HTTP/1.1 (req/s)' ;;
    h2) printf ', keep-alive HTTP/2 (req/s)' ;;
    full) printf ', new connection per request, full handshake (conn/s)' ;;
    resumed) printf ', new connection per request, resumed (conn/s)' ;;
    esac
}

# resumed_share "R/N ...": the share of all connections that resumed, over every round (- for
# the keep-alive measures, which make no new connections).
resumed_share() {
    printf '%s\n' $1 | awk -F/ '$0 == "-" { next } { r += $1; n += $2; k++ }
        END { if (k) printf "%.0f%%", n ? 100 * r / n : 0; else printf "-" }'
}

print_table() {
    local row kind what n p
    echo "| measure | nginx | pagegate | pagegate / nginx (round by round) | CPU per request, nginx | CPU per request, pagegate | resumed, nginx / pagegate | errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for row in "${ROWS[@]}"; do
        read -r kind what <<<"$row"
        n="nginx $row" p="pagegate $row"
        awk -v l="$(label "$kind" "$what")" -v rn="$(median ${RATE[$n]})" -v rp="$(median ${RATE[$p]})" \
            -v cn="$(median ${CPU_US[$n]})" -v cp="$(median ${CPU_US[$p]})" \
            -v an="${RATE[$n]}" -v ap="${RATE[$p]}" \
            -v res="$(resumed_share "${RESUMED[$n]}") / $(resumed_share "${RESUMED[$p]}")" \
            -v err="${ERRORS[$n]} / ${ERRORS[$p]}" 'BEGIN {
                k = split(an, a, " "); split(ap, b, " "); rounds = ""
                for (i = 1; i <= k; i++) rounds = rounds (i > 1 ? " " : "") sprintf("%.2f", b[i] / a[i])
                printf "| %s | %.0f | %.0f | **%.2f** (%s) | %.0f µs | %.0f µs | %s | %s |\n", l, rn, rp, rp / rn, rounds, cn, cp, res, err
            }'
    done
}

# --- main ---------------------------------------------------------------------------------------

[[ "$BENCH_ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a whole number above zero, not '$BENCH_ROUNDS'"
ensure_tools
ulimit -n "$BENCH_NOFILE" 2>/dev/null || true
NOFILE=$(ulimit -n)
build_pagegate
if [ -n "${CLIENT_BIN:-}" ]; then
    [ -x "$CLIENT_BIN" ] || die "no tls_handshakes binary at $CLIENT_BIN"
else
    CLIENT_BIN=$(build_example tls_handshakes)
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pagegate-bench-https.XXXXXX")
chmod 755 "$WORK"
mkdir -p "$WORK/www" "$WORK/upstream-temp" "$WORK/proxy-temp"
head -c 1024 /dev/zero | tr '\0' 'x' >"$WORK/www/1k"
for kind in ecdsa rsa; do make_certificate "$kind"; done
USER_LINE=
[ "$(id -u)" -eq 0 ] && USER_LINE="user root;"

read -r UPSTREAM_PORT NGINX_ECDSA_PORT NGINX_RSA_PORT PG_ECDSA_PORT PG_RSA_PORT <<<"$(free_ports 5)"
common=(DIR="$WORK" NOFILE="$NOFILE" USER_LINE="$USER_LINE" UPSTREAM_PORT="$UPSTREAM_PORT")
declare -A PORT=([nginx ecdsa]=$NGINX_ECDSA_PORT [nginx rsa]=$NGINX_RSA_PORT
    [pagegate ecdsa]=$PG_ECDSA_PORT [pagegate rsa]=$PG_RSA_PORT)

render "$BENCH/upstream.nginx.conf" "$WORK/upstream.conf" "${common[@]}" PORT="$UPSTREAM_PORT" \
    WORKERS="$BENCH_UPSTREAM_WORKERS"
start_nginx upstream "$WORK/upstream.conf"
UPSTREAM_PID=$LAST_PID
wait_ready upstream "http://127.0.0.1:$UPSTREAM_PORT/1k" "$WORK/upstream.error.log"

render "$BENCH/https.nginx.conf" "$WORK/https.conf" "${common[@]}" ECDSA_PORT="$NGINX_ECDSA_PORT" \
    RSA_PORT="$NGINX_RSA_PORT"
start_nginx https "$WORK/https.conf"
NGINX_PID=$LAST_PID

declare -A PG_PID
for kind in ecdsa rsa; do
    render "$BENCH/https.pagegate.toml" "$WORK/pagegate-$kind.toml" "${common[@]}" KIND="$kind" \
        PORT="${PORT[pagegate $kind]}" PIN_WORKERS="$BENCH_PIN_WORKERS"
    PAGEGATE_LOG=warn "$PG_BIN" serve --config "$WORK/pagegate-$kind.toml" 2>"$WORK/pagegate-$kind.log" &
    PG_PID[$kind]=$!
    STARTED_PIDS+=("$!")
done
for kind in ecdsa rsa; do
    wait_ready "nginx ($kind)" "https://127.0.0.1:${PORT[nginx $kind]}/1k" "$WORK/https.error.log" -k
    wait_ready "pagegate ($kind)" "https://127.0.0.1:${PORT[pagegate $kind]}/1k" "$WORK/pagegate-$kind.log" -k
done
OURS="$(pids_of_nginx "$UPSTREAM_PID") $(pids_of_nginx "$NGINX_PID") ${PG_PID[*]}"

{
    echo "## HTTPS benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- pagegate $(pagegate_commit), pin_workers = $BENCH_PIN_WORKERS; $("$NGINX" -v 2>&1 | sed 's/.*version: //') with $(openssl version | cut -d' ' -f1-2); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2); $(h2load --version | head -1)"
    echo "- CPU: $(machine_line); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- GET /1k (1024-byte static file) through each proxy to one nginx upstream ($BENCH_UPSTREAM_WORKERS worker); $BENCH_WARMUP warm-up + $BENCH_DURATION measured per run"
    echo "- h1: wrk, 1 thread, $BENCH_CONNECTIONS connections; h2: h2load, 1 thread, $BENCH_H2_CONNECTIONS connections × $BENCH_H2_STREAMS streams; full and resumed: tls_handshakes, 1 thread, $BENCH_CONNECTIONS connections at once, each one request with \`Connection: close\`"
    echo "- $BENCH_ROUNDS round(s), nginx and pagegate taking turns on each measure, the order reversed every other round; each figure is the median of its rounds; CPU per request is the server's processes' user + system time"
    echo
} >"$WORK/results.md"

for ROUND in $(seq "$BENCH_ROUNDS"); do
    order="nginx pagegate"
    [ $((ROUND % 2)) = 0 ] && order="pagegate nginx"
    say "round $ROUND of $BENCH_ROUNDS ($order first on each measure)"
    for kind in $BENCH_KEYS; do
        for what in $BENCH_MEASURES; do
            for server in $order; do
                if [ "$server" = nginx ]; then
                    measure nginx "$kind" "$what" "${PORT[nginx $kind]}" $(pids_of_nginx "$NGINX_PID")
                else
                    measure pagegate "$kind" "$what" "${PORT[pagegate $kind]}" "${PG_PID[$kind]}"
                fi
            done
        done
    done
done
print_table >>"$WORK/results.md"
echo "- load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$WORK/results.md"
if [ ${#BUSY_WARNINGS[@]} -gt 0 ]; then
    {
        echo
        for w in "${BUSY_WARNINGS[@]}"; do echo "Warning: $w; these numbers are not reliable."; done
    } >>"$WORK/results.md"
fi

for kind in ecdsa rsa; do
    kill -0 "${PG_PID[$kind]}" 2>/dev/null || die "pagegate ($kind) exited during the benchmark"
    if [ -s "$WORK/pagegate-$kind.log" ]; then
        say "pagegate ($kind) logged:"
        sed 's/^/    /' "$WORK/pagegate-$kind.log" | tail -20 >&2
    fi
done

echo
cat "$WORK/results.md"
if [ -n "$BENCH_OUT" ]; then
    mkdir -p "$BENCH_OUT"
    cp "$WORK/results.md" "$WORK"/out-*.txt "$BENCH_OUT/"
    say "results kept in $BENCH_OUT"
fi
