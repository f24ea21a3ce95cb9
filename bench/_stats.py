"""Latency statistics shared by the benchmark scripts (run in the benchmark process)."""

from __future__ import annotations

import statistics


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0-100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, round(q / 100 * len(ordered) + 0.4999))
    return ordered[min(rank, len(ordered)) - 1]


def latency_ms(samples_s: list[float], digits: int = 2) -> dict[str, float | int]:
    """n, p50, p99, max and mean in milliseconds of samples given in seconds."""
    ms = [s * 1000 for s in samples_s]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), digits),
        "p99_ms": round(percentile(ms, 99), digits),
        "max_ms": round(max(ms), digits),
        "mean_ms": round(statistics.fmean(ms), digits),
    }
