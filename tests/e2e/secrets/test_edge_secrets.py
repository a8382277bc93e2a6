"""A newcomer, through the edge with mTLS: stores a database password, grants a service read
access, reads it as that service, rotates it, sees the rotation event, and finds every access
in the audit log."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

from devmesh.secrets.v1 import secrets_pb2 as pb
from devmesh.secrets.v1 import secrets_pb2_grpc
from tests.e2e.conftest import Rest
from tools.envoy_config import SERVICE_NAMESPACE
from tools.stack.certs import CertPaths, Identity
from tools.stack.channels import grpc_channel
from tools.stack.local import Stack


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_a_database_password_from_storage_to_rotation_to_audit(
    rest: Rest, edge: str, operator: CertPaths, admin_key: str, mesh: Stack, tmp_path: Path
) -> None:
    name = f"db-password-{uuid.uuid4().hex[:8]}"
    rotation = {"interval": "86400s", "random": {"length": 40}}
    created = rest("POST", f"/v1/secrets?secretId={name}", json={"rotation": rotation})
    assert created.status_code == 200, created.text
    added = rest("POST", f"/v1/secrets/{name}:addVersion", json={"payload": {"data": b64(b"initial-pw")}})
    assert added.status_code == 200 and added.json()["name"] == f"secrets/{name}/versions/1"

    # A key for the billing service, and a policy letting it (and only it) read the password.
    service_key = rest("POST", "/v1/apiKeys", json={"role": "service", "displayName": "billing"}).json()
    billing = "apikey:" + service_key["apiKey"]["name"].rpartition("/")[2]
    workload = mesh.renewer.add(Identity.workload(SERVICE_NAMESPACE, "billing"), tmp_path / "billing")  # type: ignore[union-attr]
    policy = {
        "prefix": name,
        "bindings": [
            {"member": billing, "level": "LEVEL_READ"},
            {"member": "spiffe://devmesh.local/ns/devmesh/sa/billing", "level": "LEVEL_READ"},
        ],
    }
    assert rest("PUT", f"/v1/accessPolicies/{name}", json=policy).status_code == 200

    as_billing = Rest(edge, operator, service_key["key"])
    try:
        read = as_billing("GET", f"/v1/secrets/{name}/versions/latest:access")
        assert read.status_code == 200 and base64.b64decode(read.json()["payload"]["data"]) == b"initial-pw"
        assert (
            as_billing(
                "POST", f"/v1/secrets/{name}:addVersion", json={"payload": {"data": b64(b"x")}}
            ).status_code
            == 403
        )
        assert as_billing("GET", "/v1/secrets/another-teams-secret/versions/latest:access").status_code == 403

        # A configuration that references the password resolves, for this caller, to its value.
        ns = f"app-{name}"
        assert rest("POST", f"/v1/namespaces?namespace_id={ns}", json={}).status_code == 200
        document = {"content": {"db": {"password": {"$secret": name}}}}
        assert rest("PATCH", f"/v1/namespaces/{ns}/environments/default?allow_missing=true", json=document).ok
        resolved = as_billing("GET", f"/v1/namespaces/{ns}/environments/default:resolve?resolveSecrets=true")
        assert resolved.status_code == 200, resolved.text
        assert resolved.json()["content"]["db"]["password"] == "initial-pw"
        assert resolved.json()["secrets"][0]["version"] == f"secrets/{name}/versions/1"

        # The same service, calling the secrets service directly with its mesh identity.
        with grpc_channel(mesh.services["secrets"].addr, workload.current) as channel:
            direct = secrets_pb2_grpc.SecretsServiceStub(channel).AccessSecretVersion(
                pb.AccessSecretVersionRequest(name=f"secrets/{name}/versions/1"), timeout=5
            )
            assert direct.payload.data == b"initial-pw"

        # Watch, rotate, see the event, read the new value.
        with grpc_channel(edge, operator, admin_key) as channel:
            stub = secrets_pb2_grpc.SecretsServiceStub(channel)
            events = stub.WatchSecretEvents(pb.WatchSecretEventsRequest(prefix=name), timeout=30)
            # A quiet stream's first message, a progress event, says it follows the log from here.
            assert next(events).type == pb.SecretEvent.TYPE_PROGRESS
            rotated = rest("POST", f"/v1/secrets/{name}:rotate", json={"promote": True})
            assert rotated.status_code == 200 and rotated.json()["latestVersion"] == "2"
            event = next(e for e in events if e.type != pb.SecretEvent.TYPE_PROGRESS)
            events.cancel()
        assert event.type == pb.SecretEvent.TYPE_ROTATED and event.version == 2
        fresh = as_billing("GET", f"/v1/secrets/{name}/versions/latest:access")
        new_value = base64.b64decode(fresh.json()["payload"]["data"])
        assert fresh.json()["name"].endswith("/versions/2") and len(new_value) == 40
    finally:
        as_billing.session.close()

    audit = rest(
        "GET",
        "/v1/auditEvents",
        params={"resourcePrefix": f"secrets/{name}", "action": "secrets.versions.access"},
    ).json()["auditEvents"]
    accesses = [(e["actor"], e["result"], e["details"].get("version")) for e in audit]
    assert (billing, "OK", "1") in accesses and (billing, "OK", "2") in accesses
    assert ("spiffe://devmesh.local/ns/devmesh/sa/billing", "OK", "1") in accesses
    assert "initial-pw" not in str(audit) and new_value.decode() not in str(audit)
