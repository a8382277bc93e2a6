"""Blocking gRPC channels to a service or the edge, and the health check on them."""

from __future__ import annotations

from typing import Any

from tools.stack.certs import CertPaths


def api_key_credentials(api_key: str) -> Any:
    """Call credentials sending `x-api-key` on every call of a secure channel."""
    import grpc

    def plugin(_context: Any, callback: Any) -> None:
        callback((("x-api-key", api_key),), None)

    return grpc.metadata_call_credentials(plugin, name="devmesh-api-key")


def grpc_channel(
    addr: str, tls: CertPaths | None, api_key: str = "", options: list[tuple[str, Any]] | None = None
) -> Any:
    """A blocking channel to a service or the edge: mTLS with `tls` credentials, else plaintext;
    with `api_key`, every call carries it. `options`: grpc channel arguments."""
    import grpc

    if tls is None:
        return grpc.insecure_channel(addr, options=options)
    credentials = grpc.ssl_channel_credentials(
        tls.ca.read_bytes(), tls.key.read_bytes(), tls.cert.read_bytes()
    )
    if api_key:
        credentials = grpc.composite_channel_credentials(credentials, api_key_credentials(api_key))
    return grpc.secure_channel(addr, credentials, options=options)


def health_serving(addr: str, service: str = "", timeout: float = 1.0, tls: CertPaths | None = None) -> bool:
    """Whether gRPC health at `addr` answers SERVING for `service` ("" is the whole server)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc_channel(addr, tls) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout
        )
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)
