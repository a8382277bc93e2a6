"""The audit trail on a real config server with auth on: changes, refusals and denials reach it
before the caller hears of them, without the credentials, and it pages without gaps."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from devmesh.config.v1 import audit_pb2
from devmesh.config.v1 import config_pb2 as pb
from services.runtime.identity import keys
from tests.helpers import key_metadata, refused
from tests.integration.conftest import Mesh, resolve_request


async def test_mutations_refusals_and_denials_reach_the_audit_trail(mesh: Mesh, ns: str) -> None:
    admin_key = await mesh.mint("admin")
    viewer_key = await mesh.mint("viewer")
    admin, viewer = key_metadata(admin_key), key_metadata(viewer_key)
    await mesh.config().CreateNamespace(
        pb.CreateNamespaceRequest(namespace_id=ns, namespace=pb.Namespace()), metadata=admin
    )
    environment = pb.Environment(name=f"namespaces/{ns}/environments/default")
    await refused(
        mesh.config().UpdateEnvironment,
        pb.UpdateEnvironmentRequest(environment=environment, allow_missing=True),
        metadata=viewer,
    )
    await refused(
        mesh.config().ResolveConfig,
        resolve_request(ns),
        metadata=key_metadata(keys.new_key(keys.new_key_id())),
    )
    page = await mesh.audit().ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(resource_prefix=f"namespaces/{ns}", page_size=10), metadata=admin
    )
    seen = [(e.action, e.result, e.reason) for e in page.audit_events]
    assert seen == [
        ("config.environments.resolve", "UNAUTHENTICATED", "API_KEY_UNKNOWN"),
        ("config.environments.update", "PERMISSION_DENIED", "PERMISSION_DENIED"),
        ("config.namespaces.create", "OK", ""),
    ]
    denial = page.audit_events[1]
    assert denial.actor == f"apikey:{keys.parse(viewer_key).key_id}" and denial.request_id and denial.peer
    assert page.audit_events[2].details["change"] == "NAMESPACE_CREATED"
    events = str(page)
    assert admin_key not in events and viewer_key not in events
    by_actor = await mesh.audit().ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(actor=denial.actor, action="config.*"), metadata=admin
    )
    assert [e.id for e in by_actor.audit_events] == [denial.id]


async def test_a_refusal_is_in_the_audit_trail_by_the_time_the_caller_hears_of_it(
    mesh: Mesh, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.runtime.interceptors.audit import Audit

    record = Audit.record

    async def slow_record(self: Audit, *args: Any) -> None:
        await asyncio.sleep(0.3)  # real time on purpose: a slow audit write delays the answer, not the trail
        await record(self, *args)

    monkeypatch.setattr(Audit, "record", slow_record)
    admin = key_metadata(await mesh.mint("admin"))
    viewer = key_metadata(await mesh.mint("viewer"))
    environment = pb.Environment(name=f"namespaces/{ns}/environments/default")
    denied = await refused(
        mesh.config().UpdateEnvironment,
        pb.UpdateEnvironmentRequest(environment=environment, allow_missing=True),
        metadata=viewer,
    )
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    page = await mesh.audit().ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(resource_prefix=f"namespaces/{ns}", page_size=10), metadata=admin
    )
    assert [(e.action, e.result) for e in page.audit_events] == [
        ("config.environments.update", "PERMISSION_DENIED")
    ]


async def test_audit_pages_follow_each_other_without_gaps(mesh: Mesh, ns: str) -> None:
    admin = key_metadata(await mesh.mint("admin"))
    for i in range(5):
        await mesh.config().CreateNamespace(
            pb.CreateNamespaceRequest(namespace_id=f"{ns}-{i}", namespace=pb.Namespace()), metadata=admin
        )
    ids, token = [], ""
    while True:
        page = await mesh.audit().ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(
                resource_prefix=f"namespaces/{ns}-", page_size=2, page_token=token
            ),
            metadata=admin,
        )
        ids += [e.resource for e in page.audit_events]
        token = page.next_page_token
        if not token:
            break
    assert ids == [f"namespaces/{ns}-{i}" for i in reversed(range(5))]
