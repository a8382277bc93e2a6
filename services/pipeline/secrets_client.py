"""Reading a job's secrets from the secrets service as its pipeline: AccessSecretVersion over
the pipeline service's own mesh identity, on behalf of `pipelines/<project>/<pipeline>`
(services/runtime/identity/on_behalf.py), so the pipeline's access policies decide.

Values are returned to the caller and never logged or cached: they go to the worker that runs
the attempt, once.
"""

from __future__ import annotations

import json

import grpc

from devmesh.secrets.v1 import secrets_pb2, secrets_pb2_grpc
from services.runtime.errors import reason_of
from services.runtime.identity import on_behalf
from services.runtime.peers import PeerChannel

TIMEOUT_S = 5.0


def _reason(error: grpc.aio.AioRpcError) -> str:
    code = error.code()
    unavailable = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    return reason_of(error.trailing_metadata()) or (
        "SECRETS_UNAVAILABLE" if code in unavailable else code.name
    )


class PipelineSecrets:
    """A `job_secrets.SecretReader` over the secrets service's stubs."""

    def __init__(self, secrets: PeerChannel) -> None:
        self._secrets = secrets

    async def read(self, principal: str, reference: str) -> tuple[str | None, str]:
        """(value, "") or (None, reason), read as `principal`."""
        secret, _, field = reference.partition("#")
        stub = secrets_pb2_grpc.SecretsServiceStub(self._secrets.channel())
        try:
            response = await stub.AccessSecretVersion(
                secrets_pb2.AccessSecretVersionRequest(name=f"secrets/{secret}/versions/latest"),
                metadata=((on_behalf.HEADER, principal),),
                timeout=TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as error:
            return None, _reason(error)
        data = response.payload.data
        try:
            text = data.decode()
        except UnicodeDecodeError:
            return None, "NOT_TEXT"
        if not field:
            return text, ""
        try:
            value = json.loads(text)
        except ValueError:
            return None, "NOT_JSON"
        if not isinstance(value, dict) or field not in value:
            return None, "FIELD_NOT_FOUND"
        found = value[field]
        return (found if isinstance(found, str) else json.dumps(found)), ""
