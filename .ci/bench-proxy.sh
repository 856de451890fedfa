#!/usr/bin/env bash
# Proxy benchmark: the same nginx upstream measured directly, behind nginx as a reverse proxy,
# and behind pagegate; then the memory cost of idle keep-alive connections on both proxies.
# Everything listens on 127.0.0.1 only, on free ports, in a temporary directory that is removed
# on exit together with every process started here. See docs/performance.md.
#
#   bash .ci/bench-proxy.sh
#
# Settings (environment):
#   BENCH_DURATION=10s       measured wrk run per target
#   BENCH_WARMUP=3s          warm-up wrk run per target, not reported
#   BENCH_CONNECTIONS=64     wrk keep-alive connections
#   BENCH_THREADS=1          wrk threads
#   BENCH_ROUNDS=4           rounds of the proxies' measured runs, interleaved, the order
#                            reversed every other round (nginx, pagegate, floor; floor,
#                            pagegate, nginx; ...); the tables give each figure's median
#   BENCH_UPSTREAM_WORKERS=1 nginx worker processes of the upstream
#   IDLE_CONNECTIONS=10000   idle keep-alive connections held open per proxy (0 skips the phase)
#   IDLE_BATCH=500           connections opened at a time
#   IDLE_SETTLE=5            seconds to wait before reading memory with all open / after closing
#   BENCH_NOFILE=65536       open-files limit asked for
#   BENCH_QUIET_WAIT=30      seconds to wait, before each run, for other work on the machine to
#                            stop (CPUs at most 10% busy); a busy machine is warned about
#   PAGEGATE_BIN=...         use this binary instead of building target/release/pagegate
#   BENCH_FLOOR=1            also measure .ci/bench/bare_proxy.rs (hyper and tokio alone, laid
#                            out like pagegate's hot path): what pagegate's own work costs
#   BENCH_ACCESS_LOG=1       also measure both proxies with their access log on, written to a
#                            file in the temporary directory (emptied after each run), in the
#                            same rounds: what the access log costs each of them
#   BENCH_PIN_WORKERS=false  pagegate's server.pin_workers (true: each worker kept on a CPU)
#   BENCH_OUT=DIR            also keep the results and raw wrk output in DIR
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/.ci/bench

BENCH_DURATION=${BENCH_DURATION:-10s}
BENCH_WARMUP=${BENCH_WARMUP:-3s}
BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-64}
BENCH_THREADS=${BENCH_THREADS:-1}
BENCH_UPSTREAM_WORKERS=${BENCH_UPSTREAM_WORKERS:-1}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-10000}
IDLE_BATCH=${IDLE_BATCH:-500}
IDLE_SETTLE=${IDLE_SETTLE:-5}
BENCH_NOFILE=${BENCH_NOFILE:-65536}
BENCH_OUT=${BENCH_OUT:-}
BENCH_QUIET_WAIT=${BENCH_QUIET_WAIT:-30}
BENCH_FLOOR=${BENCH_FLOOR:-1}
BENCH_ROUNDS=${BENCH_ROUNDS:-4}
BENCH_ACCESS_LOG=${BENCH_ACCESS_LOG:-1}
BENCH_PIN_WORKERS=${BENCH_PIN_WORKERS:-false}
case "$BENCH_PIN_WORKERS" in true | false) ;; *) echo "BENCH_PIN_WORKERS must be true or false" >&2; exit 2 ;; esac

BENCH_TAG=bench-proxy
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"

# --- set-up -------------------------------------------------------------------------------------

ensure_tools() {
    local missing=()
    command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
    command -v wrk >/dev/null || missing+=(wrk)
    command -v curl >/dev/null || missing+=(curl)
    command -v python3 >/dev/null || missing+=(python3)
    command -v ps >/dev/null || missing+=(procps)
    apt_install "${missing[@]}"
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
    command -v cargo >/dev/null || [ -n "${PAGEGATE_BIN:-}" ] || die "cargo is needed to build pagegate"
}

raise_nofile() {
    local need=$((IDLE_CONNECTIONS + 2048)) hard
    if ! ulimit -n "$BENCH_NOFILE" 2>/dev/null; then
        hard=$(ulimit -Hn)
        if [ "$hard" != unlimited ] && [ "$hard" -lt "$need" ]; then
            die "cannot raise the open-files limit (ulimit -n) to $need for $IDLE_CONNECTIONS idle \
connections: the hard limit is $hard. Raise it (limits.conf, or run as root with \
CAP_SYS_RESOURCE), or set IDLE_CONNECTIONS lower."
        fi
        ulimit -n "$hard"
    fi
    NOFILE=$(ulimit -n)
    [ "$NOFILE" = unlimited ] && NOFILE=$BENCH_NOFILE
    [ "$NOFILE" -ge "$need" ] || die "open-files limit is $NOFILE, $need needed"
    say "open-files limit: $NOFILE"
}

