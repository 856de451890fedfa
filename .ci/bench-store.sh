#!/usr/bin/env bash
# Store benchmark: pagegate on PostgreSQL against pagegate on redb, in the same run. The script
# starts a throwaway PostgreSQL server (initdb in its temporary directory, a free port, fsync
# and synchronous commit on, as users run it), an nginx upstream serving a 1 KiB file, and the
# gateways; everything runs on 127.0.0.1 and is removed on exit with every process started
# here. See docs/performance.md, "PostgreSQL store".
#
#   bash .ci/bench-store.sh requests   signed-in GETs of /course/1k with wrk: nginx serving the
#                                      file itself (the peer), pagegate on redb, pagegate on
#                                      PostgreSQL; interleaved rounds, order turned each round
#   bash .ci/bench-store.sh writes     durable grants per second (POST /api/v1/grants, Bearer
#                                      shop key, distinct buyers) and full sign-ins per second
#                                      (form, code request, code from the mail, code entry) on
#                                      each backend, BENCH_CLIENTS at once; interleaved rounds
#   bash .ci/bench-store.sh removal    two gateways A and B on one PostgreSQL: BENCH_REMOVALS
#                                      times, a signed-in client gets 200 from A, is removed
#                                      through B's admin API, and A is asked until it answers
#                                      302; the time from B's 204 to A's first 302
#
# Settings (environment):
#   BENCH_DURATION=10s BENCH_WARMUP=3s BENCH_CONNECTIONS=64 BENCH_THREADS=1   (requests: wrk)
#   BENCH_ROUNDS=3            rounds of requests or writes
#   BENCH_CLIENTS=50          writes and removal: clients at once, each on its own connection
#   BENCH_GRANTS=2000         writes: grants per backend and round
#   BENCH_SIGNINS=1000        writes: full sign-ins per backend and round (of buyers just granted)
#   BENCH_REMOVALS=1000       removal: rounds (1,000 distinct clients, signed in beforehand)
#   BENCH_ONE_ADDRESS=0       1: every client connects from 127.0.0.1 (else each from its own
#                             127.0.1.N, as distinct visitors do; the per-address rate limits
#                             then count separately)
#   BENCH_PG_POOL=16          [store] pool_size of the gateways on PostgreSQL
#   BENCH_PG_SETTINGS=        more server settings, space-separated name=value (for instance
#                             "synchronous_commit=off" to see what waiting for fsync costs)
#   BENCH_PG_PROFILE=0        writes: 1 loads pg_stat_statements into the server and prints, for
#                             each run on PostgreSQL, the statements per operation and their
#                             mean time (the extension costs a little itself; off for the
#                             numbers that count)
#   PAGEGATE_BIN=...          use this binary instead of building one
#   LOAD_BIN=...              use this store_load binary instead of building the example
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/.ci/bench
MODE=${1:-}
BENCH_DURATION=${BENCH_DURATION:-10s}
BENCH_WARMUP=${BENCH_WARMUP:-3s}
BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-64}
BENCH_THREADS=${BENCH_THREADS:-1}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
BENCH_CLIENTS=${BENCH_CLIENTS:-50}
BENCH_GRANTS=${BENCH_GRANTS:-2000}
BENCH_SIGNINS=${BENCH_SIGNINS:-1000}
BENCH_REMOVALS=${BENCH_REMOVALS:-1000}
BENCH_ONE_ADDRESS=${BENCH_ONE_ADDRESS:-0}
BENCH_PG_POOL=${BENCH_PG_POOL:-16}
BENCH_PG_SETTINGS=${BENCH_PG_SETTINGS:-}
BENCH_PG_PROFILE=${BENCH_PG_PROFILE:-0}

BENCH_TAG=bench-store
# shellcheck source=.ci/bench/lib.sh
. "$BENCH/lib.sh"
case $MODE in
requests | writes | removal) ;;
*) die "usage: bash .ci/bench-store.sh requests|writes|removal" ;;
esac
[ "$BENCH_SIGNINS" -le "$BENCH_GRANTS" ] || die "BENCH_SIGNINS must not exceed BENCH_GRANTS: sign-ins are of the buyers just granted"
WORK=$(mktemp -d /tmp/pagegate-bench-store.XXXXXX)

