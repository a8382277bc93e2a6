"""A CSV import staged in segments while it arrives (DEVMESH_COST_IMPORT_SEGMENT_BYTES) says
and stores exactly what the same file staged whole says and stores: the same counts, totals,
warnings, rejected rows with their lines, records with quoted newlines kept whole, CRLF line
endings, and a file over two billing periods split between them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from google.protobuf import json_format

from devmesh.cost.v1 import cost_pb2 as pb
from tests.conftest import ServerFactory
from tests.integration.cost.conftest import CostServer, serve_cost, upload
from tests.integration.cost.test_import_rules import _csv, _row, _time
from tools.stack.valkey import Valkey

SEGMENT_BYTES = 16384  # the real sample (755 KB) is some 46 segments of this size, the others 4 to 6


@pytest.fixture(scope="module")
def whole(cost: CostServer) -> CostServer:
    """The module's cost server with the default segment size: these files stage whole."""
    return cost


@pytest.fixture(scope="module")
async def segmented(
    valkey: Valkey, start_config_server: ServerFactory, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[CostServer]:
    env = {"DEVMESH_COST_IMPORT_SEGMENT_BYTES": str(SEGMENT_BYTES)}
    async with serve_cost(valkey, start_config_server, tmp_path_factory, env) as server:
        yield server


def _what_it_says(record: pb.Import) -> dict[str, object]:
    """An import's answer without what differs between any two imports (its name, times)."""
    said = json_format.MessageToDict(record)
    for differs in ("name", "createTime", "completeTime"):
        said.pop(differs)
    return said


async def _both(whole: CostServer, segmented: CostServer, data: bytes, source: str) -> pb.Import:
    one = await whole.stub.ImportCostData(upload(data, source, chunk=1000))
    other = await segmented.stub.ImportCostData(upload(data, source, chunk=1000))
    assert _what_it_says(other) == _what_it_says(one)
    return other


async def test_the_real_sample_in_segments_says_what_it_says_whole(
    whole: CostServer, segmented: CostServer, sample: bytes
) -> None:
    record = await _both(whole, segmented, sample, "sample")
    assert record.rows_read == 1000 == record.rows_stored + record.rows_rejected
    assert (
        len(list(segmented.data_dir.glob("cost/focus/billing_period=*/source=sample/import=*/*.parquet")))
        > 10
    )


async def test_rejected_rows_in_later_segments_are_sampled_with_their_own_line(
    whole: CostServer, segmented: CostServer
) -> None:
    rows = [_row(1 + i % 28, "1.25", tags='{""team"": ""web""}') for i in range(400)]
    rows[150] = _row(2, "not-money")
    rows[260] = _row(3, "2", category="Refund?")
    rows[330] = rows[330] + ",one field too many"
    # A quoted service name over two lines: one record.
    rows[100] = _row(4, "3", service='"Compute\nengine"')
    record = await _both(whole, segmented, _csv(*rows), "rejects")
    assert sum(r.count for r in record.rejections) == 3 == record.rows_rejected
    # Line 1 is the header and row i is line i + 2: lines are counted by record, as DuckDB
    # counts them in a whole file (the record over two lines is one).
    assert [s.line for s in record.rejected_samples] == [152, 262, 332]


async def test_a_file_over_two_billing_periods_is_split_between_them(
    whole: CostServer, segmented: CostServer
) -> None:
    def row(day: int, cost: str) -> str:
        return _row(day, cost, service="Split")

    october = [
        row(1 + i % 28, "0.5").replace("2024-10", "2024-11").replace("2024-09", "2024-10") for i in range(300)
    ]
    september = [row(1 + i % 28, "2") for i in range(300)]
    record = await _both(
        whole, segmented, _csv(*september, *october[:50], *september[:10], *october[50:]), "two"
    )
    assert list(record.billing_periods) == ["2024-09", "2024-10"] and record.rows_stored == 610
    answer = await segmented.stub.QueryCost(
        pb.QueryCostRequest(
            group_by=["service"],
            filters=[pb.Filter(dimension="service", values=["Split"])],
            granularity=pb.GRANULARITY_MONTH,
            start_time=_time("2024-09-01T00:00:00Z"),
            end_time=_time("2024-11-01T00:00:00Z"),
        )
    )
    assert [Decimal(r.amount) for r in answer.rows] == [Decimal("620"), Decimal("150")]


async def test_a_file_with_crlf_line_endings_is_read_alike_in_every_segment(
    whole: CostServer, segmented: CostServer
) -> None:
    # Each later segment starts with the header again, ending as the upload's lines end: a
    # header ending in \n before records ending in \r\n made DuckDB split the records wrong.
    data = _csv(*(_row(1 + i % 28, "1.5", service="Crlf") for i in range(300))).replace(b"\n", b"\r\n")
    record = await _both(whole, segmented, data, "crlf")
    assert (record.rows_stored, record.rows_rejected) == (300, 0)