build_floor() {
    FLOOR_BIN=
    if [ "$BENCH_FLOOR" = 1 ]; then
        FLOOR_BIN=$(build_example bare_proxy)
    fi
}

# --- wrk ----------------------------------------------------------------------------------------

ROWS=()
BUSY_WARNINGS=()
declare -A RPS P50 P99 ERRORS CPU_US CPU_USER_US MEM_AFTER MEM_PEAK

# [PROXY_PIDS="PID..."] run_wrk NAME URL [EXTRA WRK ARGS...]: warm-up, then the measured run;
# adds a row NAME. Extra arguments go to both runs, e.g. -H "Cookie: session=..." for an
# authenticated scenario. With PROXY_PIDS, the row also gets those processes' CPU time per
# request during the measured run and their memory after it.
run_wrk() {
    local name=$1 url=$2 limit out parsed rps p50 p99 errors busy cpu_before cpu_after
    local user_before user_after
    local ours mine_before mine_after all_before all_after other
    local pids=${PROXY_PIDS:-}
    shift 2
    limit=$(($(duration_secs "$BENCH_DURATION") + $(duration_secs "$BENCH_WARMUP") + 30))
    out="$WORK/wrk-$(echo "$name" | tr -c 'A-Za-z0-9\n' '-')-round${ROUND:-1}.txt"
    busy=$(wait_quiet)
    if [ "$busy" -gt 10 ]; then
        BUSY_WARNINGS+=("before \"$name\", ${busy}% of the CPUs were busy with other work")
    fi
    say "$name: warm-up $BENCH_WARMUP, then $BENCH_DURATION with $BENCH_CONNECTIONS connections, $BENCH_THREADS thread(s) ($url; CPUs ${busy}% busy before)"
    timeout "$limit" wrk -t "$BENCH_THREADS" -c "$BENCH_CONNECTIONS" -d "$BENCH_WARMUP" "$@" "$url" >/dev/null ||
        die "$name: warm-up wrk run failed"
    # Everything this benchmark runs, to tell other work on the machine apart during the run.
    ours=$(pids_of_nginx "$UPSTREAM_PID")
    ours="$ours $(pids_of_nginx "$PROXY_PID") $PG_PID $FLOOR_PID"
    [ -n "$LOG_PROXY_PID" ] && ours="$ours $(pids_of_nginx "$LOG_PROXY_PID") $LOG_PG_PID"
    cpu_before=$(cpu_ticks $pids) user_before=$(cpu_ticks user $pids) mine_before=$(($(cpu_ticks $ours) + $(children_ticks)))
    all_before=$(machine_ticks)
    timeout "$limit" wrk -t "$BENCH_THREADS" -c "$BENCH_CONNECTIONS" -d "$BENCH_DURATION" --latency "$@" "$url" >"$out" ||
        die "$name: wrk run failed"
    cpu_after=$(cpu_ticks $pids) user_after=$(cpu_ticks user $pids) mine_after=$(($(cpu_ticks $ours) + $(children_ticks)))
    all_after=$(machine_ticks)
    # Share of the machine's CPU time used by processes other than ours during the run.
    other=$(other_pct $((all_after - all_before)) $((mine_after - mine_before)))
    say "$name: other processes used ${other}% of the CPUs during the run"
    if [ "$other" -gt 10 ]; then
        BUSY_WARNINGS+=("during \"$name\", other processes used ${other}% of the CPUs")
    fi
    sed 's/^/    /' "$out" >&2
    parsed=$(parse_wrk "$out") || die "$name: cannot read wrk's output (see above)"
    read -r rps p50 p99 errors <<<"$parsed"
    # One value per round, in round order; the tables take medians.
    RPS[$name]="${RPS[$name]:-} $rps" P50[$name]="${P50[$name]:-} $p50"
    P99[$name]="${P99[$name]:-} $p99" ERRORS[$name]=$((${ERRORS[$name]:-0} + errors))
    if [ -n "$pids" ]; then
        CPU_US[$name]="${CPU_US[$name]:-} $(us_per_request $((cpu_after - cpu_before)) "$rps")"
        CPU_USER_US[$name]="${CPU_USER_US[$name]:-} $(us_per_request $((user_after - user_before)) "$rps")"
        MEM_AFTER[$name]=$(status_kib VmRSS $pids)
        MEM_PEAK[$name]=$(status_kib VmHWM $pids)
    fi
    case " ${ROWS[*]:-} " in *" $name "*) ;; *) ROWS+=("$name") ;; esac
}

