#!/bin/sh
# Large client lists: one page filled with N clients (default 1,000,000) on each store, through
# the CSV import path (parse + batched apply, as the admin API does, without HTTP), then list
# pages, searches, counts, the admin page's first view and an export timed against the store;
# then the release gateway is started on the filled store and the same is asked over HTTP (the
# admin API, the admin page signed in with a mailed code, the CSV export), with the gateway's
# RSS before and after. PostgreSQL is a throwaway server from Debian's postgresql package
# (durable settings: fsync and synchronous_commit on), started here and removed at the end.
#
#   .ci/bench-lists.sh [N]              (BACKENDS="redb" or "postgres" runs one of them)
#
# Results go to stdout; docs/performance.md ("Large client lists") has a run.
set -eu
N="${1:-1000000}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
cargo build --release --locked --bin pagegate --example large_lists
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/large_lists"
GATEWAY="${CARGO_TARGET_DIR:-$ROOT/target}/release/pagegate"
KEY="bench-admin-secret-0123456789abcdef"
ADMIN="admin@example.com"
die() { echo "bench-lists: $*" >&2; exit 1; }
WORK="$(mktemp -d /tmp/pagegate-lists-XXXXXX)"
PGBIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
as_pg() { if [ "$(id -u)" = 0 ]; then setpriv --reuid=postgres --regid=postgres --init-groups --reset-env "$@"; else "$@"; fi; }
GW_PID=""
cleanup() {
    [ -n "$GW_PID" ] && kill "$GW_PID" 2>/dev/null || true
    [ -f "$WORK/pg/data/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

rss() { awk '/VmRSS/ {printf "%d MB", $2/1024}' "/proc/$GW_PID/status"; }
# ms GET PATH [CURL ARGS…]: the median time of 5 requests, in milliseconds.
ms() {
    path=$1; shift
    for _ in 1 2 3 4 5; do
        curl -s -o /dev/null -w '%{time_total}\n' "$@" "$BASE$path"
    done | sort -n | sed -n 3p | awk '{printf "%.1f ms", $1*1000}'
}
api() { ms "/_pagegate/api/v1/pages/course/clients$1" -H "Authorization: Bearer $KEY"; }

# http_phase NAME [STORE TOML]: the release gateway on the filled store, asked over HTTP.
http_phase() {
    name=$1; store=${2:-}
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    BASE="http://127.0.0.1:$port"
    mkdir -p "$WORK/mail-$name"
    cat >"$WORK/gw-$name.toml" <<TOML
data_dir = "$WORK/$name"
[server]
listen = "127.0.0.1:$port"
access_log = false
[[site]]
name = "bench"
hosts = ["*"]
upstream = "http://127.0.0.1:9"
public_url = "$BASE"
[[site.page]]
id = "course"
title = "Course"
paths = ["/course/"]
[mail]
transport = "file"
dir = "$WORK/mail-$name"
[admin]
emails = ["$ADMIN"]
[[api_key]]
name = "bench"
secret = "$KEY"
scopes = ["admin"]
$store
TOML
    "$GATEWAY" serve --config "$WORK/gw-$name.toml" >"$WORK/gw-$name.log" 2>&1 &
    GW_PID=$!
    for _ in $(seq 300); do curl -s -o /dev/null "$BASE/" && break; sleep 0.1; done
    echo "-- over HTTP (release gateway)"
    echo "   gateway rss at start: $(rss)"
    echo "   api list first page (100): $(api '?limit=100')"
    echo "   api list middle page: $(api "?limit=100&after=$(printf 'user%07d' $((N / 2)))%40example.com")"
    echo "   api list last page: $(api "?limit=100&after=$(printf 'user%07d' $((N - 100)))%40example.com")"
    for q in example.com smith 0777777 quetzal nobody-has-this; do
        echo "   api search $q: $(api "?limit=100&q=$q")"
    done
    echo "   api offset=100000 (compatibility): $(api '?limit=100&offset=100000')"
    jar="$WORK/jar-$name"
    ( cd "$WORK" && sign_in_admin ) >/dev/null
    echo "   admin overview: $(ms /_pagegate/admin/ -b "$jar")"
    echo "   admin page first view: $(ms /_pagegate/admin/pages/course -b "$jar")"
    echo "   admin page search 'smith': $(ms '/_pagegate/admin/pages/course?q=smith' -b "$jar")"
    echo "   gateway rss before export: $(rss)"
    out=$(curl -s -o "$WORK/export.csv" -w '%{time_starttransfer} %{time_total} %{size_download}' \
        -H "Authorization: Bearer $KEY" "$BASE/_pagegate/api/v1/pages/course/clients.csv")
    echo "$out" | awk '{printf "   export: first byte %.0f ms, %d MB in %.1f s\n", $1*1000, $3/1e6, $2}'
    echo "   export rows: $(($(wc -l <"$WORK/export.csv") - 1))"
    rm -f "$WORK/export.csv"
    echo "   gateway rss after export: $(rss) (peak $(awk '/VmHWM/ {printf "%d MB", $2/1024}' "/proc/$GW_PID/status"))"
    kill "$GW_PID"; wait "$GW_PID" 2>/dev/null || true; GW_PID=""
}

# The admin sign-in: the email form, the mailed code, the code form (cookies in $jar).
sign_in_admin() {
    csrf=$(curl -s -c "$jar" -b "$jar" "$BASE/_pagegate/admin/login" | grep -o 'name="csrf" value="[^"]*"' | head -1 | sed 's/.*value="//;s/"$//')
    [ -n "$csrf" ] || die "no CSRF token on the admin login form"
    curl -s -o /dev/null -c "$jar" -b "$jar" --data-urlencode "email=$ADMIN" --data-urlencode "next=/_pagegate/admin/" \
        --data-urlencode "csrf=$csrf" "$BASE/_pagegate/admin/login"
    for _ in $(seq 100); do ls "$WORK/mail-$name"/*.eml >/dev/null 2>&1 && break; sleep 0.1; done
    code=$(grep -hoE '\b[0-9]{6}\b' "$WORK/mail-$name"/*.eml | head -1)
    [ -n "$code" ] || die "no code in the admin mail"
    status=$(curl -s -o /dev/null -w '%{http_code}' -c "$jar" -b "$jar" --data-urlencode "email=$ADMIN" \
        --data-urlencode "code=$code" --data-urlencode "next=/_pagegate/admin/" --data-urlencode "csrf=$csrf" \
        "$BASE/_pagegate/admin/verify")
    [ "$status" = 303 ] || die "admin sign-in failed with status $status"
}

echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {print int($2/1024)" MB"}' /proc/meminfo), $(uname -sr), $(date -u +%Y-%m-%dT%H:%MZ)"
BACKENDS="${BACKENDS:-redb postgres}"
case " $BACKENDS " in *" redb "*)
echo "== redb"
"$BIN" redb "$WORK/redb" "$N"
echo "   file: $(du -m "$WORK/redb/pagegate.redb" | cut -f1) MB"
http_phase redb
;; esac
case " $BACKENDS " in *" postgres "*) ;; *) exit 0 ;; esac

echo "== postgres ($("$PGBIN/postgres" --version))"
mkdir -p "$WORK/pg"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$WORK" "$WORK/pg"
as_pg "$PGBIN/initdb" -D "$WORK/pg/data" -U postgres --auth=trust -E UTF8 --locale=C --no-instructions >/dev/null
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w \
    -o "-h 127.0.0.1 -p $PORT -k $WORK/pg -c shared_buffers=256MB" start >/dev/null
"$PGBIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres lists
"$BIN" postgres "postgres://postgres@127.0.0.1:$PORT/lists" "$N"
# How PostgreSQL answers a first page and a rare search (the plans behind the numbers).
for sql in "SELECT email FROM clients WHERE page = 'course' AND email > '' ORDER BY email LIMIT 101" \
    "SELECT email FROM clients WHERE page = 'course' AND email > '' AND search LIKE '%0777777%' ORDER BY email LIMIT 101" \
    "SELECT email FROM clients WHERE page = 'course' AND email > '' AND search LIKE '%smith%' ORDER BY email LIMIT 101"; do
    echo "   plan: $sql"
    "$PGBIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -Atc "EXPLAIN (ANALYZE, COSTS off) $sql" lists | sed 's/^/     /'
done
echo "   database: $("$PGBIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -Atc "SELECT pg_size_pretty(pg_database_size('lists'))" lists)"
http_phase postgres "[auth]
secret = \"bench-shared-secret-0123456789abcdef0123\"
[store]
backend = \"postgres\"
url = \"postgres://postgres@127.0.0.1:$PORT/lists\"
statement_timeout = \"30s\""
