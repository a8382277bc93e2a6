"""The worker's connection to the pipeline service: one channel from its settings, every call
carrying the worker's own API key (role `worker`), over mTLS unless the address is loopback.

The key is read from its file once and lives only in the channel's interceptor: never in a log,
an error or a step's environment.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from devmesh.pipeline.v1 import runs_pb2, runs_pb2_grpc
from services.pipeline.worker.settings import WorkerSettings
from services.runtime.errors import reason_of
from services.runtime.settings import SettingsError

API_KEY_HEADER = "x-api-key"


class _ApiKey:
    """Adds the API key to a call (call credentials need TLS; loopback may be plaintext)."""

    def __init__(self, api_key: str) -> None:
        self._metadata = ((API_KEY_HEADER, api_key),)

    def _details(self, details: aio.ClientCallDetails) -> aio.ClientCallDetails:
        metadata = aio.Metadata(*(details.metadata or ()), *self._metadata)
        return aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


# grpc.aio files an interceptor under the first kind of call it is (`isinstance`, then `elif`):
# one object for every kind would only ever see unary calls. One class per kind.
class _UnaryUnary(_ApiKey, aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._details(client_call_details), request)


class _UnaryStream(_ApiKey, aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._details(client_call_details), request)


class _StreamUnary(_ApiKey, aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_unary(  # UploadArtifact
        self,
        continuation: Callable[..., Any],
        client_call_details: aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SettingsError(f"cannot read {what} {path}: {exc.strerror}") from None


def channel(settings: WorkerSettings) -> aio.Channel | None:
    """An authenticated channel to the pipeline service; None when none is configured. Without
    an API key file the worker is who its certificate says (a mesh identity)."""
    if not settings.worker_pipeline_addr:
        return None
    interceptors: list[_ApiKey] = []
    if settings.worker_api_key_file:
        api_key = _read(settings.worker_api_key_file, "the worker's API key file").decode().strip()
        if not api_key:
            raise SettingsError(f"the worker's API key file {settings.worker_api_key_file} is empty")
        interceptors = [_UnaryUnary(api_key), _UnaryStream(api_key), _StreamUnary(api_key)]
    if not settings.worker_tls_cert_file:
        return aio.insecure_channel(settings.worker_pipeline_addr, interceptors=interceptors)
    credentials = grpc.ssl_channel_credentials(
        _read(settings.worker_tls_ca_file, "the CA file"),
        _read(settings.worker_tls_key_file, "the key file"),
        _read(settings.worker_tls_cert_file, "the certificate file"),
    )
    return aio.secure_channel(settings.worker_pipeline_addr, credentials, interceptors=interceptors)


def runs(channel: aio.Channel) -> runs_pb2_grpc.RunServiceStub:
    """The RunService stub on `channel`."""
    return runs_pb2_grpc.RunServiceStub(channel)


# -- artifacts ----------------------------------------------------------------------------

UPLOAD_CHUNK_BYTES = 512 * 1024


class UploadRefused(Exception):
    """The service did not keep the artifact; the message says why (no credential in it)."""

    def __init__(self, code: str, reason: str, message: str) -> None:
        super().__init__(f"{code} {reason}: {message}" if reason else f"{code}: {message}")
        self.code = code
        self.reason = reason

    @classmethod
    def of(cls, error: aio.AioRpcError) -> UploadRefused:
        """What the service's refusal says: its code, ErrorInfo reason and message."""
        return cls(error.code().name, reason_of(error.trailing_metadata()), error.details() or "")


@dataclass(frozen=True)
class ArtifactUpload:
    parent: str  # the run's name
    artifact_id: str
    job: str
    attempt: int
    fence: str
    file_count: int


async def upload_artifact(
    stub: runs_pb2_grpc.RunServiceStub, upload: ArtifactUpload, archive: Path, timeout_s: float
) -> runs_pb2.Artifact:
    """Stream `archive` to UploadArtifact; UploadRefused when the service says no."""

    async def messages() -> AsyncIterator[runs_pb2.UploadArtifactRequest]:
        with archive.open("rb") as handle:
            yield runs_pb2.UploadArtifactRequest(
                parent=upload.parent,
                artifact_id=upload.artifact_id,
                job=upload.job,
                attempt=upload.attempt,
                fence=upload.fence,
                file_count=upload.file_count,
                data=handle.read(UPLOAD_CHUNK_BYTES),
            )
            while chunk := handle.read(UPLOAD_CHUNK_BYTES):
                yield runs_pb2.UploadArtifactRequest(data=chunk)

    try:
        stored: runs_pb2.Artifact = await stub.UploadArtifact(messages(), timeout=max(timeout_s, 1.0))
        return stored
    except aio.AioRpcError as error:
        raise UploadRefused.of(error) from None
