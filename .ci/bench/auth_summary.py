"""Medians of the session-check benchmark's rows (NAME|req/s|p50|p99|CPU µs) from stdin."""
import statistics
import sys

rows = [line.rstrip("\n").split("|") for line in sys.stdin if line.strip()]


def median(kind: str, column: int) -> float:
    return statistics.median(float(r[column]) for r in rows if r[0].startswith(kind))


u, p = median("unprotected", 1), median("protected", 1)
cu, cp = median("unprotected", 4), median("protected", 4)
print(f"\nmedians: unprotected {u:.0f} req/s, {cu:.1f} µs CPU/request; "
      f"protected {p:.0f} req/s, {cp:.1f} µs CPU/request")
print(f"session check cost: {100 * (1 - p / u):.1f}% of throughput, "
      f"{100 * (cp / cu - 1):.1f}% more pagegate CPU per request")
