"""One import, from the first chunk to the commit: spool, stage, lease, move, commit, retire.

Nothing a reader sees changes before the commit, and a failure at any step before it leaves
nothing behind: the spool and the staging directory are removed, the leases released. After
the commit, the files of the imports it replaced are removed once the grace period has passed
(queries that began before the commit still read them).
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import duckdb

from services.cost import dimensions
from services.cost.catalog import Catalog, ImportRecord, lease_key
from services.cost.duck import DuckSettings, connect, literal
from services.cost.focus_schema import Header
from services.cost.ingest import Ingest, IngestResult, StagedSegment, check_periods
from services.cost.layout import Layout
from services.cost.spool import Segment, Spool
from services.runtime.errors import Aborted, InvalidArgument
from services.runtime.leases import Lease
from services.runtime.logging import get_logger
from services.runtime.resource_names import AIP_ID

log = get_logger(__name__)


@dataclass(frozen=True)
class ImportRequest:
    """What the first message of an import says."""

    source: str
    billing_periods: list[str]
    format: str  # declared, or "" to detect


@dataclass(frozen=True)
class ImportLimits:
    max_bytes: int
    max_line_bytes: int
    lease_ttl: float
    retire_grace: float
    segment_bytes: int = 0  # a CSV is staged in segments of this size as it arrives (0: whole)


def money(value: Decimal) -> str:
    """A decimal as the contract writes it: no exponent, no trailing zeros."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


class Importer:
    def __init__(
        self,
        catalog: Catalog,
        layout: Layout,
        duck: DuckSettings,
        limits: ImportLimits,
        on_commit: Callable[[int], None] | None = None,
    ) -> None:
        self.catalog = catalog
        self.layout = layout
        self.duck = duck
        self.limits = limits
        self.ingest = Ingest(duck, limits.max_line_bytes)
        self.on_commit = on_commit  # told the new data version after each commit
        self._retiring: set[asyncio.Task[None]] = set()

    def check(self, request: ImportRequest) -> ImportRequest:
        """The request, checked before any byte is spooled."""
        if not request.source:
            raise InvalidArgument.for_field("source", "is required (in the first message)")
        AIP_ID.check(request.source, "source")
        return ImportRequest(request.source, check_periods(request.billing_periods), request.format)

    async def run(self, request: ImportRequest, chunks: AsyncIterator[bytes], creator: str) -> ImportRecord:
        """Import the file `chunks` carry; the committed record."""
        request = self.check(request)
        import_id = uuid.uuid4().hex
        started = time.time_ns() // 1000
        leases: dict[str, Lease] = {}
        spool = Spool(
            self.layout.spool_file(import_id),
            max_bytes=self.limits.max_bytes,
            max_line_bytes=self.limits.max_line_bytes,
            declared=request.format,
            segment_bytes=self.limits.segment_bytes,
        )
        staging = self.layout.staging_dir(import_id)
        rows = staging / "rows"
        header: Header | None = None
        stager: _Stager | None = None
        try:
            # With declared periods the leases are taken first: a concurrent import of the same
            # period is refused before either uploads anything.
            await self._lease(request.source, request.billing_periods, leases)
            async for chunk in chunks:
                await asyncio.to_thread(spool.write, chunk)
                if header is None and spool.header:  # a CSV that is not FOCUS stops here
                    header = self.ingest.header_of(spool.path, spool.format, spool.header)
                    stager = _Stager(self.ingest, spool.format, header, request.billing_periods, rows)
                if stager is not None:
                    stager.add(spool.take_segments())
            await asyncio.to_thread(spool.finish)
            if header is None:  # Parquet (its columns are in its footer), or a header only
                header = await asyncio.to_thread(
                    self.ingest.header_of, spool.path, spool.format, spool.header
                )
                stager = _Stager(self.ingest, spool.format, header, request.billing_periods, rows)
            assert stager is not None
            stager.add(spool.take_segments())
            staged = await stager.finish()
            result = await asyncio.to_thread(
                self.ingest.finish, staged, spool.format, header, request.billing_periods, rows
            )
            if result.rows_stored == 0 and result.rows_rejected > 0:
                raise InvalidArgument.for_field(
                    "body",
                    f"every one of the {result.rows_rejected} rows was rejected ({_summary(result)}); "
                    "nothing was imported",
                    reason="EVERY_ROW_REJECTED",
                )
            periods = sorted(set(request.billing_periods) | set(result.periods))
            if not periods:
                raise InvalidArgument.for_field(
                    "body", "the file has no rows and no billing period was declared", reason="NO_ROWS"
                )
            await self._lease(request.source, periods, leases)
            await asyncio.to_thread(self._place, staging, request.source, import_id, result.periods)
            record = _record(import_id, request, spool, result, periods, creator, started)
            version, replaced = await self.catalog.commit(record, periods, [leases[p] for p in periods])
        except BaseException:
            if stager is not None:
                await stager.abandon()  # its segment in progress ends before its files go
            await asyncio.to_thread(self._discard, import_id, request.source, list(leases))
            raise
        finally:
            spool.remove()
            shutil.rmtree(staging, ignore_errors=True)
            for lease in leases.values():
                await lease.release()
        log.info(
            "cost.import.committed",
            import_id=import_id,
            source=request.source,
            periods=periods,
            rows=record.rows_stored,
            rejected=record.rows_rejected,
            version=version,
        )
        if self.on_commit is not None:
            self.on_commit(version)
        for period, source, old in replaced:
            await self.catalog.mark_superseded(old, period)
            self._retire_later(period, source, old)
        return record

    async def _lease(self, source: str, periods: Sequence[str], leases: dict[str, Lease]) -> None:
        for period in periods:
            if period in leases:
                continue
            lease = Lease(self.catalog.redis, lease_key(period, source), self.limits.lease_ttl)
            if not await lease.acquire():
                raise Aborted(
                    f"another import of source {source!r}, billing period {period} is running; retry "
                    "when it has finished",
                    reason="IMPORT_IN_PROGRESS",
                    metadata={"source": source, "billing_period": period},
                )
            lease.keep()
            leases[period] = lease

    def _place(self, staging: Path, source: str, import_id: str, periods: dict[str, int]) -> None:
        """Write each partition's rollup, then move rows and rollup into the layout (renames:
        the files appear whole). Still invisible to queries until the commit."""
        with connect(self.duck) as db:
            for period in periods:
                rows = staging / "rows" / f"billing_period={period}"
                rollup = staging / "rollups" / period
                rollup.mkdir(parents=True, exist_ok=True)
                files = literal(str(rows / "*.parquet"))
                try:
                    db.execute(
                        f"COPY ({dimensions.rollup_sql(files)}) TO {literal(str(rollup / 'data.parquet'))} (FORMAT parquet)"
                    )
                except duckdb.Error as exc:  # disk full and the like: nothing committed yet
                    raise OSError(str(exc)) from None
        for period in periods:
            target = self.layout.rows_dir(period, source, import_id)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staging / "rows" / f"billing_period={period}", target)
            rollup_target = self.layout.rollup_dir(period, source, import_id)
            rollup_target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staging / "rollups" / period, rollup_target)

    def _discard(self, import_id: str, source: str, periods: list[str]) -> None:
        for period in periods:
            self.layout.retire(period, source, import_id)
        for period, found_source, found_id, directory in self.layout.imports_on_disk():
            if found_id == import_id:
                shutil.rmtree(directory, ignore_errors=True)
                shutil.rmtree(self.layout.rollup_dir(period, found_source, found_id), ignore_errors=True)

    def _retire_later(self, period: str, source: str, import_id: str) -> None:
        async def retire() -> None:
            await asyncio.sleep(self.limits.retire_grace)
            await asyncio.to_thread(self.layout.retire, period, source, import_id)

        task = asyncio.create_task(retire(), name=f"retire:{import_id}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def sweep(self) -> None:
        """At start-up: remove what no catalog entry names (imports superseded or abandoned by
        a process that died) once it is older than the grace period, and stale spools."""
        current = set((await self.catalog.partitions()).items())
        cutoff = time.time() - self.limits.retire_grace
        for period, source, import_id, directory in self.layout.imports_on_disk():
            if ((period, source), import_id) in current or directory.stat().st_mtime >= cutoff:
                continue
            if await self.catalog.redis.exists(lease_key(period, source)):
                continue  # another replica may be between placing this import and committing it
            await asyncio.to_thread(self.layout.retire, period, source, import_id)
        for leftover in [*self.layout.spool.iterdir(), *self.layout.staging.iterdir()]:
            if leftover.stat().st_mtime < cutoff:
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)

    async def stop(self) -> None:
        for task in list(self._retiring):
            task.cancel()


