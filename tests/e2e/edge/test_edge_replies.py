"""The edge's own replies (no healthy upstream, its flood guard) carry a google.rpc.Status with
ErrorInfo and RetryInfo: JSON with a Retry-After header for REST callers, and a
grpc-status-details-bin that agrees with grpc-status and grpc-message for gRPC callers.

Each test runs its own Envoy, so that the shared mesh stays healthy: one in front of a port
where nothing listens (its upstream never passes a health check), one with a tiny flood guard.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from devmesh.config.v1 import config_pb2 as pb
from devmesh.config.v1 import config_pb2_grpc
from tests.e2e.conftest import Rest
from tools import envoy_config
from tools.envoy_config import EdgeSettings, Upstream
from tools.stack.certs import CertPaths
from tools.stack.channels import grpc_channel
from tools.stack.envoy import Envoy, start_envoy
from tools.stack.local import Stack
from tools.stack.processes import LOOPBACK, free_port


def _edge(mesh: Stack, tmp: Path, upstream_port: int, **settings: int) -> Iterator[Envoy]:
    edge = EdgeSettings(LOOPBACK, free_port(), free_port(), mesh.certs["edge"].root, 0.5, **settings)  # type: ignore[arg-type]
    envoy = start_envoy(
        edge, [Upstream("config", LOOPBACK, upstream_port)], tmp / "envoy", tmp / "logs", wait_healthy=False
    )
    try:
        yield envoy
    finally:
        envoy.process.stop(5)


@pytest.fixture(scope="module")
def down_edge(mesh: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An edge whose only upstream is down."""
    yield from (e.edge_addr for e in _edge(mesh, tmp_path_factory.mktemp("down"), free_port()))


@pytest.fixture(scope="module")
def guarded_edge(mesh: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An edge in front of the real config service whose flood guard lets one call a second through."""
    port = int(mesh.services["config"].addr.rpartition(":")[2])
    yield from (
        e.edge_addr for e in _edge(mesh, tmp_path_factory.mktemp("guard"), port, flood_rps=1, flood_burst=1)
    )


def _kinds(details: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {d["@type"].rsplit(".", 1)[1]: d for d in details}


def test_rest_callers_of_a_down_service_get_a_status_with_retry_info_and_retry_after(
    down_edge: str, operator: CertPaths, admin_key: str
) -> None:
    response = Rest(down_edge, operator, admin_key)("GET", "/v1/namespaces")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    body = response.json()
    details = _kinds(body["details"])
    assert body["code"] == 14 and "no healthy upstream" in body["message"]
    assert (details["ErrorInfo"]["reason"], details["ErrorInfo"]["domain"]) == (
        "NO_HEALTHY_UPSTREAM",
        "edge.devmesh",
    )
    assert details["RetryInfo"]["retryDelay"] == "1s" and details["RequestInfo"]["requestId"]


def test_grpc_callers_of_a_down_service_get_details_that_agree_with_the_status(
    down_edge: str, operator: CertPaths, admin_key: str
) -> None:
    with grpc_channel(down_edge, operator, admin_key) as channel, pytest.raises(grpc.RpcError) as caught:
        config_pb2_grpc.ConfigServiceStub(channel).ListNamespaces(pb.ListNamespacesRequest(), timeout=5)
    error = caught.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    status = status_pb2.Status.FromString(dict(error.trailing_metadata())["grpc-status-details-bin"])
    # What grpcio_status.rpc_status.from_call checks before it hands the details out:
    assert (status.code, status.message) == (error.code().value[0], error.details())
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info) and status.details[1].Unpack(retry)
    assert (info.reason, info.domain, retry.retry_delay.seconds) == ("NO_HEALTHY_UPSTREAM", "edge.devmesh", 1)


def test_grpcurl_shows_the_edges_details(down_edge: str, operator: CertPaths, admin_key: str) -> None:
    grpcurl = Path(sys.executable).parent / "grpcurl"
    result = subprocess.run(
        [str(grpcurl), "-protoset", str(envoy_config.DESCRIPTOR), "-cacert", str(operator.ca),
         "-cert", str(operator.cert), "-key", str(operator.key), "-H", f"x-api-key: {admin_key}",
         down_edge, "devmesh.config.v1.ConfigService/ListNamespaces"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "Code: Unavailable" in result.stderr
    assert '"reason":"NO_HEALTHY_UPSTREAM"' in result.stderr and '"retryDelay":"1s"' in result.stderr
    assert admin_key not in result.stdout + result.stderr


def test_the_flood_guard_answers_429_with_retry_after_and_grpc_details(
    guarded_edge: str, operator: CertPaths, admin_key: str
) -> None:
    rest = Rest(guarded_edge, operator, admin_key)
    refused = next(
        (r for r in (rest("GET", "/v1/namespaces") for _ in range(50)) if r.status_code == 429), None
    )
    assert refused is not None, "the flood guard never refused"
    assert refused.headers["retry-after"] == "1"
    details = _kinds(refused.json()["details"])
    assert refused.json()["code"] == 8 and details["ErrorInfo"]["reason"] == "EDGE_RATE_LIMITED"
    assert details["RetryInfo"]["retryDelay"] == "1s"
    with grpc_channel(guarded_edge, operator, admin_key) as channel:
        stub = config_pb2_grpc.ConfigServiceStub(channel)
        for _ in range(50):
            try:
                stub.ListNamespaces(pb.ListNamespacesRequest(page_size=1), timeout=5)
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                status = status_pb2.Status.FromString(
                    dict(error.trailing_metadata())["grpc-status-details-bin"]
                )
                assert (status.code, status.message) == (8, error.details())
                return
    pytest.fail("the flood guard never refused a gRPC call")
