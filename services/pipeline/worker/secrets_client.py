"""A job's secrets, asked of the pipeline service (ResolveJobSecrets) for the attempt the worker
runs, under its fencing token: the service reads them as the job's pipeline. The answer is
either every value, or the reason the job cannot start, which names references, never values.
"""

from __future__ import annotations

import grpc

from devmesh.pipeline.v1 import runs_pb2, runs_pb2_grpc

TIMEOUT_S = 15.0


async def resolve(
    stub: runs_pb2_grpc.RunServiceStub | None, attempt: str, fence: str, references: list[str]
) -> tuple[dict[str, str], str]:
    """(reference -> value, "") or ({}, why the job's secrets cannot be had)."""
    if stub is None:
        return {}, (
            "secret references need the pipeline service: this worker has no "
            "DEVMESH_WORKER_PIPELINE_ADDR (and API key)"
        )
    try:
        response = await stub.ResolveJobSecrets(
            runs_pb2.ResolveJobSecretsRequest(name=attempt, fence=fence), timeout=TIMEOUT_S
        )
    except grpc.aio.AioRpcError as error:
        return (
            {},
            f"secrets: the pipeline service refused ({error.code().name}: {(error.details() or '')[:200]})",
        )
    if response.unresolved:
        listed = ", ".join(f"{u.reference} ({u.reason})" for u in response.unresolved[:10])
        return {}, f"secrets the pipeline may not read or that cannot be read: {listed}"
    missing = [ref for ref in references if ref not in response.values]
    if missing:
        return {}, f"secrets not resolved: {', '.join(missing[:10])}"
    return dict(response.values), ""
