"""The worker's connection to the pipeline service: one channel from its settings, every call
carrying the worker's own API key (role `worker`), over mTLS unless the address is loopback.

The key is read from its file once and lives only in the channel's interceptor: never in a log,
an error or a step's environment.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from devmesh.pipeline.v1 import runs_pb2_grpc
from services.pipeline.worker.settings import WorkerSettings
from services.runtime.settings import SettingsError

API_KEY_HEADER = "x-api-key"


class _WithApiKey(aio.UnaryUnaryClientInterceptor, aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Adds the API key to every call (call credentials need TLS; loopback may be plaintext)."""

    def __init__(self, api_key: str) -> None:
        self._metadata = ((API_KEY_HEADER, api_key),)

    def _details(self, details: aio.ClientCallDetails) -> aio.ClientCallDetails:
        metadata = aio.Metadata(*(details.metadata or ()), *self._metadata)
        return aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._details(client_call_details), request)

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._details(client_call_details), request)


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SettingsError(f"cannot read {what} {path}: {exc.strerror}") from None


def channel(settings: WorkerSettings) -> aio.Channel | None:
    """An authenticated channel to the pipeline service; None when none is configured."""
    if not settings.worker_pipeline_addr:
        return None
    api_key = _read(settings.worker_api_key_file, "the worker's API key file").decode().strip()
    if not api_key:
        raise SettingsError(f"the worker's API key file {settings.worker_api_key_file} is empty")
    interceptors = [_WithApiKey(api_key)]
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
