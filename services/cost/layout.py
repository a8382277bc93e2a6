"""Where the cost service keeps its files, under `<DEVMESH_DATA_DIR>/cost/`:

    focus/billing_period=2024-09/source=aws/import=<id>/data_0.parquet   the rows (FOCUS 1.2)
    rollups/daily/billing_period=2024-09/source=aws/import=<id>/data.parquet   daily sums
    staging/<id>/...    an import being written (never read by queries)
    spool/<id>.upload   an upload as it arrives
    tmp/                DuckDB's spill files

A Hive-style layout, so that any engine that reads Parquet with partition discovery (Trino,
Spark, ClickHouse, DuckDB) reads the same files. Which `import=` directory of a partition is
current is in the catalog (Redis); a superseded one is removed after a grace period.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    root: Path  # <DEVMESH_DATA_DIR>/cost

    @property
    def focus(self) -> Path:
        return self.root / "focus"

    @property
    def rollups(self) -> Path:
        return self.root / "rollups" / "daily"

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def create(self) -> None:
        for path in (self.focus, self.rollups, self.staging, self.spool, self.tmp):
            path.mkdir(parents=True, exist_ok=True)

    def rows_dir(self, period: str, source: str, import_id: str) -> Path:
        return self.focus / f"billing_period={period}" / f"source={source}" / f"import={import_id}"

    def rollup_dir(self, period: str, source: str, import_id: str) -> Path:
        return self.rollups / f"billing_period={period}" / f"source={source}" / f"import={import_id}"

    def staging_dir(self, import_id: str) -> Path:
        return self.staging / import_id

    def spool_file(self, import_id: str) -> Path:
        return self.spool / f"{import_id}.upload"

    def retire(self, period: str, source: str, import_id: str) -> None:
        """Remove the files of a superseded import of one partition."""
        for directory in (
            self.rows_dir(period, source, import_id),
            self.rollup_dir(period, source, import_id),
        ):
            shutil.rmtree(directory, ignore_errors=True)

    def imports_on_disk(self) -> list[tuple[str, str, str, Path]]:
        """(period, source, import id, directory) of every rows directory on disk."""
        found = []
        for directory in self.focus.glob("billing_period=*/source=*/import=*"):
            period = directory.parent.parent.name.partition("=")[2]
            source = directory.parent.name.partition("=")[2]
            found.append((period, source, directory.name.partition("=")[2], directory))
        return found