# PostgreSQL's fast shutdown first (the default TERM waits for every client to leave), then the
# shared cleanup of every process and the folder.
PG_PID=
stop_postgres() { if [ -n "$PG_PID" ]; then kill -INT "$PG_PID" 2>/dev/null || true; fi; }
trap 'stop_postgres; cleanup' EXIT

missing=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
apt_install "${missing[@]}"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
build_pagegate
PAGEGATE=$PG_BIN
if [ "$MODE" != requests ]; then
    if [ -n "${LOAD_BIN:-}" ]; then [ -x "$LOAD_BIN" ] || die "no store_load binary at $LOAD_BIN"; else LOAD_BIN=$(build_example store_load); fi
fi

SECRET=bench-store-shared-secret-0123456789abcdef
SHOP_KEY=bench-store-shop-key-0123456789abcdef
ADMIN_KEY=bench-store-admin-key-0123456789abcdef
wait_port() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.1; done; die "nothing listens on port $1"; }

# --- the database --------------------------------------------------------------------------------

# start_postgres: initdb and a server on a free port in $WORK/pg, run as the `postgres` user when
# this script is root (initdb refuses root); sets PG_PORT, PG_PID and DB_URL.
start_postgres() {
    local as=() setting extra=()
    mkdir -p "$WORK/pg"
    if [ "$(id -u)" -eq 0 ]; then
        chmod 711 "$WORK"
        chown postgres:postgres "$WORK/pg"
        as=(setpriv --reuid=postgres --regid=postgres --init-groups --reset-env)
    fi
    # --no-sync: initdb does not flush the new cluster's files; the server below runs with fsync.
    "${as[@]}" "$PGBIN/initdb" -D "$WORK/pg/data" -U postgres --auth=trust -E UTF8 --locale=C \
        --no-sync --no-instructions >"$WORK/initdb.log" 2>&1 || { cat "$WORK/initdb.log" >&2; die "initdb failed"; }
    for setting in $BENCH_PG_SETTINGS; do extra+=(-c "$setting"); done
    [ "$BENCH_PG_PROFILE" = 1 ] && extra+=(-c shared_preload_libraries=pg_stat_statements)
    PG_PORT=$(free_ports 1)
    "${as[@]}" "$PGBIN/postgres" -D "$WORK/pg/data" -h 127.0.0.1 -p "$PG_PORT" -k "$WORK/pg" \
        -c max_connections=200 "${extra[@]}" >"$WORK/postgres.log" 2>&1 &
    PG_PID=$!
    STARTED_PIDS+=("$PG_PID")
    for _ in $(seq 300); do
        "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break
        kill -0 "$PG_PID" 2>/dev/null || { cat "$WORK/postgres.log" >&2; die "PostgreSQL did not start"; }
        sleep 0.1
    done
    "$PGBIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres bench
    DB_URL="postgres://postgres@127.0.0.1:$PG_PORT/bench"
    if [ "$BENCH_PG_PROFILE" = 1 ]; then psql_bench 'CREATE EXTENSION pg_stat_statements' >/dev/null; fi
}

# pg_counters: transactions committed in the database (explicit ones, and the implicit one of
# every statement or prepare sent outside one) and WAL flushes (fsyncs) so far, as
# "COMMITS SYNCS".
pg_counters() {
    psql_bench "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = 'bench'), wal_sync FROM pg_stat_wal" | tr '|' ' '
}

psql_bench() { "$PGBIN/psql" "$DB_URL" -v ON_ERROR_STOP=1 -At -c "$1"; }

# The server's settings that decide what a commit costs, for the results.
pg_line() {
    echo "PostgreSQL $(psql_bench 'SHOW server_version' | cut -d' ' -f1): fsync=$(psql_bench 'SHOW fsync'), synchronous_commit=$(psql_bench 'SHOW synchronous_commit'), wal_sync_method=$(psql_bench 'SHOW wal_sync_method'), shared_buffers=$(psql_bench 'SHOW shared_buffers')"
}

