"""What a newcomer does with the admin key from stack.json, through the edge, REST and gRPC:
create a viewer key, read with it, get refused on writes (403), without or with a bogus key
(401), past its rate limit (429), and find all of it in the audit trail."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import requests

from devmesh.config.v1 import config_pb2 as pb
from devmesh.config.v1 import config_pb2_grpc
from services.runtime.identity import keys
from tests.e2e.conftest import Rest, envoy_stats
from tools.envoy_config import SERVICE_NAMESPACE
from tools.stack.certs import CertPaths, Identity
from tools.stack.channels import grpc_channel
from tools.stack.local import Stack


@pytest.fixture
def ns(rest: Rest) -> str:
    name = f"e2e-{uuid.uuid4().hex[:10]}"
    assert rest("POST", f"/v1/namespaces?namespace_id={name}", json={}).status_code == 200
    env = f"/v1/namespaces/{name}/environments/default?allow_missing=true"
    assert rest("PATCH", env, json={"content": {"db": {"host": "db.internal"}}}).status_code == 200
    return name


@pytest.fixture
def viewer_key(rest: Rest) -> str:
    response = rest("POST", "/v1/apiKeys", json={"role": "viewer", "displayName": "newcomer"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["apiKey"]["state"] == "STATE_ACTIVE" and body["key"].startswith(body["apiKey"]["keyPrefix"])
    return str(body["key"])


@pytest.fixture
def as_viewer(edge: str, operator: CertPaths, viewer_key: str) -> Iterator[Rest]:
    client = Rest(edge, operator, viewer_key)
    yield client
    client.session.close()


@pytest.fixture
def anonymous(edge: str, operator: CertPaths) -> Iterator[Rest]:
    """A client certificate and nothing else: it opens the edge's door, but says nobody."""
    client = Rest(edge, operator)
    yield client
    client.session.close()


