#!/bin/sh
# Large client lists: one page filled with N clients (default 1,000,000) on each store, through
# the CSV import path (parse + batched apply, as the admin API does, without HTTP), then list
# pages, searches, counts, the admin page's first view and an export timed against the store.
# PostgreSQL is a throwaway server from Debian's postgresql package (durable settings: fsync and
# synchronous_commit on), started here and removed at the end.
#
#   .ci/bench-lists.sh [N]
#
# Results go to stdout; docs/performance.md ("Large client lists") has a run.
set -eu
N="${1:-1000000}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
cargo build --release --locked --example large_lists
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/large_lists"
WORK="$(mktemp -d /tmp/pagegate-lists-XXXXXX)"
PGBIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
as_pg() { if [ "$(id -u)" = 0 ]; then setpriv --reuid=postgres --regid=postgres --init-groups --reset-env "$@"; else "$@"; fi; }
cleanup() {
    [ -f "$WORK/pg/data/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {print int($2/1024)" MB"}' /proc/meminfo), $(uname -sr), $(date -u +%Y-%m-%dT%H:%MZ)"
echo "== redb"
"$BIN" redb "$WORK/redb" "$N"
echo "   file: $(du -m "$WORK/redb/pagegate.redb" | cut -f1) MB"

echo "== postgres ($("$PGBIN/postgres" --version))"
mkdir -p "$WORK/pg"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$WORK" "$WORK/pg"
as_pg "$PGBIN/initdb" -D "$WORK/pg/data" -U postgres --auth=trust -E UTF8 --locale=C --no-instructions >/dev/null
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w \
    -o "-h 127.0.0.1 -p $PORT -k $WORK/pg -c shared_buffers=256MB" start >/dev/null
"$PGBIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres lists
"$BIN" postgres "postgres://postgres@127.0.0.1:$PORT/lists" "$N"
echo "   database: $("$PGBIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -Atc "SELECT pg_size_pretty(pg_database_size('lists'))" lists)"