# postgres_ticks: CPU time (clock ticks) of the server's processes, as "PID TICKS" lines.
postgres_ticks() {
    local pid
    for pid in "$PG_PID" $(ps -o pid= --ppid "$PG_PID"); do
        echo "$pid $(cpu_ticks "$pid")"
    done
}
# ticks_between BEFORE AFTER: CPU ticks used between two postgres_ticks readings (a process
# started in between counts from zero).
ticks_between() {
    awk 'NR == FNR { b[$1] = $2; next } { t += $2 - b[$1] } END { print t + 0 }' <(echo "$1") <(echo "$2")
}

# --- the gateways --------------------------------------------------------------------------------

UPSTREAM_PORT=$(free_ports 1)
USER_LINE=; [ "$(id -u)" -eq 0 ] && USER_LINE="user root;"
mkdir -p "$WORK/www/course" "$WORK/upstream-temp"
head -c 1024 /dev/zero | tr '\0' 'x' >"$WORK/www/1k"
cp "$WORK/www/1k" "$WORK/www/course/1k"
render "$BENCH/upstream.nginx.conf" "$WORK/upstream.conf" DIR="$WORK" PORT="$UPSTREAM_PORT" \
    WORKERS=1 NOFILE=65536 USER_LINE="$USER_LINE"
start_nginx upstream "$WORK/upstream.conf"
NGINX_PID=$LAST_PID

# start_gateway NAME BACKEND: a pagegate on "redb" or "postgres" in $WORK/NAME; sets
# GW_PORT and GW_PID.
start_gateway() {
    local name=$1 backend=$2 dir=$WORK/$1
    mkdir -p "$dir"
    GW_PORT=$(free_ports 1)
    render "$BENCH/store.pagegate.toml" "$dir/pagegate.toml" DATA="$dir/data" MAIL="$dir/mail" \
        PORT="$GW_PORT" UPSTREAM_PORT="$UPSTREAM_PORT" SECRET="$SECRET" SHOP_KEY="$SHOP_KEY" \
        ADMIN_KEY="$ADMIN_KEY"
    if [ "$backend" = postgres ]; then
        printf '\n[store]\nbackend = "postgres"\nurl = "%s"\npool_size = %s\n' "$DB_URL" \
            "$BENCH_PG_POOL" >>"$dir/pagegate.toml"
    fi
    PAGEGATE_LOG=warn "$PAGEGATE" serve --config "$dir/pagegate.toml" 2>"$dir/pagegate.log" &
    GW_PID=$!
    STARTED_PIDS+=("$GW_PID")
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$GW_PORT/1k" && return 0; sleep 0.1; done
    cat "$dir/pagegate.log" >&2
    die "$name did not start"
}

# grant EMAIL PORT: adds EMAIL to page course through the grant API.
grant() {
    local status
    status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $SHOP_KEY" \
        -H 'Content-Type: application/json' --data "{\"page\":\"course\",\"email\":\"$1\",\"days\":30}" \
        "http://127.0.0.1:$2/_pagegate/api/v1/grants")
    [ "$status" = 201 ] || die "grant of $1 on port $2 answered $status"
}

wait_port "$UPSTREAM_PORT"
start_postgres
say "$(pg_line)"
BUSY_BEFORE=$(busy_pct)

results_head() {
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); pagegate: $(pagegate_commit); load average before: $(cut -d' ' -f1-3 /proc/loadavg); CPUs busy before: ${BUSY_BEFORE}%"
    echo "- machine: $(machine_line)"
    echo "- $(pg_line); gateways' pool_size=$BENCH_PG_POOL"
}

# --- requests: signed-in protected GETs ----------------------------------------------------------

