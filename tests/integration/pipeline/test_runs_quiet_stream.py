"""A run's event stream outlives a quiet stretch longer than the Redis client's timeout."""

from __future__ import annotations

from devmesh.pipeline.v1 import runs_pb2
from tests.integration.pipeline.runs_harness import Mesh, job


async def test_a_stream_stays_open_through_a_step_that_prints_nothing_for_longer_than_the_redis_timeout(
    mesh: Mesh,
) -> None:
    name = await mesh.pipeline({"jobs": [job("quiet", "sleep 3")]})  # DEVMESH_REDIS_TIMEOUT is 2 s
    mesh.start_worker()
    run = await mesh.run(name)
    events = [e async for e in mesh.runs.StreamRunEvents(runs_pb2.StreamRunEventsRequest(name=run.name))]
    assert events[-1].state.run_state == runs_pb2.RUN_STATE_SUCCEEDED
