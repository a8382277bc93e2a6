"""The worker's calls to the pipeline service: one channel (`connect`) and the artifact upload.

`connect` is the one place that decides how a worker reaches the service and who it is there:
today its mesh certificate (DEVMESH_WORKER_TLS_*; the service maps the certificate's SPIFFE id
to a role) or plaintext to a loopback address (tests, a laptop). A worker identity of its own
(an API key with the `worker` role) plugs in here as call credentials.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc import aio

from devmesh.pipeline.v1 import runs_pb2, runs_pb2_grpc
from services.pipeline.worker.settings import WorkerSettings

UPLOAD_CHUNK_BYTES = 512 * 1024
Channel: TypeAlias = aio.Channel  # for the worker's domain modules, which import no grpc


def connect(settings: WorkerSettings) -> Channel | None:
    """The worker's channel to the pipeline service; None when it has no address."""
    addr = settings.worker_pipeline_addr
    if not addr:
        return None
    if not settings.worker_tls_ca_file:
        return aio.insecure_channel(addr)
    credentials = grpc.ssl_channel_credentials(
        Path(settings.worker_tls_ca_file).read_bytes(),
        Path(settings.worker_tls_key_file).read_bytes(),
        Path(settings.worker_tls_cert_file).read_bytes(),
    )
    return aio.secure_channel(addr, credentials)


class UploadRefused(Exception):
    """The service did not keep the artifact; the message says why (no credential in it)."""

    def __init__(self, code: str, reason: str, message: str) -> None:
        super().__init__(f"{code} {reason}: {message}" if reason else f"{code}: {message}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class ArtifactUpload:
    parent: str  # the run's name
    artifact_id: str
    job: str
    attempt: int
    fence: str
    file_count: int


async def upload_artifact(
    channel: aio.Channel, upload: ArtifactUpload, archive: Path, timeout_s: float
) -> runs_pb2.Artifact:
    """Stream `archive` to UploadArtifact; UploadRefused when the service says no."""

    async def messages() -> AsyncIterator[runs_pb2.UploadArtifactRequest]:
        with archive.open("rb") as handle:
            first = runs_pb2.UploadArtifactRequest(
                parent=upload.parent,
                artifact_id=upload.artifact_id,
                job=upload.job,
                attempt=upload.attempt,
                fence=upload.fence,
                file_count=upload.file_count,
                data=handle.read(UPLOAD_CHUNK_BYTES),
            )
            yield first
            while chunk := handle.read(UPLOAD_CHUNK_BYTES):
                yield runs_pb2.UploadArtifactRequest(data=chunk)

    stub = runs_pb2_grpc.RunServiceStub(channel)
    try:
        stored: runs_pb2.Artifact = await stub.UploadArtifact(messages(), timeout=max(timeout_s, 1.0))
        return stored
    except aio.AioRpcError as error:
        raise UploadRefused(error.code().name, _reason(error), error.details() or "") from None


def _reason(error: aio.AioRpcError) -> str:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            for packed in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.ErrorInfo()
                if packed.Unpack(info):
                    return str(info.reason)
    return ""