bench_requests() {
    start_gateway redb redb
    local redb_port=$GW_PORT redb_pid=$GW_PID
    start_gateway pg postgres
    local pg_port=$GW_PORT pg_pid=$GW_PID
    # shellcheck source=.ci/bench/sign_in.sh
    . "$BENCH/sign_in.sh"
    grant bench@example.com "$redb_port"
    grant bench@example.com "$pg_port"
    local redb_cookie pg_cookie
    redb_cookie=$(sign_in "http://127.0.0.1:$redb_port" bench@example.com /course/1k "$WORK/redb.jar" "$WORK/redb/mail")
    pg_cookie=$(sign_in "http://127.0.0.1:$pg_port" bench@example.com /course/1k "$WORK/pg.jar" "$WORK/pg/mail")
    for p in "$redb_port|$redb_cookie" "$pg_port|$pg_cookie"; do
        [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: ${p#*|}" "http://127.0.0.1:${p%%|*}/course/1k")" = 200 ] ||
            die "the session does not open the page on port ${p%%|*}"
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${p%%|*}/course/1k")" = 302 ] ||
            die "the page is not protected on port ${p%%|*}"
    done

    # run NAME URL COOKIE PIDS: one warm-up and one measured wrk run; prints
    # "NAME|req/s|p50 µs|p99 µs|server CPU µs/request|postgres CPU µs/request".
    run() {
        local name=$1 url=$2 cookie=$3 pids=$4 before after pg_before pg_after out parsed
        wrk -t"$BENCH_THREADS" -c"$BENCH_CONNECTIONS" -d"$BENCH_WARMUP" -H "Cookie: $cookie" "$url" >/dev/null
        before=$(cpu_ticks $pids)
        pg_before=$(postgres_ticks)
        wrk -t"$BENCH_THREADS" -c"$BENCH_CONNECTIONS" -d"$BENCH_DURATION" --latency -H "Cookie: $cookie" "$url" >"$WORK/wrk.out"
        after=$(cpu_ticks $pids)
        pg_after=$(postgres_ticks)
        parsed=$(parse_wrk "$WORK/wrk.out") || { cat "$WORK/wrk.out" >&2; die "$name: no wrk result"; }
        set -- $parsed
        [ "$4" -eq 0 ] || { cat "$WORK/wrk.out" >&2; die "$name: $4 errors or non-2xx answers"; }
        printf '%s|%s|%s|%s|%s|%s\n' "$name" "$1" "$2" "$3" "$(us_per_request $((after - before)) "$1")" \
            "$(us_per_request "$(ticks_between "$pg_before" "$pg_after")" "$1")"
    }
    local nginx_pids redb_row=() rows=() round targets
    nginx_pids=$(pids_of_nginx "$NGINX_PID")
    targets=("nginx, file served directly|http://127.0.0.1:$UPSTREAM_PORT/course/1k|none=1|$nginx_pids"
        "pagegate on redb, signed in|http://127.0.0.1:$redb_port/course/1k|$redb_cookie|$redb_pid"
        "pagegate on PostgreSQL, signed in|http://127.0.0.1:$pg_port/course/1k|$pg_cookie|$pg_pid")
    for round in $(seq "$BENCH_ROUNDS"); do
        local order=(0 1 2)
        [ $((round % 2)) -eq 0 ] && order=(2 1 0)
        for i in "${order[@]}"; do
            IFS='|' read -r n u c p <<<"${targets[$i]}"
            say "round $round: $n"
            rows+=("$(run "$n" "$u" "$c" "$p")")
        done
    done
    results_head
    echo "- wrk: $BENCH_THREADS thread, $BENCH_CONNECTIONS keep-alive connections, $BENCH_WARMUP warm-up, $BENCH_DURATION measured; GET /course/1k (1 KiB)"
    printf '\n| target | req/s | p50 | p99 | server CPU per request | PostgreSQL CPU per request |\n|---|---:|---:|---:|---:|---:|\n'
    local row
    for row in "${rows[@]}"; do
        IFS='|' read -r n r a b c d <<<"$row"
        printf '| %s | %.0f | %s | %s | %s µs | %s µs |\n' "$n" "$r" "$(ms "$a")" "$(ms "$b")" "$c" "$d"
    done
    printf '%s\n' "${rows[@]}" | python3 -c '
import statistics, sys
rows = [l.rstrip("\n").split("|") for l in sys.stdin if l.strip()]
def col(kind, i): return [float(r[i]) for r in rows if r[0].startswith(kind)]
n, r, p = col("nginx", 1), col("pagegate on redb", 1), col("pagegate on PostgreSQL", 1)
cr, cp = col("pagegate on redb", 4), col("pagegate on PostgreSQL", 4)
print(f"\nmedians: nginx {statistics.median(n):.0f} req/s; redb {statistics.median(r):.0f} req/s, "
      f"{statistics.median(cr):.1f} µs CPU/request; PostgreSQL {statistics.median(p):.0f} req/s, "
      f"{statistics.median(cp):.1f} µs CPU/request")
ratios = [b / a for a, b in zip(r, p)]
print("PostgreSQL / redb req/s by round: " + ", ".join(f"{x:.3f}" for x in ratios)
      + f"; median {statistics.median(ratios):.3f}; CPU per request {statistics.median(cp) / statistics.median(cr):.3f}x")
print("redb / nginx req/s by round: " + ", ".join(f"{b / a:.3f}" for a, b in zip(n, r)))'
}

# --- writes: grants and full sign-ins per second -------------------------------------------------

bench_writes() {
    start_gateway redb redb
    local redb_port=$GW_PORT redb_pid=$GW_PID
    start_gateway pg postgres
    local pg_port=$GW_PORT pg_pid=$GW_PID
    local one=()
    [ "$BENCH_ONE_ADDRESS" = 1 ] && one=(--one-address)
    # measure KIND BACKEND PORT PID ROUND: one load run; prints
    # "KIND|BACKEND|per_sec|p50 ms|p99 ms|pagegate CPU µs/op|postgres CPU µs/op|machine busy %".
    measure() {
        local kind=$1 backend=$2 port=$3 pid=$4 round=$5 count out before after pg_before pg_after m_before m_after secs
        local args=(--addr "127.0.0.1:$port" --clients "$BENCH_CLIENTS" --prefix "r$round" --from 0)
        if [ "$kind" = grants ]; then
            count=$BENCH_GRANTS
            args+=(--key "$SHOP_KEY")
        else
            count=$BENCH_SIGNINS
            args+=(--maildir "$WORK/$backend/mail" "${one[@]}")
        fi
        local c_before=(0 0) c_after=(0 0)
        if [ "$backend" = pg ]; then
            c_before=($(pg_counters))
            [ "$BENCH_PG_PROFILE" = 1 ] && psql_bench 'SELECT pg_stat_statements_reset()' >/dev/null
        fi
        before=$(cpu_ticks "$pid"); pg_before=$(postgres_ticks); m_before=$(machine_ticks)
        out=$("$LOAD_BIN" "$kind" "${args[@]}" --count "$count")
        after=$(cpu_ticks "$pid"); pg_after=$(postgres_ticks); m_after=$(machine_ticks)
        if [ "$backend" = pg ]; then
            # Backends report their counts at most once a second, when idle.
            sleep 2
            c_after=($(pg_counters))
            if [ "$BENCH_PG_PROFILE" = 1 ]; then
                {
                    echo "round $round, $kind on PostgreSQL: statements per operation (calls / $count), mean ms"
                    psql_bench "SELECT round(calls::numeric / $count, 2), round(mean_exec_time::numeric, 3), left(regexp_replace(query, '\s+', ' ', 'g'), 90)
                                FROM pg_stat_statements JOIN pg_database d ON d.oid = dbid WHERE d.datname = 'bench'
                                ORDER BY calls DESC LIMIT 25" | sed 's/^/    /'
                } >>"$WORK/profile.txt"
            fi
        fi
        echo "$backend $out" >>"$WORK/writes.log"
        case $out in *" errors=0 "*) ;; *) die "$kind on $backend: $out" ;; esac
        python3 - "$kind" "$backend" "$out" "$((after - before))" "$(ticks_between "$pg_before" "$pg_after")" \
            "$((m_after - m_before))" "$(getconf CLK_TCK)" "$(nproc)" \
            "$((c_after[0] - c_before[0]))" "$((c_after[1] - c_before[1]))" <<'EOF'
import sys
kind, backend, out, gw, pg, machine, hz, cpus, commits, syncs = sys.argv[1:]
f = dict(kv.split("=") for kv in out.split()[1:])
done, secs = int(f["done"]), float(f["seconds"])
us = lambda t: int(t) / int(hz) * 1e6 / done
busy = int(machine) / int(hz) / (secs * int(cpus)) * 100
per = lambda n: f"{int(n) / done:.2f}" if backend == "pg" else "-"
print(f"{kind}|{backend}|{f['per_sec']}|{f['p50_ms']}|{f['p99_ms']}|{us(gw):.0f}|{us(pg):.0f}|{busy:.0f}|{per(commits)}|{per(syncs)}")
EOF
    }
    # A first, unmeasured pass opens the pools' connections and warms both gateways.
    "$LOAD_BIN" grants --addr "127.0.0.1:$redb_port" --key "$SHOP_KEY" --prefix warm --count 200 --clients "$BENCH_CLIENTS" >/dev/null
    "$LOAD_BIN" grants --addr "127.0.0.1:$pg_port" --key "$SHOP_KEY" --prefix warm --count 200 --clients "$BENCH_CLIENTS" >/dev/null
    local rows=() round order b
    for round in $(seq "$BENCH_ROUNDS"); do
        order=(redb postgres)
        [ $((round % 2)) -eq 0 ] && order=(postgres redb)
        for kind in grants signins; do
            for b in "${order[@]}"; do
                say "round $round: $kind on $b"
                if [ "$b" = redb ]; then
                    rows+=("$(measure "$kind" redb "$redb_port" "$redb_pid" "$round")")
                else
                    rows+=("$(measure "$kind" pg "$pg_port" "$pg_pid" "$round")")
                fi
            done
        done
    done
    results_head
    echo "- store_load: $BENCH_CLIENTS clients at once, each on its own keep-alive connection$([ "$BENCH_ONE_ADDRESS" = 1 ] && echo ', all from 127.0.0.1' || echo ', each from its own 127.0.1.N'); $BENCH_GRANTS grants and $BENCH_SIGNINS full sign-ins per backend and round${BENCH_PG_SETTINGS:+; server settings: $BENCH_PG_SETTINGS}"
    printf '\n| round | what | backend | per second | p50 | p99 | pagegate CPU per op | PostgreSQL CPU per op | machine busy | transactions per op | WAL flushes per op |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n'
    local i=0 row
    for row in "${rows[@]}"; do
        IFS='|' read -r k bk r a p c d m cm sy <<<"$row"
        printf '| %s | %s | %s | %s | %s ms | %s ms | %s µs | %s µs | %s%% | %s | %s |\n' "$((i / 4 + 1))" "$k" "${bk/pg/PostgreSQL}" "$r" "$a" "$p" "$c" "$d" "$m" "$cm" "$sy"
        i=$((i + 1))
    done
    printf '%s\n' "${rows[@]}" | python3 -c '
