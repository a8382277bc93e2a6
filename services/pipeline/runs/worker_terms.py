"""What the coordinators tell the workers, so that each value has one setting: the lease of a
running job (DEVMESH_PIPELINE_LEASE_SECONDS) and the artifact caps. Every replica writes them
when it starts; a worker reads them before each job it takes. Replicas with different values
(a rolling change) overwrite each other; the newest start wins."""

from __future__ import annotations

from dataclasses import dataclass

from services.pipeline.runs import keys
from services.runtime.redis_client import Redis


@dataclass(frozen=True)
class WorkerTerms:
    lease_s: float
    artifact_bytes: int
    job_artifacts_bytes: int


# Until a coordinator has written its terms (no job can be queued before one runs anyway).
DEFAULT = WorkerTerms(lease_s=10.0, artifact_bytes=100 * 1024 * 1024, job_artifacts_bytes=500 * 1024 * 1024)


async def publish(redis: Redis, terms: WorkerTerms) -> None:
    await redis.hset(
        keys.WORKER_TERMS,
        mapping={
            "lease_ms": str(int(terms.lease_s * 1000)),
            "artifact_bytes": str(terms.artifact_bytes),
            "job_artifacts_bytes": str(terms.job_artifacts_bytes),
        },
    )


async def read(redis: Redis) -> WorkerTerms:
    """The terms the coordinators published; DEFAULT for any they have not."""
    raw = await redis.hgetall(keys.WORKER_TERMS)
    values = {k.decode(): v.decode() for k, v in raw.items()}

    def number(name: str, default: float) -> float:
        try:
            return float(values[name]) if float(values[name]) > 0 else default
        except (KeyError, ValueError):
            return default

    return WorkerTerms(
        lease_s=number("lease_ms", DEFAULT.lease_s * 1000) / 1000,
        artifact_bytes=int(number("artifact_bytes", DEFAULT.artifact_bytes)),
        job_artifacts_bytes=int(number("job_artifacts_bytes", DEFAULT.job_artifacts_bytes)),
    )
