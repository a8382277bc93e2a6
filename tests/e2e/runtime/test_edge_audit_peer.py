"""Audit events name the caller's own address, with the edge as the hop; a forwarded address is
believed only from the edge."""

from __future__ import annotations

import re
import uuid

from devmesh.config.v1 import config_pb2 as pb
from devmesh.config.v1 import config_pb2_grpc
from tests.e2e.conftest import Rest
from tools.stack.channels import grpc_channel
from tools.stack.local import Stack

VIA_EDGE = re.compile(r"^ipv4:127\.0\.0\.1:\d+ via edge ipv4:127\.0\.0\.1:\d+$")
FORGED = "203.0.113.9:4242"


def _peers(rest: Rest, namespace: str) -> list[str]:
    events = rest("GET", "/v1/auditEvents", params={"resourcePrefix": f"namespaces/{namespace}"}).json()
    return [e["peer"] for e in events["auditEvents"]]


def test_a_rest_callers_event_records_its_address_via_the_edge(rest: Rest) -> None:
    name = f"e2e-{uuid.uuid4().hex[:10]}"
    assert rest("POST", "/v1/namespaces", params={"namespace_id": name}, json={}).status_code == 200
    [peer] = _peers(rest, name)
    assert VIA_EDGE.match(peer), peer


def test_an_address_a_caller_sends_through_the_edge_is_replaced_by_the_edges(rest: Rest) -> None:
    name = f"e2e-{uuid.uuid4().hex[:10]}"
    forged = {"x-devmesh-client-address": FORGED, "x-forwarded-for": "203.0.113.9"}
    created = rest("POST", "/v1/namespaces", params={"namespace_id": name}, json={}, headers=forged)
    assert created.status_code == 200
    [peer] = _peers(rest, name)
    assert VIA_EDGE.match(peer) and "203.0.113.9" not in peer, peer


def test_an_address_sent_by_a_caller_that_is_not_the_edge_is_ignored(mesh: Stack, rest: Rest) -> None:
    name = f"e2e-{uuid.uuid4().hex[:10]}"
    with grpc_channel(mesh.services["config"].addr, mesh.operator_tls) as channel:  # the operator, directly
        config_pb2_grpc.ConfigServiceStub(channel).CreateNamespace(
            pb.CreateNamespaceRequest(namespace_id=name, namespace=pb.Namespace()),
            metadata=[("x-devmesh-client-address", FORGED)],
            timeout=5,
        )
    [peer] = _peers(rest, name)
    assert re.fullmatch(r"ipv4:127\.0\.0\.1:\d+", peer), peer
