"""TokenService on a real config server with auth on: an API key exchanged for a token of its
role, narrowed but never widened, and a signing-key rotation that breaks no live token."""

from __future__ import annotations

import base64
import json

import grpc

from devmesh.config.v1 import config_pb2 as pb
from devmesh.config.v1 import tokens_pb2
from services.runtime.vault import JWT_KEY, TRANSIT_MOUNT
from tests.conftest import BootstrappedVault
from tests.helpers import bearer, error_info, eventually, key_metadata, refused
from tests.integration.conftest import Mesh, resolve_request


async def test_an_api_key_exchanges_for_a_token_with_its_role(mesh: Mesh, ns: str) -> None:
    viewer = key_metadata(await mesh.mint("viewer"))
    issued = await mesh.tokens().ExchangeToken(tokens_pb2.ExchangeTokenRequest(), metadata=viewer)
    assert issued.token_type == "Bearer" and issued.expires_in == 900
    header = json.loads(base64.urlsafe_b64decode(issued.access_token.split(".")[0] + "=="))
    assert header["alg"] == "ES256" and header["kid"].isdigit()
    error = await refused(
        mesh.config().ResolveConfig, resolve_request(ns), metadata=bearer(issued.access_token)
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND  # authenticated as the viewer
    environment = pb.Environment(name=f"namespaces/{ns}/environments/default")
    error = await refused(
        mesh.config().UpdateEnvironment,
        pb.UpdateEnvironmentRequest(environment=environment, allow_missing=True),
        metadata=bearer(issued.access_token),
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    again = await refused(
        mesh.tokens().ExchangeToken, tokens_pb2.ExchangeTokenRequest(), metadata=bearer(issued.access_token)
    )
    assert again.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_token_may_be_narrowed_but_not_widened(mesh: Mesh) -> None:
    viewer = key_metadata(await mesh.mint("viewer"))
    error = await refused(
        mesh.tokens().ExchangeToken,
        tokens_pb2.ExchangeTokenRequest(permissions=["config.environments.update"]),
        metadata=viewer,
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    narrowed = await mesh.tokens().ExchangeToken(
        tokens_pb2.ExchangeTokenRequest(permissions=["config.environments.resolve"]), metadata=viewer
    )
    error = await refused(
        mesh.config().ListNamespaces, pb.ListNamespacesRequest(), metadata=bearer(narrowed.access_token)
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_transit_key_rotation_keeps_live_tokens_until_old_versions_are_retired(
    mesh: Mesh, openbao: BootstrappedVault, ns: str
) -> None:
    viewer = key_metadata(await mesh.mint("viewer"))
    old = (await mesh.tokens().ExchangeToken(tokens_pb2.ExchangeTokenRequest(), metadata=viewer)).access_token
    root = openbao.client().secrets.transit
    root.rotate_key(JWT_KEY, mount_point=TRANSIT_MOUNT)
    latest = str(root.read_key(JWT_KEY, mount_point=TRANSIT_MOUNT)["data"]["latest_version"])

    async def signed_with_the_latest_version() -> str | None:
        token = (
            await mesh.tokens().ExchangeToken(tokens_pb2.ExchangeTokenRequest(), metadata=viewer)
        ).access_token
        kid = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["kid"]
        return token if kid == latest else None

    # The issuer re-reads the key every few seconds.
    new = await eventually(signed_with_the_latest_version, "a token signed by the new key version", within=15)

    async def outcome(token: str) -> str:
        try:
            await mesh.config().ResolveConfig(resolve_request(ns), metadata=bearer(token))
        except grpc.aio.AioRpcError as error:
            return error_info(error).reason
        return "OK"

    assert await outcome(old) == "NOT_FOUND"  # still verifies: rotation broke no live token
    assert await outcome(new) == "NOT_FOUND"
    root.update_key_configuration(JWT_KEY, min_decryption_version=int(latest), mount_point=TRANSIT_MOUNT)

    async def old_token_refused() -> bool:
        return await outcome(old) == "TOKEN_UNKNOWN_KEY"

    async def only_the_latest_published() -> bool:
        jwks = await mesh.tokens().GetJwks(tokens_pb2.GetJwksRequest())
        return [k.kid for k in jwks.keys] == [latest]

    # The JWKS refreshes every second here.
    await eventually(old_token_refused, "the retired key version to stop verifying tokens")
    assert await outcome(new) == "NOT_FOUND"
    await eventually(only_the_latest_published, "the JWKS to drop the retired key version")