print_wrk_table() {
    local name
    echo "| target | req/s | p50 | p99 | errors | proxy CPU per request (user space) | proxy RSS after run | proxy peak RSS |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for name in "${ROWS[@]}"; do
        printf '| %s | %.0f | %s | %s | %s | %s | %s | %s |\n' "$name" "$(median ${RPS[$name]})" \
            "$(ms "$(median ${P50[$name]})")" "$(ms "$(median ${P99[$name]})")" "${ERRORS[$name]}" \
            "$([ -n "${CPU_US[$name]:-}" ] && printf '%.1f µs (%.1f)' "$(median ${CPU_US[$name]})" "$(median ${CPU_USER_US[$name]})" || echo -)" \
            "$([ -n "${MEM_AFTER[$name]:-}" ] && mib "${MEM_AFTER[$name]}" || echo -)" \
            "$([ -n "${MEM_PEAK[$name]:-}" ] && mib "${MEM_PEAK[$name]}" || echo -)"
    done
    echo
    for name in "${ROWS[@]}"; do
        case $name in "upstream (direct)" | "nginx proxy") continue ;; esac
        [ -n "${RPS[nginx proxy]:-}" ] || continue
        awk -v n="$name" -v r="$(median ${RPS[$name]})" -v rn="$(median ${RPS[nginx proxy]})" \
            -v p="$(median ${P99[$name]})" -v pn="$(median ${P99[nginx proxy]})" \
            -v c="$(median ${CPU_US[$name]:-0})" -v cn="$(median ${CPU_US[nginx proxy]:-0})" \
            -v cu="$(median ${CPU_USER_US[$name]:-0})" -v cnu="$(median ${CPU_USER_US[nginx proxy]:-0})" \
            -v rl="${RPS[$name]}" -v rnl="${RPS[nginx proxy]}" \
            -v pl="${P99[$name]}" -v pnl="${P99[nginx proxy]}" 'BEGIN {
                printf "%s / nginx proxy: req/s x%.2f, p99 x%.2f", n, r / rn, p / pn
                if (c > 0 && cn > 0) printf ", CPU per request x%.2f", c / cn
                if (cu > 0 && cnu > 0) printf " (user space x%.2f)", cu / cnu
                k = split(rl, a, " "); split(rnl, b, " "); split(pl, x, " "); split(pnl, y, " ")
                if (k > 1) {
                    printf "; round by round, req/s"
                    for (i = 1; i <= k; i++) printf " x%.2f", a[i] / b[i]
                    printf ", p99"
                    for (i = 1; i <= k; i++) printf " x%.2f", x[i] / y[i]
                }
                printf "\n"
            }'
    done
}

# print_log_ratios: each proxy with its access log on against the same proxy with it off.
print_log_ratios() {
    local on off
    for pair in "nginx proxy, access log on|nginx proxy" "pagegate, access log on|pagegate"; do
        on=${pair%%|*} off=${pair#*|}
        [ -n "${RPS[$on]:-}" ] && [ -n "${RPS[$off]:-}" ] || continue
        awk -v n="$on" -v r="$(median ${RPS[$on]})" -v ro="$(median ${RPS[$off]})" \
            -v c="$(median ${CPU_US[$on]:-0})" -v co="$(median ${CPU_US[$off]:-0})" \
            -v cu="$(median ${CPU_USER_US[$on]:-0})" -v cuo="$(median ${CPU_USER_US[$off]:-0})" \
            -v rl="${RPS[$on]}" -v rol="${RPS[$off]}" 'BEGIN {
                printf "%s / off: req/s x%.3f", n, r / ro
                if (c > 0 && co > 0) printf ", CPU per request x%.3f (%+.1f µs)", c / co, c - co
                if (cu > 0 && cuo > 0) printf ", user space x%.3f", cu / cuo
                k = split(rl, a, " "); split(rol, b, " ")
                if (k > 1) {
                    printf "; round by round, req/s"
                    for (i = 1; i <= k; i++) printf " x%.3f", a[i] / b[i]
                }
                printf "\n"
            }'
    done
    on="pagegate, access log on" off="nginx proxy, access log on"
    [ -n "${RPS[$on]:-}" ] && [ -n "${RPS[$off]:-}" ] || return 0
    awk -v r="$(median ${RPS[$on]})" -v rn="$(median ${RPS[$off]})" \
        -v c="$(median ${CPU_US[$on]:-0})" -v cn="$(median ${CPU_US[$off]:-0})" 'BEGIN {
            printf "both access logs on, pagegate / nginx proxy: req/s x%.2f", r / rn
            if (c > 0 && cn > 0) printf ", CPU per request x%.2f", c / cn
            printf "\n"
        }'
}

