"""Who may do what, on a real config server with auth on: each role against each permission
class, permission decided before existence, narrowed keys, and the methods that need nobody."""

from __future__ import annotations

import grpc
import pytest

from devmesh.config.v1 import api_keys_pb2 as kpb
from devmesh.config.v1 import audit_pb2, tokens_pb2
from devmesh.config.v1 import config_pb2 as pb
from tests.helpers import error_info, key_metadata, refused
from tests.integration.conftest import Mesh, resolve_request

ALLOWED = {  # role -> (read config, write config, manage keys, read audit)
    "admin": (True, True, True, True),
    "operator": (True, True, False, True),
    "viewer": (True, False, False, False),
    "service": (True, False, False, False),
}


@pytest.mark.parametrize("role", list(ALLOWED))
async def test_each_role_against_each_permission_class(mesh: Mesh, role: str, ns: str) -> None:
    admin = await mesh.mint("admin")
    await mesh.config().CreateNamespace(
        pb.CreateNamespaceRequest(namespace_id=ns, namespace=pb.Namespace()), metadata=key_metadata(admin)
    )
    environment = pb.Environment(name=f"namespaces/{ns}/environments/default")
    await mesh.config().UpdateEnvironment(
        pb.UpdateEnvironmentRequest(environment=environment, allow_missing=True), metadata=key_metadata(admin)
    )
    md = key_metadata(await mesh.mint(role))
    calls = (
        mesh.config().ResolveConfig(resolve_request(ns), metadata=md),
        mesh.config().UpdateEnvironment(
            pb.UpdateEnvironmentRequest(environment=environment, allow_missing=True), metadata=md
        ),
        mesh.keys().ListApiKeys(kpb.ListApiKeysRequest(page_size=1), metadata=md),
        mesh.audit().ListAuditEvents(audit_pb2.ListAuditEventsRequest(page_size=1), metadata=md),
    )
    outcomes = []
    for call in calls:
        try:
            await call
            outcomes.append(True)
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error.details()
            outcomes.append(False)
    assert tuple(outcomes) == ALLOWED[role]


async def test_permission_is_decided_before_existence(mesh: Mesh) -> None:
    viewer = key_metadata(await mesh.mint("viewer"))
    missing = pb.Environment(name="namespaces/no-such-namespace/environments/default")
    error = await refused(
        mesh.config().UpdateEnvironment, pb.UpdateEnvironmentRequest(environment=missing), metadata=viewer
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info(error).metadata["permission"] == "config.environments.update"


async def test_a_key_narrowed_to_some_permissions_holds_only_those(mesh: Mesh, ns: str) -> None:
    narrowed = key_metadata(await mesh.mint("admin", permissions=["config.environments.resolve"]))
    error = await refused(mesh.config().ListNamespaces, pb.ListNamespacesRequest(), metadata=narrowed)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    error = await refused(mesh.config().ResolveConfig, resolve_request(ns), metadata=narrowed)
    assert error.code() == grpc.StatusCode.NOT_FOUND  # allowed through; the namespace is missing


async def test_a_key_cannot_grant_more_than_its_creator_holds(mesh: Mesh) -> None:
    keymaster = key_metadata(await mesh.mint("admin", permissions=["config.apikeys.*"]))
    error = await refused(
        mesh.keys().CreateApiKey,
        kpb.CreateApiKeyRequest(api_key=kpb.ApiKey(role="operator")),
        metadata=keymaster,
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info(error).reason == "ROLE_NOT_HELD"


async def test_public_methods_need_no_credentials(mesh: Mesh) -> None:
    jwks = await mesh.tokens().GetJwks(tokens_pb2.GetJwksRequest())
    assert jwks.keys and all(k.kty == "EC" and k.crv == "P-256" and k.alg == "ES256" for k in jwks.keys)