class _Stager:
    """Stages an upload's segments one after another, while the rest of it still arrives: the
    upload's receiving and DuckDB's staging overlap instead of taking turns."""

    def __init__(
        self, ingest: Ingest, fmt: str, header: Header, periods: Sequence[str], out_dir: Path
    ) -> None:
        self._stage = functools.partial(
            ingest.stage_segment, fmt=fmt, header=header, periods=periods, out_dir=out_dir
        )
        self._queue: asyncio.Queue[Segment | None] = asyncio.Queue()
        self._abandoned = False
        self.staged: list[StagedSegment] = []
        self._task = asyncio.create_task(self._run(), name="cost-import-stager")

    def add(self, segments: Sequence[Segment]) -> None:
        """Stage these segments after the ones before; a segment that failed to stage fails
        the import here, before more of it is received."""
        if self._task.done() and not self._task.cancelled() and self._task.exception() is not None:
            self._task.result()  # raises it
        for segment in segments:
            self._queue.put_nowait(segment)

    async def finish(self) -> list[StagedSegment]:
        """Every segment, staged, in order."""
        self._queue.put_nowait(None)
        # Shielded: a cancelled import must not cancel the staging under a running COPY (its
        # thread would go on writing while the import removes its files); abandon waits for it.
        await asyncio.shield(self._task)
        return self.staged

    async def abandon(self) -> None:
        """Stage nothing more; returns once the segment being staged (if any) is done."""
        self._abandoned = True
        self._queue.put_nowait(None)
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        records = 0
        while (segment := await self._queue.get()) is not None and not self._abandoned:
            staged = await asyncio.to_thread(self._stage, segment, records)
            records += staged.records
            self.staged.append(staged)


def _summary(result: IngestResult) -> str:
    return ", ".join(f"{reason}: {count}" for reason, count in sorted(result.rejections.items())[:5])


def _record(
    import_id: str,
    request: ImportRequest,
    spool: Spool,
    result: IngestResult,
    periods: list[str],
    creator: str,
    started: int,
) -> ImportRecord:
    return ImportRecord(
        id=import_id,
        source=request.source,
        billing_periods=periods,
        format=spool.format,
        focus_version=result.focus_version,
        rows_read=result.rows_read,
        rows_stored=result.rows_stored,
        rows_rejected=result.rows_rejected,
        rejections=result.rejections,
        rejected_samples=[vars(s) for s in result.rejected_samples],
        warnings=result.warnings,
        warning_samples=[vars(s) for s in result.warning_samples],
        unknown_columns=result.unknown_columns,
        effective_cost_totals={c: money(v) for c, v in sorted(result.effective_cost.items())},
        bytes_received=spool.bytes_received,
        creator=creator,
        create_us=started,
        complete_us=time.time_ns() // 1000,
    )