# --- idle connections ---------------------------------------------------------------------------

IDLE_ROWS=()
declare -A IDLE_RESULT

# run_idle NAME PORT PID...: holds IDLE_CONNECTIONS idle keep-alive connections on PORT and reads
# the summed VmRSS of the PIDs before, while open, and after closing.
run_idle() {
    local name=$1 port=$2 pids limit line
    shift 2
    pids=$(echo "$@" | tr ' ' ',')
    limit=$((IDLE_CONNECTIONS / 200 + 2 * IDLE_SETTLE + 60))
    say "$name: $IDLE_CONNECTIONS idle keep-alive connections, $IDLE_BATCH at a time"
    line=$(timeout "$limit" python3 "$BENCH/idle_conns.py" --port "$port" --count "$IDLE_CONNECTIONS" \
        --batch "$IDLE_BATCH" --settle "$IDLE_SETTLE" --pids "$pids" | grep '^IDLE_RESULT') ||
        die "$name: idle-connection run failed${line:+: $line}"
    say "$line"
    IDLE_RESULT[$name]=$line
    IDLE_ROWS+=("$name")
}

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }

print_idle_table() {
    local name r
    echo "| proxy | RSS before | RSS with $IDLE_CONNECTIONS idle connections | RSS after closing | KiB per idle connection |"
    echo "|---|---:|---:|---:|---:|"
    for name in "${IDLE_ROWS[@]}"; do
        r=${IDLE_RESULT[$name]}
        printf '| %s | %s | %s | %s | %s |\n' "$name" "$(mib "$(field rss_before_kib "$r")")" \
            "$(mib "$(field rss_open_kib "$r")")" "$(mib "$(field rss_after_kib "$r")")" \
            "$(field kib_per_conn "$r")"
    done
}

# --- main ---------------------------------------------------------------------------------------

