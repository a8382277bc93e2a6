"""DuckDB connections as the cost service configures them: UTC, bounded memory that spills
to the service's own temp directory, no progress bar, no extension downloads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

PARTITION_FLUSH_ROWS = 50_000


@dataclass(frozen=True)
class DuckSettings:
    memory_limit_mb: int
    threads: int
    temp_dir: Path


def connect(settings: DuckSettings) -> duckdb.DuckDBPyConnection:
    """An in-memory database for one job (an import, a query engine's connections)."""
    connection = duckdb.connect(
        ":memory:",
        config={
            "memory_limit": f"{settings.memory_limit_mb}MB",
            "threads": settings.threads,
            "temp_directory": str(settings.temp_dir),
            # Every extension the service uses is built in; nothing is fetched at run time.
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            # Order is restored where it matters (ORDER BY); keeping it everywhere costs memory.
            "preserve_insertion_order": False,
        },
    )
    connection.execute("SET TimeZone = 'UTC'")
    connection.execute("SET enable_progress_bar = false")
    # A partitioned COPY holds up to this many rows per partition in memory before it writes
    # them: DuckDB's default (524,288 FOCUS rows, some 300 MB each per thread) does not fit the
    # memory limit. A Parquet row group is at most this long too.
    connection.execute(f"SET partitioned_write_flush_threshold = {PARTITION_FLUSH_ROWS}")
    return connection


def literal(text: str) -> str:
    """`text` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def identifier(name: str) -> str:
    """`name` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'
