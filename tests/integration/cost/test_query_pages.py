"""QueryCost answers in pages bound to the data version, and repeats come from the cache."""

from __future__ import annotations

from decimal import Decimal

import grpc
from google.protobuf import timestamp_pb2

from devmesh.cost.v1 import cost_pb2 as pb
from services.cost.cost_queries import CACHE_PREFIX
from tests.helpers import error_info, refused
from tests.integration.cost.conftest import CostServer, upload

HEADER = (
    "BillingPeriodStart,BillingPeriodEnd,ChargePeriodStart,ChargePeriodEnd,ChargeCategory,"
    "BillingCurrency,BilledCost,EffectiveCost,ServiceName"
)


def _csv(costs: dict[str, str], day: int = 1) -> bytes:
    start = f"2024-09-{day:02d}T00:00:00Z"
    rows = [f"2024-09-01,2024-10-01,{start},{start},Usage,USD,{c},{c},{s}" for s, c in costs.items()]
    return ("\n".join([HEADER, *rows]) + "\n").encode()


def _time(text: str) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromJsonString(text)
    return ts


def _by_service(page_size: int = 0, page_token: str = "") -> pb.QueryCostRequest:
    return pb.QueryCostRequest(
        group_by=["service"],
        filters=[pb.Filter(dimension="service", operator=pb.Filter.OPERATOR_PREFIX, values=["Paged"])],
        start_time=_time("2024-09-01T00:00:00Z"),
        end_time=_time("2024-10-01T00:00:00Z"),
        page_size=page_size,
        page_token=page_token,
    )


async def test_pages_of_an_answer_add_up_to_the_whole_answer(cost: CostServer) -> None:
    await cost.stub.ImportCostData(upload(_csv({f"Paged{i}": str(i + 1) for i in range(5)}), "paged"))
    whole = await cost.stub.QueryCost(_by_service())
    pages, token = [], ""
    while True:
        page = await cost.stub.QueryCost(_by_service(page_size=2, page_token=token))
        pages.extend(page.rows)
        token = page.next_page_token
        if not token:
            break
    assert len(whole.rows) == 5 and list(pages) == list(whole.rows)


async def test_a_page_token_from_before_an_import_is_aborted_as_data_changed(cost: CostServer) -> None:
    await cost.stub.ImportCostData(upload(_csv({"PagedA": "1", "PagedB": "2"}), "paged-token"))
    first = await cost.stub.QueryCost(_by_service(page_size=1))
    await cost.stub.ImportCostData(upload(_csv({"PagedC": "3"}), "paged-other"))
    error = await refused(cost.stub.QueryCost, _by_service(page_size=1, page_token=first.next_page_token))
    assert error.code() == grpc.StatusCode.ABORTED
    assert error_info(error).reason == "DATA_CHANGED"


async def test_a_repeated_query_is_answered_from_the_page_cache_until_an_import(cost: CostServer) -> None:
    await cost.stub.ImportCostData(upload(_csv({"PagedCached": "4"}), "paged-cache"))
    first = await cost.stub.QueryCost(_by_service())
    pages = [
        k async for k in cost.server.runtime.redis.scan_iter(f"{CACHE_PREFIX}{first.data_version}:page:*")
    ]
    assert pages
    assert await cost.stub.QueryCost(_by_service()) == first
    await cost.stub.ImportCostData(upload(_csv({"PagedCached": "6"}, day=2), "paged-cache-2"))
    after = await cost.stub.QueryCost(_by_service())
    assert after.data_version > first.data_version
    assert sum(Decimal(m.amount) for m in after.totals) == sum(Decimal(m.amount) for m in first.totals) + 6
