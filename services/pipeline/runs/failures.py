"""The global stream of failed job attempts, for the services that follow failures (the
debugger diagnoses each one).

An attempt that ended FAILED or TIMED_OUT (a lost worker's too) waits for the coordinator's
decision on a retry (`JobRecord.d == 0`); the coordinator announces it then, before deciding.
A decision can be made again (a conflict, a replica that died and whose work is taken over):
a marker per attempt, set in the same script that appends, makes the announcement once. The
stream (its name is the contract's: `JobFailure`'s channel option) is trimmed to about
`MAX_LEN` entries; its entries' field `m` holds a serialized `JobFailure`.
"""

from __future__ import annotations

from collections.abc import Mapping

from devmesh.pipeline.v1 import runs_pb2
from services.pipeline import names
from services.pipeline.runs import keys, states
from services.pipeline.runs.records import JobRecord, attempt_field
from services.pipeline.runs.store import RunRecord, now_us
from services.runtime import protos
from services.runtime.redis_client import Redis

STREAM = protos.channel_of(runs_pb2.JobFailure)
MAX_LEN = 10_000
MARKER_TTL_S = 7 * 24 * 3600
MAX_MESSAGE_CHARS = 1000
ENDS = frozenset({states.FAILED, states.TIMED_OUT})
# KEYS: the attempt's marker, the stream. ARGV: marker ttl (s), max length, the message.
_ANNOUNCE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'm', ARGV[3])
  return 1
end
return 0
"""


def marker(run_id: str, key: str, number: int) -> str:
    """The key that says an attempt's failure was announced."""
    return f"{keys.run(run_id)}:failure:{attempt_field(key, number)}"


def run_name(run: RunRecord) -> str:
    """A run's resource name."""
    return names.run_name(run.project, run.pipeline, run.id)


def job_name(run: RunRecord, key: str) -> str:
    """A job's resource name."""
    return f"{run_name(run)}/jobs/{key}"


def failure_of(run: RunRecord, key: str, record: JobRecord) -> runs_pb2.JobFailure:
    """The announcement of `record`'s ended attempt."""
    message = runs_pb2.JobFailure(
        job=job_name(run, key),
        attempt=record.n,
        state=runs_pb2.JobState.Value(f"JOB_STATE_{record.s}"),
        reason=runs_pb2.AttemptReason.Value(f"ATTEMPT_REASON_{record.rs}")
        if record.rs
        else runs_pb2.ATTEMPT_REASON_UNSPECIFIED,
        exit_code=record.x,
        message=record.r[:MAX_MESSAGE_CHARS],
    )
    message.time.CopyFrom(protos.timestamp(now_us()))
    return message


class FailureStream:
    """Announces failed attempts on the stream, once each."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def announce(self, run: RunRecord, jobs: Mapping[str, JobRecord]) -> None:
        """Announce the attempts of `jobs` that just failed (and were not announced yet)."""
        for key, record in jobs.items():
            if record.d == 0 and record.s in ENDS and record.n > 0:
                await self.redis.eval(
                    _ANNOUNCE,
                    2,
                    marker(run.id, key, record.n),
                    STREAM,
                    MARKER_TTL_S,
                    MAX_LEN,
                    failure_of(run, key, record).SerializeToString(),
                )