import statistics, sys
rows = [l.rstrip("\n").split("|") for l in sys.stdin if l.strip()]
print()
for kind in ("grants", "signins"):
    r = [float(x[2]) for x in rows if x[0] == kind and x[1] == "redb"]
    p = [float(x[2]) for x in rows if x[0] == kind and x[1] == "pg"]
    ratios = [b / a for a, b in zip(r, p)]
    print(f"{kind}: redb median {statistics.median(r):.0f}/s, PostgreSQL median {statistics.median(p):.0f}/s; "
          "PostgreSQL / redb by round: " + ", ".join(f"{x:.2f}" for x in ratios)
          + f", median {statistics.median(ratios):.2f}")'
    if [ -s "$WORK/profile.txt" ]; then echo; cat "$WORK/profile.txt"; fi
}

# --- removal: how soon another gateway stops admitting a removed client ---------------------------

bench_removal() {
    start_gateway gw-a postgres
    local a_port=$GW_PORT
    start_gateway gw-b postgres
    local b_port=$GW_PORT
    say "granting $BENCH_REMOVALS clients through B"
    "$LOAD_BIN" grants --addr "127.0.0.1:$b_port" --key "$SHOP_KEY" --prefix removal \
        --count "$BENCH_REMOVALS" --clients "$BENCH_CLIENTS" >/dev/null
    say "signing them in on A, then removing them one at a time through B"
    local out
    out=$("$LOAD_BIN" removal --addr "127.0.0.1:$a_port" --remove-via "127.0.0.1:$b_port" \
        --key "$ADMIN_KEY" --maildir "$WORK/gw-a/mail" --prefix removal --count "$BENCH_REMOVALS" \
        --clients "$BENCH_CLIENTS")
    case $out in *" errors=0 "*) ;; *) die "removal: $out" ;; esac
    results_head
    echo "- two gateways on one database; $BENCH_REMOVALS distinct clients signed in on A beforehand, removed one at a time through B's admin API; A asked back to back after B's 204"
    echo
    echo "$out"
}

"bench_$MODE"
