"""The real mesh for end-to-end tests: Valkey, OpenBao, every service of the catalog over mTLS
and the Envoy edge, started once per session on free loopback ports by the same code as `make run`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests

from devmesh.config.v1 import config_pb2_grpc
from services import catalog
from tools.stack.certs import CertPaths
from tools.stack.channels import grpc_channel
from tools.stack.local import Stack, local_stack

HEALTH_INTERVAL = 0.5  # seconds between Envoy's health checks; production uses the default
LIMITS = "admin=5000/10000,*=20/40"


@pytest.fixture(scope="session")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with local_stack(
        tmp_path_factory.mktemp("mesh"),
        list(catalog.SERVICES),  # the mesh grows with every service the catalog lists
        health_interval=HEALTH_INTERVAL,
        # High limits for the admin key: the load loops here must not trip the rate limiter.
        service_env={
            "DEVMESH_CONFIG_WATCH_PROGRESS_INTERVAL": "0.3",
            "DEVMESH_SECRETS_WATCH_PROGRESS_INTERVAL": "0.3",
            "DEVMESH_COST_WATCH_PROGRESS_INTERVAL": "0.3",
            "DEVMESH_RATE_LIMITS": LIMITS,
        },
    ) as stack:
        yield stack


@pytest.fixture(scope="session")
def edge(mesh: Stack) -> str:
    assert mesh.envoy is not None
    return mesh.envoy.edge_addr


@pytest.fixture(scope="session")
def operator(mesh: Stack) -> CertPaths:
    return mesh.operator_tls


@pytest.fixture(scope="session")
def admin_key(mesh: Stack) -> str:
    """The admin API key `make run` creates. A client certificate only opens the edge's door;
    the key says who calls."""
    assert mesh.admin_api_key.startswith("dmk_")
    return mesh.admin_api_key


@pytest.fixture
def edge_channel(edge: str, operator: CertPaths, admin_key: str) -> Iterator[grpc.Channel]:
    with grpc_channel(edge, operator, admin_key) as channel:
        yield channel


@pytest.fixture
def config_stub(edge_channel: grpc.Channel) -> config_pb2_grpc.ConfigServiceStub:
    return config_pb2_grpc.ConfigServiceStub(edge_channel)


class Rest:
    """REST through the edge with the operator's client certificate and, when given, an API key."""

    def __init__(self, edge: str, tls: CertPaths, api_key: str = "") -> None:
        self.base = f"https://{edge}"
        self.session = requests.Session()
        # Ignore REQUESTS_CA_BUNDLE and proxy variables: trust only the mesh CA, talk only to loopback.
        self.session.trust_env = False
        self.session.cert = (str(tls.cert), str(tls.key))
        self.session.verify = str(tls.ca)
        if api_key:
            self.session.headers["x-api-key"] = api_key

    def __call__(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, self.base + path, timeout=10, **kwargs)


@pytest.fixture
def rest(edge: str, operator: CertPaths, admin_key: str) -> Iterator[Rest]:
    client = Rest(edge, operator, admin_key)
    yield client
    client.session.close()


def envoy_stats(admin_url: str, contains: str) -> dict[str, int]:
    """Envoy counters and gauges whose name contains `contains`."""
    text = requests.get(f"{admin_url}/stats", params={"filter": contains}, timeout=2).text
    stats = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if value.strip().lstrip("-").isdigit():
            stats[name] = int(value)
    return stats


__all__ = ["Path", "Rest", "envoy_stats"]
