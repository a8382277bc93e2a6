"""Settings of the cost service (`DEVMESH_COST_*`)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from services.runtime.settings import parse_positive_float, parse_positive_int, setting


def parse_amount(raw: str) -> str:
    """A non-negative decimal amount, kept as its string."""
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ValueError("must be a decimal number") from None
    if not value.is_finite() or value < 0:
        raise ValueError("must be a decimal number of at least 0")
    return raw


@dataclass(frozen=True)
class CostSettings:
    cost_max_import_bytes: int = setting(
        8 * 1024**3,
        "Largest export one import takes, in bytes after decompression (a month of a large "
        "account's hourly FOCUS data is a few GB).",
        parse=parse_positive_int,
    )
    cost_max_line_bytes: int = setting(
        1024 * 1024,
        "Longest line of a CSV export; a longer one is refused as it arrives (a FOCUS row with "
        "its tags is a few KB).",
        parse=parse_positive_int,
    )
    cost_import_segment_bytes: int = setting(
        64 * 1024 * 1024,
        "A CSV import is staged in segments of about this many bytes while the rest of it still "
        "arrives (smaller segments overlap more but each costs a DuckDB pass of its own).",
        parse=parse_positive_int,
    )
    cost_duckdb_memory_mb: int = setting(
        512,
        "Memory DuckDB may use per import or query engine before it spills to "
        "<DEVMESH_DATA_DIR>/cost/tmp; bounds the service's memory whatever the file's size.",
        parse=parse_positive_int,
    )
    cost_duckdb_threads: int = setting(
        2, "Threads DuckDB runs an import or a query on.", parse=parse_positive_int
    )
    cost_lease_ttl: float = setting(
        30.0,
        "Seconds a replica's lease on a (billing period, source) partition lasts without renewal "
        "(renewed every third of it while its import runs).",
        parse=parse_positive_float,
    )
    cost_retire_grace: float = setting(
        60.0,
        "Seconds the files of a replaced import are kept, so that queries that began before the "
        "replacement finish on them.",
        parse=parse_positive_float,
    )
    cost_cache_ttl: float = setting(
        3600.0,
        "Seconds a query answer stays in the Redis cache (an import invalidates it at once).",
        parse=parse_positive_float,
    )
    cost_max_answer_rows: int = setting(
        100_000, "Rows a QueryCost answer may have (over all its pages).", parse=parse_positive_int
    )
    cost_max_range_days: int = setting(
        1100, "Longest time range of a query, in days (three years and some).", parse=parse_positive_int
    )
    cost_rightsizing_window_days: int = setting(
        14,
        "Days of utilisation samples a recommendation looks at (Kubecost's and the GKE "
        "recommender's default window is two weeks: weekly cycles, twice).",
        parse=parse_positive_int,
    )
    cost_rightsizing_min_monthly_savings: str = setting(
        "1",
        "Smallest monthly saving, in the workload's currency, worth a recommendation (besides "
        "saving at least 10% of the container's cost).",
        parse=parse_amount,
    )
    cost_watch_progress_interval: float = setting(
        5.0,
        "Seconds of silence after which a WatchCostEvents stream gets a progress event.",
        parse=parse_positive_float,
    )
    cost_webhook_timeout: float = setting(
        5.0, "Seconds a webhook POST may take before it counts as failed.", parse=parse_positive_float
    )
    cost_webhook_max_attempts: int = setting(
        8,
        "Tries of one webhook delivery (1 s, 2 s, 4 s... apart, at most 5 minutes) before it is "
        "kept as a dead letter.",
        parse=parse_positive_int,
    )
    cost_webhook_first_backoff: float = setting(
        1.0, "Seconds before the first retry of a failed webhook POST.", parse=parse_positive_float
    )
