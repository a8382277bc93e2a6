"""The cost service through the edge: the raw FOCUS file as a REST body (what `curl
--data-binary @file` sends), the import over gRPC, and queries over REST."""

from __future__ import annotations

import gzip
from decimal import Decimal
from pathlib import Path

import grpc
import pytest

from devmesh.cost.v1 import cost_pb2 as pb
from devmesh.cost.v1 import cost_pb2_grpc
from tests.e2e.conftest import Rest
from tools.stack.certs import CertPaths
from tools.stack.channels import grpc_channel

SAMPLE = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "focus" / "focus_1.0_sample.csv"
TOTAL = Decimal("14.97651418586")
SEPTEMBER = {"startTime": "2024-09-01T00:00:00Z", "endTime": "2024-10-01T00:00:00Z"}


@pytest.fixture(scope="module")
def sample() -> bytes:
    if not SAMPLE.exists():
        pytest.skip(f"the real FOCUS sample is not at {SAMPLE} (../shared/data)")
    return SAMPLE.read_bytes()


def test_the_sample_uploads_as_a_raw_rest_body(rest: Rest, sample: bytes) -> None:
    answer = rest(
        "POST",
        "/v1/imports:upload?source=rest-sample&billingPeriods=2024-09&billingPeriods=2024-10",
        data=sample,
        headers={"content-type": "text/csv"},
    )
    assert answer.status_code == 200, answer.text
    imported = answer.json()
    assert imported["rowsRead"] == "1000"
    assert int(imported["rowsStored"]) + int(imported["rowsRejected"]) == 1000
    assert imported["effectiveCostTotals"] == [{"currency": "USD", "amount": "14.97651418586"}]
    assert rest("GET", f"/v1/{imported['name']}").json()["rowsStored"] == imported["rowsStored"]


def test_a_gzipped_upload_over_rest_imports_the_same_rows(rest: Rest, sample: bytes) -> None:
    answer = rest(
        "POST",
        "/v1/imports:upload?source=rest-gzip",
        data=gzip.compress(sample),
        headers={"content-type": "application/gzip"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["format"] == "DATA_FORMAT_CSV_GZIP"
    assert answer.json()["rowsStored"] == "1000"


def test_a_truncated_gzip_over_rest_is_400_and_imports_nothing(rest: Rest, sample: bytes) -> None:
    before = rest("GET", "/v1/imports?source=rest-truncated").json()
    packed = gzip.compress(sample)
    answer = rest("POST", "/v1/imports:upload?source=rest-truncated", data=packed[: len(packed) // 2])
    assert answer.status_code == 400
    assert answer.json()["details"][0]["reason"] == "TRUNCATED_GZIP"
    assert rest("GET", "/v1/imports?source=rest-truncated").json() == before


def test_spend_by_service_over_rest_is_one_row_per_service_with_a_decimal_amount(
    rest: Rest, sample: bytes
) -> None:
    rest("POST", "/v1/imports:upload?source=rest-query", data=sample)
    answer = rest(
        "POST",
        "/v1/costs:query",
        json={
            "groupBy": ["service"],
            "filters": [{"dimension": "sub_account", "operator": "OPERATOR_PREFIX", "values": [""]}],
            **SEPTEMBER,
        },
    )
    assert answer.status_code == 200, answer.text
    rows = answer.json()["rows"]
    assert all(set(row["dimensions"]) == {"service"} and row["currency"] == "USD" for row in rows)
    assert sum(Decimal(row["amount"]) for row in rows) >= TOTAL  # every source imported so far


def test_an_import_over_grpc_through_the_edge_streams_chunks(
    edge_channel: grpc.Channel, sample: bytes
) -> None:
    stub = cost_pb2_grpc.CostServiceStub(edge_channel)
    chunks = [sample[i : i + 100_000] for i in range(0, len(sample), 100_000)]
    messages = [pb.ImportCostDataRequest(source="grpc-sample", body={"data": chunks[0]})]
    messages += [pb.ImportCostDataRequest(body={"data": c}) for c in chunks[1:]]
    imported = stub.ImportCostData(iter(messages), timeout=60)
    assert imported.rows_stored == 1000


def test_an_import_without_credentials_is_unauthenticated(
    edge: str, operator: CertPaths, sample: bytes
) -> None:
    with grpc_channel(edge, operator) as anonymous:
        stub = cost_pb2_grpc.CostServiceStub(anonymous)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ImportCostData(
                iter([pb.ImportCostDataRequest(source="anon", body={"data": sample})]), timeout=20
            )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]


def test_a_rest_upload_over_the_edges_body_limit_is_413_and_imports_nothing(
    rest: Rest, sample: bytes
) -> None:
    header, _, rows = sample.partition(b"\n")
    body = header + b"\n" + rows * 6  # 4.5 MB: over the edge's 4 MiB REST body limit
    answer = rest(
        "POST", "/v1/imports:upload?source=rest-large", data=body, headers={"content-type": "text/csv"}
    )
    assert answer.status_code == 413
    assert answer.json()["details"][0]["reason"] == "BODY_TOO_LARGE"
    assert rest("GET", "/v1/imports?source=rest-large").json()["imports"] == []
