#!/usr/bin/env python3
"""Memory cost of idle keep-alive connections on a proxy (standard library only).

Opens COUNT connections to HOST:PORT in batches, sends one keep-alive `GET PATH HTTP/1.1` on
each and reads the whole response, then holds every connection open and idle. The resident
memory (VmRSS, summed over the given PIDs) is read before opening, once all connections have
been idle for SETTLE seconds, and SETTLE seconds after closing them all.

Prints one line `IDLE_RESULT key=value ...` for the calling script to parse; progress goes to
stderr. Exits non-zero when a connection could not be opened or answered 200.
"""

import argparse
import asyncio
import sys
import time


def rss_kib(pids):
    """Sum of VmRSS (KiB) over the pids; a vanished pid counts as 0."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except FileNotFoundError:
            pass
    return total


def log(msg):
    print(f"idle_conns: {msg}", file=sys.stderr, flush=True)


async def open_one(host, port, request, timeout):
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    writer.write(request)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if length is None:
        raise RuntimeError("response without Content-Length")
    await asyncio.wait_for(reader.readexactly(length), timeout)
    if status != 200:
        raise RuntimeError(f"status {status}")
    return reader, writer


async def close_one(writer):
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), 5)
    except (OSError, asyncio.TimeoutError):
        pass


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/1k")
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--settle", type=float, default=5.0)
    ap.add_argument("--timeout", type=float, default=10.0, help="per-connection step timeout")
    ap.add_argument("--pids", required=True, help="comma-separated pids whose VmRSS is summed")
    args = ap.parse_args()
    pids = [int(p) for p in args.pids.split(",") if p]
    request = (
        f"GET {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
        "Connection: keep-alive\r\n\r\n"
    ).encode("ascii")

    rss_before = rss_kib(pids)
    started = time.monotonic()
    conns = []
    failures = 0
    first_error = None
    for start in range(0, args.count, args.batch):
        n = min(args.batch, args.count - start)
        results = await asyncio.gather(
            *(open_one(args.host, args.port, request, args.timeout) for _ in range(n)),
            return_exceptions=True,
        )
        for r in results:
            if isinstance(r, BaseException):
                failures += 1
                first_error = first_error or repr(r)
            else:
                conns.append(r)
        if failures:
            break
    open_secs = time.monotonic() - started
    log(f"opened {len(conns)} connections in {open_secs:.1f}s, {failures} failed")

    await asyncio.sleep(args.settle)
    still_open = sum(1 for reader, _ in conns if not reader.at_eof())
    rss_open = rss_kib(pids)
    opened = len(conns)

    for start in range(0, len(conns), args.batch):
        await asyncio.gather(*(close_one(w) for _, w in conns[start : start + args.batch]))
    conns.clear()
    await asyncio.sleep(args.settle)
    rss_after = rss_kib(pids)

    per_conn = (rss_open - rss_before) / still_open if still_open else 0.0
    print(
        f"IDLE_RESULT count={args.count} opened={opened} still_open={still_open} "
        f"failed={failures} rss_before_kib={rss_before} rss_open_kib={rss_open} "
        f"rss_after_kib={rss_after} kib_per_conn={per_conn:.2f} open_secs={open_secs:.1f}",
        flush=True,
    )
    if failures:
        log(f"first error: {first_error}")
        return 1
    if still_open != args.count:
        log(f"only {still_open} of {args.count} connections were still open after {args.settle}s")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