def test_a_viewer_reads_over_rest_and_grpc_but_may_not_write(
    as_viewer: Rest, edge: str, operator: CertPaths, viewer_key: str, ns: str
) -> None:
    resolved = as_viewer("GET", f"/v1/namespaces/{ns}/environments/default:resolve")
    assert resolved.status_code == 200 and resolved.json()["content"]["db"]["host"] == "db.internal"
    assert int(resolved.headers["x-ratelimit-remaining"]) < int(resolved.headers["x-ratelimit-limit"])

    write = as_viewer("PATCH", f"/v1/namespaces/{ns}/environments/default", json={"content": {"x": 1}})
    assert write.status_code == 403
    assert write.json()["code"] == 7 and "config.environments.update" in write.json()["message"]

    with grpc_channel(edge, operator, viewer_key) as channel:
        stub = config_pb2_grpc.ConfigServiceStub(channel)
        result = stub.ResolveConfig(
            pb.ResolveConfigRequest(name=f"namespaces/{ns}/environments/default"), timeout=5
        )
        assert result.content["db"]["host"] == "db.internal"
        with pytest.raises(grpc.RpcError) as caught:
            environment = pb.Environment(name=f"namespaces/{ns}/environments/default")
            stub.UpdateEnvironment(pb.UpdateEnvironmentRequest(environment=environment), timeout=5)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_no_key_or_a_bogus_key_is_401_with_a_json_reason(
    anonymous: Rest, edge: str, operator: CertPaths, ns: str
) -> None:
    path = f"/v1/namespaces/{ns}/environments/default:resolve"
    missing = anonymous("GET", path)
    assert missing.status_code == 401 and missing.json()["code"] == 16
    assert missing.json()["details"][0]["reason"] == "CREDENTIALS_MISSING"
    bogus = anonymous("GET", path, headers={"x-api-key": keys.new_key(keys.new_key_id())})
    assert bogus.status_code == 401 and bogus.json()["details"][0]["reason"] == "API_KEY_UNKNOWN"
    with grpc_channel(edge, operator, "dmk_not-a-key") as channel, pytest.raises(grpc.RpcError) as caught:
        config_pb2_grpc.ConfigServiceStub(channel).ListNamespaces(pb.ListNamespacesRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_burst_past_the_limit_is_429_with_rate_limit_headers(
    edge: str, operator: CertPaths, viewer_key: str, ns: str
) -> None:
    # The viewer's bucket holds 40 and refills 20 a second. Sent one after another on a busy
    # machine, requests can come no faster than the refill; ten at a time, 120 of them drain
    # the bucket unless each one takes longer than a third of a second.
    path = f"/v1/namespaces/{ns}/environments/default:resolve"

    def twelve(_: int) -> list[requests.Response]:
        client = Rest(edge, operator, viewer_key)
        try:
            return [client("GET", path) for _ in range(12)]
        finally:
            client.session.close()

    with ThreadPoolExecutor(10) as pool:
        statuses = [response for batch in pool.map(twelve, range(10)) for response in batch]
    limited = [r for r in statuses if r.status_code == 429]
    assert limited and all(r.status_code in (200, 429) for r in statuses)
    refusal = limited[0]
    assert refusal.json()["code"] == 8
    assert refusal.headers["x-ratelimit-remaining"] == "0" and int(refusal.headers["x-ratelimit-reset"]) >= 1
    kinds = {d["@type"].rsplit(".", 1)[-1] for d in refusal.json()["details"]}
    assert {"ErrorInfo", "RetryInfo", "QuotaFailure"} <= kinds


def test_a_token_exchanged_for_the_key_works_and_the_jwks_is_public(
    as_viewer: Rest, anonymous: Rest, edge: str, operator: CertPaths, ns: str
) -> None:
    jwks = anonymous("GET", "/.well-known/jwks.json")
    assert jwks.status_code == 200 and jwks.json()["keys"][0]["alg"] == "ES256"
    issued = as_viewer("POST", "/v1/tokens:exchange", json={})
    assert issued.status_code == 200 and issued.json()["tokenType"] == "Bearer"
    token = issued.json()["accessToken"]
    assert token.split(".")[0] and issued.json()["expiresIn"] == "900"
    resolved = anonymous(
        "GET",
        f"/v1/namespaces/{ns}/environments/default:resolve",
        headers={"authorization": f"Bearer {token}"},
    )
    assert resolved.status_code == 200


def test_everything_the_newcomer_did_is_in_the_audit_trail(
    rest: Rest, as_viewer: Rest, anonymous: Rest, viewer_key: str, ns: str
) -> None:
    as_viewer("PATCH", f"/v1/namespaces/{ns}/environments/default", json={"content": {"x": 1}})
    anonymous("GET", f"/v1/namespaces/{ns}/environments/default:resolve")
    events = rest("GET", "/v1/auditEvents", params={"resourcePrefix": f"namespaces/{ns}"}).json()[
        "auditEvents"
    ]
    seen = [(e["actor"], e["action"], e["result"]) for e in events]
    viewer = f"apikey:{keys.parse(viewer_key).key_id}"
    assert seen[:2] == [
        ("anonymous", "config.environments.resolve", "UNAUTHENTICATED"),
        (viewer, "config.environments.update", "PERMISSION_DENIED"),
    ]
    assert ("config.environments.update", "OK") in [(a, r) for _, a, r in seen[2:]]  # the admin's writes
    created = rest(
        "GET", "/v1/auditEvents", params={"action": "config.apikeys.create", "pageSize": 50}
    ).json()
    assert any(e["result"] == "OK" for e in created["auditEvents"])
    assert viewer_key not in str(events) + str(created)


def test_the_edge_runs_a_coarse_flood_guard_in_front_of_the_services(mesh: Stack, rest: Rest) -> None:
    assert mesh.envoy is not None
    rest("GET", "/v1/namespaces")
    stats = envoy_stats(mesh.envoy.admin_url, "edge_flood_guard")
    assert stats["edge_flood_guard.http_local_rate_limit.enabled"] >= 1
    assert stats["edge_flood_guard.http_local_rate_limit.rate_limited"] == 0


def _list_namespaces(addr: str, tls: CertPaths) -> grpc.StatusCode:
    with grpc_channel(addr, tls) as channel:
        try:
            config_pb2_grpc.ConfigServiceStub(channel).ListNamespaces(
                pb.ListNamespacesRequest(page_size=1), timeout=5
            )
        except grpc.RpcError as error:
            return error.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_a_mesh_identity_calling_a_service_directly_is_its_own_credential(
    mesh: Stack, tmp_path: Path
) -> None:
    assert mesh.renewer is not None
    config = mesh.services["config"].addr
    # The local operator (ns/ops) is an admin; another devmesh service reads but does not write.
    assert _list_namespaces(config, mesh.operator_tls) == grpc.StatusCode.OK
    peer = mesh.renewer.add(Identity.workload(SERVICE_NAMESPACE, "pipeline"), tmp_path / "pipeline").current
    assert _list_namespaces(config, peer) == grpc.StatusCode.OK
    with grpc_channel(config, peer) as channel, pytest.raises(grpc.RpcError) as caught:
        config_pb2_grpc.ConfigServiceStub(channel).CreateNamespace(
            pb.CreateNamespaceRequest(namespace_id="from-pipeline", namespace=pb.Namespace()), timeout=5
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # The edge's own identity is nobody: through it, callers must bring a key or a token.
    edge = mesh.certs["edge"].current
    assert _list_namespaces(config, edge) == grpc.StatusCode.UNAUTHENTICATED
    stranger = mesh.renewer.add(Identity.workload("elsewhere", "tool"), tmp_path / "tool").current
    assert _list_namespaces(config, stranger) == grpc.StatusCode.PERMISSION_DENIED
