"""The real FOCUS 1.0 sample through ImportCostData, and what QueryCost then says of it."""

from __future__ import annotations

from decimal import Decimal

import pytest
from google.protobuf import timestamp_pb2

from devmesh.cost.v1 import cost_pb2 as pb
from tests.integration.cost.conftest import CostServer, upload


def _time(text: str) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromJsonString(text)
    return ts


SEPTEMBER = {"start_time": _time("2024-09-01T00:00:00Z"), "end_time": _time("2024-10-01T00:00:00Z")}


@pytest.fixture(scope="module")
async def imported(cost: CostServer, sample: bytes) -> pb.Import:
    """The sample imported once; the queries below read it (each needs it, whatever ran before)."""
    return await cost.stub.ImportCostData(upload(sample, "sample"))


async def test_the_real_sample_imports_with_every_row_accounted_for(
    cost: CostServer, imported: pb.Import
) -> None:
    assert imported.rows_read == 1000
    assert imported.rows_stored + imported.rows_rejected == imported.rows_read
    assert imported.focus_version == "1.0"
    assert list(imported.unknown_columns) == ["Id"]
    assert [(m.currency, m.amount) for m in imported.effective_cost_totals] == [("USD", "14.97651418586")]
    warnings = {w.reason: w.count for w in imported.warnings}
    assert warnings == {"MANDATORY_VALUE_MISSING": 7, "VALUE_NORMALIZED": 7}
    assert {s.column for s in imported.warning_samples} == {"ContractedCost", "ChargeFrequency"}
    assert all(s.line > 1 for s in imported.warning_samples)
    assert (await cost.stub.GetImport(pb.GetImportRequest(name=imported.name))) == imported


@pytest.mark.usefixtures("imported")
async def test_spend_by_service_in_september_sums_to_the_samples_effective_cost(cost: CostServer) -> None:
    answer = await cost.stub.QueryCost(pb.QueryCostRequest(group_by=["service"], **SEPTEMBER))
    total = sum(Decimal(row.amount) for row in answer.rows)
    # One row of the sample is billed in October's period but charged on 30 September.
    assert total == Decimal("14.97651418586")
    assert {row.currency for row in answer.rows} == {"USD"}
    assert len({row.dimensions["service"] for row in answer.rows}) == len(answer.rows)
    amounts = [Decimal(row.amount) for row in answer.rows]
    assert amounts == sorted(amounts, reverse=True)


@pytest.mark.usefixtures("imported")
async def test_spend_by_tag_groups_the_rows_without_the_tag_under_an_empty_value(cost: CostServer) -> None:
    answer = await cost.stub.QueryCost(pb.QueryCostRequest(group_by=["tag:environment"], **SEPTEMBER))
    by_env = {row.dimensions["tag:environment"]: Decimal(row.amount) for row in answer.rows}
    assert "" in by_env and len(by_env) > 1
    assert sum(by_env.values()) == Decimal("14.97651418586")
