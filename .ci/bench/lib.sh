# Shared helpers of the benchmark scripts (.ci/bench-proxy.sh, .ci/bench-https.sh): processes and
# their cleanup, free ports, templates, readiness, CPU accounting and medians. Sourced, not run.
# The sourcing script sets BENCH_TAG (its name in messages), ROOT, and BENCH_QUIET_WAIT and
# BENCH_DURATION before calling what uses them.

say() { printf '==> %s\n' "$*" >&2; }
die() {
    printf '%s: error: %s\n' "${BENCH_TAG:-bench}" "$*" >&2
    exit 1
}
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# apt_install PACKAGE...: installs the Debian packages (nothing when none are given).
apt_install() {
    [ $# -gt 0 ] || return 0
    say "installing $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

# --- processes and cleanup ----------------------------------------------------------------------

WORK=
STARTED_PIDS=()
cleanup() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${STARTED_PIDS[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        # nginx workers are the master's children; take them down too if the master did not.
        for child in $(ps -o pid= --ppid "$pid" 2>/dev/null); do
            kill -KILL "$child" 2>/dev/null || true
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "$WORK" ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The cargo target folder: CARGO_TARGET_DIR when set, as cargo itself reads it.
target_dir() { echo "${CARGO_TARGET_DIR:-$ROOT/target}"; }

# build_pagegate: sets PG_BIN to PAGEGATE_BIN, or builds target/release/pagegate.
build_pagegate() {
    if [ -n "${PAGEGATE_BIN:-}" ]; then
        PG_BIN=$PAGEGATE_BIN
    else
        say "building pagegate (cargo build --release)"
        (cd "$ROOT" && cargo build --release --quiet --bin pagegate)
        PG_BIN=$(target_dir)/release/pagegate
    fi
    [ -x "$PG_BIN" ] || die "no pagegate binary at $PG_BIN"
}

# build_example NAME: builds the release example NAME (.ci/bench/NAME.rs); prints its path.
build_example() {
    say "building $1 (cargo build --release --example $1)"
    (cd "$ROOT" && cargo build --release --quiet --example "$1") >&2
    [ -x "$(target_dir)/release/examples/$1" ] || die "no $1 binary in $(target_dir)/release/examples"
    echo "$(target_dir)/release/examples/$1"
}

# pagegate_commit: the commit measured, noting uncommitted changes to the code.
pagegate_commit() {
    if [ -n "${PAGEGATE_BIN:-}" ]; then
        echo "binary $PAGEGATE_BIN"
        return
    fi
    local commit
    commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    [ -n "$(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ] &&
        commit="$commit + uncommitted changes"
    echo "$commit"
}

# free_ports N: N distinct free TCP ports on 127.0.0.1, space-separated.
free_ports() {
    python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

# render TEMPLATE OUTPUT KEY=VALUE...: copies TEMPLATE with every @KEY@ replaced.
render() {
    local template=$1 out=$2 kv script=()
    shift 2
    for kv in "$@"; do
        script+=(-e "s|@${kv%%=*}@|${kv#*=}|g")
    done
    sed "${script[@]}" "$template" >"$out"
}

# wait_ready NAME URL LOG [CURL ARGS...]: until URL answers 200 with exactly 1024 bytes, for at
# most 10 s.
wait_ready() {
    local name=$1 url=$2 logfile=$3 code
    shift 3
    for _ in $(seq 100); do
        code=$(curl -s "$@" -o "$WORK/ready.body" -w '%{http_code}' --max-time 2 "$url" || true)
        if [ "$code" = 200 ]; then
            [ "$(wc -c <"$WORK/ready.body")" -eq 1024 ] ||
                die "$name: $url answered $(wc -c <"$WORK/ready.body") bytes, 1024 expected"
            return 0
        fi
        sleep 0.1
    done
    cat "$logfile" >&2 2>/dev/null || true
    die "$name did not answer 200 on $url within 10 s (last status: $code)"
}

# start_nginx NAME CONFIG: starts a foreground nginx master in the background; sets LAST_PID.
start_nginx() {
    local name=$1 conf=$2
    "$NGINX" -p "$WORK" -c "$conf" -e "$WORK/$name.error.log" 2>>"$WORK/$name.error.log" &
    LAST_PID=$!
    STARTED_PIDS+=("$LAST_PID")
}

# pids_of_nginx MASTER: the master and its workers, space-separated.
pids_of_nginx() {
    echo "$1" $(ps -o pid= --ppid "$1")
}

# status_kib FIELD PID...: sum of a /proc/PID/status field (VmRSS, VmHWM) in KiB.
status_kib() {
    local field=$1 pid total=0 v
    shift
    for pid in "$@"; do
        v=$(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

duration_secs() {
    case $1 in
    *ms) echo 1 ;;
    *s) echo "${1%s}" ;;
    *m) echo $((${1%m} * 60)) ;;
    *h) echo $((${1%h} * 3600)) ;;
    *) echo "$1" ;;
    esac
}

# --- the machine's other work -------------------------------------------------------------------

# busy_pct: share of all CPUs (percent) in use over one second, before anything of ours runs.
# Other work on the machine (a compile, a test suite) skews every number, so it is reported.
busy_pct() {
    local a b
    a=($(head -1 /proc/stat))
    sleep 1
    b=($(head -1 /proc/stat))
    awk -v a="${a[*]:1}" -v b="${b[*]:1}" 'BEGIN {
        n = split(a, x, " "); split(b, y, " ")
        for (i = 1; i <= n; i++) { d = y[i] - x[i]; total += d; if (i == 4 || i == 5) idle += d }
        printf "%.0f", total ? 100 * (total - idle) / total : 0
    }'
}

# wait_quiet: waits (at most BENCH_QUIET_WAIT seconds) until the CPUs are at most 10% busy;
# prints the last reading.
wait_quiet() {
    local busy deadline=$((SECONDS + BENCH_QUIET_WAIT))
    while :; do
        busy=$(busy_pct)
        if [ "$busy" -le 10 ] || [ "$SECONDS" -ge "$deadline" ]; then break; fi
    done
    echo "$busy"
}

# machine_ticks: user + nice + system CPU time of the whole machine (clock ticks, all CPUs).
machine_ticks() {
    awk '/^cpu / { print $2 + $3 + $4; exit }' /proc/stat
}

# children_ticks: CPU time of this shell's finished children (the load generators, through
# timeout).
children_ticks() {
    local f
    f=$(sed 's/.*) //' "/proc/$$/stat")
    set -- $f
    echo $((${14} + ${15}))
}

# cpu_ticks [user] PID...: CPU time (clock ticks, all threads) of the processes: user + system,
# or with `user` first, user space alone. The kernel's share of a proxied request (its socket
# calls, loopback TCP, the scheduler) is much the same for every proxy here; the user-space
# share is where they differ.
cpu_ticks() {
    local pid total=0 f system=1
    if [ "${1:-}" = user ]; then
        system=0
        shift
    fi
    for pid in "$@"; do
        f=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
        set -- $f
        total=$((total + ${12} + system * ${13}))
    done
    echo "$total"
}

# other_pct ALL_TICKS MINE_TICKS: share of the machine's CPU time (percent) that processes other
# than ours used over a measured run of BENCH_DURATION.
other_pct() {
    awk -v all="$1" -v mine="$2" -v hz="$(getconf CLK_TCK)" -v n="$(nproc)" \
        -v d="$(duration_secs "$BENCH_DURATION")" \
        'BEGIN { o = (all - mine) / (hz * n * d) * 100; printf "%.0f", o < 0 ? 0 : o }'
}

# us_per_request TICKS REQ_PER_SEC: CPU microseconds per request over a measured run,
# ticks * 1e6 / CLK_TCK / (req/s * seconds of the run).
us_per_request() {
    awk -v t="$1" -v hz="$(getconf CLK_TCK)" -v r="$2" -v d="$(duration_secs "$BENCH_DURATION")" \
        'BEGIN { printf "%.1f", t * 1000000 / hz / (r * d) }'
}

# --- load generators' output ---------------------------------------------------------------------

# parse_wrk FILE: prints "req/s p50_us p99_us errors" from wrk --latency output.
parse_wrk() {
    awk '
        function us(v,   n, u) {
            n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
            if (u == "us") return n
            if (u == "ms") return n * 1000
            if (u == "s") return n * 1000000
            if (u == "m") return n * 60000000
            return -1
        }
        /^Requests\/sec:/ { rps = $2 }
        /^ +50% / { p50 = us($2) }
        /^ +99% / { p99 = us($2) }
        /Non-2xx or 3xx responses:/ { err += $NF }
        /Socket errors:/ { for (i = 3; i <= NF; i++) { gsub(",", "", $i); if ($i ~ /^[0-9]+$/) err += $i } }
        END {
            if (rps == "" || p50 == "" || p99 == "") exit 1
            printf "%s %s %s %d\n", rps, p50, p99, err
        }' "$1"
}

# --- results ------------------------------------------------------------------------------------

# median VALUES...: the middle value (the mean of the two middle ones for an even count).
median() {
    printf '%s\n' $* | sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) exit 1
        if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
ms() { awk -v u="$1" 'BEGIN { printf "%.2f ms", u / 1000 }'; }

# machine_line: the CPU, cores, memory and kernel, for a results block.
machine_line() {
    echo "$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores; memory $(free -h | awk '/^Mem:/ { print $2 }'); kernel $(uname -r)"
}
