"""What an import guarantees: bad files change nothing, rejected rows are counted and sampled,
re-importing a (source, billing period) replaces it whole, one writer per partition."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Iterator
from datetime import date
from decimal import Decimal

import grpc
import pytest
from google.protobuf import timestamp_pb2

from devmesh.cost.v1 import cost_pb2 as pb
from devmesh.cost.v1 import cost_pb2_grpc
from services.cost.catalog import lease_key
from services.runtime.leases import Lease
from tests.helpers import error_info, refused
from tests.integration.cost.conftest import CostServer, upload

HEADER = (
    "BillingPeriodStart,BillingPeriodEnd,ChargePeriodStart,ChargePeriodEnd,ChargeCategory,"
    "BillingCurrency,BilledCost,EffectiveCost,ServiceName,Tags"
)


def _row(day: int, cost: str, service: str = "Compute", category: str = "Usage", tags: str = "") -> str:
    start = f"2024-09-{day:02d}T00:00:00Z"
    return f'2024-09-01,2024-10-01,{start},2024-09-{day:02d} 01:00:00,{category},USD,{cost},{cost},{service},"{tags}"'


def _csv(*rows: str) -> bytes:
    return ("\n".join([HEADER, *rows]) + "\n").encode()


def _time(text: str) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromJsonString(text)
    return ts


async def _total(cost: CostServer, service: str = "") -> Decimal:
    filters = [pb.Filter(dimension="service", values=[service])] if service else []
    answer = await cost.stub.QueryCost(
        pb.QueryCostRequest(
            filters=filters, start_time=_time("2024-09-01T00:00:00Z"), end_time=_time("2024-10-01T00:00:00Z")
        )
    )
    return sum((Decimal(m.amount) for m in answer.totals), Decimal(0))


async def _imports(cost: CostServer, source: str) -> list[pb.Import]:
    return list((await cost.stub.ListImports(pb.ListImportsRequest(source=source))).imports)


async def test_rejected_rows_are_counted_per_reason_and_sampled_with_their_line(cost: CostServer) -> None:
    data = _csv(
        _row(1, "1.5"),
        _row(2, "abc"),
        _row(3, "2", category="Refund"),
        '2024-09-01,2024-10-01,2024-09-04T00:00:00Z,2024-09-03T00:00:00Z,Usage,USD,1,1,Compute,""',
        '2024-09-01,2024-10-01,,2024-09-03T00:00:00Z,Usage,USD,1,1,Compute,""',
        "too,few,fields",
    )
    imported = await cost.stub.ImportCostData(upload(data, "rejects"))
    assert (imported.rows_read, imported.rows_stored, imported.rows_rejected) == (6, 1, 5)
    reasons = {r.reason: r.count for r in imported.rejections}
    assert reasons == {
        "DECIMAL_INVALID": 1,
        "CHARGE_CATEGORY_UNKNOWN": 1,
        "CHARGE_PERIOD_END_BEFORE_START": 1,
        "VALUE_MISSING": 1,
        "CSV_MISSING_COLUMNS": 1,
    }
    by_reason = {s.reason: s for s in imported.rejected_samples}
    assert (by_reason["DECIMAL_INVALID"].line, by_reason["DECIMAL_INVALID"].value) == (3, "abc")
    assert by_reason["CHARGE_CATEGORY_UNKNOWN"].column == "ChargeCategory"
    assert by_reason["CSV_MISSING_COLUMNS"].line == 7


async def test_reimporting_a_period_replaces_it_whole(cost: CostServer) -> None:
    await cost.stub.ImportCostData(
        upload(_csv(_row(1, "10", "Replaced"), _row(2, "5", "Replaced")), "replace")
    )
    assert await _total(cost, "Replaced") == Decimal(15)
    second = await cost.stub.ImportCostData(upload(_csv(_row(1, "7", "Replaced")), "replace"))
    assert await _total(cost, "Replaced") == Decimal(7)
    first, newest = (await _imports(cost, "replace"))[::-1]
    assert first.state == pb.Import.STATE_SUPERSEDED and first.superseded_billing_periods == ["2024-09"]
    assert newest.name == second.name and newest.state == pb.Import.STATE_ACTIVE


async def test_readers_see_the_old_period_or_the_new_never_a_mix(cost: CostServer) -> None:
    old = _csv(*(_row(d, "1", "Atomic") for d in range(1, 29)))  # 28
    new = _csv(*(_row(d, "2", "Atomic") for d in range(1, 29)))  # 56
    await cost.stub.ImportCostData(upload(old, "atomic"))
    seen: set[Decimal] = set()

    async def read_until(done: asyncio.Event) -> None:
        while not done.is_set():
            seen.add(await _total(cost, "Atomic"))

    done = asyncio.Event()
    reader = asyncio.create_task(read_until(done))
    for data in (new, old, new):
        await cost.stub.ImportCostData(upload(data, "atomic", chunk=97))
    done.set()
    await reader
    assert seen <= {Decimal(28), Decimal(56)}
    assert await _total(cost, "Atomic") == Decimal(56)


async def test_a_truncated_gzip_is_refused_and_changes_nothing(cost: CostServer) -> None:
    await cost.stub.ImportCostData(upload(_csv(_row(1, "3", "Gz")), "gz"))
    packed = gzip.compress(_csv(_row(1, "99", "Gz")))
    error = await refused(cost.stub.ImportCostData, upload(packed[:-12], "gz"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(error).reason == "TRUNCATED_GZIP"
    assert await _total(cost, "Gz") == Decimal(3)
    assert len(await _imports(cost, "gz")) == 1


async def test_a_file_without_focus_columns_is_refused_naming_what_it_lacks(cost: CostServer) -> None:
    error = await refused(cost.stub.ImportCostData, upload(b"date,amount\n2024-09-01,3\n", "wrong"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(error).reason == "NOT_FOCUS"
    assert "ChargePeriodStart" in (error.details() or "")
    assert await _imports(cost, "wrong") == []


async def test_a_2_gb_line_is_refused_once_it_passes_the_limit_without_reading_the_rest(
    cost: CostServer,
) -> None:
    sent = 0

    def endless_line() -> Iterator[pb.ImportCostDataRequest]:
        nonlocal sent
        yield pb.ImportCostDataRequest(source="longline", body={"data": (HEADER + "\n").encode()})
        for _ in range(2048):  # 2 GB, if all of it were read
            sent += 1
            yield pb.ImportCostDataRequest(body={"data": b"x" * (1 << 20)})

    # The blocking client, as `devmesh cost import` uses: it ends the upload when the answer comes.
    with grpc.insecure_channel(cost.addr) as channel:
        stub = cost_pb2_grpc.CostServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            await asyncio.to_thread(stub.ImportCostData, endless_line(), timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "LINE_TOO_LONG" in str(caught.value.trailing_metadata())  # type: ignore[attr-defined]
    assert sent < 64
    assert await _imports(cost, "longline") == []


async def test_an_import_of_a_period_another_replica_is_writing_is_aborted(cost: CostServer) -> None:
    lease = Lease(cost.server.runtime.redis, lease_key("2024-09", "busy"), ttl=30)
    assert await lease.acquire()
    try:
        error = await refused(cost.stub.ImportCostData, upload(_csv(_row(1, "1")), "busy", ("2024-09",)))
    finally:
        await lease.release()
    assert error.code() == grpc.StatusCode.ABORTED
    assert error_info(error).reason == "IMPORT_IN_PROGRESS"
    assert (await cost.stub.ImportCostData(upload(_csv(_row(1, "1")), "busy", ("2024-09",)))).rows_stored == 1


async def test_rows_of_an_undeclared_period_are_rejected(cost: CostServer) -> None:
    august = _row(1, "1").replace("2024-09-01,2024-10-01", "2024-08-01,2024-09-01", 1)
    imported = await cost.stub.ImportCostData(upload(_csv(_row(1, "1"), august), "declared", ("2024-09",)))
    assert (imported.rows_stored, imported.rows_rejected) == (1, 1)
    assert imported.rejections[0].reason == "BILLING_PERIOD_NOT_DECLARED"
    assert list(imported.billing_periods) == ["2024-09"]


async def test_a_file_of_two_periods_stores_each_in_its_own_and_the_rejected_rows_in_neither(
    cost: CostServer,
) -> None:
    august = _row(1, "3", "Split").replace(
        "2024-09-01,2024-10-01,2024-09-01", "2024-08-01,2024-09-01,2024-08-01", 1
    )
    data = _csv(_row(1, "5", "Split"), august, _row(2, "bad", "Split"), _row(3, "7", "Split"))
    imported = await cost.stub.ImportCostData(upload(data, "split"))
    assert (imported.rows_stored, imported.rows_rejected) == (3, 1)
    assert list(imported.billing_periods) == ["2024-08", "2024-09"]
    assert await _total(cost, "Split") == Decimal(12)
    answer = await cost.stub.QueryCost(
        pb.QueryCostRequest(
            filters=[pb.Filter(dimension="service", values=["Split"])],
            start_time=_time("2024-08-01T00:00:00Z"),
            end_time=_time("2024-09-01T00:00:00Z"),
        )
    )
    assert [m.amount for m in answer.totals] == ["3"]


async def test_blanks_around_a_value_are_ignored_and_a_blank_value_is_missing(cost: CostServer) -> None:
    data = _csv(_row(1, " 2.5 ", " Blanks "), _row(2, "   ", "Blanks"))
    imported = await cost.stub.ImportCostData(upload(data, "blanks"))
    assert (imported.rows_stored, imported.rows_rejected) == (1, 1)
    assert (imported.rejections[0].reason, imported.rejected_samples[0].column) == (
        "VALUE_MISSING",
        "BilledCost",
    )
    assert await _total(cost, "Blanks") == Decimal("2.5")


async def test_a_file_whose_every_row_is_rejected_changes_nothing(cost: CostServer) -> None:
    error = await refused(cost.stub.ImportCostData, upload(_csv(_row(1, "1")), "all-bad", ("2024-08",)))
    assert error_info(error).reason == "EVERY_ROW_REJECTED"
    assert await _imports(cost, "all-bad") == []


async def test_tags_as_key_value_pairs_group_like_json_tags(cost: CostServer) -> None:
    data = _csv(
        _row(5, "4", "Tagged", tags="team=web; env=prod"), _row(6, "6", "Tagged", tags='{""team"": ""api""}')
    )
    await cost.stub.ImportCostData(upload(data, "tags"))
    answer = await cost.stub.QueryCost(
        pb.QueryCostRequest(
            group_by=["tag:team"],
            filters=[pb.Filter(dimension="service", values=["Tagged"])],
            start_time=_time("2024-09-01T00:00:00Z"),
            end_time=_time("2024-10-01T00:00:00Z"),
        )
    )
    assert {r.dimensions["tag:team"]: r.amount for r in answer.rows} == {"web": "4", "api": "6"}


@pytest.mark.parametrize("source", ["", "Bad_Source", "x" * 70])
async def test_a_bad_source_is_invalid_argument(cost: CostServer, source: str) -> None:
    error = await refused(cost.stub.ImportCostData, upload(_csv(_row(1, "1")), source))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_parquet_export_imports_like_its_csv(
    cost: CostServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from tools.focus_generator import Spec, write_rows

    directory = tmp_path_factory.mktemp("parquet")
    spec = Spec(start=date(2024, 5, 1), days=3, resources=5)
    write_rows(spec, directory / "focus.parquet")
    write_rows(spec, directory / "focus.csv")
    parquet = await cost.stub.ImportCostData(upload((directory / "focus.parquet").read_bytes(), "parquet"))
    csv = await cost.stub.ImportCostData(upload((directory / "focus.csv").read_bytes(), "parquet-csv"))
    assert parquet.format == pb.DATA_FORMAT_PARQUET and parquet.focus_version == "1.2"
    assert (parquet.rows_stored, parquet.rows_rejected) == (spec.rows, 0)
    assert parquet.effective_cost_totals == csv.effective_cost_totals
