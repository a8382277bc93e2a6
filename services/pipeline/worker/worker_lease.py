"""The lease a worker holds a running job under: the coordinators' (DEVMESH_PIPELINE_LEASE_
SECONDS, published in Redis), read again at most every few seconds, so that a worker and the
coordinators never disagree about when a silent worker counts as lost."""

from __future__ import annotations

import time

from services.pipeline.runs import worker_terms
from services.runtime.redis_client import Redis

REFRESH_S = 5.0


class Lease:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.seconds = worker_terms.DEFAULT.lease_s
        self._read_at = 0.0

    async def refreshed(self) -> float:
        """The lease in seconds, read from Redis when the last read is older than REFRESH_S."""
        if time.monotonic() - self._read_at > REFRESH_S:
            self.seconds = (await worker_terms.read(self.redis)).lease_s
            self._read_at = time.monotonic()
        return self.seconds
