"""What the sections report from their measurements: throughput and percentiles of a list of
call latencies, and quantiles of what a service's own Prometheus histogram recorded between
two scrapes of its /metrics."""

from __future__ import annotations

import statistics


def summary(latencies: list[float], duration: float) -> dict[str, float]:
    """Calls per second over `duration`, p50 and p99 in ms, and the number of calls."""
    latencies = sorted(latencies)
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "rps": round(len(latencies) / duration),
        "p50_ms": round(quantiles[49] * 1000, 3),
        "p99_ms": round(quantiles[98] * 1000, 3),
        "calls": len(latencies),
    }


def histogram(metrics_url: str, name: str) -> dict[float, float]:
    """Cumulative bucket counts (upper bound -> count) of a Prometheus histogram."""
    import urllib.request

    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    buckets = {}
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float("inf") if bound == "+Inf" else float(bound)] = float(line.rsplit(" ", 1)[1])
    return buckets


def quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The q-quantile of what a histogram recorded between two scrapes, interpolated within its
    bucket (as Prometheus's histogram_quantile does)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1]
    rank, lower, previous = q * total, 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - previous) / max(count - previous, 1e-9)
        lower, previous = bound, count
    return lower