[[ "$BENCH_ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a whole number above zero, not '$BENCH_ROUNDS'"
ensure_tools
[ "$IDLE_CONNECTIONS" -gt 0 ] && raise_nofile || NOFILE=$(ulimit -n)
build_pagegate
build_floor

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pagegate-bench.XXXXXX")
chmod 755 "$WORK"
mkdir -p "$WORK/www" "$WORK/upstream-temp" "$WORK/proxy-temp" "$WORK/pagegate-data"
head -c 1024 /dev/zero | tr '\0' 'x' >"$WORK/www/1k"
USER_LINE=
[ "$(id -u)" -eq 0 ] && USER_LINE="user root;"
WORKER_CONNECTIONS=$((IDLE_CONNECTIONS + 2048))
[ "$WORKER_CONNECTIONS" -gt "$NOFILE" ] && WORKER_CONNECTIONS=$NOFILE

read -r UPSTREAM_PORT PROXY_PORT PG_PORT FLOOR_PORT <<<"$(free_ports 4)"
common=(DIR="$WORK" NOFILE="$NOFILE" USER_LINE="$USER_LINE" UPSTREAM_PORT="$UPSTREAM_PORT")

render "$BENCH/upstream.nginx.conf" "$WORK/upstream.conf" "${common[@]}" PORT="$UPSTREAM_PORT" \
    WORKERS="$BENCH_UPSTREAM_WORKERS"
sed -i "s/worker_connections [0-9]*;/worker_connections $WORKER_CONNECTIONS;/" "$WORK/upstream.conf"
start_nginx upstream "$WORK/upstream.conf"
UPSTREAM_PID=$LAST_PID
wait_ready upstream "http://127.0.0.1:$UPSTREAM_PORT/1k" "$WORK/upstream.error.log"

render "$BENCH/proxy.nginx.conf" "$WORK/proxy.conf" "${common[@]}" PORT="$PROXY_PORT"
sed -i "s/worker_connections [0-9]*;/worker_connections $WORKER_CONNECTIONS;/" "$WORK/proxy.conf"
start_nginx proxy "$WORK/proxy.conf"
PROXY_PID=$LAST_PID
wait_ready "nginx proxy" "http://127.0.0.1:$PROXY_PORT/1k" "$WORK/proxy.error.log"

render "$BENCH/pagegate.toml" "$WORK/pagegate.toml" "${common[@]}" PORT="$PG_PORT" PIN_WORKERS="$BENCH_PIN_WORKERS"
PAGEGATE_LOG=warn "$PG_BIN" serve --config "$WORK/pagegate.toml" 2>"$WORK/pagegate.log" &
PG_PID=$!
STARTED_PIDS+=("$PG_PID")
wait_ready pagegate "http://127.0.0.1:$PG_PORT/1k" "$WORK/pagegate.log"

# The same two proxies with their access log on, to a file, as each is usually run: nginx with
# its default `access_log` (the combined format, one write per request), pagegate with its
# default `access_log = true` and its default log level.
LOG_PROXY_PID= LOG_PG_PID=
if [ "$BENCH_ACCESS_LOG" = 1 ]; then
    read -r LOG_PROXY_PORT LOG_PG_PORT <<<"$(free_ports 2)"
    mkdir -p "$WORK/proxy-log-temp" "$WORK/pagegate-log-data"
    render "$BENCH/proxy.nginx.conf" "$WORK/proxy-log.conf" "${common[@]}" PORT="$LOG_PROXY_PORT"
    sed -i -e "s/worker_connections [0-9]*;/worker_connections $WORKER_CONNECTIONS;/" \
        -e "s|access_log off;|access_log $WORK/nginx-access.log;|" \
        -e "s|/proxy-temp/|/proxy-log-temp/|" -e "s|/proxy.pid;|/proxy-log.pid;|" \
        -e "s|/proxy.error.log|/proxy-log.error.log|" "$WORK/proxy-log.conf"
    grep -q "access_log $WORK/nginx-access.log;" "$WORK/proxy-log.conf" ||
        die "cannot turn the access log on in the nginx proxy's configuration"
    start_nginx proxy-log "$WORK/proxy-log.conf"
    LOG_PROXY_PID=$LAST_PID
    wait_ready "nginx proxy, access log on" "http://127.0.0.1:$LOG_PROXY_PORT/1k" "$WORK/proxy-log.error.log"

    render "$BENCH/pagegate.toml" "$WORK/pagegate-log.toml" "${common[@]}" PORT="$LOG_PG_PORT" \
        PIN_WORKERS="$BENCH_PIN_WORKERS"
    sed -i -e "s|^access_log = false|access_log_path = \"$WORK/pagegate-access.log\"|" \
        -e "s|/pagegate-data\"|/pagegate-log-data\"|" "$WORK/pagegate-log.toml"
    grep -q "^access_log_path" "$WORK/pagegate-log.toml" ||
        die "cannot turn the access log on in pagegate's configuration"
    PAGEGATE_LOG=info "$PG_BIN" serve --config "$WORK/pagegate-log.toml" 2>"$WORK/pagegate-log.log" &
    LOG_PG_PID=$!
    STARTED_PIDS+=("$LOG_PG_PID")
    wait_ready "pagegate, access log on" "http://127.0.0.1:$LOG_PG_PORT/1k" "$WORK/pagegate-log.log"
fi

FLOOR_PID=
if [ "$BENCH_FLOOR" = 1 ]; then
    "$FLOOR_BIN" "127.0.0.1:$FLOOR_PORT" "127.0.0.1:$UPSTREAM_PORT" 2>"$WORK/floor.log" &
    FLOOR_PID=$!
    STARTED_PIDS+=("$FLOOR_PID")
    wait_ready "hyper floor" "http://127.0.0.1:$FLOOR_PORT/1k" "$WORK/floor.log"
fi

commit=$(pagegate_commit)
{
    echo "## Proxy benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- pagegate $commit, pin_workers = $BENCH_PIN_WORKERS; $("$NGINX" -v 2>&1 | sed 's/.*version: //'); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
    echo "- CPU: $(machine_line)"
    echo "- wrk: $BENCH_THREADS thread(s), $BENCH_CONNECTIONS keep-alive connections, $BENCH_WARMUP warm-up + $BENCH_DURATION measured, GET /1k (1024-byte static file); upstream nginx workers: $BENCH_UPSTREAM_WORKERS"
    echo "- $BENCH_ROUNDS round(s) of the proxies' runs, taking turns, the order reversed every other round; each figure below is the median of its rounds"
    echo
} >"$WORK/results.md"

run_wrk "upstream (direct)" "http://127.0.0.1:$UPSTREAM_PORT/1k"
# The proxies take turns, so that a change in the machine's speed during the benchmark (this is
# often a virtual machine) touches all of them alike; and the order turns round every other round
# (nginx first, then last), so that neither proxy always runs in the same place of a round.
run_nginx() { PROXY_PIDS=$(pids_of_nginx "$PROXY_PID") run_wrk "nginx proxy" "http://127.0.0.1:$PROXY_PORT/1k"; }
run_pagegate() { PROXY_PIDS=$PG_PID run_wrk "pagegate" "http://127.0.0.1:$PG_PORT/1k"; }
# Each access log is emptied after its run: its lines are not kept, and the disk is not filled.
run_nginx_logged() {
    if [ -n "$LOG_PROXY_PID" ]; then
        PROXY_PIDS=$(pids_of_nginx "$LOG_PROXY_PID") run_wrk "nginx proxy, access log on" "http://127.0.0.1:$LOG_PROXY_PORT/1k"
        : >"$WORK/nginx-access.log"
    fi
}
run_pagegate_logged() {
    if [ -n "$LOG_PG_PID" ]; then
        PROXY_PIDS=$LOG_PG_PID run_wrk "pagegate, access log on" "http://127.0.0.1:$LOG_PG_PORT/1k"
        [ -s "$WORK/pagegate-access.log" ] || die "pagegate wrote no access log during its run"
        : >"$WORK/pagegate-access.log"
    fi
}
run_floor() {
    if [ -n "$FLOOR_PID" ]; then
        PROXY_PIDS=$FLOOR_PID run_wrk "hyper floor (bare_proxy)" "http://127.0.0.1:$FLOOR_PORT/1k"
    fi
}
for ROUND in $(seq "$BENCH_ROUNDS"); do
    if [ $((ROUND % 2)) = 1 ]; then
        say "round $ROUND of $BENCH_ROUNDS (nginx, logged nginx, pagegate, logged pagegate, floor)"
        run_nginx
        run_nginx_logged
        run_pagegate
        run_pagegate_logged
        run_floor
    else
        say "round $ROUND of $BENCH_ROUNDS (floor, logged pagegate, pagegate, logged nginx, nginx)"
        run_floor
        run_pagegate_logged
        run_pagegate
        run_nginx_logged
        run_nginx
    fi
done
print_wrk_table >>"$WORK/results.md"
if [ "$BENCH_ACCESS_LOG" = 1 ]; then
    {
        echo
        print_log_ratios
    } >>"$WORK/results.md"
fi
if [ ${#BUSY_WARNINGS[@]} -gt 0 ]; then
    {
        echo
        for w in "${BUSY_WARNINGS[@]}"; do echo "Warning: $w; these numbers are not reliable."; done
    } >>"$WORK/results.md"
fi

if [ "$IDLE_CONNECTIONS" -gt 0 ]; then
    run_idle "pagegate" "$PG_PORT" "$PG_PID"
    run_idle "nginx proxy" "$PROXY_PORT" $(pids_of_nginx "$PROXY_PID")
    {
        echo
        echo "Idle keep-alive connections (each sent one GET /1k, then stayed open; RSS summed over all processes of the proxy, read ${IDLE_SETTLE}s after opening / closing):"
        echo
        print_idle_table
    } >>"$WORK/results.md"
fi

kill -0 "$PG_PID" 2>/dev/null || die "pagegate exited during the benchmark (see $WORK/pagegate.log)"
if [ -n "$LOG_PG_PID" ]; then
    kill -0 "$LOG_PG_PID" 2>/dev/null || die "the logging pagegate exited during the benchmark (see $WORK/pagegate-log.log)"
    if grep -q "access log lines dropped" "$WORK/pagegate-log.log"; then
        say "pagegate dropped access log lines during the benchmark (see $WORK/pagegate-log.log)"
    fi
fi
if [ -s "$WORK/pagegate.log" ]; then
    say "pagegate logged:"
    sed 's/^/    /' "$WORK/pagegate.log" | tail -20 >&2
fi

echo
cat "$WORK/results.md"
if [ -n "$BENCH_OUT" ]; then
    mkdir -p "$BENCH_OUT"
    cp "$WORK/results.md" "$WORK"/wrk-*.txt "$BENCH_OUT/"
    say "results kept in $BENCH_OUT"
fi
